//! Service skeleton over real HTTP: error shape, request ids, health, OpenAPI, limits.
mod common;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_one_shape() {
    let s = start(&["tiny-anomaly"], &["--body-limit-bytes", "1000"]).await;
    let (st, ty, _, _) = error_of(s.get("/no/such/route").await).await;
    assert_eq!((st, ty.as_str()), (404, "not_found"));
    let (st, ty, _, _) = error_of(s.client.delete(s.url("/anomaly")).send().await.unwrap()).await;
    assert_eq!((st, ty.as_str()), (405, "method_not_allowed"));
    let malformed = s.post_raw_json("/anomaly", "{\"rows\": [").await;
    let (st, ty, _, _) = error_of(malformed).await;
    assert_eq!((st, ty.as_str()), (400, "bad_request"));
    let wrong_type =
        s.client.post(s.url("/anomaly")).header("content-type", "text/csv").body("1,2,3").send().await.unwrap();
    let (st, ty, _, _) = error_of(wrong_type).await;
    assert_eq!((st, ty.as_str()), (415, "unsupported_media_type"));
    let big = serde_json::json!({"rows": [vec![1.0; 400]]});
    let (st, ty, _, _) = error_of(s.post_json("/anomaly", big).await).await;
    assert_eq!((st, ty.as_str()), (413, "payload_too_large"));
    let (st, ty, msg, field) = error_of(s.post_json("/anomaly", serde_json::json!({"rows": [[1, 2]]})).await).await;
    assert_eq!((st, ty.as_str(), field.as_deref()), (422, "invalid_input", Some("rows[0]")));
    assert!(msg.contains("3 features"), "{msg}");
    let (st, _, msg, field) = error_of(s.post_json("/anomaly", serde_json::json!({"rowz": []})).await).await;
    assert_eq!(st, 422);
    assert!(msg.contains("rowz") || field.as_deref() == Some("rowz"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_accepted_and_returned() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let r = s.client.get(s.url("/health/live")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = s.get("/health/live").await;
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 16, "a generated id: {id}");
    let r2 = s.get("/no/route").await;
    assert!(r2.headers().contains_key("x-request-id"), "errors carry the id too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_tells_the_truth() {
    let s = start(&["tiny-anomaly"], &[]).await;
    assert_eq!(s.get("/health/live").await.status(), 200);
    let r = s.get("/health/ready").await;
    assert_eq!(r.status(), 200);
    let s = start(&["tiny-anomaly", "bad-contract"], &[]).await;
    let r = s.get("/health/ready").await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    let why = body["not_ready"].to_string();
    assert!(why.contains("bad-contract") && why.contains("contract"), "{why}");
    // The healthy model still serves.
    assert_eq!(s.post_json("/anomaly", serde_json::json!({"rows": [[1, 2, 3]]})).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_is_served_and_the_committed_copy_is_current() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let served: serde_json::Value = s.get("/openapi.json").await.json().await.unwrap();
    for p in [
        "/classify",
        "/forecast",
        "/anomaly",
        "/generate",
        "/models",
        "/models/{name}/reload",
        "/health/ready",
        "/metrics",
    ] {
        assert!(served["paths"][p].is_object(), "{p} documented");
    }
    let generated = dlserve::api::openapi().to_pretty_json().unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap_or_default();
    assert!(
        committed.trim() == generated.trim(),
        "openapi/openapi.json is stale: run `make openapi` and commit the result"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_model_labels() {
    let s = start(&["tiny-anomaly"], &[]).await;
    assert_eq!(s.post_json("/anomaly", serde_json::json!({"rows": [[1, 2, 3]]})).await.status(), 200);
    let r = s.get("/metrics").await;
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for series in [
        "dlserve_requests_total{endpoint=\"/anomaly\",model=\"tiny-anomaly\",outcome=\"ok\",protocol=\"http\"} 1",
        "dlserve_batch_size_bucket{model=\"tiny-anomaly\",version=\"1\"",
        "dlserve_queue_wait_seconds_bucket{model=\"tiny-anomaly\",version=\"1\"",
        "dlserve_compute_seconds_bucket{model=\"tiny-anomaly\",version=\"1\"",
        "dlserve_queue_depth{model=\"tiny-anomaly\",version=\"1\"}",
        "dlserve_model_load_seconds{model=\"tiny-anomaly\",version=\"1\"}",
        "dlserve_workers{model=\"tiny-anomaly\",version=\"1\"} 1",
    ] {
        assert!(text.contains(series), "missing {series}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default_and_configurable() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let r = s.client.get(s.url("/health/live")).header("origin", "https://example.org").send().await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let s = start(&["tiny-anomaly"], &["--cors-origins", "https://example.org"]).await;
    let r = s.client.get(s.url("/health/live")).header("origin", "https://example.org").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://example.org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_gzipped_only_when_large_and_not_images() {
    use std::io::Read;
    let s = start(&["tiny-anomaly", "tiny-generator"], &[]).await;
    let get_gz = |path: &str| s.client.get(s.url(path)).header("accept-encoding", "gzip").send();
    // Small JSON: sent as is.
    let r = s
        .client
        .post(s.url("/anomaly"))
        .header("accept-encoding", "gzip")
        .json(&serde_json::json!({"rows": [[1, 2, 3]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none(), "{:?}", r.headers());
    let small = r.bytes().await.unwrap();
    assert!(small.len() < dlserve::server::COMPRESS_MIN_BYTES as usize, "{}", small.len());
    serde_json::from_slice::<serde_json::Value>(&small).unwrap();
    // A large JSON document (the OpenAPI spec): gzip, and it decompresses to the same document.
    let r = get_gz("/openapi.json").await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let gz = r.bytes().await.unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut plain).unwrap();
    assert!(gz.len() < plain.len(), "{} >= {}", gz.len(), plain.len());
    let doc: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert!(doc["paths"]["/anomaly"].is_object());
    // Without Accept-Encoding nothing is compressed.
    let r = s.get("/openapi.json").await;
    assert!(r.headers().get("content-encoding").is_none());
    // Images never are, whatever their size (a grid of 16 digits from the shipped generator).
    let shipped = start_in(shipped_models(), None, &[]).await;
    let r = shipped
        .client
        .get(shipped.url("/generate?model=digits-cgan&n=16&seed=1&format=png"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(r.headers().get("content-encoding").is_none());
    let png = r.bytes().await.unwrap();
    assert!(png.len() >= dlserve::server::COMPRESS_MIN_BYTES as usize, "{}", png.len());
}

/// A burst of connections larger than the 128 that `TcpListener::bind` would queue all connect
/// at once, while the server has not accepted any yet (a busy runtime). With the smaller queue
/// the rest wait for a SYN retransmit (1 s) or are reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_queues_a_burst_of_connections() {
    use clap::Parser;
    const BURST: usize = 400;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    assert!(somaxconn > BURST, "net.core.somaxconn = {somaxconn} caps the backlog below this test's burst");
    let args = dlserve::config::Args::parse_from(["dlserve"]);
    assert!(args.listen_backlog as usize > BURST);
    let listener = dlserve::bind("127.0.0.1:0".parse().unwrap(), args.listen_backlog).unwrap();
    let addr = listener.local_addr().unwrap();
    let connects = (0..BURST).map(|_| {
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(700), tokio::net::TcpStream::connect(addr)).await
        })
    });
    let mut streams = Vec::new();
    for c in connects.collect::<Vec<_>>() {
        match c.await.unwrap() {
            Ok(Ok(s)) => streams.push(s),
            Ok(Err(e)) => panic!("connect {} failed: {e}", streams.len()),
            Err(_) => panic!("connect {} of {BURST} waited more than 700 ms in the listen queue", streams.len()),
        }
    }
    // Every one of them is really queued: the listener hands them all out.
    for _ in 0..BURST {
        tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
    }
    drop(streams);
}
