//! Open Inference Protocol over real HTTP: metadata, health, JSON and binary infer, output
//! selection, conversions, errors in the protocol's shape, the repository extension, and an
//! independent client (tritonclient) on every default model.
mod common;
use common::*;
use serde_json::json;

const TOKEN: &str = "v2-token";

async fn v2_error(r: reqwest::Response) -> (u16, String) {
    let st = r.status().as_u16();
    let b: serde_json::Value = r.json().await.unwrap();
    let msg =
        b["error"].as_str().unwrap_or_else(|| panic!("V2 error shape is {{\"error\": \"...\"}}: {b}")).to_string();
    (st, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_health() {
    let s = start(&["tiny-anomaly", "tiny-generator", "tiny-forecaster"], &[]).await;
    let meta: serde_json::Value = s.get("/v2").await.json().await.unwrap();
    assert_eq!(meta["name"], "dlserve");
    assert!(meta["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));
    assert_eq!(s.get("/v2/health/live").await.status(), 200);
    assert_eq!(s.get("/v2/health/ready").await.status(), 200);
    let m: serde_json::Value = s.get("/v2/models/tiny-generator").await.json().await.unwrap();
    assert_eq!(m["platform"], "pytorch_torchscript");
    assert_eq!(m["versions"], json!(["1"]));
    assert_eq!(
        m["inputs"],
        json!([{"name": "z", "datatype": "FP32", "shape": [-1, 4]}, {"name": "labels", "datatype": "INT64", "shape": [-1]}])
    );
    assert_eq!(m["outputs"], json!([{"name": "images", "datatype": "FP32", "shape": [-1, 1, 2, 2]}]));
    let f: serde_json::Value = s.get("/v2/models/tiny-forecaster/versions/1").await.json().await.unwrap();
    assert_eq!(f["inputs"][0]["shape"], json!([-1, -1, 1]), "variable history length is -1");
    assert_eq!(s.get("/v2/models/tiny-anomaly/ready").await.status(), 200);
    assert_eq!(s.get("/v2/models/tiny-anomaly/versions/1/ready").await.status(), 200);
    let (st, msg) = v2_error(s.get("/v2/models/nope").await).await;
    assert_eq!(st, 404, "{msg}");
    let (st, _) = v2_error(s.get("/v2/models/tiny-anomaly/versions/9/ready").await).await;
    assert_eq!(st, 404);
    let (st, _) = v2_error(s.get("/v2/models/tiny-anomaly/versions/x").await).await;
    assert_eq!(st, 400);
    let (st, _) = v2_error(s.get("/v2/no/such/route").await).await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_infer_with_conversions_ids_and_output_selection() {
    let s = start(&["tiny-anomaly", "tiny-generator"], &[]).await;
    // Nested FP64 data converts to the model's FP32.
    let body = json!({"id": "req-1", "inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2, 3], [4, 5, 6]]}]});
    let r = s.post_json("/v2/models/tiny-anomaly/infer", body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-model-name"], "tiny-anomaly");
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["id"], "req-1");
    assert_eq!(b["model_version"], "1");
    assert_eq!(b["outputs"][0]["name"], "reconstruction");
    assert_eq!(b["outputs"][0]["shape"], json!([2, 3]));
    assert_eq!(b["outputs"][0]["data"], json!([0.5, 1.0, 1.5, 2.0, 2.5, 3.0]));
    // INT32 data converts exactly; the positional name input__0 is accepted.
    let body = json!({"inputs": [{"name": "INPUT__0", "shape": [1, 3], "datatype": "INT32", "data": [2, 4, 6]}], "outputs": [{"name": "reconstruction"}]});
    let b: serde_json::Value =
        s.post_json("/v2/models/tiny-anomaly/versions/1/infer", body).await.json().await.unwrap();
    assert_eq!(b["outputs"][0]["data"], json!([1.0, 2.0, 3.0]));
    // Two inputs: z and INT64 labels.
    let body = json!({"inputs": [
        {"name": "z", "shape": [2, 4], "datatype": "FP32", "data": [0, 0, 0, 0, 0, 0, 0, 0]},
        {"name": "labels", "shape": [2], "datatype": "INT64", "data": [0, 2]}]});
    let b: serde_json::Value = s.post_json("/v2/models/tiny-generator/infer", body).await.json().await.unwrap();
    let d: Vec<f64> = b["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(d.len(), 8);
    assert!(d[..4].iter().all(|v| v.abs() < 1e-6) && d[4..].iter().all(|v| (v - 0.2f64.tanh()).abs() < 1e-6), "{d:?}");
    // Unsafe conversions and bad requests are 4xx with a clear message.
    let cases = [
        (json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}]}), "fill shape"),
        (
            json!({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
            "dimension 1",
        ),
        (
            json!({"inputs": [{"name": "nope", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
            "unknown input",
        ),
        (
            json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP16", "data": [1, 2, 3]}]}),
            "not supported",
        ),
        (
            json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 99999999999i64]}]}),
            "exactly in FP32",
        ),
        (
            json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], "outputs": [{"name": "x"}]}),
            "unknown output",
        ),
        (json!({"inputs": []}), "takes 1 input"),
    ];
    for (body, expect) in cases {
        let (st, msg) = v2_error(s.post_json("/v2/models/tiny-anomaly/infer", body.clone()).await).await;
        assert!((400..500).contains(&st), "{body}: {st}");
        assert!(msg.contains(expect), "{body}: {msg}");
    }
    let body = json!({"inputs": [
        {"name": "z", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]},
        {"name": "labels", "shape": [1], "datatype": "FP32", "data": [1.0]}]});
    let (st, msg) = v2_error(s.post_json("/v2/models/tiny-generator/infer", body).await).await;
    assert_eq!(st, 400);
    assert!(msg.contains("cannot be converted"), "{msg}");
    let body = json!({"inputs": [
        {"name": "z", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]},
        {"name": "labels", "shape": [1], "datatype": "INT64", "data": [3]}]});
    let (st, msg) = v2_error(s.post_json("/v2/models/tiny-generator/infer", body).await).await;
    assert_eq!(st, 422, "{msg}");
    let r = s.post_raw_json("/v2/models/tiny-anomaly/infer", "{").await;
    assert_eq!(v2_error(r).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_tensor_data_in_and_out() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let header = json!({"inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}],
        "outputs": [{"name": "reconstruction", "parameters": {"binary_data": true}}]});
    let header = serde_json::to_vec(&header).unwrap();
    let mut body = header.clone();
    for v in [2.0f32, 4.0, 6.0, 8.0, 10.0, 12.0] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let r = s
        .client
        .post(s.url("/v2/models/tiny-anomaly/infer"))
        .header("inference-header-content-length", header.len().to_string())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let n: usize = r.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = r.bytes().await.unwrap();
    let head: serde_json::Value = serde_json::from_slice(&bytes[..n]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 24);
    assert!(head["outputs"][0].get("data").is_none());
    let vals: Vec<f32> = bytes[n..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(vals, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // A binary size that does not match the shape is refused.
    let header = serde_json::to_vec(&json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]})).unwrap();
    let mut body = header.clone();
    body.extend_from_slice(&[0u8; 8]);
    let r = s
        .client
        .post(s.url("/v2/models/tiny-anomaly/infer"))
        .header("inference-header-content-length", header.len().to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    let (st, msg) = v2_error(r).await;
    assert_eq!(st, 400);
    assert!(msg.contains("binary_data_size"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_shares_the_queue_and_metrics_with_the_domain_endpoints() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let rows: Vec<f32> = (0..30).map(|i| i as f32).collect();
    let body = json!({"inputs": [{"name": "features", "shape": [10, 3], "datatype": "FP32", "data": rows}]});
    let r = s.post_json("/v2/models/tiny-anomaly/infer", body).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["server-timing"].to_str().unwrap().contains("batch;desc=\"8\""),
        "10 rows = 10 items, cut at max_batch_size 8"
    );
    assert_eq!(s.metric("dlserve_items_total{fate=\"computed\",model=\"tiny-anomaly\",version=\"1\"}").await, 10.0);
    assert_eq!(
        s.metric("dlserve_requests_total{endpoint=\"/v2/models/{model}/infer\",model=\"tiny-anomaly\",outcome=\"ok\",protocol=\"http\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_index_is_open_and_load_unload_need_the_admin_token() {
    let s = start(&["tiny-anomaly", "tiny-classifier"], &["--admin-token", TOKEN]).await;
    // The index only reads: no token needed, as for GET /models (and as in Triton).
    let idx: serde_json::Value =
        s.client.post(s.url("/v2/repository/index")).send().await.unwrap().json().await.unwrap();
    assert_eq!(idx.as_array().unwrap().len(), 2);
    let r = s.client.post(s.url("/v2/repository/models/tiny-anomaly/unload")).send().await.unwrap();
    let (st, _) = v2_error(r).await;
    assert_eq!(st, 401);
    let r = s.client.post(s.url("/v2/repository/models/tiny-anomaly/unload")).bearer_auth("nope").send().await.unwrap();
    let (st, _) = v2_error(r).await;
    assert_eq!(st, 403);
    assert_eq!(idx[0]["state"], "READY");
    let r = s.client.post(s.url("/v2/repository/models/tiny-anomaly/unload")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.get("/v2/models/tiny-anomaly/ready").await.status(), 503);
    let r = s.client.post(s.url("/v2/repository/models/tiny-anomaly/load")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.get("/v2/models/tiny-anomaly/ready").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_works_unchanged_on_every_default_model() {
    let s = start_in(shipped_models(), None, &[]).await;
    let host = s.base.trim_start_matches("http://").to_string();
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/v2_client.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(&host)
        .output()
        .await
        .expect("run the V2 client (make setup installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tritonclient checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all V2 client checks passed"));
}
