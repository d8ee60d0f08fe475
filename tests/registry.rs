//! Model registry over real HTTP: listing, failures isolated per model, admin auth, zero-downtime
//! reloads under load, failed reloads, polling, and a load/unload loop that must not leak.
mod common;
use common::*;
use std::time::Duration;

const TOKEN: &str = "s3cret-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_models_fail_alone_with_reasons() {
    let s = start(&["tiny-anomaly", "tiny-classifier", "bad-contract", "corrupt", "bad-config"], &[]).await;
    let list: serde_json::Value = s.get("/models").await.json().await.unwrap();
    let by_name = |n: &str| list["models"].as_array().unwrap().iter().find(|m| m["name"] == n).unwrap().clone();
    for good in ["tiny-anomaly", "tiny-classifier"] {
        let m = by_name(good);
        assert_eq!(m["state"], "ready", "{m}");
        assert_eq!(m["device"], "cpu");
        assert_eq!(m["versions"][0]["version"], 1);
    }
    let bc = by_name("bad-contract");
    assert_eq!(bc["state"], "failed");
    let why = bc["last_error"].as_str().unwrap();
    assert!(why.contains("contract") && why.contains("[4]") && why.contains("[3]"), "{why}");
    let corrupt = by_name("corrupt");
    assert_eq!(corrupt["state"], "failed");
    assert!(corrupt["last_error"].as_str().unwrap().contains("corrupt/1/model.pt"), "{corrupt}");
    let cfg = by_name("bad-config");
    let why = cfg["last_error"].as_str().unwrap();
    assert!(why.contains("bad-config/config.toml") && why.contains("batching.max_batch_sise"), "{why}");
    assert!(!why.contains(s.dir.to_str().unwrap()), "no internal paths: {why}");
    let detail: serde_json::Value = s.get("/models/tiny-classifier").await.json().await.unwrap();
    assert_eq!(detail["config"]["classifier"]["input_shape"], serde_json::json!([1, 4, 4]));
    assert_eq!(detail["config"]["batching"]["max_batch_size"], 8);
    let (st, ty, _, _) = error_of(s.get("/models/nope").await).await;
    assert_eq!((st, ty.as_str()), (404, "not_found"));
    // A request to a failed model is a clear 503 naming the reason.
    let (st, ty, msg, _) = error_of(s.post_png("/classify?model=bad-contract", png(4, 4, |_, _| 0)).await).await;
    assert_eq!((st, ty.as_str()), (503, "model_not_ready"));
    assert!(msg.contains("contract"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_are_off_without_a_token_and_guarded_with_one() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let (st, _, msg, _) =
        error_of(s.client.post(s.url("/models/tiny-anomaly/reload")).bearer_auth(TOKEN).send().await.unwrap()).await;
    assert_eq!(st, 404);
    assert!(msg.contains("disabled"));
    let s = start(&["tiny-anomaly"], &["--admin-token", TOKEN]).await;
    let url = s.url("/models/tiny-anomaly/reload");
    assert_eq!(error_of(s.client.post(&url).send().await.unwrap()).await.0, 401);
    assert_eq!(error_of(s.client.post(&url).bearer_auth("wrong").send().await.unwrap()).await.0, 403);
    assert_eq!(error_of(s.client.post(&url).bearer_auth(&TOKEN[..5]).send().await.unwrap()).await.0, 403);
    assert_eq!(error_of(s.client.post(&url).header("authorization", TOKEN).send().await.unwrap()).await.0, 401);
    let r = s.client.post(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Names cannot reach outside the models directory.
    for bad in ["..", "..%2F..%2Fetc", "%2Fetc%2Fpasswd", ".hidden"] {
        let r = s.client.post(s.url(&format!("/models/{bad}/load"))).bearer_auth(TOKEN).send().await.unwrap();
        assert!([404, 422].contains(&r.status().as_u16()), "{bad}: {}", r.status());
    }
    // A symlinked model directory pointing outside the repository is refused.
    let outside = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-anomaly"), &outside.path().join("m"));
    std::os::unix::fs::symlink(outside.path().join("m"), s.dir.join("escape")).unwrap();
    let r = s.client.post(s.url("/models/escape/load")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 422);
}

async fn anomaly_version(s: &Server) -> (u16, Option<String>) {
    let r = s.post_json("/anomaly", serde_json::json!({"model": "tiny-anomaly", "rows": [[1, 2, 3]]})).await;
    let v = r.headers().get("x-model-version").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_swaps_versions_without_failing_a_request() {
    let s = std::sync::Arc::new(start(&["tiny-anomaly"], &["--admin-token", TOKEN]).await);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (s, stop) = (s.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut seen) = (0, 0, std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (st, v) = anomaly_version(&s).await;
                if st == 200 {
                    ok += 1;
                    seen.insert(v.unwrap());
                } else {
                    failed += 1;
                }
            }
            (ok, failed, seen)
        }));
    }
    for v in 2..=4 {
        copy_dir(&s.dir.join("tiny-anomaly/1"), &s.dir.join(format!("tiny-anomaly/{v}")));
        let r = s.client.post(s.url("/models/tiny-anomaly/reload")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut failed, mut seen) = (0, 0, std::collections::BTreeSet::new());
    for h in load {
        let (o, f, s2) = h.await.unwrap();
        ok += o;
        failed += f;
        seen.extend(s2);
    }
    assert_eq!(failed, 0, "no request fails during swaps ({ok} succeeded)");
    assert!(ok > 20, "the load really ran: {ok}");
    assert!(seen.contains("4"), "the newest version served: {seen:?}");
    assert_eq!(anomaly_version(&s).await, (200, Some("4".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_keeps_the_old_version_serving() {
    let s = start(&["tiny-anomaly"], &["--admin-token", TOKEN]).await;
    std::fs::create_dir_all(s.dir.join("tiny-anomaly/2")).unwrap();
    std::fs::write(s.dir.join("tiny-anomaly/2/model.pt"), b"garbage").unwrap();
    let r = s.client.post(s.url("/models/tiny-anomaly/reload")).bearer_auth(TOKEN).send().await.unwrap();
    let (st, ty, msg, _) = error_of(r).await;
    assert_eq!((st, ty.as_str()), (422, "load_failed"));
    assert!(msg.contains("tiny-anomaly/2/model.pt"), "{msg}");
    assert_eq!(anomaly_version(&s).await, (200, Some("1".to_string())));
    let info: serde_json::Value = s.get("/models/tiny-anomaly").await.json().await.unwrap();
    assert_eq!(info["state"], "ready");
    assert!(info["last_error"].as_str().unwrap().contains("model.pt"));
    // A missing file behaves the same.
    std::fs::remove_file(s.dir.join("tiny-anomaly/2/model.pt")).unwrap();
    std::fs::remove_file(s.dir.join("tiny-anomaly/1/model.pt")).unwrap();
    let r = s.client.post(s.url("/models/tiny-anomaly/reload")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(anomaly_version(&s).await, (200, Some("1".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_and_load_by_admin() {
    let s = start(&["tiny-anomaly", "tiny-classifier"], &["--admin-token", TOKEN]).await;
    let r = s.client.post(s.url("/models/tiny-anomaly/unload")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (st, ty, _, _) =
        error_of(s.post_json("/anomaly", serde_json::json!({"model": "tiny-anomaly", "rows": [[1, 2, 3]]})).await)
            .await;
    assert_eq!((st, ty.as_str()), (503, "model_not_ready"));
    assert_eq!(s.get("/health/ready").await.status(), 200, "an unloaded model does not block readiness");
    // A model copied in after start-up can be loaded.
    copy_dir(&fixtures().join("tiny-generator"), &s.dir.join("tiny-generator"));
    let r = s.client.post(s.url("/models/tiny-generator/load")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = s.client.post(s.url("/models/tiny-anomaly/load")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(anomaly_version(&s).await.0, 200);
    assert_eq!(s.get("/generate?model=tiny-generator").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_picks_up_a_new_version_directory() {
    let s = start(&["tiny-anomaly"], &[]).await;
    assert!(s.registry.poll_once().is_empty(), "nothing changed");
    copy_dir(&s.dir.join("tiny-anomaly/1"), &s.dir.join("tiny-anomaly/7"));
    let reg = s.registry.clone();
    let done = tokio::task::spawn_blocking(move || reg.poll_once()).await.unwrap();
    assert_eq!(done.len(), 1);
    assert!(done[0].1.is_ok());
    assert_eq!(anomaly_version(&s).await, (200, Some("7".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_unload_loop_does_not_grow_memory() {
    let s = start(&["tiny-classifier"], &["--admin-token", TOKEN]).await;
    let cycle = |n: usize| {
        let s = &s;
        async move {
            for _ in 0..n {
                let r = s.client.post(s.url("/models/tiny-classifier/unload")).bearer_auth(TOKEN).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let r = s.client.post(s.url("/models/tiny-classifier/load")).bearer_auth(TOKEN).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let r = s.post_png("/classify", png(4, 4, |_, y| (y * 60) as u8)).await;
                assert_eq!(r.status(), 200);
            }
        }
    };
    cycle(20).await; // warm-up: allocator pools, libtorch caches
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    cycle(100).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes();
    let grown = after.saturating_sub(before) as f64 / 1048576.0;
    eprintln!(
        "RSS before {:.1} MiB, after 100 load/unload cycles {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    assert!(grown < 8.0, "RSS grew by {grown:.1} MiB over 100 load/unload cycles");
    let workers = s.metric("dlserve_workers{model=\"tiny-classifier\",version=\"1\"}").await;
    assert_eq!(workers, 1.0, "old workers exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_method_runs_on_every_replica_and_its_failures_are_named() {
    // tiny-setup reconstructs x * gain; its gain is 0 until its setup method runs (then 0.5), so
    // the score of [1, 2, 3] is mean((x/2)^2) = 7/6 after setup and mean(x^2) = 14/3 without it.
    let s = start(&["tiny-setup"], &[]).await;
    let scores = futures::future::join_all((0..40).map(|_| async {
        let r = s.post_json("/anomaly", serde_json::json!({"rows": [[1, 2, 3]]})).await;
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()["results"][0]["score"].as_f64().unwrap()
    }))
    .await;
    for sc in scores {
        assert!((sc - 7.0 / 6.0).abs() < 1e-5, "a replica ran without its setup: score {sc}");
    }
    // A method that is missing or raises fails the load, naming the setting; `forward` is refused
    // by the config check.
    for (method, expect) in [("prepare", "\"prepare\""), ("explode", "setup cannot run here"), ("forward", "")] {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&fixtures().join("tiny-setup"), &tmp.path().join("tiny-setup"));
        edit_config(tmp.path(), "tiny-setup", "\"setup\"", &format!("\"{method}\""));
        let s = start_in(tmp.path().to_path_buf(), Some(tmp), &[]).await;
        let m: serde_json::Value = s.get("/models/tiny-setup").await.json().await.unwrap();
        assert_eq!(m["state"], "failed", "{m}");
        let why = m["last_error"].as_str().unwrap();
        assert!(why.contains("setup_method") && why.contains(expect), "{method}: {why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intra_op_threads_are_set_per_model() {
    // The server default is 1 (tests); tiny-anomaly asks for 3, tiny-classifier keeps the default
    // with two workers. Each worker reads its count back from libtorch after setting it.
    let tmp = tempfile::tempdir().unwrap();
    for m in ["tiny-anomaly", "tiny-classifier"] {
        copy_dir(&fixtures().join(m), &tmp.path().join(m));
    }
    edit_config(tmp.path(), "tiny-anomaly", "instances = 1", "instances = 1\nintra_op_threads = 3");
    edit_config(tmp.path(), "tiny-classifier", "instances = 1", "instances = 2");
    let root = tmp.path().to_path_buf();
    let s = start_in(root, Some(tmp), &[]).await;
    let gauge = |m: &str| format!("dlserve_intra_op_threads{{model=\"{m}\",version=\"1\"}}");
    let mut seen = (0.0, 0.0);
    for _ in 0..50 {
        seen = (s.metric(&gauge("tiny-anomaly")).await, s.metric(&gauge("tiny-classifier")).await);
        if seen == (3.0, 1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, (3.0, 1.0), "intra-op threads read back from the workers (anomaly, classifier)");
    let r = s.post_json("/anomaly", serde_json::json!({"rows": [[1, 2, 3]]})).await;
    assert_eq!(r.status(), 200);

    // Out of range: the load fails and names the field.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-anomaly"), &tmp.path().join("tiny-anomaly"));
    edit_config(tmp.path(), "tiny-anomaly", "instances = 1", "instances = 1\nintra_op_threads = 0");
    let s = start_in(tmp.path().to_path_buf(), Some(tmp), &[]).await;
    let m: serde_json::Value = s.get("/models/tiny-anomaly").await.json().await.unwrap();
    assert_eq!(m["state"], "failed", "{m}");
    assert!(m["last_error"].as_str().unwrap().contains("batching.intra_op_threads"), "{m}");
}
