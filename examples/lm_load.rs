//! Closed-loop load generator for streamed text generation, `POST /complete` with `"stream": true`,
//! the same for dlserve and for the FastAPI peer (`bench/peers/lm_app.py`). Used by `scripts/bench-lm`.
//!
//! `--streams C` tasks each send one request, read its Server-Sent Events to the end (`event: done`),
//! and send the next at once (closed loop), for `--warmup` seconds (discarded) and then a measured
//! window of `--seconds`. The streams' first requests are spread evenly over the first half of the
//! warm-up, so that the streams are out of step (not all feeding their prompts in the same steps) by
//! the time the window opens. All requests carry the same body: `--prompt`, `--max-tokens`,
//! `--temperature` (0 = greedy) and, when given, `--top-k`, `--top-p`, `--seed`, `--stop` (repeatable)
//! and `--model`. The SSE byte stream is parsed as it arrives, and every timestamp is taken when the
//! read that completed an event returns (events that arrive in one read share a timestamp). Per
//! request it records:
//!
//! * time to first token (TTFT): from just before the request is sent to its first `event: token`,
//!   for requests sent inside the window whose first token arrives inside it;
//! * time per output token (TPOT): every gap between two consecutive `event: token`s of one request,
//!   both inside the window (so a p99 is the p99 over all gaps, not over per-request means). A server
//!   whose writes fall behind its steps sends several tokens in one burst, which shows as many gaps
//!   near 0 and a few long ones: the mean gap is then the figure to read beside the p99;
//! * requests: `event: done`s received inside the window; `mean_tokens_per_request` is their mean
//!   `usage.completion_tokens`;
//! * tokens: generated tokens received inside the window, eos included, as both servers count them in
//!   `usage.completion_tokens`: each `event: token` counts one when it arrives, and the tokens an
//!   answer counts that had no event of their own (a server need not send one for eos or for a token
//!   whose text a stop string holds back) count when its `done` arrives. `tokens_per_s` = tokens / the
//!   window's length;
//! * token_events: the `event: token`s received inside the window;
//! * errors, by kind, inside the window: a connection or read failure, a non-2xx status (`http_503`),
//!   `event: error`, a stream that ends without `event: done`, or a `done` that is not JSON. After an
//!   error the stream waits 10 ms before its next request, so a refusing server is not spun on;
//! * mismatches: `done` answers whose streamed chunks joined differ from the answer's text, or, with
//!   `--expect-file`, whose text differs from that file's contents (at temperature 0 every answer of a
//!   run must be the same text, batched or not).
//!
//! When the window ends, requests still in flight are dropped (their connections closed); nothing
//! after the window counts.
//!
//! ```text
//! cargo run --release --example lm_load -- --url http://127.0.0.1:8080 --prompt "The " \
//!     --max-tokens 128 --temperature 0 --streams 8 --warmup 2 --seconds 10
//! ```
//! Prints one JSON object: streams, duration_s, requests, requests_per_s, tokens, tokens_per_s,
//! mean_tokens_per_request, token_events, ttft_p50_ms / ttft_p99_ms, tpot_mean_ms / tpot_p50_ms /
//! tpot_p99_ms / tpot_max_ms (with their sample counts), errors, error_kinds, mismatches.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    model: Option<String>,
    prompt: String,
    max_tokens: u64,
    temperature: f64,
    top_k: Option<u64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    stop: Vec<String>,
    streams: usize,
    seconds: f64,
    warmup: f64,
    expect: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        model: None,
        prompt: String::new(),
        max_tokens: 128,
        temperature: 0.0,
        top_k: None,
        top_p: None,
        seed: None,
        stop: Vec::new(),
        streams: 1,
        seconds: 10.0,
        warmup: 2.0,
        expect: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        let num = |what: &str| -> f64 { v.parse().unwrap_or_else(|_| panic!("{what} is a number, not {v:?}")) };
        match pair[0].as_str() {
            "--url" => a.url = v.trim_end_matches('/').to_string(),
            "--model" => a.model = Some(v),
            "--prompt" => a.prompt = v,
            "--max-tokens" => a.max_tokens = num("--max-tokens") as u64,
            "--temperature" => a.temperature = num("--temperature"),
            "--top-k" => a.top_k = Some(num("--top-k") as u64),
            "--top-p" => a.top_p = Some(num("--top-p")),
            "--seed" => a.seed = Some(v.parse().expect("--seed is an unsigned integer")),
            "--stop" => a.stop.push(v),
            "--streams" => a.streams = num("--streams") as usize,
            "--seconds" => a.seconds = num("--seconds"),
            "--warmup" => a.warmup = num("--warmup"),
            "--expect-file" => {
                a.expect = Some(std::fs::read_to_string(&v).unwrap_or_else(|e| panic!("--expect-file {v}: {e}")))
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(a.streams >= 1 && a.seconds > 0.0 && a.warmup >= 0.0, "--streams >= 1, --seconds > 0, --warmup >= 0");
    a
}

/// The request body every request of the run sends.
fn body(a: &Args) -> bytes::Bytes {
    let mut b = serde_json::json!({
        "prompt": a.prompt, "max_tokens": a.max_tokens, "temperature": a.temperature, "stream": true,
    });
    let o = b.as_object_mut().unwrap();
    if let Some(m) = &a.model {
        o.insert("model".into(), m.clone().into());
    }
    if let Some(k) = a.top_k {
        o.insert("top_k".into(), k.into());
    }
    if let Some(p) = a.top_p {
        o.insert("top_p".into(), p.into());
    }
    if let Some(s) = a.seed {
        o.insert("seed".into(), s.into());
    }
    if !a.stop.is_empty() {
        o.insert("stop".into(), a.stop.clone().into());
    }
    serde_json::to_vec(&b).unwrap().into()
}

/// Incremental Server-Sent Events parser: feed it bytes as they arrive, get back complete
/// `(event, data)` pairs. Lines end in `\n` or `\r\n`; a blank line ends an event; several `data:`
/// lines are joined with `\n`; comments (`:`) and other fields are skipped.
#[derive(Default)]
struct Sse {
    line: Vec<u8>,
    event: String,
    data: Option<String>,
}

impl Sse {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<(String, String)>) {
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if line.is_empty() {
                if let Some(d) = self.data.take() {
                    let ev = std::mem::take(&mut self.event);
                    out.push((if ev.is_empty() { "message".into() } else { ev }, d));
                }
                self.event.clear();
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.event = value.to_string(),
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                _ => {}
            }
        }
    }
}

/// What one stream measured; the streams' tallies are merged at the end.
#[derive(Default)]
struct Tally {
    ttft_ms: Vec<f64>,
    tpot_ms: Vec<f64>,
    token_events: u64,
    requests: u64,
    tokens: u64,
    answered_tokens: u64,
    mismatches: u64,
    errors: BTreeMap<String, u64>,
}

/// The measured window, and what every request compares against.
struct Run {
    client: reqwest::Client,
    url: String,
    body: bytes::Bytes,
    t0: Instant,
    t1: Instant,
    expect: Option<String>,
}

impl Run {
    fn inside(&self, t: Instant) -> bool {
        t >= self.t0 && t <= self.t1
    }
}

/// Sends one request and reads its stream to `done` (or to the end of the window). Returns false
/// when the request failed.
async fn one(run: &Run, t: &mut Tally) -> bool {
    let deadline = tokio::time::Instant::from_std(run.t1);
    let fail = |t: &mut Tally, kind: String| {
        if run.inside(Instant::now()) {
            *t.errors.entry(kind).or_default() += 1;
        }
        false
    };
    let sent = Instant::now();
    let req = run.client.post(&run.url).header("content-type", "application/json").body(run.body.clone());
    let mut resp = match tokio::time::timeout_at(deadline, req.send()).await {
        Err(_) => return true, // the window ended
        Ok(Err(e)) => return fail(t, if e.is_connect() { "connect".into() } else { "send".into() }),
        Ok(Ok(r)) => r,
    };
    if !resp.status().is_success() {
        let code = resp.status().as_u16();
        let _ = tokio::time::timeout_at(deadline, resp.bytes()).await;
        return fail(t, format!("http_{code}"));
    }
    let mut sse = Sse::default();
    let mut events = Vec::new();
    let mut last: Option<Instant> = None;
    let mut streamed = String::new();
    let mut events_seen = 0u64;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => return true,
            Ok(Err(_)) => return fail(t, "read".into()),
            Ok(Ok(None)) => return fail(t, "eof_before_done".into()),
            Ok(Ok(Some(c))) => c,
        };
        let now = Instant::now();
        events.clear();
        sse.feed(&chunk, &mut events);
        for (event, data) in events.drain(..) {
            match event.as_str() {
                "token" => {
                    events_seen += 1;
                    if run.inside(now) {
                        t.tokens += 1;
                        t.token_events += 1;
                        match last {
                            None if sent >= run.t0 => t.ttft_ms.push((now - sent).as_secs_f64() * 1e3),
                            Some(prev) if prev >= run.t0 => t.tpot_ms.push((now - prev).as_secs_f64() * 1e3),
                            _ => {}
                        }
                    }
                    last = Some(now);
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
                        streamed.push_str(v["text"].as_str().unwrap_or(""));
                    }
                }
                "done" => {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) else {
                        return fail(t, "done_not_json".into());
                    };
                    if run.inside(now) {
                        t.requests += 1;
                        let counted = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                        t.tokens += counted.saturating_sub(events_seen);
                        t.answered_tokens += counted;
                        let text = v["choices"][0]["text"].as_str().unwrap_or("");
                        if text != streamed || run.expect.as_deref().is_some_and(|e| e != text) {
                            t.mismatches += 1;
                        }
                    }
                    return true;
                }
                "error" => return fail(t, "event_error".into()),
                _ => {}
            }
        }
    }
}

/// One closed-loop stream: requests back to back from `begin` until the window ends.
async fn stream(run: Arc<Run>, begin: Instant) -> Tally {
    let mut t = Tally::default();
    tokio::time::sleep_until(begin.into()).await;
    while Instant::now() < run.t1 {
        if !one(&run, &mut t).await {
            let pause = (Instant::now() + Duration::from_millis(10)).min(run.t1);
            tokio::time::sleep_until(pause.into()).await;
        }
    }
    t
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        f64::NAN
    } else {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let client = reqwest::Client::builder().pool_max_idle_per_host(a.streams).tcp_nodelay(true).build().unwrap();
    let start = Instant::now();
    let t0 = start + Duration::from_secs_f64(a.warmup);
    let run = Arc::new(Run {
        client,
        url: format!("{}/complete", a.url),
        body: body(&a),
        t0,
        t1: t0 + Duration::from_secs_f64(a.seconds),
        expect: a.expect.clone(),
    });
    // Streams start evenly spread over the first half of the warm-up, so that they do not all feed their
    // prompts, and then finish, in the same steps.
    let spread = Duration::from_secs_f64(a.warmup / 2.0);
    let tasks: Vec<_> = (0..a.streams)
        .map(|i| tokio::spawn(stream(run.clone(), start + spread.mul_f64(i as f64 / a.streams as f64))))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.expect("a stream task panicked");
        all.ttft_ms.extend(t.ttft_ms);
        all.tpot_ms.extend(t.tpot_ms);
        all.token_events += t.token_events;
        all.requests += t.requests;
        all.tokens += t.tokens;
        all.answered_tokens += t.answered_tokens;
        all.mismatches += t.mismatches;
        for (k, n) in t.errors {
            *all.errors.entry(k).or_default() += n;
        }
    }
    all.ttft_ms.sort_by(|x, y| x.partial_cmp(y).unwrap());
    all.tpot_ms.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let out = serde_json::json!({
        "streams": a.streams,
        "duration_s": a.seconds,
        "warmup_s": a.warmup,
        "requests": all.requests,
        "requests_per_s": all.requests as f64 / a.seconds,
        "tokens": all.tokens,
        "tokens_per_s": all.tokens as f64 / a.seconds,
        "mean_tokens_per_request": if all.requests > 0 { all.answered_tokens as f64 / all.requests as f64 } else { f64::NAN },
        "token_events": all.token_events,
        "ttft_p50_ms": quantile(&all.ttft_ms, 0.5), "ttft_p99_ms": quantile(&all.ttft_ms, 0.99),
        "ttft_samples": all.ttft_ms.len(),
        "tpot_mean_ms": if all.tpot_ms.is_empty() { f64::NAN } else { all.tpot_ms.iter().sum::<f64>() / all.tpot_ms.len() as f64 },
        "tpot_p50_ms": quantile(&all.tpot_ms, 0.5), "tpot_p99_ms": quantile(&all.tpot_ms, 0.99),
        "tpot_max_ms": quantile(&all.tpot_ms, 1.0), "tpot_samples": all.tpot_ms.len(),
        "errors": all.errors.values().sum::<u64>(),
        "error_kinds": all.errors,
        "mismatches": all.mismatches,
    });
    println!("{out}");
}
