//! Open-loop load generator for the Open Inference Protocol, one tool for its three wire formats
//! so their rows in BENCHMARKS.md differ only in the format: REST with JSON tensors, REST with
//! binary tensors, and gRPC with raw tensors (what tritonclient sends). Used by
//! `scripts/bench-protocols`.
//!
//! Requests are sent on a fixed schedule (`--rate` per second for `--seconds`), each on its own
//! task, and a latency counts from the request's scheduled send time, not from when it was
//! actually sent (latency correction), so a stalled client or server cannot hide queueing.
//!
//! ```text
//! cargo run --release --example v2_load -- --url http://127.0.0.1:8080 --model cancer-ae \
//!     --golden tests/data/golden/cancer-ae.json --mode grpc --rate 500 --seconds 10
//! ```
//! Prints one JSON object: offered and achieved rate, answered, errors, p50/p90/p99/max in ms.
use dlserve::api::grpc::pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Json,
    Binary,
    Grpc,
}

struct Args {
    url: String,
    model: String,
    golden: String,
    mode: Mode,
    rate: f64,
    seconds: f64,
    connections: usize,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        model: String::new(),
        golden: String::new(),
        mode: Mode::Json,
        rate: 100.0,
        seconds: 10.0,
        connections: 16,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--url" => a.url = v,
            "--model" => a.model = v,
            "--golden" => a.golden = v,
            "--rate" => a.rate = v.parse().expect("--rate is a number"),
            "--seconds" => a.seconds = v.parse().expect("--seconds is a number"),
            "--connections" => a.connections = v.parse().expect("--connections is a number"),
            "--mode" => {
                a.mode = match v.as_str() {
                    "json" => Mode::Json,
                    "binary" => Mode::Binary,
                    "grpc" => Mode::Grpc,
                    other => panic!("--mode json|binary|grpc, not {other}"),
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!a.model.is_empty() && !a.golden.is_empty(), "--model and --golden are required");
    a
}

/// One row of the batch (the first) of each golden input: name, datatype, shape, values.
struct Tensor {
    name: String,
    datatype: &'static str,
    shape: Vec<i64>,
    f32s: Vec<f32>,
    i64s: Vec<i64>,
}

impl Tensor {
    fn bytes(&self) -> Vec<u8> {
        if self.datatype == "FP32" {
            self.f32s.iter().flat_map(|x| x.to_le_bytes()).collect()
        } else {
            self.i64s.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
    }
}

async fn tensors(a: &Args) -> Vec<Tensor> {
    let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&a.golden).unwrap()).unwrap();
    let meta: serde_json::Value = reqwest::get(format!("{}/v2/models/{}", a.url, a.model))
        .await
        .expect("the server answers")
        .json()
        .await
        .unwrap();
    g["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(meta["inputs"].as_array().unwrap())
        .map(|(i, spec)| {
            let mut shape: Vec<i64> = i["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
            let per: usize = shape[1..].iter().product::<i64>() as usize;
            shape[0] = 1;
            let data = &i["data"];
            let mut flat = Vec::new();
            fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
                match v {
                    serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                    x => out.push(x.as_f64().unwrap()),
                }
            }
            walk(data, &mut flat);
            flat.truncate(per);
            let int = i["dtype"] == "int64";
            Tensor {
                name: spec["name"].as_str().unwrap().to_string(),
                datatype: if int { "INT64" } else { "FP32" },
                shape,
                f32s: if int { vec![] } else { flat.iter().map(|x| *x as f32).collect() },
                i64s: if int { flat.iter().map(|x| *x as i64).collect() } else { vec![] },
            }
        })
        .collect()
}

/// What one request needs, built once and cloned per request.
enum Prepared {
    Rest { url: String, body: bytes::Bytes, header_len: Option<usize> },
    Grpc(pb::ModelInferRequest),
}

fn prepare(a: &Args, ts: &[Tensor]) -> Prepared {
    match a.mode {
        Mode::Grpc => Prepared::Grpc(pb::ModelInferRequest {
            model_name: a.model.clone(),
            inputs: ts
                .iter()
                .map(|t| pb::model_infer_request::InferInputTensor {
                    name: t.name.clone(),
                    datatype: t.datatype.into(),
                    shape: t.shape.clone(),
                    ..Default::default()
                })
                .collect(),
            raw_input_contents: ts.iter().map(|t| t.bytes().into()).collect(),
            ..Default::default()
        }),
        Mode::Json => {
            let inputs: Vec<serde_json::Value> = ts
                .iter()
                .map(|t| {
                    let data = if t.datatype == "FP32" { serde_json::json!(t.f32s) } else { serde_json::json!(t.i64s) };
                    serde_json::json!({"name": t.name, "shape": t.shape, "datatype": t.datatype, "data": data})
                })
                .collect();
            Prepared::Rest {
                url: format!("{}/v2/models/{}/infer", a.url, a.model),
                body: serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).unwrap().into(),
                header_len: None,
            }
        }
        Mode::Binary => {
            let inputs: Vec<serde_json::Value> = ts
                .iter()
                .map(|t| {
                    serde_json::json!({"name": t.name, "shape": t.shape, "datatype": t.datatype,
                    "parameters": {"binary_data_size": t.bytes().len()}})
                })
                .collect();
            let mut body =
                serde_json::to_vec(&serde_json::json!({"inputs": inputs, "parameters": {"binary_data_output": true}}))
                    .unwrap();
            let n = body.len();
            for t in ts {
                body.extend(t.bytes());
            }
            Prepared::Rest {
                url: format!("{}/v2/models/{}/infer", a.url, a.model),
                body: body.into(),
                header_len: Some(n),
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let ts = tensors(&a).await;
    let prepared = Arc::new(prepare(&a, &ts));
    // A pool of connections, requests spread round-robin: HTTP/1.1 keep-alive for REST, HTTP/2
    // channels for gRPC.
    let http = reqwest::Client::builder().pool_max_idle_per_host(a.connections * 4).build().unwrap();
    let mut channels = Vec::new();
    if a.mode == Mode::Grpc {
        for _ in 0..a.connections {
            let ch = tonic::transport::Channel::from_shared(a.url.clone()).unwrap().connect().await.unwrap();
            channels.push(pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(ch));
        }
    }
    let total = (a.rate * a.seconds).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let start = Instant::now() + Duration::from_millis(50);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, Duration)>();
    for i in 0..total {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let tx = tx.clone();
        let prepared = prepared.clone();
        let http = http.clone();
        let grpc = channels.get(i % channels.len().max(1)).cloned();
        tokio::spawn(async move {
            let ok = match &*prepared {
                Prepared::Rest { url, body, header_len } => {
                    let mut r = http.post(url).body(body.clone());
                    r = match header_len {
                        Some(n) => r
                            .header("content-type", "application/octet-stream")
                            .header("inference-header-content-length", n.to_string()),
                        None => r.header("content-type", "application/json"),
                    };
                    match r.send().await {
                        Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                        Err(_) => false,
                    }
                }
                Prepared::Grpc(req) => grpc.expect("a channel").model_infer(req.clone()).await.is_ok(),
            };
            let _ = tx.send((ok, at.elapsed()));
        });
    }
    drop(tx);
    let mut lat = Vec::with_capacity(total);
    let mut errors = 0usize;
    while let Some((ok, d)) = rx.recv().await {
        if ok {
            lat.push(d.as_secs_f64() * 1e3);
        } else {
            errors += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    lat.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let q = |p: f64| if lat.is_empty() { f64::NAN } else { lat[((lat.len() - 1) as f64 * p).round() as usize] };
    let out = serde_json::json!({
        "mode": match a.mode { Mode::Json => "rest-json", Mode::Binary => "rest-binary", Mode::Grpc => "grpc" },
        "model": a.model,
        "offered_rps": a.rate,
        "achieved_rps": lat.len() as f64 / wall,
        "answered": lat.len(),
        "errors": errors,
        "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": q(1.0),
    });
    println!("{out}");
}
