//! The Open Inference Protocol over gRPC, on the REST port: answers equal to REST's, typed and raw
//! tensors, streams, status codes, deadlines from `grpc-timeout`, cancellation, overload, drain,
//! metrics, and the standard Python clients (tritonclient.grpc, kserve, grpc health and
//! reflection) on every default model.
mod common;
use common::{shipped_models, start, start_in};
use dlserve::api::grpc::pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::InferInputTensor;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

async fn client(s: &common::Server) -> GrpcInferenceServiceClient<Channel> {
    let ch = Channel::from_shared(s.base.clone()).unwrap().connect().await.expect("gRPC connects on the REST port");
    GrpcInferenceServiceClient::new(ch)
}

fn f32_bytes(v: &[f32]) -> bytes::Bytes {
    v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn input(name: &str, datatype: &str, shape: Vec<i64>, contents: Option<pb::InferTensorContents>) -> InferInputTensor {
    InferInputTensor { name: name.into(), datatype: datatype.into(), shape, parameters: Default::default(), contents }
}

/// A raw FP32 request to an anomaly model.
fn anomaly_request(model: &str, rows: &[[f32; 2]]) -> pb::ModelInferRequest {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input("features", "FP32", vec![rows.len() as i64, 2], None)],
        raw_input_contents: vec![f32_bytes(&flat)],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_equal_rest_with_raw_and_typed_tensors() {
    let s = start(&["tiny-generator", "tiny-anomaly"], &[]).await;
    let mut c = client(&s).await;
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(c.server_ready(pb::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let meta = c.server_metadata(pb::ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(meta.name, "dlserve");
    assert!(meta.extensions.iter().any(|e| e == "statistics"), "{:?}", meta.extensions);
    let md = c
        .model_metadata(pb::ModelMetadataRequest { name: "tiny-generator".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    let latent = md.inputs[0].shape[1] as usize;
    assert_eq!(md.inputs[1].datatype, "INT64");
    let z: Vec<f32> = (0..2 * latent).map(|i| (i as f32 * 0.37).sin()).collect();
    // The REST answer to compare with.
    let rest: serde_json::Value = s
        .post_json(
            "/v2/models/tiny-generator/infer",
            serde_json::json!({"inputs": [
                {"name": "z", "shape": [2, latent], "datatype": "FP32", "data": z},
                {"name": "labels", "shape": [2], "datatype": "INT64", "data": [0, 1]}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let want: Vec<f32> =
        rest["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let want_shape: Vec<i64> =
        rest["outputs"][0]["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    // Raw in, raw out.
    let raw = pb::ModelInferRequest {
        model_name: "tiny-generator".into(),
        id: "r1".into(),
        inputs: vec![input("z", "FP32", vec![2, latent as i64], None), input("labels", "INT64", vec![2], None)],
        raw_input_contents: vec![
            f32_bytes(&z),
            [0i64, 1].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into(),
        ],
        ..Default::default()
    };
    let r = c.model_infer(raw).await.unwrap();
    assert!(r.metadata().get("x-request-id").is_some());
    let r = r.into_inner();
    assert_eq!((r.id.as_str(), r.model_version.as_str()), ("r1", "1"));
    assert_eq!(r.outputs[0].shape, want_shape);
    assert!(r.outputs[0].contents.is_none());
    let got = floats(&r.raw_output_contents[0]);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5, "raw gRPC {g} vs REST {w}");
    }
    // Typed in, typed out.
    let typed = pb::ModelInferRequest {
        model_name: "tiny-generator".into(),
        inputs: vec![
            input(
                "z",
                "FP32",
                vec![2, latent as i64],
                Some(pb::InferTensorContents { fp32_contents: z.clone(), ..Default::default() }),
            ),
            input(
                "labels",
                "INT64",
                vec![2],
                Some(pb::InferTensorContents { int64_contents: vec![0, 1], ..Default::default() }),
            ),
        ],
        ..Default::default()
    };
    let r = c.model_infer(typed).await.unwrap().into_inner();
    assert!(r.raw_output_contents.is_empty());
    let got = &r.outputs[0].contents.as_ref().unwrap().fp32_contents;
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5, "typed gRPC {g} vs REST {w}");
    }
    // An output asked for by position.
    let mut named = anomaly_request("tiny-anomaly", &[[0.0, 0.0]]);
    named.inputs[0].shape = vec![1, 3];
    named.raw_input_contents = vec![f32_bytes(&[0.1, 0.2, 0.3])];
    named.outputs = vec![pb::model_infer_request::InferRequestedOutputTensor {
        name: "output__0".into(),
        parameters: Default::default(),
    }];
    let r = c.model_infer(named).await.unwrap().into_inner();
    assert_eq!(r.outputs[0].name, "reconstruction");
    assert_eq!(floats(&r.raw_output_contents[0]).len(), 3);
    // Requests over gRPC are counted under their protocol.
    let n = s
        .metric(
            "dlserve_requests_total{endpoint=\"ModelInfer\",model=\"tiny-generator\",outcome=\"ok\",protocol=\"grpc\"}",
        )
        .await;
    assert_eq!(n, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_have_codes_and_the_messages_rest_gives() {
    let s = start(&["tiny-anomaly"], &["--admin-token", "sesame"]).await;
    let mut c = client(&s).await;
    let e = c.model_infer(anomaly_request("nope", &[[0.0, 0.0]])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("nope"), "{}", e.message());
    // Wrong inner dimension: the model takes 3 features.
    let e = c.model_infer(anomaly_request("tiny-anomaly", &[[0.0, 0.0]])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("dimension 1 is 2, the model needs 3"), "{}", e.message());
    // Bytes that do not fill the shape.
    let mut short = anomaly_request("tiny-anomaly", &[[0.0, 0.0]]);
    short.inputs[0].shape = vec![1, 3];
    let e = c.model_infer(short).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("raw_input_contents gives 8 bytes; shape [1, 3] of FP32 needs 12"), "{}", e.message());
    // NaN is refused as REST refuses it.
    let mut nan = anomaly_request("tiny-anomaly", &[[0.0, 0.0]]);
    nan.inputs[0].shape = vec![1, 3];
    nan.raw_input_contents = vec![f32_bytes(&[0.0, f32::NAN, 0.0])];
    let e = c.model_infer(nan).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("element 1 is not a finite FP32 value"), "{}", e.message());
    let e =
        c.model_ready(pb::ModelReadyRequest { name: "tiny-anomaly".into(), version: "x".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // The index is open; load and unload need the token, sent as `authorization` metadata.
    let idx = c.repository_index(pb::RepositoryIndexRequest::default()).await.unwrap().into_inner();
    assert!(idx.models.iter().any(|m| m.name == "tiny-anomaly" && m.state == "READY"), "{:?}", idx.models);
    let unload = || pb::RepositoryModelUnloadRequest { model_name: "tiny-anomaly".into(), ..Default::default() };
    let e = c.repository_model_unload(unload()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let mut req = tonic::Request::new(unload());
    req.metadata_mut().insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(c.repository_model_unload(req).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let mut req = tonic::Request::new(unload());
    req.metadata_mut().insert("authorization", "Bearer sesame".parse().unwrap());
    c.repository_model_unload(req).await.unwrap();
    let r = c.model_ready(pb::ModelReadyRequest { name: "tiny-anomaly".into(), version: String::new() }).await;
    assert!(!r.unwrap().into_inner().ready, "an unloaded model is not ready");
    let mut req =
        tonic::Request::new(pb::RepositoryModelLoadRequest { model_name: "tiny-anomaly".into(), ..Default::default() });
    req.metadata_mut().insert("authorization", "Bearer sesame".parse().unwrap());
    c.repository_model_load(req).await.unwrap();
    assert!(
        c.model_ready(pb::ModelReadyRequest { name: "tiny-anomaly".into(), version: String::new() })
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    // Draining: inference is refused with UNAVAILABLE, liveness still answers.
    s.state.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut ok = anomaly_request("tiny-anomaly", &[[0.0, 0.0]]);
    ok.inputs[0].shape = vec![1, 3];
    ok.raw_input_contents = vec![f32_bytes(&[0.0, 0.0, 0.0])];
    let e = c.model_infer(ok).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(!c.server_ready(pb::ServerReadyRequest {}).await.unwrap().into_inner().ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_is_resource_exhausted_at_once() {
    let s = std::sync::Arc::new(start(&["faulty"], &[]).await);
    let c = client(&s).await;
    let occupy = |ms: f32| {
        let mut c = c.clone();
        tokio::spawn(async move { c.model_infer(anomaly_request("faulty", &[[99.0, ms]])).await.map(|_| ()) })
    };
    // The only worker busy for about 1 s and the queue (capacity 4) full, one more
    // request is RESOURCE_EXHAUSTED at once, with retry-after.
    let busy = occupy(1000.0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fill = {
        let mut c = c.clone();
        tokio::spawn(async move { c.model_infer(anomaly_request("faulty", &[[0.0, 0.0]; 4])).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t1 = Instant::now();
    let e = c.clone().model_infer(anomaly_request("faulty", &[[0.0, 0.0]])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(t1.elapsed() < Duration::from_millis(300), "refused at once: {:?}", t1.elapsed());
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
    busy.await.unwrap().unwrap();
    fill.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fate = |f: &str| format!("dlserve_items_total{{fate=\"{f}\",model=\"faulty\",version=\"1\"}}");
    assert_eq!(s.metric(&fate("computed")).await, 5.0, "the busy item and the four that filled the queue");
    let rejected =
        "dlserve_requests_total{endpoint=\"ModelInfer\",model=\"faulty\",outcome=\"rejected\",protocol=\"grpc\"}";
    assert_eq!(s.metric(rejected).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadlines_come_from_grpc_timeout_and_cancelled_calls_are_not_computed() {
    // The server caps deadlines at 400 ms, so a call whose grpc-timeout is an hour gets
    // DEADLINE_EXCEEDED from the server at 400 ms (the client's own timer cannot be what fires).
    let s =
        std::sync::Arc::new(start(&["faulty"], &["--max-deadline-ms", "400", "--default-deadline-ms", "400"]).await);
    let c = client(&s).await;
    let busy = {
        let mut c = c.clone();
        // 1.2 M spins: about 1.5 s here on a fast idle host, longer on a loaded one; what counts is
        // that it outlasts the 400 ms deadlines below (1200 was too short on a fast host).
        let mut req = tonic::Request::new(anomaly_request("faulty", &[[99.0, 6000.0]]));
        req.set_timeout(Duration::from_secs(3600));
        tokio::spawn(async move { c.model_infer(req).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t0 = Instant::now();
    let mut req = tonic::Request::new(anomaly_request("faulty", &[[0.0, 0.0]]));
    req.set_timeout(Duration::from_secs(3600));
    let e = c.clone().model_infer(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("400 ms"), "{}", e.message());
    assert!(t0.elapsed() < Duration::from_millis(900), "answered at the capped deadline: {:?}", t0.elapsed());
    // x-deadline-ms metadata, as REST's header, is checked and used.
    let mut req = tonic::Request::new(anomaly_request("faulty", &[[0.0, 0.0]]));
    req.metadata_mut().insert("x-deadline-ms", "100".parse().unwrap());
    let t1 = Instant::now();
    assert_eq!(c.clone().model_infer(req).await.unwrap_err().code(), tonic::Code::DeadlineExceeded);
    assert!(t1.elapsed() < Duration::from_millis(350), "{:?}", t1.elapsed());
    let mut req = tonic::Request::new(anomaly_request("faulty", &[[0.0, 0.0]]));
    req.metadata_mut().insert("x-deadline-ms", "999999".parse().unwrap());
    let e = c.clone().model_infer(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("x-deadline-ms"), "{}", e.message());
    // A cancelled call: the client drops it after 100 ms; its queued item is never computed.
    let mut cc = c.clone();
    let cancelled =
        tokio::time::timeout(Duration::from_millis(100), cc.model_infer(anomaly_request("faulty", &[[1.0, 1.0]])))
            .await;
    assert!(cancelled.is_err(), "the call was still waiting when it was cancelled");
    let _ = busy.await.unwrap();
    // The busy call itself timed out at 400 ms while its forward spins on: wait for the worker to
    // finish it (under a loaded test run its spin can take several seconds) and cut what is queued.
    let fate = |f: &str| format!("dlserve_items_total{{fate=\"{f}\",model=\"faulty\",version=\"1\"}}");
    let t2 = Instant::now();
    while s.metric(&fate("computed")).await < 1.0 && t2.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.metric(&fate("computed")).await, 1.0, "only the busy item was computed");
    assert_eq!(
        s.metric(&fate("expired")).await + s.metric(&fate("abandoned")).await,
        3.0,
        "the two timed-out items and the cancelled one were dropped"
    );
    let late =
        "dlserve_requests_total{endpoint=\"ModelInfer\",model=\"faulty\",outcome=\"deadline_exceeded\",protocol=\"grpc\"}";
    assert!(s.metric(late).await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_answers_each_request_in_order_and_reports_errors_in_band() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let mut c = client(&s).await;
    let ok = |v: f32| {
        let mut r = anomaly_request("tiny-anomaly", &[[0.0, 0.0]]);
        r.id = format!("{v}");
        r.inputs[0].shape = vec![1, 3];
        r.raw_input_contents = vec![f32_bytes(&[v, v, v])];
        r
    };
    let bad = anomaly_request("tiny-anomaly", &[[0.0, 0.0]]);
    let reqs = vec![ok(0.1), bad, ok(0.2), ok(0.3)];
    let mut out = c.model_stream_infer(tokio_stream::iter(reqs)).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(m) = out.message().await.unwrap() {
        got.push(m);
    }
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].infer_response.as_ref().unwrap().id, "0.1");
    assert!(got[1].infer_response.is_none());
    assert!(got[1].error_message.contains("dimension 1 is 2, the model needs 3"), "{}", got[1].error_message);
    assert_eq!(got[2].infer_response.as_ref().unwrap().id, "0.2");
    assert_eq!(got[3].infer_response.as_ref().unwrap().id, "0.3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_config_and_statistics_over_grpc_and_rest() {
    let s = start(&["tiny-anomaly"], &[]).await;
    let mut c = client(&s).await;
    for _ in 0..3 {
        let mut r = anomaly_request("tiny-anomaly", &[[0.0, 0.0], [0.0, 0.0]]);
        r.inputs[0].shape = vec![2, 3];
        r.raw_input_contents = vec![f32_bytes(&[0.1; 6])];
        c.model_infer(r).await.unwrap();
    }
    let cfg = c
        .model_config(pb::ModelConfigRequest { name: "tiny-anomaly".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    let rest: serde_json::Value = s.get("/v2/models/tiny-anomaly/config").await.json().await.unwrap();
    assert_eq!(cfg.max_batch_size as i64, rest["max_batch_size"].as_i64().unwrap());
    assert_eq!(cfg.input[0].dims, vec![3]);
    assert_eq!(rest["input"][0], serde_json::json!({"name": "features", "data_type": "TYPE_FP32", "dims": [3]}));
    assert_eq!(cfg.input[0].data_type, pb::DataType::TypeFp32 as i32);
    assert_eq!(rest["instance_group"][0]["kind"], "KIND_CPU");
    assert!(matches!(cfg.scheduling_choice, Some(pb::model_config::SchedulingChoice::DynamicBatching(_))));
    let st = c
        .model_statistics(pb::ModelStatisticsRequest { name: "tiny-anomaly".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    let m = &st.model_stats[0];
    assert_eq!(m.inference_count, 6, "three requests of two rows");
    assert!(m.execution_count >= 3 && m.execution_count <= 6, "{}", m.execution_count);
    let inf = m.inference_stats.as_ref().unwrap();
    assert_eq!(inf.success.as_ref().unwrap().count, 6);
    assert!(inf.compute_infer.as_ref().unwrap().ns > 0);
    let batched: u64 = m.batch_stats.iter().map(|b| b.batch_size * b.compute_infer.as_ref().unwrap().count).sum();
    assert_eq!(batched, 6, "every item is in one batch");
    let rest: serde_json::Value = s.get("/v2/models/tiny-anomaly/stats").await.json().await.unwrap();
    assert_eq!(rest["model_stats"][0]["inference_count"], 6);
    assert_eq!(rest["model_stats"][0]["version"], "1");
    let all: serde_json::Value = s.get("/v2/models/stats").await.json().await.unwrap();
    assert_eq!(all["model_stats"].as_array().unwrap().len(), 1);
    let e = c
        .model_statistics(pb::ModelStatisticsRequest { name: "nope".into(), version: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_grpc_clients_work_unchanged_on_every_default_model() {
    let s = start_in(shipped_models(), None, &[]).await;
    let host = s.base.trim_start_matches("http://").to_string();
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_client.py");
    for which in ["triton", "kserve"] {
        let out = tokio::process::Command::new(python)
            .arg(script)
            .arg(&host)
            .arg(which)
            .output()
            .await
            .expect("run the gRPC clients (make setup installs them)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{which} gRPC client checks failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains(&format!("all gRPC client checks passed ({which})")), "{stdout}");
    }
}
