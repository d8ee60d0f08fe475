//! Graceful drain, start-up errors and start-up settings of the real binary.
mod common;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn spawn(models: &std::path::Path, port: u16, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_dlserve"))
        .args([
            "--models-dir",
            models.to_str().unwrap(),
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--intra-op-threads",
            "1",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let t0 = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "server not ready in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&common::fixtures().join("faulty"), &tmp.path().join("faulty"));
    let port = free_port();
    let mut child = spawn(tmp.path(), port, &["--drain-timeout-secs", "20"]);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    // Four slow requests (~0.2 s of compute each) are accepted before the signal.
    let mut inflight = Vec::new();
    for _ in 0..4 {
        let c = client.clone();
        let url = format!("{base}/anomaly");
        inflight.push(tokio::spawn(async move {
            c.post(url).json(&serde_json::json!({"rows": [[99, 500]]})).send().await.map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t0 = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    // Wait until the server has seen the signal: readiness turns 503 (or nothing listens).
    let seen = Instant::now();
    loop {
        match client.get(format!("{base}/health/ready")).send().await {
            Ok(r) if r.status() == 503 => break,
            Err(_) => break,
            _ => {}
        }
        assert!(seen.elapsed() < Duration::from_secs(5), "SIGTERM not seen within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // New work after the signal is refused cleanly: connection refused or 503 shutting_down.
    match client.post(format!("{base}/anomaly")).json(&serde_json::json!({"rows": [[0, 0]]})).send().await {
        Err(e) => assert!(e.is_connect() || e.is_request(), "{e}"),
        Ok(r) => assert_eq!(r.status(), 503, "refused with 503 while draining"),
    }
    let mut ok = 0;
    for h in inflight {
        if matches!(h.await.unwrap(), Ok(200)) {
            ok += 1;
        }
    }
    assert_eq!(ok, 4, "every request accepted before SIGTERM completes");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert!(client.get(format!("{base}/health/live")).send().await.is_err(), "nothing listens after exit");
}

/// A stop leaves nothing in the temporary directory: the workers end before the process does, so
/// the `.pt2` engines remove their package copies (and what they unpacked) on drop. Before, the
/// process exited first: a stop of these 60 models left copies behind one time in two, and at 100
/// models up to 57.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_no_package_copies_behind() {
    let models = tempfile::tempdir().unwrap();
    for (i, m) in ["cancer-ae", "digits-cnn"].iter().cycle().take(60).enumerate() {
        common::copy_dir(&common::shipped_models().join(m), &models.path().join(format!("{m}-{i:02}")));
        let cfg = models.path().join(format!("{m}-{i:02}/config.toml"));
        let text =
            std::fs::read_to_string(&cfg).unwrap().replace("default_for_kind = true", "default_for_kind = false");
        std::fs::write(&cfg, text).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dlserve"))
        .args(["--models-dir", models.path().to_str().unwrap(), "--addr", &format!("127.0.0.1:{port}")])
        .args(["--intra-op-threads", "1"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let copies = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pt2"))
            .count()
    };
    assert!(copies() >= 60, "each .pt2 model keeps a copy while it serves: {}", copies());
    let r = client
        .post(format!("{base}/anomaly?model=cancer-ae-00"))
        .json(&serde_json::json!({"rows": [vec![0.0; 30]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(copies(), 0, "package copies left in TMPDIR after the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_grpc_calls_too() {
    use dlserve::api::grpc::pb;
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&common::fixtures().join("faulty"), &tmp.path().join("faulty"));
    let port = free_port();
    let mut child = spawn(tmp.path(), port, &["--drain-timeout-secs", "20"]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&reqwest::Client::new(), &base).await;
    let ch = tonic::transport::Channel::from_shared(base.clone()).unwrap().connect().await.unwrap();
    let c = pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(ch);
    // Two slow calls (~0.3 s of compute each) on one HTTP/2 connection, accepted before the signal.
    let mut inflight = Vec::new();
    for _ in 0..2 {
        let mut c = c.clone();
        let req = pb::ModelInferRequest {
            model_name: "faulty".into(),
            inputs: vec![pb::model_infer_request::InferInputTensor {
                name: "features".into(),
                datatype: "FP32".into(),
                shape: vec![1, 2],
                ..Default::default()
            }],
            raw_input_contents: vec![[99.0f32, 300.0].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()],
            ..Default::default()
        };
        inflight.push(tokio::spawn(async move { c.model_infer(req).await.map(|r| r.into_inner().outputs.len()) }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    for h in inflight {
        assert_eq!(h.await.unwrap().expect("an accepted gRPC call completes during the drain"), 1);
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn explicit_cuda_without_a_gpu_is_a_startup_error_naming_the_cause() {
    if tch::Cuda::is_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dlserve"))
        .args(["--models-dir", tmp.path().to_str().unwrap(), "--device", "cuda", "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no CUDA device"), "{err}");
}

/// The first log line of a server started on an empty models directory, with `env` added.
fn starting_line(env: &[(&str, &str)]) -> serde_json::Value {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dlserve"))
        .args(["--models-dir", tmp.path().to_str().unwrap(), "--addr", "127.0.0.1:0", "--log-format", "json"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = out.lines().map(|l| l.unwrap()).find(|l| l.contains("starting dlserve"));
    child.kill().unwrap();
    child.wait().unwrap();
    serde_json::from_str(&line.expect("a start-up line")).unwrap()
}

#[test]
fn allocator_is_tuned_unless_the_operator_set_glibc_variables() {
    assert_eq!(starting_line(&[])["allocator_tuned"], true);
    for var in ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"] {
        assert_eq!(starting_line(&[(var, "1048576")])["allocator_tuned"], false, "{var} set");
    }
}

#[test]
fn help_documents_env_variables() {
    let out = Command::new(env!("CARGO_BIN_EXE_dlserve")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "DLSERVE_ADDR",
        "DLSERVE_MODELS_DIR",
        "DLSERVE_DEVICE",
        "DLSERVE_ADMIN_TOKEN",
        "DLSERVE_BODY_LIMIT_BYTES",
        "DLSERVE_REQUEST_TIMEOUT_MS",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}
