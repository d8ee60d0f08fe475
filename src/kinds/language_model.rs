//! Recurrent language models (`POST /complete`): prompts to token ids, and the next token drawn from
//! the model's logits with the request's temperature, top-k and top-p.
//!
//! Contract: the model's forward is one recurrent step,
//! `forward(tokens [B, 1] int64, state [B, S] float32) -> (logits [B, V], state [B, S])`, with a
//! zero state row as the initial state. The server feeds the `bos` token, then the prompt one token
//! per step, then each drawn token, keeping every sequence's state row between steps (see
//! `crate::decoding`). Tokens are the entries of `vocab`: a one-character entry is that
//! character's token; longer entries (`<s>`, `</s>`, `<unk>`) are special and are never drawn,
//! except `eos`, which ends a completion.
//!
//! Sampling is per sequence: choice `i` of a request with seed `s` draws from its own ChaCha8
//! stream keyed by `s + i`, so its text depends on the seed and the parameters only, not on what
//! else is decoded beside it.

use super::{field_error, spec, FieldError, Kind, KindError, TensorSpec};
use crate::tensor::TensorData;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::ToSchema;

/// The language-model kind.
pub struct LanguageModel;

impl Kind for LanguageModel {
    const NAME: &'static str = "language_model";
    const ENDPOINT: &'static str = "POST /complete";
    type Config = LanguageModelConfig;

    fn validate(c: &LanguageModelConfig) -> Result<(), FieldError> {
        if c.vocab.len() < 2 || c.vocab.len() > 1_000_000 {
            return Err(field_error("vocab", "needs between 2 and 1000000 tokens"));
        }
        let mut seen = HashMap::new();
        for (i, t) in c.vocab.iter().enumerate() {
            if t.is_empty() {
                return Err(field_error("vocab", format!("token {i} is empty")));
            }
            if let Some(j) = seen.insert(t.as_str(), i) {
                return Err(field_error("vocab", format!("token {i} repeats token {j} ({t:?})")));
            }
        }
        for (field, tok) in [("bos", &c.bos), ("eos", &c.eos)] {
            if !seen.contains_key(tok.as_str()) {
                return Err(field_error(field, format!("{tok:?} is not in vocab")));
            }
        }
        if c.unknown != "refuse" && !seen.contains_key(c.unknown.as_str()) {
            return Err(field_error("unknown", "must be \"refuse\" or a token of vocab to map unknown characters to"));
        }
        if !(1..=1 << 20).contains(&c.state_size) {
            return Err(field_error("state_size", "must be between 1 and 1048576"));
        }
        if !(1..=1 << 20).contains(&c.max_prompt_chars) {
            return Err(field_error("max_prompt_chars", "must be between 1 and 1048576"));
        }
        if !(1..=1 << 20).contains(&c.max_tokens) {
            return Err(field_error("max_tokens", "must be between 1 and 1048576"));
        }
        if c.default_max_tokens == 0 || c.default_max_tokens > c.max_tokens {
            return Err(field_error("default_max_tokens", "must be between 1 and max_tokens"));
        }
        if !(1..=4096).contains(&c.max_sequences) {
            return Err(field_error("max_sequences", "must be between 1 and 4096"));
        }
        if c.max_n == 0 || c.max_n > c.max_sequences {
            return Err(field_error("max_n", "must be between 1 and max_sequences"));
        }
        Ok(())
    }

    fn inputs(c: &LanguageModelConfig) -> Vec<TensorSpec> {
        vec![spec("tokens", "INT64", vec![-1, 1]), spec("state", "FP32", vec![-1, c.state_size])]
    }

    fn outputs(c: &LanguageModelConfig, _labels: &[String]) -> Vec<TensorSpec> {
        vec![spec("logits", "FP32", vec![-1, c.vocab.len() as i64]), spec("next_state", "FP32", vec![-1, c.state_size])]
    }

    /// A token id outside the vocabulary would fail the embedding lookup of the whole batch.
    fn check_v2_input(c: &LanguageModelConfig, input: usize, _shape: &[i64], data: &TensorData) -> Result<(), String> {
        if let (0, TensorData::I64(ids)) = (input, data) {
            let v = c.vocab.len() as i64;
            if let Some(i) = ids.iter().position(|t| *t < 0 || *t >= v) {
                return Err(format!("input 'tokens': element {i} must be a token id from 0 to {}", v - 1));
            }
        }
        Ok(())
    }
}

/// A language model's vocabulary and limits (`[language_model]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageModelConfig {
    /// Token texts in id order. One-character entries are the characters of prompts and
    /// completions; longer ones are special tokens.
    pub vocab: Vec<String>,
    /// The token fed before the prompt.
    pub bos: String,
    /// The token that ends a completion (`finish_reason` `stop`); never part of the text.
    pub eos: String,
    /// What a prompt character outside the vocabulary does: `refuse` (422 naming it and its
    /// position) or the name of a token to map it to (`<unk>`).
    #[serde(default = "default_unknown")]
    pub unknown: String,
    /// Floats of recurrent state per sequence (S).
    pub state_size: i64,
    /// Longest prompt, in characters.
    #[serde(default = "default_max_prompt_chars")]
    pub max_prompt_chars: usize,
    /// Most tokens one completion may ask for (`max_tokens`).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// `max_tokens` when the request sets none.
    #[serde(default = "default_default_max_tokens")]
    pub default_max_tokens: usize,
    /// Most sequences decoding at once on this model (each choice of each request is one); beyond
    /// it a request gets 429 at once.
    #[serde(default = "default_max_sequences")]
    pub max_sequences: usize,
    /// Most completions per request (`n`).
    #[serde(default = "default_max_n")]
    pub max_n: usize,
}

fn default_unknown() -> String {
    "refuse".into()
}
fn default_max_prompt_chars() -> usize {
    4096
}
fn default_max_tokens() -> usize {
    1024
}
fn default_default_max_tokens() -> usize {
    200
}
fn default_max_sequences() -> usize {
    64
}
fn default_max_n() -> usize {
    8
}

/// Most stop strings per request.
pub const MAX_STOP: usize = 8;
/// Longest stop string, in characters.
pub const MAX_STOP_CHARS: usize = 64;
/// Largest temperature.
pub const MAX_TEMPERATURE: f64 = 100.0;

/// The vocabulary, indexed for encoding prompts and decoding tokens.
#[derive(Debug, Clone)]
pub struct Vocab {
    by_char: HashMap<char, i64>,
    texts: Vec<String>,
    /// Whether token `i` may be drawn: a character, or `eos`.
    drawable: Vec<bool>,
    /// The `bos` token.
    pub bos: i64,
    /// The `eos` token.
    pub eos: i64,
    unknown: Option<i64>,
    max_prompt_chars: usize,
}

impl Vocab {
    /// Indexes a validated section.
    pub fn new(c: &LanguageModelConfig) -> Vocab {
        let id = |t: &str| c.vocab.iter().position(|v| v == t).map_or(0, |i| i as i64);
        let mut by_char = HashMap::new();
        let mut drawable = vec![false; c.vocab.len()];
        for (i, t) in c.vocab.iter().enumerate() {
            let mut chars = t.chars();
            if let (Some(ch), None) = (chars.next(), chars.next()) {
                by_char.insert(ch, i as i64);
                drawable[i] = true;
            }
        }
        let eos = id(&c.eos);
        drawable[eos as usize] = true;
        let unknown = (c.unknown != "refuse").then(|| id(&c.unknown));
        Vocab {
            by_char,
            texts: c.vocab.clone(),
            drawable,
            bos: id(&c.bos),
            eos,
            unknown,
            max_prompt_chars: c.max_prompt_chars,
        }
    }

    /// Number of tokens (V).
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether the vocabulary is empty (never, for a validated section).
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The tokens fed for `prompt`: `bos`, then one per character. Refuses a prompt longer than
    /// the limit, or a character outside the vocabulary unless the section maps those.
    pub fn encode(&self, prompt: &str) -> Result<Vec<i64>, KindError> {
        let n = prompt.chars().count();
        if n > self.max_prompt_chars {
            return Err(super::invalid(
                "prompt",
                format!("has {n} characters; at most {} for this model", self.max_prompt_chars),
            ));
        }
        let mut ids = Vec::with_capacity(n + 1);
        ids.push(self.bos);
        for (pos, ch) in prompt.chars().enumerate() {
            match (self.by_char.get(&ch), self.unknown) {
                (Some(id), _) => ids.push(*id),
                (None, Some(unk)) => ids.push(unk),
                (None, None) => {
                    return Err(super::invalid(
                        "prompt",
                        format!(
                            "character {ch:?} (U+{:04X}) at position {pos} is not in the model's vocabulary \
                             of {} tokens, and the model refuses unknown characters",
                            ch as u32,
                            self.len()
                        ),
                    ))
                }
            }
        }
        Ok(ids)
    }

    /// The text of a drawn token (empty for `eos`).
    pub fn text(&self, id: i64) -> &str {
        if id == self.eos {
            return "";
        }
        self.texts.get(id as usize).map_or("", String::as_str)
    }
}

/// How the next token is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 = greedy (the most likely token, the lowest id on ties); else logits are divided by it.
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1 = all).
    pub top_p: f64,
}

/// Draws the next token from `logits` (the model's, one per vocabulary entry); only drawable
/// tokens (characters and `eos`) are candidates. Deterministic for a given `rng` state.
pub fn draw(logits: &[f32], vocab: &Vocab, s: &Sampling, rng: &mut ChaCha8Rng) -> i64 {
    let candidates = logits.iter().enumerate().filter(|(i, l)| vocab.drawable.get(*i) == Some(&true) && l.is_finite());
    if s.temperature == 0.0 {
        // The first maximum: ties go to the lowest id.
        let mut best: Option<(usize, f32)> = None;
        for (i, l) in candidates {
            if best.is_none_or(|(_, b)| *l > b) {
                best = Some((i, *l));
            }
        }
        return best.map_or(vocab.eos, |(i, _)| i as i64);
    }
    // Most likely first; ties by id, so the order (and the draw) is deterministic.
    let mut c: Vec<(usize, f64)> = candidates.map(|(i, l)| (i, *l as f64 / s.temperature)).collect();
    if c.is_empty() {
        return vocab.eos;
    }
    c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if s.top_k > 0 && s.top_k < c.len() {
        c.truncate(s.top_k);
    }
    let max = c[0].1;
    let mut total = 0.0;
    for x in c.iter_mut() {
        x.1 = (x.1 - max).exp();
        total += x.1;
    }
    if s.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = c.len();
        for (k, x) in c.iter().enumerate() {
            cum += x.1 / total;
            if cum >= s.top_p {
                keep = k + 1;
                break;
            }
        }
        c.truncate(keep);
        total = c.iter().map(|x| x.1).sum();
    }
    let u: f64 = rng.random::<f64>() * total;
    let mut acc = 0.0;
    for (i, p) in &c {
        acc += p;
        if u < acc {
            return *i as i64;
        }
    }
    c[c.len() - 1].0 as i64
}

/// Where a stop string first occurs in `text`, looking only where one could end inside the
/// bytes from `new_from` on (the text added since the last look). Returns the byte offset.
pub fn find_stop(text: &str, new_from: usize, stops: &[String]) -> Option<usize> {
    let mut first: Option<usize> = None;
    for s in stops {
        let mut from = new_from.saturating_sub(s.len().saturating_sub(1));
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        if let Some(p) = text[from..].find(s.as_str()) {
            let at = from + p;
            first = Some(first.map_or(at, |f: usize| f.min(at)));
        }
    }
    first
}

/// How many bytes at the end of `text` must be held back from a stream because a stop string
/// could still begin there (the longest suffix that is a proper prefix of a stop string).
pub fn held_back(text: &str, stops: &[String]) -> usize {
    let mut held = 0;
    for s in stops {
        for (k, _) in s.char_indices().skip(1) {
            let prefix = &s[..k];
            if k > held && text.ends_with(prefix) {
                held = k;
            }
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cfg() -> LanguageModelConfig {
        LanguageModelConfig {
            vocab: ["<s>", "</s>", "<unk>", "\n", " ", "a", "b", "c"].iter().map(|s| s.to_string()).collect(),
            bos: "<s>".into(),
            eos: "</s>".into(),
            unknown: "refuse".into(),
            state_size: 4,
            max_prompt_chars: 5,
            max_tokens: 10,
            default_max_tokens: 5,
            max_sequences: 4,
            max_n: 2,
        }
    }

    #[test]
    fn the_section_is_checked() {
        assert!(LanguageModel::validate(&cfg()).is_ok());
        let mut c = cfg();
        c.vocab.push("a".into());
        assert_eq!(LanguageModel::validate(&c).unwrap_err().field, "vocab");
        let mut c = cfg();
        c.eos = "<end>".into();
        assert_eq!(LanguageModel::validate(&c).unwrap_err().field, "eos");
        let mut c = cfg();
        c.unknown = "?".into();
        assert_eq!(LanguageModel::validate(&c).unwrap_err().field, "unknown");
        let mut c = cfg();
        c.max_n = 5;
        assert_eq!(LanguageModel::validate(&c).unwrap_err().field, "max_n");
        let mut c = cfg();
        c.default_max_tokens = 11;
        assert_eq!(LanguageModel::validate(&c).unwrap_err().field, "default_max_tokens");
    }

    #[test]
    fn prompts_encode_per_character_after_bos() {
        let v = Vocab::new(&cfg());
        assert_eq!(v.encode("ab c").unwrap(), vec![0, 5, 6, 4, 7]);
        assert_eq!(v.encode("").unwrap(), vec![0]);
        let e = v.encode("abx").unwrap_err().to_string();
        assert!(e.contains("'x'") && e.contains("position 2"), "{e}");
        assert!(v.encode("aaaaaa").unwrap_err().to_string().contains("at most 5"));
        let mut c = cfg();
        c.unknown = "<unk>".into();
        assert_eq!(Vocab::new(&c).encode("xa").unwrap(), vec![0, 2, 5]);
        assert_eq!(v.text(5), "a");
        assert_eq!(v.text(1), "");
    }

    #[test]
    fn greedy_takes_the_first_maximum_among_drawable_tokens() {
        let v = Vocab::new(&cfg());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let g = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 };
        // bos (0) and unk (2) are never drawn, however likely.
        assert_eq!(draw(&[9.0, 0.0, 9.0, 0.0, 0.0, 3.0, 3.0, 1.0], &v, &g, &mut rng), 5);
        assert_eq!(draw(&[0.0, 4.0, 0.0, 0.0, 0.0, 3.0, 3.0, 1.0], &v, &g, &mut rng), 1);
    }

    #[test]
    fn sampling_respects_top_k_and_top_p_and_is_seeded() {
        let v = Vocab::new(&cfg());
        let logits = [0.0f32, 0.0, 0.0, 1.0, 1.0, 2.0, 1.5, 0.5];
        let k1 = Sampling { temperature: 1.0, top_k: 1, top_p: 1.0 };
        let p_small = Sampling { temperature: 1.0, top_k: 0, top_p: 0.01 };
        let all = Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            assert_eq!(draw(&logits, &v, &k1, &mut rng), 5);
            assert_eq!(draw(&logits, &v, &p_small, &mut rng), 5);
        }
        let run = |seed| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            (0..200).map(|_| draw(&logits, &v, &all, &mut r)).collect::<Vec<_>>()
        };
        let a = run(3);
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
        assert!(a.iter().all(|t| ![0, 2].contains(t)), "never bos or unk");
        // Token 5 (logit 2) is drawn more often than token 7 (logit 0.5).
        let count = |t| a.iter().filter(|x| **x == t).count();
        assert!(count(5) > count(7), "{} vs {}", count(5), count(7));
    }

    #[test]
    fn stop_strings_are_found_and_held_back() {
        let stops = vec!["\n\n".to_string(), "end".to_string()];
        assert_eq!(find_stop("ab\n\ncd", 3, &stops), Some(2));
        assert_eq!(find_stop("ab\n\ncd", 5, &stops), None, "a match that ended before new_from was already seen");
        assert_eq!(find_stop("the end", 6, &stops), Some(4));
        assert_eq!(held_back("ab\n", &stops), 1);
        assert_eq!(held_back("the en", &stops), 2);
        assert_eq!(held_back("the", &stops), 1, "a final e may begin \"end\"");
        assert_eq!(held_back("tho", &stops), 0);
        let uni = vec!["éé".to_string()];
        assert_eq!(held_back("xé", &uni), 2);
        assert_eq!(find_stop("xéé", 3, &uni), Some(1));
    }
}
