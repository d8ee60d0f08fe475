//! One error shape per router, on every path that can answer with an error: `/v2` answers
//! `{"error": "..."}` (the Open Inference Protocol's shape) for handler errors, drain, the request
//! timeout, a panic, the body limit, a wrong method and an unknown route under `/v2`; every other
//! route answers `{"error": {"type", "message", ...}}`.
mod common;
use common::*;
use std::sync::atomic::Ordering;

/// Asserts the protocol's shape and returns (status, message).
async fn v2_error(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("a JSON error body");
    let msg = body["error"].as_str().unwrap_or_else(|| panic!("V2 error shape {{\"error\": \"...\"}}: {body}"));
    (status, msg.to_string())
}

fn features(a: f64, b: f64) -> serde_json::Value {
    serde_json::json!({"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [a, b]}]})
}

#[tokio::test]
async fn v2_handler_errors_unknown_routes_and_wrong_methods_use_the_protocol_shape() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let (st, msg) = v2_error(s.post_json("/v2/models/nope/infer", features(0.0, 0.0)).await).await;
    assert_eq!(st, 404);
    assert!(msg.contains("nope"), "{msg}");
    assert_eq!(v2_error(s.get("/v2/no/such/route").await).await.0, 404);
    assert_eq!(v2_error(s.get("/v2/models/tiny-anomaly/infer").await).await.0, 405);
    // The domain router keeps its own shape.
    let (st, ty, _, _) = error_of(s.get("/no/such/route").await).await;
    assert_eq!((st, ty.as_str()), (404, "not_found"));
    let (st, ty, _, _) = error_of(s.get("/classify").await).await;
    assert_eq!((st, ty.as_str()), (405, "method_not_allowed"));
}

#[tokio::test]
async fn v2_body_limit_and_drain_use_the_protocol_shape() {
    let s = start(&["tiny-anomaly"], &["--body-limit-bytes", "200"]).await;
    let big = serde_json::json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
        "data": [0.0, 0.0, 0.0], "padding": "x".repeat(400)}]});
    let (st, msg) = v2_error(s.post_json("/v2/models/tiny-anomaly/infer", big.clone()).await).await;
    assert_eq!(st, 413, "{msg}");
    let (st, ty, _, _) = error_of(s.post_json("/anomaly", big).await).await;
    assert_eq!((st, ty.as_str()), (413, "payload_too_large"));
    s.state.draining.store(true, Ordering::SeqCst);
    let r = s.post_json("/v2/models/tiny-anomaly/infer", features(0.0, 0.0)).await;
    assert_eq!(r.headers()["connection"], "close");
    let (st, msg) = v2_error(r).await;
    assert_eq!(st, 503);
    assert!(msg.contains("shutting down"), "{msg}");
    let (st, ty, _, _) = error_of(s.post_json("/anomaly", serde_json::json!({"rows": [[1, 2, 3]]})).await).await;
    assert_eq!((st, ty.as_str()), (503, "shutting_down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_request_timeout_uses_the_protocol_shape() {
    let s = start(&["faulty"], &["--request-timeout-ms", "150"]).await;
    // Row [99, n] busy-loops in the model for far longer than the request timeout.
    let (st, msg) = v2_error(s.post_json("/v2/models/faulty/infer", features(99.0, 2000.0)).await).await;
    assert_eq!(st, 504);
    assert!(msg.contains("request timeout of 150 ms"), "{msg}");
    let (st, ty, _, _) =
        error_of(s.post_json("/anomaly", serde_json::json!({"model": "faulty", "rows": [[99, 2000]]})).await).await;
    assert_eq!((st, ty.as_str()), (504, "deadline_exceeded"));
}

#[tokio::test]
async fn a_panic_answers_in_the_shape_of_its_router() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let header = dlserve::api::middleware::PANIC_HEADER;
    let r = s.client.post(s.url("/v2/models/tiny-anomaly/infer")).header(header, "1").json(&features(0.0, 0.0));
    let (st, msg) = v2_error(r.send().await.unwrap()).await;
    assert_eq!(st, 500);
    assert!(!msg.contains("fault injection"), "panic details stay in the log: {msg}");
    let r = s.client.get(s.url("/models")).header(header, "1").send().await.unwrap();
    let (st, ty, _, _) = error_of(r).await;
    assert_eq!((st, ty.as_str()), (500, "internal"));
    // The server keeps serving.
    assert_eq!(s.get("/health/live").await.status(), 200);
}
