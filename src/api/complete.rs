//! `POST /complete`: a prompt to one or more completions from a recurrent language model, whole or
//! streamed as Server-Sent Events, decoded with every other active sequence of the model in
//! shared steps (`crate::decoding`).

use super::error::{ApiError, ErrorType};
use super::{pipeline, served_headers, ModelSelector};
use crate::batching::{Deadline, Timing};
use crate::decoding::{Decoder, Event, FinishReason, Finished, SeqRequest};
use crate::kinds::language_model::{
    LanguageModel, LanguageModelConfig, Sampling, MAX_STOP, MAX_STOP_CHARS, MAX_TEMPERATURE,
};
use crate::registry::LoadedVersion;
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;
use utoipa::ToSchema;

/// JSON body of `/complete`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"model": "fortunes-lstm", "prompt": "The best way to ", "max_tokens": 80, "temperature": 0.8, "top_k": 40, "stop": ["\n\n"], "seed": 7}))]
pub struct CompleteRequest {
    /// Model name (overrides the query string).
    pub model: Option<String>,
    /// Version (overrides the query string).
    pub version: Option<u64>,
    /// The text to continue (may be empty); at most the model's `max_prompt_chars` characters,
    /// each in its vocabulary unless the model maps unknown characters (`GET /models` shows both).
    #[serde(default)]
    pub prompt: String,
    /// Most tokens to generate per completion, from 1 to the model's `max_tokens`; default its
    /// `default_max_tokens`.
    pub max_tokens: Option<usize>,
    /// 0 for greedy decoding (the most likely token each step), else the softmax temperature, up
    /// to 100. Default 1.
    pub temperature: Option<f64>,
    /// Draw only from the k most likely tokens; 0 (default) for all; at most the vocabulary size.
    pub top_k: Option<usize>,
    /// Draw only from the most likely tokens whose probabilities add up to p; in (0, 1], default 1.
    pub top_p: Option<f64>,
    /// Up to 8 strings of 1 to 64 characters; a completion ends before the first one it produces.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Seed of the sampler: the same seed and parameters give the same text, whatever else the
    /// server decodes. Choice i uses seed + i. Default: a random seed, returned in the answer.
    pub seed: Option<u64>,
    /// Completions to generate, from 1 to the model's `max_n`. Default 1.
    pub n: Option<usize>,
    /// Answer with Server-Sent Events: `token` events as text is generated, then one `done` event
    /// carrying the whole answer (or an `error` event).
    #[serde(default)]
    pub stream: bool,
}

/// One completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    /// Its index, 0 to n - 1.
    pub index: usize,
    /// The generated text (without the end token or the stop string).
    pub text: String,
    /// `length` when `max_tokens` were generated, `stop` at the model's end token or a stop string.
    pub finish_reason: FinishReason,
    /// Tokens generated, the end token included.
    pub tokens: usize,
}

/// Token counts of a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Tokens fed before the first draw (the start token and one per prompt character).
    pub prompt_tokens: usize,
    /// Tokens generated over all choices.
    pub completion_tokens: usize,
    /// Their sum (prompt tokens counted once per choice).
    pub total_tokens: usize,
}

/// Response of `/complete` (and the data of the stream's `done` event).
#[derive(Debug, Serialize, ToSchema)]
pub struct CompleteResponse {
    /// The model that served the request.
    #[schema(example = "fortunes-lstm")]
    pub model: String,
    /// Its version.
    pub version: u64,
    /// The sampler's seed (choice i used seed + i).
    pub seed: u64,
    /// The completions, by index.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
}

/// The data of a stream's `token` event.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenEvent {
    /// The choice the text belongs to.
    pub index: usize,
    /// The text generated since the last event of that choice.
    pub text: String,
}

/// Continues a prompt with a recurrent language model.
///
/// The model (kind `language_model`) is fed its start token and the prompt, then draws one token
/// per step with the request's temperature, top-k and top-p, until `max_tokens`, its end token or
/// a stop string. Every active sequence of the model advances in one batched forward per step:
/// requests join and leave between steps. Each model has at most `max_sequences` sequences
/// decoding (one per choice); a request that does not fit gets 429 at once. With `"stream": true`
/// the answer is `text/event-stream`: `event: token` with `{"index", "text"}` as text is produced,
/// then `event: done` with the whole answer (or `event: error` with an error body); a client that
/// disconnects frees its sequences at the next step.
#[utoipa::path(post, path = "/complete", tag = "inference", params(ModelSelector, ("x-deadline-ms" = Option<u64>, Header, description = "Deadline for the first token in ms")),
    request_body(content = CompleteRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The completions; with stream = true, Server-Sent Events (`token` events of TokenEvent, then `done` with this body)",
            content((CompleteResponse = "application/json"), (TokenEvent = "text/event-stream"))),
        super::error::InferErrors,
        (status = 422, description = "A field out of its range (the message names the limit), a prompt too long or with characters outside the vocabulary", body = super::error::ErrorBody),
    ))]
pub async fn complete(call: pipeline::JsonRequest<LanguageModel, CompleteRequest>) -> Result<Response, ApiError> {
    let req = &call.body;
    let (v, cfg) = call.pick(req.model.as_deref(), req.version)?;
    let app = &call.app;
    let decoder = Decoder::of(&v, &cfg, &app.metrics, app.limits.max_deadline);
    let checked = check(req, &cfg, decoder.vocab().len())?;
    let prompt = decoder.vocab().encode(&req.prompt).map_err(|e| ApiError::from(e).for_model(&v))?;
    let slots = decoder.reserve(checked.n).map_err(|f| {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                ErrorType::Overloaded,
                format!(
                    "{} of {} sequences of '{}' are decoding (language_model.max_sequences) and this request needs {}; retry after 1 s",
                    f.active, f.max, v.name, checked.n
                ),
            )
        }
        .for_model(&v)
    })?;
    let seed = req.seed.unwrap_or_else(|| rand::random::<u64>() >> 11);
    let deadline: Deadline = call.deadline;
    let arrived = deadline.at - deadline.budget;
    let seqs = (0..checked.n)
        .map(|i| SeqRequest {
            index: i,
            prompt: prompt.clone(),
            sampling: checked.sampling.clone(),
            seed: seed.wrapping_add(i as u64),
            max_tokens: checked.max_tokens,
            stop: req.stop.clone(),
            stream: req.stream,
            arrived,
            first_token_by: deadline,
        })
        .collect();
    let rx = decoder.start(slots, seqs);
    let answer = Answer { v: v.clone(), seed, n: checked.n, prompt_tokens: prompt.len(), done: Vec::new() };
    if req.stream {
        Ok(stream(answer, rx))
    } else {
        whole(answer, rx).await
    }
}

/// A request's fields, checked against the model's limits.
struct Checked {
    n: usize,
    max_tokens: usize,
    sampling: Sampling,
}

fn check(req: &CompleteRequest, cfg: &LanguageModelConfig, vocab: usize) -> Result<Checked, ApiError> {
    let n = req.n.unwrap_or(1);
    if n == 0 || n > cfg.max_n {
        return Err(ApiError::invalid("n", format!("must be between 1 and {} (this model's max_n)", cfg.max_n)));
    }
    let max_tokens = req.max_tokens.unwrap_or(cfg.default_max_tokens);
    if max_tokens == 0 || max_tokens > cfg.max_tokens {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("must be between 1 and {} (this model's max_tokens)", cfg.max_tokens),
        ));
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !temperature.is_finite() || !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
        return Err(ApiError::invalid("temperature", format!("must be between 0 (greedy) and {MAX_TEMPERATURE}")));
    }
    let top_k = req.top_k.unwrap_or(0);
    if top_k > vocab {
        return Err(ApiError::invalid("top_k", format!("must be between 0 (off) and {vocab} (the vocabulary size)")));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid("top_p", "must be greater than 0 and at most 1"));
    }
    if req.stop.len() > MAX_STOP {
        return Err(ApiError::invalid("stop", format!("has {} strings; at most {MAX_STOP}", req.stop.len())));
    }
    if let Some(i) = req.stop.iter().position(|s| s.is_empty() || s.chars().count() > MAX_STOP_CHARS) {
        return Err(ApiError::invalid(format!("stop[{i}]"), format!("must have 1 to {MAX_STOP_CHARS} characters")));
    }
    Ok(Checked { n, max_tokens, sampling: Sampling { temperature, top_k, top_p } })
}

/// The choices of one request as they finish.
struct Answer {
    v: Arc<LoadedVersion>,
    seed: u64,
    n: usize,
    prompt_tokens: usize,
    done: Vec<Finished>,
}

impl Answer {
    fn body(&mut self) -> CompleteResponse {
        self.done.sort_by_key(|f| f.index);
        let completion_tokens: usize = self.done.iter().map(|f| f.tokens).sum();
        CompleteResponse {
            model: self.v.name.clone(),
            version: self.v.version,
            seed: self.seed,
            choices: self
                .done
                .iter()
                .map(|f| Choice {
                    index: f.index,
                    text: f.text.clone(),
                    finish_reason: f.finish_reason,
                    tokens: f.tokens,
                })
                .collect(),
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens,
                total_tokens: self.prompt_tokens * self.n + completion_tokens,
            },
        }
    }

    /// `Server-Timing` over the choices: the largest of their queue and compute times (each summed
    /// over the choice's steps), and the largest batch a step ran in.
    fn timing(&self) -> Timing {
        Timing {
            queue: self.done.iter().map(|f| f.queue).max().unwrap_or_default(),
            compute: self.done.iter().map(|f| f.compute).max().unwrap_or_default(),
            batch_size: self.done.iter().map(|f| f.max_batch).max().unwrap_or_default(),
        }
    }

    fn failed(&self, e: crate::batching::InferError) -> ApiError {
        ApiError::from(e).for_model(&self.v)
    }
}

async fn whole(mut a: Answer, mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Result<Response, ApiError> {
    while a.done.len() < a.n {
        match rx.recv().await {
            Some(Event::Done(f)) => a.done.push(f),
            Some(Event::Token { .. }) => {}
            Some(Event::Failed(e)) => return Err(a.failed(e)),
            None => return Err(a.failed(crate::batching::InferError::Unavailable)),
        }
    }
    let headers = served_headers(&a.v, &[a.timing()]);
    Ok((headers, axum::Json(a.body())).into_response())
}

fn stream(a: Answer, rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Response {
    use axum::response::sse::Event as Sse_;
    let mut headers = served_headers(&a.v, &[]);
    headers.remove(HeaderName::from_static("server-timing"));
    headers.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    // The stream owns the version (as an in-flight request does) and the receiver: when the
    // client goes, both are dropped, and the decoder drops the sequences at its next step.
    let events = futures::stream::unfold(Some((a, rx)), |st| async move {
        let (mut a, mut rx) = st?;
        loop {
            let ev = match rx.recv().await {
                Some(Event::Token { index, text }) => {
                    Sse_::default().event("token").json_data(TokenEvent { index, text }).ok()?
                }
                Some(Event::Done(f)) => {
                    a.done.push(f);
                    if a.done.len() < a.n {
                        continue;
                    }
                    let ev = Sse_::default().event("done").json_data(a.body()).ok()?;
                    return Some((Ok::<_, Infallible>(ev), None));
                }
                Some(Event::Failed(e)) => return Some((Ok(error_event(a.failed(e))), None)),
                None => return Some((Ok(error_event(a.failed(crate::batching::InferError::Unavailable))), None)),
            };
            return Some((Ok(ev), Some((a, rx))));
        }
    });
    (headers, Sse::new(events).keep_alive(KeepAlive::default())).into_response()
}

/// An `error` event: the error body every domain endpoint sends, after the status was already 200.
fn error_event(e: ApiError) -> axum::response::sse::Event {
    axum::response::sse::Event::default().event("error").json_data(e.into_body()).unwrap_or_default()
}
