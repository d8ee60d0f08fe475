//! The batching engine over real HTTP: batches form under concurrency, overload is refused at
//! once, deadlines give 504 without computing, abandoned items are dropped, faults stay small.
mod common;
use common::*;
use std::time::{Duration, Instant};

fn row(a: f64, b: f64) -> serde_json::Value {
    serde_json::json!({"model": "faulty", "rows": [[a, b]]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_share_batches() {
    let s = std::sync::Arc::new(start(&["tiny-anomaly"], &[]).await);
    let mut hs = Vec::new();
    for i in 0..32 {
        let s = s.clone();
        hs.push(tokio::spawn(async move {
            let r = s.post_json("/anomaly", serde_json::json!({"rows": [[i, 1, 2]]})).await;
            assert_eq!(r.status(), 200);
            let timing = r.headers()["server-timing"].to_str().unwrap().to_string();
            let body: serde_json::Value = r.json().await.unwrap();
            let want = ((i * i) as f64 / 4.0 + 0.25 + 1.0) / 3.0;
            assert!((body["results"][0]["score"].as_f64().unwrap() - want).abs() < 1e-4, "row {i} got its own answer");
            timing
        }));
    }
    let mut max_batch = 0;
    for h in hs {
        let t = h.await.unwrap();
        let b: usize = t.split("batch;desc=\"").nth(1).unwrap().trim_end_matches('"').parse().unwrap();
        max_batch = max_batch.max(b);
    }
    assert!(max_batch > 1, "32 concurrent requests with a 5 ms delay formed a batch > 1");
    assert!(max_batch <= 8, "never above max_batch_size: {max_batch}");
    // One request with many rows is cut by size.
    let rows: Vec<_> = (0..20).map(|i| vec![i, 0, 0]).collect();
    let r = s.post_json("/anomaly", serde_json::json!({"rows": rows})).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["server-timing"].to_str().unwrap().contains("batch;desc=\"8\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_is_refused_at_once_with_retry_after() {
    let s = std::sync::Arc::new(start(&["faulty"], &[]).await);
    // Occupy the only worker (~0.8 s), then fill the queue (capacity 4).
    let busy = {
        let s = s.clone();
        tokio::spawn(async move { s.post_json("/anomaly", row(99.0, 2000.0)).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let fill = {
        let s = s.clone();
        tokio::spawn(async move {
            s.post_json("/anomaly", serde_json::json!({"model": "faulty", "rows": [[0, 0], [0, 0], [0, 0], [0, 0]]}))
                .await
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let r = s.post_json("/anomaly", row(0.0, 0.0)).await;
    let took = t0.elapsed();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let (_, ty, _, _) = error_of(r).await;
    assert_eq!(ty, "overloaded");
    assert!(took < Duration::from_millis(300), "refused at once, not after a wait: {took:?}");
    // Admission comes before parsing: while the queue is full even a malformed body gets the 429.
    let r = s.post_raw_json("/anomaly", "{\"rows\": [[0, 0], [0,").await;
    assert_eq!(r.status(), 429);
    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(fill.await.unwrap(), 200, "admitted work completes");
    // Once there is room again, the same malformed body gets its 400.
    let r = s.post_raw_json("/anomaly", "{\"rows\": [[0, 0], [0,").await;
    assert_eq!(r.status(), 400);
    assert!(
        s.metric(
            "dlserve_requests_total{endpoint=\"/anomaly\",model=\"faulty\",outcome=\"rejected\",protocol=\"http\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missed_deadline_is_504_and_the_item_is_not_computed() {
    let s = std::sync::Arc::new(start(&["faulty", "tiny-anomaly"], &[]).await);
    let busy = {
        let s = s.clone();
        tokio::spawn(async move { s.post_json("/anomaly", row(99.0, 2000.0)).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t0 = Instant::now();
    let r = s.client.post(s.url("/anomaly")).header("x-deadline-ms", "200").json(&row(0.0, 0.0)).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(t0.elapsed() < Duration::from_millis(600), "answered at the deadline: {:?}", t0.elapsed());
    let (_, ty, _, _) = error_of(r).await;
    assert_eq!(ty, "deadline_exceeded");
    // Another model is unaffected while this one is stuck.
    let t1 = Instant::now();
    assert_eq!(
        s.post_json("/anomaly", serde_json::json!({"model": "tiny-anomaly", "rows": [[1, 2, 3]]})).await.status(),
        200
    );
    assert!(t1.elapsed() < Duration::from_millis(500));
    assert_eq!(busy.await.unwrap(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let computed = s.metric("dlserve_items_total{fate=\"computed\",model=\"faulty\",version=\"1\"}").await;
    assert_eq!(computed, 1.0, "only the slow item was computed; the timed-out one was dropped");
    // Deadline limits are checked.
    let r = s
        .client
        .post(s.url("/anomaly"))
        .header("x-deadline-ms", "999999999")
        .json(&row(0.0, 0.0))
        .send()
        .await
        .unwrap();
    let (st, _, _, field) = error_of(r).await;
    assert_eq!((st, field.as_deref()), (422, Some("x-deadline-ms")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_item_whose_client_has_gone_is_dropped_before_compute() {
    let s = std::sync::Arc::new(start(&["faulty"], &[]).await);
    let busy = {
        let s = s.clone();
        tokio::spawn(async move { s.post_json("/anomaly", row(99.0, 2000.0)).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    assert!(impatient.post(s.url("/anomaly")).json(&row(0.0, 0.0)).send().await.is_err(), "the client gave up");
    assert_eq!(busy.await.unwrap(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.metric("dlserve_items_total{fate=\"abandoned\",model=\"faulty\",version=\"1\"}").await, 1.0);
    assert_eq!(s.metric("dlserve_items_total{fate=\"computed\",model=\"faulty\",version=\"1\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_error_fails_only_its_batch_and_the_worker_keeps_serving() {
    let s = start(&["faulty"], &[]).await;
    let (st, ty, msg, _) = error_of(s.post_json("/anomaly", row(13.0, 0.0)).await).await;
    assert_eq!((st, ty.as_str()), (500, "inference_failed"));
    assert!(!msg.contains("fault fixture"), "details stay in the log: {msg}");
    assert_eq!(s.post_json("/anomaly", row(0.0, 0.0)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_output_is_a_clear_500_never_a_score() {
    let s = start(&["faulty"], &[]).await;
    let (st, ty, msg, _) = error_of(s.post_json("/anomaly", row(7.0, 0.0)).await).await;
    assert_eq!((st, ty.as_str()), (500, "inference_failed"));
    assert!(msg.contains("NaN"), "{msg}");
    assert_eq!(s.post_json("/anomaly", row(1.0, 0.0)).await.status(), 200);
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_worker_is_replaced() {
    let s = start(&["faulty"], &[]).await;
    let sentinel = dlserve::batching::worker::PANIC_SENTINEL as f64;
    let (st, ty, _, _) = error_of(s.post_json("/anomaly", row(sentinel, 0.0)).await).await;
    assert_eq!((st, ty.as_str()), (500, "inference_failed"));
    // The replacement worker loads its own replica; give it a moment, then it serves.
    let t0 = Instant::now();
    loop {
        let r = s.post_json("/anomaly", row(0.0, 0.0)).await;
        if r.status() == 200 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no replacement worker: {}", r.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.metric("dlserve_worker_restarts_total{model=\"faulty\",version=\"1\"}").await, 1.0);
    assert_eq!(s.metric("dlserve_workers{model=\"faulty\",version=\"1\"}").await, 1.0);
    assert_eq!(s.get("/health/ready").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_finished_after_the_deadline_is_a_504_not_a_late_200() {
    // The batch is computed in time; the fault-injection hook then holds the handler past the
    // deadline (a CPU too starved to post-process in time).
    let s = start(&["tiny-anomaly"], &[]).await;
    let send = |post_delay_ms: u64| {
        s.client
            .post(s.url("/anomaly"))
            .header("x-deadline-ms", "200")
            .header(dlserve::api::anomaly::POST_DELAY_HEADER, post_delay_ms.to_string())
            .json(&serde_json::json!({"rows": [[1, 2, 3]]}))
            .send()
    };
    assert_eq!(send(0).await.unwrap().status(), 200);
    let late = r#"dlserve_requests_total{endpoint="/anomaly",model="tiny-anomaly",outcome="deadline_exceeded",protocol="http"}"#;
    let before = s.metric(late).await;
    let t = std::time::Instant::now();
    let r = send(400).await.unwrap();
    assert!(t.elapsed() >= std::time::Duration::from_millis(400));
    assert_eq!(r.headers()["x-model-name"], "tiny-anomaly");
    let (st, ty, msg, _) = error_of(r).await;
    assert_eq!((st, ty.as_str()), (504, "deadline_exceeded"));
    assert!(msg.contains("after the deadline of 200 ms"), "{msg}");
    assert_eq!(s.metric(late).await, before + 1.0);
}
