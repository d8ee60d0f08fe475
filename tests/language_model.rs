//! `POST /complete` over real HTTP: greedy and sampled decoding, stop strings, streaming, limits,
//! hostile inputs, disconnection, continuous batching and the V2 step. Most tests use the fixture
//! `tiny-lm` (greedy decoding spells the alphabet; a step with `<unk>` takes about 0.1 s); the
//! determinism test also runs the shipped fortunes-lstm.

mod common;

use common::{error_of, start, Server};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn complete(s: &Server, body: Value) -> Value {
    let r = s.post_json("/complete", body.clone()).await;
    assert_eq!(r.status(), 200, "{body}");
    assert_eq!(r.headers()["x-model-name"], "tiny-lm");
    r.json().await.unwrap()
}

/// The events of a streamed answer, as (event, data) pairs.
async fn events(s: &Server, body: Value) -> Vec<(String, Value)> {
    let r = s.post_json("/complete", body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    parse_sse(&text)
}

fn parse_sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty() && !b.starts_with(':'))
        .map(|block| {
            let mut ev = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    ev = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (ev, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}

#[tokio::test]
async fn greedy_decoding_follows_the_model_and_stops_at_its_end_token() {
    let s = start(&["tiny-lm"], &[]).await;
    let a = complete(&s, json!({"prompt": "d", "temperature": 0, "max_tokens": 10})).await;
    assert_eq!(a["choices"][0]["text"], "efghijklmn");
    assert_eq!(a["choices"][0]["finish_reason"], "length");
    assert_eq!(a["choices"][0]["tokens"], 10);
    assert_eq!(a["usage"], json!({"prompt_tokens": 2, "completion_tokens": 10, "total_tokens": 12}));
    // After 'z' the model draws its end token: "stop", and the end token counts but is not text.
    let a = complete(&s, json!({"prompt": "w", "temperature": 0, "max_tokens": 10})).await;
    assert_eq!(a["choices"][0]["text"], "xyz");
    assert_eq!(a["choices"][0]["finish_reason"], "stop");
    assert_eq!(a["choices"][0]["tokens"], 4);
    // An empty prompt starts from <s>; the default max_tokens is the config's (10).
    let a = complete(&s, json!({"temperature": 0})).await;
    assert_eq!(a["choices"][0]["text"], "abcdefghij");
    // Stop strings: the text ends before the first one.
    let a = complete(&s, json!({"prompt": "a", "temperature": 0, "max_tokens": 20, "stop": ["xyz", "fg"]})).await;
    assert_eq!(a["choices"][0]["text"], "bcde");
    assert_eq!(a["choices"][0]["finish_reason"], "stop");
    let st = s.metrics().await;
    assert!(st.contains("dlserve_lm_tokens_generated_total{model=\"tiny-lm\",version=\"1\"}"), "{st}");
    assert!(st.contains("dlserve_lm_time_to_first_token_seconds_count"));
    assert!(st.contains("dlserve_lm_time_per_output_token_seconds_count"));
}

#[tokio::test]
async fn a_seed_gives_the_same_text_and_each_choice_its_own() {
    let s = start(&["tiny-lm"], &[]).await;
    let body = json!({"prompt": "a", "temperature": 3.0, "max_tokens": 40, "seed": 11, "n": 3});
    let a = complete(&s, body.clone()).await;
    let b = complete(&s, body).await;
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(a["seed"], 11);
    let texts: Vec<&str> = a["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 3);
    assert!(texts[0] != texts[1] && texts[1] != texts[2], "choices differ: {texts:?}");
    // Choice i uses seed + i: choice 1 of seed 11 is choice 0 of seed 12.
    let c = complete(&s, json!({"prompt": "a", "temperature": 3.0, "max_tokens": 40, "seed": 12})).await;
    assert_eq!(c["choices"][0]["text"], a["choices"][1]["text"]);
    // Without a seed the answer names the one it drew, which reproduces it.
    let d = complete(&s, json!({"prompt": "a", "temperature": 3.0, "max_tokens": 40})).await;
    let e = complete(&s, json!({"prompt": "a", "temperature": 3.0, "max_tokens": 40, "seed": d["seed"]})).await;
    assert_eq!(d["choices"], e["choices"]);
    // top_k 1 and a tiny top_p are greedy whatever the temperature.
    for extra in [json!({"top_k": 1}), json!({"top_p": 0.01})] {
        let mut body = json!({"prompt": "c", "temperature": 50.0, "max_tokens": 5, "seed": 3});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        assert_eq!(complete(&s, body).await["choices"][0]["text"], "defgh");
    }
}

#[tokio::test]
async fn streaming_sends_tokens_then_the_whole_answer() {
    let s = start(&["tiny-lm"], &[]).await;
    let ev = events(&s, json!({"prompt": "a", "temperature": 0, "max_tokens": 6, "stream": true})).await;
    let tokens: Vec<&Value> = ev.iter().filter(|(e, _)| e == "token").map(|(_, d)| d).collect();
    assert_eq!(tokens.len(), 6, "{ev:?}");
    let joined: String = tokens.iter().map(|d| d["text"].as_str().unwrap()).collect();
    assert_eq!(joined, "bcdefg");
    let (last, done) = ev.last().unwrap();
    assert_eq!(last, "done");
    assert_eq!(done["choices"][0]["text"], "bcdefg");
    assert_eq!(done["usage"]["completion_tokens"], 6);

    // With a stop string, text that could start it is held back and never sent.
    let ev =
        events(&s, json!({"prompt": "a", "temperature": 0, "max_tokens": 20, "stop": ["efx", "gh"], "stream": true}))
            .await;
    let joined: String =
        ev.iter().filter(|(e, _)| e == "token").map(|(_, d)| d["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(joined, "bcdef");
    assert_eq!(ev.last().unwrap().1["choices"][0]["text"], "bcdef");
    assert_eq!(ev.last().unwrap().1["choices"][0]["finish_reason"], "stop");

    // n streams interleave, each event naming its choice; the final event has them all.
    let ev = events(&s, json!({"prompt": "p", "temperature": 0, "max_tokens": 3, "n": 2, "stream": true})).await;
    for i in 0..2 {
        let t: String = ev
            .iter()
            .filter(|(e, d)| e == "token" && d["index"] == i)
            .map(|(_, d)| d["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(t, "qrs");
    }
    assert_eq!(ev.last().unwrap().1["choices"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn every_field_is_checked_with_the_limit_named() {
    let s = start(&["tiny-lm"], &[]).await;
    let megabyte = "a".repeat(1 << 20);
    let cases = [
        (json!({"prompt": megabyte}), "prompt", "at most 100"),
        (json!({"max_tokens": 1_000_000_000u64}), "max_tokens", "between 1 and 64"),
        (json!({"max_tokens": 0}), "max_tokens", "between 1 and 64"),
        (json!({"temperature": -1}), "temperature", "between 0"),
        (json!({"temperature": 1000}), "temperature", "100"),
        (json!({"top_k": 31}), "top_k", "30"),
        (json!({"top_p": 0}), "top_p", "greater than 0"),
        (json!({"top_p": 1.5}), "top_p", "at most 1"),
        (json!({"n": 0}), "n", "between 1 and 4"),
        (json!({"n": 5}), "n", "between 1 and 4"),
        (json!({"stop": vec!["a"; 9]}), "stop", "at most 8"),
        (json!({"stop": [""]}), "stop[0]", "1 to 64"),
        (json!({"stop": ["x".repeat(65)]}), "stop[0]", "1 to 64"),
        (json!({"prompt": "abc!"}), "prompt", "'!' (U+0021) at position 3"),
        (json!({"prompt": "ab", "colour": 1}), "colour", "unknown field"),
    ];
    for (body, field, msg) in cases {
        let (status, ty, message, f) = error_of(s.post_json("/complete", body.clone()).await).await;
        assert_eq!((status, ty.as_str()), (422, "invalid_input"), "{message}");
        assert_eq!(f.as_deref(), Some(field), "{message}");
        assert!(message.contains(msg), "{field}: {message}");
    }
    let (status, _, message, field) = error_of(s.post_json("/complete", json!({"max_tokens": "ten"})).await).await;
    assert!(status == 400 || status == 422, "{status} {message}");
    assert_eq!(field.as_deref(), Some("max_tokens"), "{message}");
    // Temperature 0 is greedy, not an error; the server keeps serving after all of the above.
    let a = complete(&s, json!({"prompt": "x", "temperature": 0, "max_tokens": 2})).await;
    assert_eq!(a["choices"][0]["text"], "yz");
}

#[tokio::test]
async fn unknown_characters_map_when_the_config_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&common::fixtures().join("tiny-lm"), &tmp.path().join("tiny-lm"));
    common::edit_config(tmp.path(), "tiny-lm", "unknown = \"refuse\"", "unknown = \"<unk>\"");
    let s = common::start_in(tmp.path().to_path_buf(), Some(tmp), &[]).await;
    // 'é' becomes <unk>, after which the model goes on with a space, then 'a'.
    let a = complete(&s, json!({"prompt": "é", "temperature": 0, "max_tokens": 3})).await;
    assert_eq!(a["choices"][0]["text"], " ab");
}

/// A server whose tiny-lm maps unknown characters (slow steps) and holds at most 4 sequences.
async fn slow_server() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&common::fixtures().join("tiny-lm"), &tmp.path().join("tiny-lm"));
    common::edit_config(tmp.path(), "tiny-lm", "unknown = \"refuse\"", "unknown = \"<unk>\"");
    common::edit_config(tmp.path(), "tiny-lm", "max_sequences = 40", "max_sequences = 4");
    common::start_in(tmp.path().to_path_buf(), Some(tmp), &[]).await
}

async fn active(s: &Server) -> f64 {
    s.metric("dlserve_lm_active_sequences{model=\"tiny-lm\",version=\"1\"}").await
}

#[tokio::test]
async fn beyond_the_sequence_limit_requests_get_429_at_once() {
    let s = slow_server().await;
    // Three sequences whose prompts take about 20 slow steps (about 2 s) hold 3 of the 4 slots.
    let slow = json!({"prompt": "é".repeat(20), "temperature": 0, "max_tokens": 2, "n": 3});
    let held = {
        let (c, url) = (s.client.clone(), s.url("/complete"));
        tokio::spawn(async move { c.post(url).json(&slow).send().await.unwrap().json::<Value>().await.unwrap() })
    };
    let t0 = Instant::now();
    while active(&s).await < 3.0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the slow request never became active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = s.post_json("/complete", json!({"prompt": "a", "n": 2})).await;
    assert!(!held.is_finished(), "the 429 came while the slots were held");
    assert_eq!(r.headers()["retry-after"], "1");
    let (status, ty, message, _) = error_of(r).await;
    assert_eq!((status, ty.as_str()), (429, "overloaded"));
    assert!(message.contains("3 of 4 sequences") && message.contains("max_sequences"), "{message}");
    // One still fits.
    let a = complete(&s, json!({"prompt": "a", "temperature": 0, "max_tokens": 1})).await;
    assert_eq!(a["choices"][0]["text"], "b");
    let done = held.await.unwrap();
    assert_eq!(done["choices"][0]["text"], " a");
    assert_eq!(active(&s).await, 0.0);
}

#[tokio::test]
async fn a_client_that_disconnects_frees_its_sequences() {
    let s = slow_server().await;
    let before = s.metric("dlserve_lm_tokens_generated_total{model=\"tiny-lm\"").await;
    for stream in [true, false] {
        let body = json!({"prompt": "é".repeat(40), "temperature": 0, "max_tokens": 64, "n": 4, "stream": stream});
        let (c, url) = (s.client.clone(), s.url("/complete"));
        let req = tokio::spawn(async move {
            let r = c.post(url).json(&body).send().await.unwrap();
            // Read one chunk of the stream (a keep-alive or nothing yet), then hang up.
            let _ = tokio::time::timeout(Duration::from_millis(50), r.bytes_stream().next()).await;
        });
        let t0 = Instant::now();
        while active(&s).await < 4.0 {
            assert!(t0.elapsed() < Duration::from_secs(10), "never active");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if stream {
            req.await.unwrap(); // the response is dropped: the client is gone
        } else {
            req.abort(); // the request future is dropped mid-flight
        }
        // The prompt alone needs 41 steps of about 0.1 s; the slots come back well before that.
        let t0 = Instant::now();
        while active(&s).await > 0.0 {
            assert!(t0.elapsed() < Duration::from_secs(3), "slots not freed after the client left");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let after = s.metric("dlserve_lm_tokens_generated_total{model=\"tiny-lm\"").await;
    assert_eq!(after, before, "no token was generated for clients that had left");
    let a = complete(&s, json!({"prompt": "a", "temperature": 0, "max_tokens": 2, "n": 4})).await;
    assert_eq!(a["choices"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn sequences_decode_together_and_each_text_is_its_own() {
    let s = start(&["tiny-lm"], &[]).await;
    let body = |seed: u64, prompt: &str| json!({"prompt": prompt, "temperature": 3.0, "max_tokens": 60, "seed": seed});
    let alone = complete(&s, body(99, "k")).await["choices"][0]["text"].clone();
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let (c, url) = (s.client.clone(), s.url("/complete"));
        let b = if i == 17 { body(99, "k") } else { body(i, &"m".repeat(i as usize)) };
        tasks.push(tokio::spawn(
            async move { c.post(url).json(&b).send().await.unwrap().json::<Value>().await.unwrap() },
        ));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(answers[17]["choices"][0]["text"], alone, "the same text beside 31 others");
    let sum = s.metric("dlserve_lm_step_batch_size_sum{model=\"tiny-lm\"").await;
    let count = s.metric("dlserve_lm_step_batch_size_count{model=\"tiny-lm\"").await;
    assert!(sum / count > 1.5, "mean step batch {}", sum / count);
}

#[tokio::test]
async fn the_step_function_is_a_v2_model() {
    let s = start(&["tiny-lm"], &[]).await;
    let meta: Value = s.get("/v2/models/tiny-lm").await.json().await.unwrap();
    assert_eq!(meta["inputs"][0], json!({"name": "tokens", "datatype": "INT64", "shape": [-1, 1]}));
    assert_eq!(meta["inputs"][1], json!({"name": "state", "datatype": "FP32", "shape": [-1, 2]}));
    assert_eq!(meta["outputs"][0]["name"], "logits");
    assert_eq!(meta["outputs"][1]["name"], "next_state");
    // A V2 client can drive decoding: <s> then 'z' (id 29).
    let body = json!({"inputs": [
        {"name": "tokens", "shape": [2, 1], "datatype": "INT64", "data": [0, 29]},
        {"name": "state", "shape": [2, 2], "datatype": "FP32", "data": [0, 0, 5, 7]}]});
    let r: Value = s.post_json("/v2/models/tiny-lm/infer", body).await.json().await.unwrap();
    let logits = r["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(logits.len(), 60);
    assert_eq!(logits[4], 8.0, "'a' after <s>");
    assert_eq!(logits[30 + 1], 8.0, "the end token after 'z'");
    assert_eq!(r["outputs"][1]["data"], json!([1.0, 0.0, 6.0, 29.0]));
    let bad = json!({"inputs": [
        {"name": "tokens", "shape": [1, 1], "datatype": "INT64", "data": [30]},
        {"name": "state", "shape": [1, 2], "datatype": "FP32", "data": [0, 0]}]});
    let r = s.post_json("/v2/models/tiny-lm/infer", bad).await;
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("token id from 0 to 29"), "{e}");
}

/// The shipped language models (real LSTM and GRU steps, whose logits may differ in the last bits
/// with the batch they run in): a seeded text is the same decoded alone or beside 31 others, and
/// the same streamed or whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_models_write_the_same_text_alone_or_beside_31_others() {
    let tmp = tempfile::tempdir().unwrap();
    for m in ["fortunes-lstm", "fortunes-gru"] {
        common::copy_dir(&common::shipped_models().join(m), &tmp.path().join(m));
    }
    let s = common::start_in(tmp.path().to_path_buf(), Some(tmp), &[]).await;
    assert_eq!(s.get("/health/ready").await.status(), 200);
    for model in ["fortunes-lstm", "fortunes-gru"] {
        let body = |seed: u64, prompt: &str| json!({"model": model, "prompt": prompt, "temperature": 0.8, "top_k": 40, "max_tokens": 150, "seed": seed});
        let post = |b: Value| {
            let (c, url) = (s.client.clone(), s.url("/complete"));
            async move {
                let r = c.post(url).json(&b).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()
            }
        };
        let alone = post(body(2024, "Q: What is ")).await;
        let text = alone["choices"][0]["text"].as_str().unwrap().to_string();
        assert!(!text.is_empty(), "{model}: {alone}");
        let mut tasks = Vec::new();
        for i in 0..32u64 {
            let b = if i == 9 { body(2024, "Q: What is ") } else { body(i, &"The ".repeat(1 + i as usize % 5)) };
            tasks.push(tokio::spawn(post(b)));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        assert_eq!(answers[9]["choices"][0]["text"], text, "{model}: the same text beside 31 others");
        let streamed = s.post_json("/complete", {
            let mut b = body(2024, "Q: What is ");
            b["stream"] = json!(true);
            b
        });
        let ev = parse_sse(&streamed.await.text().await.unwrap());
        let joined: String =
            ev.iter().filter(|(e, _)| e == "token").map(|(_, d)| d["text"].as_str().unwrap().to_string()).collect();
        assert_eq!(joined, text, "{model}: streamed as whole");
        let sum = s.metric(&format!("dlserve_lm_step_batch_size_sum{{model=\"{model}\"")).await;
        let count = s.metric(&format!("dlserve_lm_step_batch_size_count{{model=\"{model}\"")).await;
        assert!(sum / count > 1.0, "{model}: mean step batch {}", sum / count);
    }
}
