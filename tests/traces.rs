//! OpenTelemetry traces against a real OTLP/HTTP receiver that the test runs: an HTTP server that
//! decodes each `ExportTraceServiceRequest` with the opentelemetry-proto definitions. Checks span
//! names, parentage (an incoming W3C `traceparent`), the batch span's links and the attributes.

mod common;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// Starts the receiver; returns its base URL and what it has received as (service name, span).
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let store = store.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                let req = ExportTraceServiceRequest::decode(body).expect("a valid OTLP export");
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.clone())
                        .and_then(|v| v.value)
                        .map(|v| if let AnyValue::StringValue(s) = v { s } else { String::new() })
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            store.lock().unwrap().push((service.clone(), s));
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()).and_then(|v| v.value).map(
        |v| match v {
            AnyValue::StringValue(s) => s,
            AnyValue::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        },
    )
}

/// Waits until `pred` holds for the received spans (exports happen at least every second).
async fn wait_for(got: &Received, what: &str, pred: impl Fn(&[(String, Span)]) -> bool) -> Vec<(String, Span)> {
    let t0 = Instant::now();
    loop {
        let now = got.lock().unwrap().clone();
        if pred(&now) {
            return now;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no {what} after 10 s; got {:#?}",
            now.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn requests_queue_compute_and_batches_become_linked_spans() {
    let (url, got) = receiver().await;
    let s = common::start(&["tiny-anomaly"], &["--otlp-endpoint", &url, "--otel-service-name", "dlserve-test"]).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let r = s
        .client
        .post(s.url("/anomaly"))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"rows": [[1, 2, 3], [4, 5, 6]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = wait_for(&got, "queue and compute spans", |v| {
        v.iter().filter(|(_, s)| hex(&s.trace_id) == trace).count() >= 5
            && v.iter().any(|(_, s)| s.name == "dlserve.batch")
    })
    .await;
    let in_trace: Vec<&Span> = spans.iter().map(|(_, s)| s).filter(|s| hex(&s.trace_id) == trace).collect();
    let req = in_trace.iter().find(|s| s.name == "POST /anomaly").expect("the request span");
    assert!(spans.iter().all(|(svc, _)| svc == "dlserve-test"));
    assert_eq!(hex(&req.parent_span_id), caller, "the request span is a child of the caller's");
    assert_eq!(req.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(attr(req, "http.route").as_deref(), Some("/anomaly"));
    assert_eq!(attr(req, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(attr(req, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(req, "dlserve.model").as_deref(), Some("tiny-anomaly"));
    assert_eq!(attr(req, "dlserve.model.version").as_deref(), Some("1"));
    // Two rows: two queue and two compute spans under the request's span, inside its time.
    for name in ["dlserve.queue", "dlserve.compute"] {
        let kids: Vec<&&Span> = in_trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(kids.len(), 2, "{name}");
        for k in kids {
            assert_eq!(k.parent_span_id, req.span_id, "{name} is a child of the request span");
            assert!(
                k.start_time_unix_nano >= req.start_time_unix_nano && k.end_time_unix_nano <= req.end_time_unix_nano
            );
            assert_eq!(attr(k, "dlserve.model").as_deref(), Some("tiny-anomaly"));
        }
    }
    // The batch span is a root of its own trace, linked to the request it served.
    let batch = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "dlserve.batch" && s.links.iter().any(|l| l.span_id == req.span_id))
        .expect("a batch span linked to the request");
    assert!(batch.parent_span_id.is_empty());
    assert_ne!(hex(&batch.trace_id), trace);
    assert_eq!(hex(&batch.links[0].trace_id), trace);
    assert_eq!(attr(batch, "dlserve.batch.size").as_deref(), Some("2"));

    // Without a traceparent the request starts a trace; a caller that did not sample is followed.
    let r = s.post_json("/anomaly", json!({"rows": [[1, 1, 1]]})).await;
    assert_eq!(r.status(), 200);
    let unsampled = "11111111111111111111111111111111";
    let r = s
        .client
        .post(s.url("/anomaly"))
        .header("traceparent", format!("00-{unsampled}-{caller}-00"))
        .json(&json!({"rows": [[2, 2, 2]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // An invalid request is traced too, with its status and no queue span.
    let r = s.post_json("/anomaly", json!({"rows": [[1, 2]]})).await;
    assert_eq!(r.status(), 422);
    let spans =
        wait_for(&got, "the later request spans", |v| v.iter().filter(|(_, s)| s.name == "POST /anomaly").count() >= 3)
            .await;
    let roots: Vec<&Span> =
        spans.iter().map(|(_, s)| s).filter(|s| s.name == "POST /anomaly" && hex(&s.trace_id) != trace).collect();
    assert_eq!(roots.len(), 2, "the new trace and the 422; none for the unsampled caller");
    assert!(roots.iter().all(|s| s.parent_span_id.is_empty()));
    assert!(spans.iter().all(|(_, s)| hex(&s.trace_id) != unsampled));
    let bad = roots.iter().find(|s| attr(s, "http.response.status_code").as_deref() == Some("422")).unwrap();
    assert!(!spans.iter().any(|(_, s)| s.name == "dlserve.queue" && s.trace_id == bad.trace_id));
    // Non-inference routes are not traced.
    assert_eq!(s.get("/health/live").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!got.lock().unwrap().iter().any(|(_, s)| s.name.contains("/health")));
}

#[tokio::test]
async fn a_bad_endpoint_or_sampler_is_refused_at_start_up() {
    let args = |extra: &[&str]| {
        use clap::Parser;
        let dir = common::fixtures().join("tiny-anomaly");
        let mut argv = vec!["dlserve", "--models-dir", dir.parent().unwrap().to_str().unwrap()];
        argv.extend_from_slice(extra);
        dlserve::config::Args::parse_from(argv)
    };
    let e = dlserve::server::Server::build(&args(&["--otlp-endpoint", "https://collector:4318"]))
        .err()
        .expect("https is refused");
    assert!(e.to_string().contains("only http://"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_model_infer_is_traced_like_rest() {
    use dlserve::api::grpc::pb;
    let (url, got) = receiver().await;
    let s = common::start(&["tiny-anomaly"], &["--otlp-endpoint", &url]).await;
    let ch = tonic::transport::Channel::from_shared(s.base.clone()).unwrap().connect().await.unwrap();
    let mut c = pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(ch);
    let rows: Vec<u8> = [1f32, 2.0, 3.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut req = tonic::Request::new(pb::ModelInferRequest {
        model_name: "tiny-anomaly".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![1, 3],
            ..Default::default()
        }],
        raw_input_contents: vec![rows.into()],
        ..Default::default()
    });
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller = "b7ad6b7169203331";
    req.metadata_mut().insert("traceparent", format!("00-{trace}-{caller}-01").parse().unwrap());
    c.model_infer(req).await.expect("ModelInfer answers");
    let spans =
        wait_for(&got, "the gRPC spans", |v| v.iter().filter(|(_, s)| hex(&s.trace_id) == trace).count() >= 3).await;
    let rpc = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "inference.GRPCInferenceService/ModelInfer")
        .expect("the RPC span");
    assert_eq!(hex(&rpc.trace_id), trace);
    assert_eq!(hex(&rpc.parent_span_id), caller);
    assert_eq!(attr(rpc, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attr(rpc, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(attr(rpc, "dlserve.model").as_deref(), Some("tiny-anomaly"));
    let queue = spans.iter().map(|(_, s)| s).find(|s| s.name == "dlserve.queue" && hex(&s.trace_id) == trace).unwrap();
    assert_eq!(queue.parent_span_id, rpc.span_id);
}
