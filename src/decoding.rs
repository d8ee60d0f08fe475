//! Continuous batching of recurrent decoding, for language models (`POST /complete`).
//!
//! One [`Decoder`] per served version, made on its first request, owns every sequence decoding on
//! it: its recurrent state row, the prompt tokens still to feed, its sampler and its text. One
//! tokio task runs the steps: each step takes every active sequence's next input token and state
//! row, sends them through the version's queue as one request of items (so the workers batch them
//! as they batch anything else, up to `max_batch_size` per forward), then draws each sequence's
//! next token from its logits row. Sequences join between steps as they arrive and leave when they
//! finish, when their client is gone, or when they fail, so a step carries whoever is active now.
//! The prompt is fed one token per step in the same batches (no separate prefill function is
//! needed, so every recurrent model that has a step has everything the server needs).
//!
//! Admission is all or nothing per request: [`Decoder::reserve`] takes `n` of the version's
//! `max_sequences` slots or refuses at once; a slot comes back when its sequence is dropped.

use crate::batching::{Deadline, InferError};
use crate::kinds::language_model::{draw, find_stop, held_back, LanguageModelConfig, Sampling, Vocab};
use crate::metrics::Metrics;
use crate::registry::LoadedVersion;
use crate::tensor::ItemTensor;
use prometheus::{Histogram, IntCounter, IntGauge};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// `max_tokens` tokens were generated.
    Length,
    /// The model drew its end-of-text token, or the text reached a stop string.
    Stop,
}

/// One finished completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Its index in the request (`n` choices are 0..n).
    pub index: usize,
    /// The text, without the end token and without the stop string.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Tokens generated, the end token included.
    pub tokens: usize,
    /// Time its steps waited in the queue, summed.
    pub queue: Duration,
    /// Time its steps' batches computed, summed.
    pub compute: Duration,
    /// The largest batch one of its steps ran in.
    pub max_batch: usize,
}

/// What a sequence tells its request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text of choice `index` (streamed requests only); text a stop string could still claim
    /// is held back until it cannot.
    Token {
        /// The choice.
        index: usize,
        /// The text added.
        text: String,
    },
    /// Choice `index` is complete.
    Done(Finished),
    /// The choice failed (forward error, deadline before the first token, version closing).
    Failed(InferError),
}

/// One sequence to decode, as a request hands it over.
pub struct SeqRequest {
    /// Its index among the request's choices.
    pub index: usize,
    /// The tokens to feed before the first draw: `bos` and the prompt.
    pub prompt: Vec<i64>,
    /// How tokens are drawn.
    pub sampling: Sampling,
    /// Its sampler's seed.
    pub seed: u64,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Strings that end the completion.
    pub stop: Vec<String>,
    /// Whether to send [`Event::Token`]s.
    pub stream: bool,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
    /// The first token must be drawn by then.
    pub first_token_by: Deadline,
}

/// Sequences beyond the version's limit: the request is refused whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    /// Sequences decoding (or admitted) now.
    pub active: usize,
    /// The limit.
    pub max: usize,
}

/// Reserved sequence slots; each [`Decoder::start`]ed sequence takes one, the rest come back on drop.
pub struct Slots {
    counter: Arc<Counter>,
    n: usize,
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.counter.release(self.n);
    }
}

/// One sequence's slot, released when the sequence is dropped.
struct Slot(Arc<Counter>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release(1);
    }
}

struct Counter {
    active: AtomicUsize,
    max: usize,
    gauge: IntGauge,
}

impl Counter {
    fn release(&self, n: usize) {
        if n > 0 {
            let now = self.active.fetch_sub(n, Ordering::SeqCst) - n;
            self.gauge.set(now as i64);
        }
    }
}

/// The per-version series the decoder writes.
#[derive(Clone)]
struct Series {
    tokens: IntCounter,
    ttft: Histogram,
    tpot: Histogram,
    step_batch: Histogram,
}

struct Seq {
    req: SeqRequest,
    pending: VecDeque<i64>,
    last: i64,
    state: Vec<f32>,
    rng: ChaCha8Rng,
    text: String,
    sent: usize,
    generated: usize,
    last_token_at: Option<Instant>,
    queue: Duration,
    compute: Duration,
    max_batch: usize,
    out: mpsc::UnboundedSender<Event>,
    _slot: Slot,
}

/// The decoder of one version.
pub struct Decoder {
    joins: mpsc::UnboundedSender<Seq>,
    counter: Arc<Counter>,
    vocab: Arc<Vocab>,
    state_size: usize,
}

impl Decoder {
    /// The decoder of `v`, started on first use (its task ends when the version is gone).
    /// `step_budget` bounds each step's wait for its forward.
    pub fn of(
        v: &Arc<LoadedVersion>,
        cfg: &LanguageModelConfig,
        metrics: &Metrics,
        step_budget: Duration,
    ) -> Arc<Decoder> {
        let any = v.runtime.get_or_init(|| {
            let (vocab, state_size, max_sequences) = (Vocab::new(cfg), cfg.state_size as usize, cfg.max_sequences);
            let labels = [v.name.as_str(), &v.version.to_string()];
            let (tx, rx) = mpsc::unbounded_channel();
            let counter = Arc::new(Counter {
                active: AtomicUsize::new(0),
                max: max_sequences,
                gauge: metrics.lm_active.with_label_values(&labels),
            });
            let series = Series {
                tokens: metrics.lm_tokens.with_label_values(&labels),
                ttft: metrics.lm_ttft.with_label_values(&labels),
                tpot: metrics.lm_tpot.with_label_values(&labels),
                step_batch: metrics.lm_step_batch.with_label_values(&labels),
            };
            let vocab = Arc::new(vocab);
            tokio::spawn(run(Arc::downgrade(v), rx, vocab.clone(), series, step_budget));
            Arc::new(Decoder { joins: tx, counter, vocab, state_size }) as Arc<dyn std::any::Any + Send + Sync>
        });
        any.clone().downcast::<Decoder>().expect("a version's runtime is the decoder of its kind")
    }

    /// The vocabulary the decoder draws from.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Takes `n` sequence slots, or refuses at once when fewer are free.
    pub fn reserve(&self, n: usize) -> Result<Slots, Full> {
        let c = &self.counter;
        let mut cur = c.active.load(Ordering::SeqCst);
        loop {
            if cur + n > c.max {
                return Err(Full { active: cur, max: c.max });
            }
            match c.active.compare_exchange(cur, cur + n, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    c.gauge.set((cur + n) as i64);
                    return Ok(Slots { counter: c.clone(), n });
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Hands `seqs` (one slot each, from `slots`) to the decoding task; their events arrive on the
    /// returned channel. Dropping the receiver ends them at the next step.
    pub fn start(&self, mut slots: Slots, seqs: Vec<SeqRequest>) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        for req in seqs {
            if slots.n == 0 {
                let _ = tx.send(Event::Failed(InferError::InvalidInput("more sequences than reserved slots".into())));
                break;
            }
            slots.n -= 1;
            let slot = Slot(self.counter.clone());
            let seq = Seq {
                pending: req.prompt.iter().copied().collect(),
                last: 0,
                state: vec![0.0; self.state_size],
                rng: ChaCha8Rng::seed_from_u64(req.seed),
                text: String::new(),
                sent: 0,
                generated: 0,
                last_token_at: None,
                queue: Duration::ZERO,
                compute: Duration::ZERO,
                max_batch: 0,
                out: tx.clone(),
                _slot: slot,
                req,
            };
            if let Err(mpsc::error::SendError(seq)) = self.joins.send(seq) {
                let _ = seq.out.send(Event::Failed(InferError::Unavailable));
            }
        }
        rx
    }
}

/// The decoding task of one version: steps while any sequence is active, sleeps on the join
/// channel otherwise, ends when the decoder (and so the version) is gone.
async fn run(
    version: Weak<LoadedVersion>,
    mut joins: mpsc::UnboundedReceiver<Seq>,
    vocab: Arc<Vocab>,
    series: Series,
    step_budget: Duration,
) {
    let mut seqs: Vec<Seq> = Vec::new();
    loop {
        if seqs.is_empty() {
            match joins.recv().await {
                Some(s) => seqs.push(s),
                None => return,
            }
        }
        while let Ok(s) = joins.try_recv() {
            seqs.push(s);
        }
        let now = Instant::now();
        seqs.retain(|s| {
            if s.out.is_closed() {
                return false; // the client is gone: its slot comes back now
            }
            if s.last_token_at.is_none() && now >= s.req.first_token_by.at {
                let _ = s.out.send(Event::Failed(s.req.first_token_by.exceeded()));
                return false;
            }
            true
        });
        if seqs.is_empty() {
            continue;
        }
        let Some(v) = version.upgrade() else {
            for s in seqs.drain(..) {
                let _ = s.out.send(Event::Failed(InferError::Unavailable));
            }
            continue;
        };
        let items: Vec<Vec<ItemTensor>> = seqs
            .iter_mut()
            .map(|s| {
                let token = s.pending.pop_front().unwrap_or(s.last);
                let n = s.state.len() as i64;
                vec![ItemTensor::i64(vec![1], vec![token]), ItemTensor::f32(vec![n], std::mem::take(&mut s.state))]
            })
            .collect();
        series.step_batch.observe(items.len() as f64);
        let result = v.batcher.infer(items, Deadline::after(step_budget)).await;
        drop(v);
        let outs = match result {
            Ok(outs) => outs,
            Err(e) => {
                for s in seqs.drain(..) {
                    let _ = s.out.send(Event::Failed(e.clone()));
                }
                continue;
            }
        };
        let mut keep = Vec::with_capacity(seqs.len());
        for (mut s, out) in seqs.drain(..).zip(outs) {
            s.queue += out.timing.queue;
            s.compute += out.timing.compute;
            s.max_batch = s.max_batch.max(out.timing.batch_size);
            let mut outputs = out.outputs.into_iter();
            let (Some(logits), Some(state)) = (outputs.next(), outputs.next()) else {
                let _ = s.out.send(Event::Failed(InferError::BadOutput("a step returned fewer than 2 outputs".into())));
                continue;
            };
            s.state = state.data;
            if !s.pending.is_empty() {
                keep.push(s); // still feeding the prompt
                continue;
            }
            let token = draw(&logits.data, &vocab, &s.req.sampling, &mut s.rng);
            if advance(&mut s, token, &vocab, &series) {
                keep.push(s);
            }
        }
        seqs = keep;
    }
}

/// Takes one drawn token into the sequence; false once it is finished (its `Done` sent).
fn advance(s: &mut Seq, token: i64, vocab: &Vocab, series: &Series) -> bool {
    let now = Instant::now();
    match s.last_token_at {
        None => series.ttft.observe(now.duration_since(s.req.arrived).as_secs_f64()),
        Some(t) => series.tpot.observe(now.duration_since(t).as_secs_f64()),
    }
    s.last_token_at = Some(now);
    s.generated += 1;
    series.tokens.inc();
    s.last = token;
    let mut finish = None;
    if token == vocab.eos {
        finish = Some(FinishReason::Stop);
    } else {
        let before = s.text.len();
        s.text.push_str(vocab.text(token));
        if let Some(at) = find_stop(&s.text, before, &s.req.stop) {
            s.text.truncate(at);
            finish = Some(FinishReason::Stop);
        }
    }
    if finish.is_none() && s.generated >= s.req.max_tokens {
        finish = Some(FinishReason::Length);
    }
    let upto = if finish.is_some() { s.text.len() } else { s.text.len() - held_back(&s.text, &s.req.stop) };
    if s.req.stream && upto > s.sent {
        let _ = s.out.send(Event::Token { index: s.req.index, text: s.text[s.sent..upto].to_string() });
        s.sent = upto;
    }
    match finish {
        None => true,
        Some(reason) => {
            let _ = s.out.send(Event::Done(Finished {
                index: s.req.index,
                text: std::mem::take(&mut s.text),
                finish_reason: reason,
                tokens: s.generated,
                queue: s.queue,
                compute: s.compute,
                max_batch: s.max_batch,
            }));
            false
        }
    }
}
