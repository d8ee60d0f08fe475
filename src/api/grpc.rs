//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, from
//! `proto/inference.proto`), with Triton's repository, configuration and statistics extensions,
//! the standard `grpc.health.v1` service and server reflection.
//!
//! It is the same engine as REST behind another wire format: a `ModelInfer` becomes the same
//! [`InputView`]s a `/v2/.../infer` body does, goes through [`v2::decode_inputs`], the same queue
//! and deadlines, and its errors come from the same [`ApiError`]s, mapped to gRPC codes by
//! [`ErrorType::grpc_code`]. It listens on the REST port: [`crate::server::serve`] hands requests
//! whose content type is `application/grpc` to [`routes`] (see ARCHITECTURE.md for why one port).
//!
//! Tensors come in as `raw_input_contents` (little-endian, what `tritonclient.grpc` sends) or as
//! typed `contents`; outputs go back in `raw_output_contents` unless the request gave every input
//! as typed `contents`, in which case they come back typed too.

use super::error::{ApiError, ErrorType};
use super::v2::{self, InputData, InputView, Raw, V2Error};
use super::AppState;
use crate::batching::Deadline;
use crate::registry::LoadedVersion;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

/// Messages and the server trait generated from `proto/inference.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inference");
}

/// The encoded descriptor set of `proto/inference.proto`, served by reflection.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));

/// The gRPC service name clients address (`inference.GRPCInferenceService`).
pub const SERVICE_NAME: &str = "inference.GRPCInferenceService";

/// Requests of one `ModelStreamInfer` stream that may be in the queue at once; the next is read
/// when one finishes, so a fast client cannot queue unbounded work through one stream.
pub const STREAM_IN_FLIGHT: usize = 64;

/// Every gRPC service, ready to be served: inference, health, and reflection (v1 and v1alpha,
/// which `grpcurl` and older clients ask for).
pub fn routes(state: &AppState) -> tonic::service::Routes {
    let body_limit = state.limits.body_limit;
    let inference = pb::grpc_inference_service_server::GrpcInferenceServiceServer::new(Inference(state.clone()))
        .max_decoding_message_size(body_limit)
        .max_encoding_message_size(usize::MAX);
    let health = tonic_health::pb::health_server::HealthServer::new(Health(state.clone()));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection().build_v1().expect("the descriptor sets are built by build.rs and parse");
    let v1alpha = reflection().build_v1alpha().expect("the descriptor sets are built by build.rs and parse");
    tonic::service::Routes::new(inference).add_service(health).add_service(v1).add_service(v1alpha)
}

/// Whether a request is gRPC: `application/grpc`, optionally with a `+proto` style suffix.
pub fn is_grpc<B>(req: &axum::http::Request<B>) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct == "application/grpc" || ct.starts_with("application/grpc+"))
}

/// The gRPC `grpc-timeout` header: up to 8 digits and a unit (`H M S m u n`).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok().filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The inference service.
#[derive(Clone)]
pub struct Inference(pub AppState);

/// One call in progress: its request id, span and start, for the log line and the metrics.
struct Call {
    rpc: &'static str,
    id: String,
    span: tracing::Span,
    start: Instant,
}

impl Inference {
    /// Starts a call: a request id (the client's `x-request-id` when it is well formed), its span,
    /// and a refusal while the server drains.
    fn begin(&self, rpc: &'static str, md: &MetadataMap) -> Result<Call, Status> {
        let id = md
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| super::middleware::valid_request_id(v.as_bytes()))
            .map(str::to_string)
            .unwrap_or_else(super::middleware::new_request_id);
        let span = tracing::info_span!("grpc", request_id = %id, rpc, code = tracing::field::Empty);
        let call = Call { rpc, id, span, start: Instant::now() };
        if self.0.is_draining() && !matches!(rpc, "ServerLive" | "ServerReady") {
            let e = ApiError {
                retry_after: Some(1),
                ..ApiError::new(ErrorType::ShuttingDown, "the server is shutting down; retry on another instance")
            };
            return Err(self.finish::<()>(call, None, Err(e)).unwrap_err());
        }
        Ok(call)
    }

    /// Ends a call: the log line, the request metric for inference calls (`model` is then
    /// `Some`), and `x-request-id` on the response or the status.
    fn finish<T>(&self, call: Call, model: Option<&str>, r: Result<T, ApiError>) -> Result<Response<T>, Status> {
        let r = r.map_err(ApiError::into_grpc_status);
        let code = match &r {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        let latency_ms = call.start.elapsed().as_secs_f64() * 1e3;
        call.span.record("code", format!("{code:?}"));
        call.span.in_scope(|| tracing::info!(code = ?code, latency_ms, "grpc response"));
        if let Some(model) = model.or(if call.rpc == "ModelInfer" { Some("-") } else { None }) {
            count(&self.0, call.rpc, model, code);
        }
        let id = tonic::metadata::MetadataValue::try_from(call.id.as_str()).ok();
        match r {
            Ok(body) => {
                let mut res = Response::new(body);
                if let Some(id) = id {
                    res.metadata_mut().insert("x-request-id", id);
                }
                Ok(res)
            }
            Err(mut s) => {
                if let Some(id) = id {
                    s.metadata_mut().insert("x-request-id", id);
                }
                Err(s)
            }
        }
    }

    /// The deadline of a call: `x-deadline-ms` when the client sets it (checked as REST checks
    /// it), else `grpc-timeout` capped at `--max-deadline-ms`, else the default.
    fn deadline(&self, md: &MetadataMap, start: Instant) -> Result<Deadline, ApiError> {
        let app = &self.0;
        if md.get("x-deadline-ms").is_some() {
            return app.deadline_from(&md.clone().into_headers(), start);
        }
        let budget = match md.get("grpc-timeout").and_then(|v| v.to_str().ok()) {
            None => app.limits.default_deadline,
            Some(v) => parse_grpc_timeout(v)
                .ok_or_else(|| ApiError::new(ErrorType::BadRequest, format!("grpc-timeout '{v}' is malformed")))?
                .min(app.limits.max_deadline),
        };
        Ok(Deadline::from(start, budget))
    }
}

/// Counts one inference call in `dlserve_requests_total`.
fn count(app: &AppState, rpc: &str, model: &str, code: tonic::Code) {
    app.metrics.requests.with_label_values(&["grpc", rpc, model, outcome(code)]).inc();
}

/// The model an inference call names in the metrics: the one that served it, or that it resolved
/// to before failing, else `-`, so made-up names cannot grow the series without bound.
fn metric_model<T>(r: &Result<(T, Arc<LoadedVersion>), ApiError>) -> String {
    match r {
        Ok((_, v)) => v.name.clone(),
        Err(e) => e.model.as_ref().map_or("-".to_string(), |(n, _)| n.clone()),
    }
}

/// The `outcome` label of `dlserve_requests_total` for a gRPC code, as REST's for its status.
fn outcome(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::ResourceExhausted => "rejected",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Unavailable => "unavailable",
        Code::Internal | Code::Unknown | Code::DataLoss => "error",
        _ => "client_error",
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorType::BadRequest, message)
}

/// The version a request names: empty means the newest.
fn version_of(v: &str) -> Result<Option<u64>, ApiError> {
    if v.is_empty() {
        return Ok(None);
    }
    v2::parse_version(v).map(Some).map_err(|e| e.into_inner())
}

/// The values of a typed input, from the `contents` field its datatype uses. Datatypes dlserve
/// does not take yield no values here; [`v2::decode_inputs`] names them.
pub fn typed_values(c: &pb::InferTensorContents, datatype: &str, name: &str) -> Result<Raw, ApiError> {
    let (field, raw) = match datatype {
        "FP32" => ("fp32_contents", Raw::Float(c.fp32_contents.iter().map(|x| *x as f64).collect())),
        "FP64" => ("fp64_contents", Raw::Float(c.fp64_contents.clone())),
        "BOOL" => ("bool_contents", Raw::Bool(c.bool_contents.clone())),
        "INT64" => ("int64_contents", Raw::Int(c.int64_contents.clone())),
        "INT8" | "INT16" | "INT32" => ("int_contents", Raw::Int(c.int_contents.iter().map(|x| *x as i64).collect())),
        "UINT8" => ("uint_contents", Raw::Int(c.uint_contents.iter().map(|x| *x as i64).collect())),
        _ => return Ok(Raw::Float(Vec::new())),
    };
    if let Raw::Int(v) = &raw {
        let (lo, hi) = v2::int_range(datatype);
        if let Some(i) = v.iter().position(|x| !(lo..=hi).contains(x)) {
            return Err(bad(format!("input '{name}': contents.{field}[{i}] is not a valid {datatype} value")));
        }
    }
    let given = [
        c.bool_contents.len(),
        c.int_contents.len(),
        c.int64_contents.len(),
        c.uint_contents.len(),
        c.uint64_contents.len(),
        c.fp32_contents.len(),
        c.fp64_contents.len(),
        c.bytes_contents.len(),
    ];
    let len = match &raw {
        Raw::Float(v) => v.len(),
        Raw::Int(v) => v.len(),
        Raw::Bool(v) => v.len(),
    };
    if given.iter().sum::<usize>() != len {
        return Err(bad(format!("input '{name}' is {datatype}: give its values in contents.{field} only")));
    }
    Ok(raw)
}

/// The inputs of a gRPC request: all raw (`raw_input_contents`, one entry per input, in order)
/// or all typed (`contents`).
pub fn grpc_inputs(req: &pb::ModelInferRequest) -> Result<Vec<InputView<'_>>, ApiError> {
    let raw = &req.raw_input_contents;
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries; the request has {} input(s), one entry each",
            raw.len(),
            req.inputs.len()
        )));
    }
    req.inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let data = match (raw.get(i), &input.contents) {
                (Some(_), Some(_)) => {
                    return Err(bad(format!("input '{}': give contents or raw_input_contents, not both", input.name)))
                }
                (Some(bytes), None) => InputData::Bytes(bytes.clone(), "raw_input_contents"),
                (None, Some(c)) => InputData::Values(typed_values(c, &input.datatype, &input.name)?),
                (None, None) => {
                    return Err(bad(format!("input '{}': give contents or raw_input_contents", input.name)))
                }
            };
            Ok(InputView { name: &input.name, shape: &input.shape, datatype: &input.datatype, data })
        })
        .collect()
}

/// Runs one infer request through the version's queue and builds the response.
async fn infer(
    app: &AppState,
    req: pb::ModelInferRequest,
    deadline: Deadline,
) -> Result<(pb::ModelInferResponse, Arc<LoadedVersion>), ApiError> {
    let m = v2::V2Model::resolve(app, &req.model_name, version_of(&req.model_version)?)?;
    let model = &req.model_name;
    let specs = m.inputs();
    let views = grpc_inputs(&req)?;
    let columns = v2::decode_inputs(views, &specs, m.v.config.kind.as_ref(), app.limits.max_items, model)
        .map_err(V2Error::into_inner)?;
    let out_specs = m.outputs();
    let wanted: Vec<usize> = if req.outputs.is_empty() {
        (0..out_specs.len()).collect()
    } else {
        req.outputs
            .iter()
            .map(|o| v2::output_index(&o.name, &out_specs, model))
            .collect::<Result<_, _>>()
            .map_err(V2Error::into_inner)?
    };
    let typed = req.raw_input_contents.is_empty();
    let items = v2::columns_to_items(&columns);
    let served = m.infer(items, deadline).await?;
    let mut resp = pb::ModelInferResponse {
        model_name: req.model_name.clone(),
        model_version: m.v.version.to_string(),
        id: req.id,
        ..Default::default()
    };
    for i in wanted {
        let (shape, data) = v2::gather_output(&served.outs, i, columns.batch);
        let contents = if typed {
            Some(pb::InferTensorContents { fp32_contents: data, ..Default::default() })
        } else {
            resp.raw_output_contents.push(data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into());
            None
        };
        resp.outputs.push(pb::model_infer_response::InferOutputTensor {
            name: out_specs[i].name.clone(),
            datatype: "FP32".into(),
            shape,
            parameters: HashMap::new(),
            contents,
        });
    }
    Ok((resp, m.v))
}

/// One `ModelInfer`, bounded by the whole-request timeout like a REST request.
async fn infer_call(
    app: &AppState,
    req: pb::ModelInferRequest,
    deadline: Deadline,
) -> Result<(pb::ModelInferResponse, Arc<LoadedVersion>), ApiError> {
    let limit = app.limits.request_timeout;
    match tokio::time::timeout(limit, infer(app, req, deadline)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            ErrorType::DeadlineExceeded,
            format!("request exceeded the request timeout of {} ms", limit.as_millis()),
        )),
    }
}

fn tensor_metadata(t: &crate::kinds::TensorSpec) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: t.name.clone(),
        datatype: t.datatype.to_string(),
        shape: t.shape.clone(),
    }
}

fn config_tensor_type(t: &str) -> i32 {
    pb::DataType::from_str_name(t).map_or(0, |d| d as i32)
}

fn model_config_pb(c: super::triton::ModelConfigJson) -> pb::ModelConfig {
    let kind = |k: &str| pb::model_instance_group::Kind::from_str_name(k).map_or(0, |k| k as i32);
    pb::ModelConfig {
        name: c.name,
        platform: c.platform.into(),
        backend: c.backend.into(),
        max_batch_size: c.max_batch_size as i32,
        input: c
            .input
            .into_iter()
            .map(|t| pb::ModelInput {
                name: t.name,
                data_type: config_tensor_type(&t.data_type),
                dims: t.dims,
                ..Default::default()
            })
            .collect(),
        output: c
            .output
            .into_iter()
            .map(|t| pb::ModelOutput {
                name: t.name,
                data_type: config_tensor_type(&t.data_type),
                dims: t.dims,
                ..Default::default()
            })
            .collect(),
        instance_group: c
            .instance_group
            .into_iter()
            .map(|g| pb::ModelInstanceGroup { name: g.name, kind: kind(g.kind), count: g.count as i32, gpus: g.gpus })
            .collect(),
        scheduling_choice: Some(pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
            preferred_batch_size: c.dynamic_batching.preferred_batch_size,
            max_queue_delay_microseconds: c.dynamic_batching.max_queue_delay_microseconds,
            ..Default::default()
        })),
    }
}

fn duration_pb(d: super::triton::StatDuration) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration { count: d.count, ns: d.ns })
}

fn stats_pb(s: super::triton::ModelStats) -> pb::ModelStatistics {
    let i = s.inference_stats;
    pb::ModelStatistics {
        name: s.name,
        version: s.version,
        last_inference: s.last_inference,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: duration_pb(i.success),
            fail: duration_pb(i.fail),
            queue: duration_pb(i.queue),
            compute_input: duration_pb(i.compute_input),
            compute_infer: duration_pb(i.compute_infer),
            compute_output: duration_pb(i.compute_output),
            cache_hit: duration_pb(i.cache_hit),
            cache_miss: duration_pb(i.cache_miss),
        }),
        batch_stats: s
            .batch_stats
            .into_iter()
            .map(|b| pb::InferBatchStatistics {
                batch_size: b.batch_size,
                compute_input: duration_pb(b.compute_input),
                compute_infer: duration_pb(b.compute_infer),
                compute_output: duration_pb(b.compute_output),
            })
            .collect(),
    }
}

type StreamOut = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::grpc_inference_service_server::GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        request: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        let call = self.begin("ServerLive", request.metadata())?;
        self.finish(call, None, Ok(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        request: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let call = self.begin("ServerReady", request.metadata())?;
        self.finish(call, None, Ok(pb::ServerReadyResponse { ready: self.0.is_ready() }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let call = self.begin("ModelReady", request.metadata())?;
        let r = request.get_ref();
        // Like REST: an unknown model or version is NOT_FOUND; a known one answers ready or not.
        let res = version_of(&r.version).and_then(|version| match v2::V2Model::resolve(&self.0, &r.name, version) {
            Ok(m) => Ok(pb::ModelReadyResponse { ready: m.batcher().live_workers() > 0 }),
            Err(e) => {
                if e.ty == ErrorType::ModelNotReady {
                    Ok(pb::ModelReadyResponse { ready: false })
                } else {
                    Err(e)
                }
            }
        });
        self.finish(call, None, res)
    }

    async fn server_metadata(
        &self,
        request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let call = self.begin("ServerMetadata", request.metadata())?;
        let body = pb::ServerMetadataResponse {
            name: "dlserve".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: v2::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        };
        self.finish(call, None, Ok(body))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let call = self.begin("ModelMetadata", request.metadata())?;
        let r = request.get_ref();
        let res = version_of(&r.version).and_then(|version| {
            let m = v2::metadata(&self.0, &r.name, version).map_err(V2Error::into_inner)?;
            Ok(pb::ModelMetadataResponse {
                name: m.name,
                versions: m.versions,
                platform: m.platform.into(),
                inputs: m.inputs.iter().map(tensor_metadata).collect(),
                outputs: m.outputs.iter().map(tensor_metadata).collect(),
            })
        });
        self.finish(call, None, res)
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let call = self.begin("ModelInfer", request.metadata())?;
        let deadline = match self.deadline(request.metadata(), call.start) {
            Ok(d) => d,
            Err(e) => return self.finish(call, None, Err(e)),
        };
        let traced =
            self.0.tracer.as_ref().and_then(|t| {
                t.request(request.metadata().get("traceparent").and_then(|v| v.to_str().ok()), call.start)
            });
        let req = request.into_inner();
        let span = call.span.clone();
        let work = tracing::Instrument::instrument(infer_call(&self.0, req, deadline), span);
        let r = match &traced {
            Some(span) => span.run(work).await,
            None => work.await,
        };
        let name = metric_model(&r);
        if let Some(span) = traced {
            use crate::traces::Attr;
            let code = match &r {
                Ok(_) => tonic::Code::Ok,
                Err(e) => e.ty.grpc_code(),
            };
            let mut attrs = vec![
                ("rpc.system", Attr::Str("grpc".into())),
                ("rpc.service", Attr::Str("inference.GRPCInferenceService".into())),
                ("rpc.method", Attr::Str("ModelInfer".into())),
                ("rpc.grpc.status_code", Attr::Int(code as i64)),
            ];
            if let Ok((_, v)) = &r {
                attrs.push(("dlserve.model", Attr::Str(v.name.clone())));
                attrs.push(("dlserve.model.version", Attr::Str(v.version.to_string())));
            }
            let error = matches!(code, tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss);
            span.end("inference.GRPCInferenceService/ModelInfer".into(), attrs, error);
        }
        self.finish(call, Some(&name), r.map(|(resp, _)| resp))
    }

    type ModelStreamInferStream = StreamOut;

    async fn model_stream_infer(
        &self,
        request: Request<tonic::Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let call = self.begin("ModelStreamInfer", request.metadata())?;
        let md = request.metadata().clone();
        let mut incoming = request.into_inner();
        let this = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ModelStreamInferResponse, Status>>(STREAM_IN_FLIGHT);
        let span = call.span.clone();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                // Answers go back in request order; at most STREAM_IN_FLIGHT requests run at once.
                let mut running = futures::stream::FuturesOrdered::new();
                let mut open = true;
                loop {
                    tokio::select! {
                        next = incoming.next(), if open && running.len() < STREAM_IN_FLIGHT => match next {
                            Some(Ok(req)) => {
                                let app = this.0.clone();
                                let start = Instant::now();
                                let deadline = this.deadline(&md, start);
                                running.push_back(async move {
                                    let r = match deadline {
                                        Ok(d) => infer_call(&app, req, d).await,
                                        Err(e) => Err(e),
                                    };
                                    let code = r.as_ref().map_or_else(|e| e.ty.grpc_code(), |_| tonic::Code::Ok);
                                    count(&app, "ModelStreamInfer", &metric_model(&r), code);
                                    match r {
                                        Ok((resp, _)) => pb::ModelStreamInferResponse { error_message: String::new(), infer_response: Some(resp) },
                                        Err(e) => pb::ModelStreamInferResponse { error_message: e.into_grpc_status().message().to_string(), infer_response: None },
                                    }
                                });
                            }
                            Some(Err(status)) => {
                                tracing::debug!(%status, "stream read failed");
                                open = false;
                            }
                            None => open = false,
                        },
                        Some(resp) = running.next(), if !running.is_empty() => {
                            if tx.send(Ok(resp)).await.is_err() {
                                // The client went away: dropping `running` abandons its queued items.
                                return;
                            }
                        },
                        else => return,
                    }
                }
            },
            span,
        ));
        let out: StreamOut = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        self.finish(call, None, Ok(out))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let call = self.begin("ModelConfig", request.metadata())?;
        let r = request.get_ref();
        let res = version_of(&r.version).and_then(|version| {
            let v = self.0.registry.resolve(&r.name, version)?;
            Ok(pb::ModelConfigResponse { config: Some(model_config_pb(super::triton::model_config(&v))) })
        });
        self.finish(call, None, res)
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let call = self.begin("ModelStatistics", request.metadata())?;
        let r = request.get_ref();
        let res = version_of(&r.version).and_then(|version| {
            let model = Some(r.name.as_str()).filter(|n| !n.is_empty());
            let s = v2::stats_of(&self.0, model, version).map_err(V2Error::into_inner)?;
            Ok(pb::ModelStatisticsResponse { model_stats: s.model_stats.into_iter().map(stats_pb).collect() })
        });
        self.finish(call, None, res)
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let call = self.begin("RepositoryIndex", request.metadata())?;
        let ready_only = request.get_ref().ready;
        let models = v2::index_entries(&self.0)
            .into_iter()
            .filter(|e| !ready_only || e.state == "READY")
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version.unwrap_or_default(),
                state: e.state.into(),
                reason: e.reason.unwrap_or_default(),
            })
            .collect();
        self.finish(call, None, Ok(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let call = self.begin("RepositoryModelLoad", request.metadata())?;
        if let Err(e) = super::models::authorize(&self.0, &request.metadata().clone().into_headers()) {
            return self.finish(call, None, Err(e));
        }
        let name = request.into_inner().model_name;
        let reg = self.0.registry.clone();
        let res = match tokio::task::spawn_blocking(move || reg.load(&name)).await {
            Ok(Ok(_)) => Ok(pb::RepositoryModelLoadResponse {}),
            Ok(Err(e)) => Err(ApiError::from(e)),
            Err(e) => Err(ApiError::internal(e.to_string())),
        };
        self.finish(call, None, res)
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let call = self.begin("RepositoryModelUnload", request.metadata())?;
        if let Err(e) = super::models::authorize(&self.0, &request.metadata().clone().into_headers()) {
            return self.finish(call, None, Err(e));
        }
        let res = self
            .0
            .registry
            .unload(&request.get_ref().model_name)
            .map(|_| pb::RepositoryModelUnloadResponse {})
            .map_err(ApiError::from);
        self.finish(call, None, res)
    }
}

/// `grpc.health.v1.Health`: `SERVING` while the server is ready (every configured model ready,
/// not draining), else `NOT_SERVING`; for the whole server (`""`) and for
/// `inference.GRPCInferenceService`. `Watch` sends the status, then every change (checked each
/// second).
#[derive(Clone)]
pub struct Health(pub AppState);

impl Health {
    fn status(&self, service: &str) -> Result<i32, Status> {
        use tonic_health::pb::health_check_response::ServingStatus;
        if !service.is_empty() && service != SERVICE_NAME {
            return Err(Status::not_found(format!("unknown service '{service}'; this server has '{SERVICE_NAME}'")));
        }
        Ok(if self.0.is_ready() { ServingStatus::Serving } else { ServingStatus::NotServing } as i32)
    }
}

type WatchOut =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<tonic_health::pb::HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Health {
    async fn check(
        &self,
        request: Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<Response<tonic_health::pb::HealthCheckResponse>, Status> {
        let status = self.status(&request.get_ref().service)?;
        Ok(Response::new(tonic_health::pb::HealthCheckResponse { status }))
    }

    type WatchStream = WatchOut;

    async fn watch(
        &self,
        request: Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let first = self.status(&service)?;
        let this = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(tonic_health::pb::HealthCheckResponse { status: last })).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tx.closed() => return,
                }
                let Ok(now) = this.status(&service) else { return };
                if now != last {
                    last = now;
                    if tx.send(Ok(tonic_health::pb::HealthCheckResponse { status: now })).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "123456789m", "12x", "-1m", "+1m", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn typed_contents_are_read_from_the_field_of_their_datatype() {
        let c = pb::InferTensorContents { fp32_contents: vec![1.5, 2.0], ..Default::default() };
        assert_eq!(typed_values(&c, "FP32", "x").unwrap(), Raw::Float(vec![1.5, 2.0]));
        let e = typed_values(&c, "INT64", "x").unwrap_err();
        assert!(e.message.contains("give its values in contents.int64_contents only"), "{}", e.message);
        let c = pb::InferTensorContents { int_contents: vec![1, 300], ..Default::default() };
        assert_eq!(typed_values(&c, "INT16", "x").unwrap(), Raw::Int(vec![1, 300]));
        let e = typed_values(&c, "INT8", "x").unwrap_err();
        assert!(e.message.contains("contents.int_contents[1] is not a valid INT8 value"), "{}", e.message);
        let c = pb::InferTensorContents { uint_contents: vec![256], ..Default::default() };
        assert!(typed_values(&c, "UINT8", "x").is_err());
    }

    #[test]
    fn raw_and_typed_inputs_do_not_mix() {
        use pb::model_infer_request::InferInputTensor;
        let input = |contents| InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 1],
            parameters: HashMap::new(),
            contents,
        };
        let typed = Some(pb::InferTensorContents { fp32_contents: vec![1.0], ..Default::default() });
        let both = pb::ModelInferRequest {
            inputs: vec![input(typed)],
            raw_input_contents: vec![bytes::Bytes::from_static(&[0, 0, 128, 63])],
            ..Default::default()
        };
        assert!(grpc_inputs(&both).unwrap_err().message.contains("not both"));
        let short = pb::ModelInferRequest {
            inputs: vec![input(None), input(None)],
            raw_input_contents: vec![bytes::Bytes::from_static(&[0, 0, 128, 63])],
            ..Default::default()
        };
        assert!(grpc_inputs(&short).unwrap_err().message.contains("raw_input_contents has 1 entries"));
        let none = pb::ModelInferRequest { inputs: vec![input(None)], ..Default::default() };
        assert!(grpc_inputs(&none).unwrap_err().message.contains("give contents or raw_input_contents"));
    }
}
