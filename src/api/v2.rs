//! Open Inference Protocol (KServe V2) REST API, with the binary tensor data and model
//! repository extensions.
//!
//! V2 is tensor in, tensor out in the model's own space: no image decoding, scaling or
//! post-processing. Each row of the batch dimension becomes one item in the same queue the domain
//! endpoints use, so V2 traffic is batched with them and shares their limits and metrics.
//! Errors have the protocol's shape, `{"error": "..."}`.

use super::error::{ApiError, ErrorType};
use super::AppState;
use crate::kinds::{ServedKind, TensorSpec};
use crate::registry::ModelState;
use crate::tensor::{ItemTensor, TensorData};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What a V2 model name serves: a model's forward, or its encoder. `<model>.<method>`, where
/// `<model>` has an `[embedding]` table naming `<method>`, is the encoder (the same queue as
/// `POST /embed`), with the model's inputs and one output, `embedding` `[B, dim]`. A model whose
/// own name is `<model>.<method>` wins over that reading.
pub struct V2Model {
    /// The version that serves.
    pub v: std::sync::Arc<crate::registry::LoadedVersion>,
    /// Whether the name means the version's `[embedding]` method.
    pub embedding: bool,
}

impl V2Model {
    /// The served version a V2 name (and optional version) means.
    pub fn resolve(app: &super::App, name: &str, version: Option<u64>) -> Result<V2Model, ApiError> {
        use crate::registry::RegistryError;
        match app.registry.resolve(name, version) {
            Ok(v) => Ok(V2Model { v, embedding: false }),
            Err(RegistryError::ModelNotFound(shown)) => {
                let encoder = name.rsplit_once('.').and_then(|(base, method)| {
                    let v = app.registry.resolve(base, version).ok()?;
                    let named = v.config.manifest.embedding.as_ref().is_some_and(|e| e.method == method);
                    (named && v.embedder.is_some()).then_some(V2Model { v, embedding: true })
                });
                encoder.ok_or_else(|| RegistryError::ModelNotFound(shown).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The tensors it takes.
    pub fn inputs(&self) -> Vec<TensorSpec> {
        self.v.config.kind.inputs()
    }

    /// The tensors it answers with.
    pub fn outputs(&self) -> Vec<TensorSpec> {
        match (&self.v.config.manifest.embedding, self.embedding) {
            (Some(e), true) => vec![crate::kinds::spec("embedding", "FP32", vec![-1, e.dim])],
            _ => self.v.config.kind.outputs(&self.v.labels),
        }
    }

    /// The queue its items go through.
    pub fn batcher(&self) -> &crate::batching::Batcher {
        match (&self.v.embedder, self.embedding) {
            (Some(e), true) => e,
            _ => &self.v.batcher,
        }
    }

    /// Runs items through that queue.
    pub async fn infer(
        &self,
        items: Vec<Vec<ItemTensor>>,
        deadline: crate::batching::Deadline,
    ) -> Result<super::pipeline::Served, ApiError> {
        let mut served = super::pipeline::Served::on(&self.v);
        served.run_on(self.batcher(), items, deadline).await?;
        Ok(served)
    }
}

/// Header giving the length of the JSON part of a binary-extension body.
pub static HEADER_LENGTH: HeaderName = HeaderName::from_static("inference-header-content-length");

/// An error rendered in the protocol's `{"error": "..."}` shape.
#[derive(Debug)]
pub struct V2Error(ApiError);

impl<E: Into<ApiError>> From<E> for V2Error {
    fn from(e: E) -> Self {
        V2Error(e.into())
    }
}

impl V2Error {
    /// The error inside, for another protocol to render (gRPC).
    pub fn into_inner(self) -> ApiError {
        self.0
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        self.0.into_v2_response()
    }
}

fn bad(message: impl Into<String>) -> V2Error {
    V2Error(ApiError::new(ErrorType::BadRequest, message))
}

/// Server metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    /// Server name.
    #[schema(example = "dlserve")]
    pub name: &'static str,
    /// Server version.
    pub version: &'static str,
    /// Supported protocol extensions.
    pub extensions: Vec<&'static str>,
}

/// Model metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Versions served.
    pub versions: Vec<String>,
    /// `pytorch_torchscript` (a `model.pt`) or `pytorch_aoti` (a `model.pt2` package).
    pub platform: &'static str,
    /// Inputs in forward's argument order; -1 marks a variable dimension.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in forward's return order.
    pub outputs: Vec<TensorSpec>,
}

/// One input tensor of an infer request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestInput {
    /// Input name (or `input__N` for the N-th input).
    pub name: String,
    /// Shape, batch dimension first.
    pub shape: Vec<i64>,
    /// `FP32`, `FP64`, `INT32`, `INT64`, `UINT8`, `INT8`, `INT16` or `BOOL`.
    pub datatype: String,
    /// `binary_data_size` when the data follows the JSON in binary.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// The values, row-major, flat or nested.
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    pub data: Option<serde_json::Value>,
}

/// An output the client asks for.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestOutput {
    /// Output name.
    pub name: String,
    /// `binary_data: true` returns this output in binary.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An infer request.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"id": "42", "inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}]}))]
pub struct InferRequest {
    /// Echoed back in the response.
    pub id: Option<String>,
    /// `binary_data_output: true` returns every output in binary.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// The input tensors.
    pub inputs: Vec<RequestInput>,
    /// The outputs to return (all when omitted).
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One output tensor of an infer response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseOutput {
    /// Output name.
    pub name: String,
    /// Shape, batch dimension first.
    pub shape: Vec<i64>,
    /// Always `FP32`.
    pub datatype: &'static str,
    /// `binary_data_size` when the data follows the JSON in binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
    /// The values, flat and row-major (absent when sent in binary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<f32>>,
}

/// An infer response.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    /// The model.
    pub model_name: String,
    /// The version that served the request.
    pub model_version: String,
    /// The request's id, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The output tensors.
    pub outputs: Vec<ResponseOutput>,
}

/// One entry of the repository index.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Newest served version, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `READY`, `UNAVAILABLE`, `LOADING` or `UNLOADED`.
    pub state: &'static str,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `/v2` routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(server_metadata))
        .routes(routes!(server_live))
        .routes(routes!(server_ready))
        .routes(routes!(model_metadata))
        .routes(routes!(model_version_metadata))
        .routes(routes!(model_ready))
        .routes(routes!(model_version_ready))
        .routes(routes!(infer))
        .routes(routes!(infer_version))
        .routes(routes!(model_config))
        .routes(routes!(model_version_config))
        .routes(routes!(all_stats))
        .routes(routes!(model_stats))
        .routes(routes!(model_version_stats))
        .routes(routes!(repository_index))
        .routes(routes!(repository_load))
        .routes(routes!(repository_unload))
}

/// The protocol extensions dlserve serves, as `/v2` and gRPC's `ServerMetadata` list them.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_repository", "model_configuration", "statistics"];

/// Server metadata with the supported extensions.
#[utoipa::path(get, path = "/v2", tag = "v2", responses((status = 200, body = ServerMetadata)))]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata { name: "dlserve", version: env!("CARGO_PKG_VERSION"), extensions: EXTENSIONS.to_vec() })
}

/// Server liveness: 200 while the process is up.
#[utoipa::path(get, path = "/v2/health/live", tag = "v2", responses((status = 200, description = "Live")))]
pub async fn server_live() -> StatusCode {
    StatusCode::OK
}

/// Server readiness: 200 when every configured model is ready, else 400 (the protocol's 4xx for false).
#[utoipa::path(get, path = "/v2/health/ready", tag = "v2", responses((status = 200, description = "Ready"), (status = 400, description = "Not ready", body = Object)))]
pub async fn server_ready(State(app): State<AppState>) -> Result<StatusCode, V2Error> {
    let not_ready = app.registry.not_ready();
    if app.is_draining() || !not_ready.is_empty() {
        let why = if app.is_draining() { "server is shutting down".to_string() } else { not_ready.join("; ") };
        return Err(bad(format!("not ready: {why}")));
    }
    Ok(StatusCode::OK)
}

pub(crate) fn parse_version(v: &str) -> Result<u64, V2Error> {
    v.parse().map_err(|_| bad(format!("version '{v}' is not a non-negative integer")))
}

pub(crate) fn metadata(app: &AppState, name: &str, version: Option<u64>) -> Result<ModelMetadata, V2Error> {
    let m = V2Model::resolve(app, name, version)?;
    let info = app.registry.info(&m.v.name)?;
    Ok(ModelMetadata {
        name: name.to_string(),
        versions: info.versions.iter().map(|v| v.version.to_string()).collect(),
        platform: super::triton::platform(&m.v),
        inputs: m.inputs(),
        outputs: m.outputs(),
    })
}

/// Model metadata: inputs and outputs with name, datatype and shape (-1 = variable).
#[utoipa::path(get, path = "/v2/models/{model}", tag = "v2", params(("model" = String, Path)), responses((status = 200, body = ModelMetadata), (status = 404, body = Object)))]
pub async fn model_metadata(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelMetadata>, V2Error> {
    Ok(Json(metadata(&app, &model, None)?))
}

/// Metadata of one model version.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "v2", params(("model" = String, Path), ("version" = String, Path)), responses((status = 200, body = ModelMetadata), (status = 400, body = Object), (status = 404, body = Object)))]
pub async fn model_version_metadata(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, V2Error> {
    Ok(Json(metadata(&app, &model, Some(parse_version(&version)?))?))
}

fn ready_status(app: &AppState, model: &str, version: Option<u64>) -> Result<StatusCode, V2Error> {
    let m = V2Model::resolve(app, model, version)?;
    if m.batcher().live_workers() == 0 {
        return Err(bad(format!("model '{model}' version {} has no live worker", m.v.version)));
    }
    Ok(StatusCode::OK)
}

/// Model readiness: 200 when the model (newest version) can serve.
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "v2", params(("model" = String, Path)), responses((status = 200, description = "Ready"), (status = 400, body = Object), (status = 404, body = Object), (status = 503, body = Object)))]
pub async fn model_ready(State(app): State<AppState>, Path(model): Path<String>) -> Result<StatusCode, V2Error> {
    ready_status(&app, &model, None)
}

/// Readiness of one model version.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "v2", params(("model" = String, Path), ("version" = String, Path)), responses((status = 200, description = "Ready"), (status = 400, body = Object), (status = 404, body = Object), (status = 503, body = Object)))]
pub async fn model_version_ready(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<StatusCode, V2Error> {
    ready_status(&app, &model, Some(parse_version(&version)?))
}

/// Inference on the newest version.
///
/// JSON body, or the binary tensor data extension: `Inference-Header-Content-Length` gives the
/// length of the JSON part; inputs with `parameters.binary_data_size` take their bytes
/// (little-endian, row-major) from what follows, in input order. Outputs are returned in binary
/// when the output asks for `binary_data: true` or the request sets `binary_data_output: true`.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "v2", params(("model" = String, Path), ("x-deadline-ms" = Option<u64>, Header, description = "Inference deadline in ms")),
    request_body(content(( InferRequest = "application/json"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 200, body = InferResponse), (status = 400, body = Object), (status = 404, body = Object), (status = 413, body = Object), (status = 422, body = Object), (status = 429, body = Object), (status = 500, body = Object), (status = 503, body = Object), (status = 504, body = Object)))]
pub async fn infer(
    State(app): State<AppState>,
    Path(model): Path<String>,
    deadline: Result<super::RequestDeadline, ApiError>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, V2Error> {
    run_infer(app, model, None, deadline?.0, headers, body).await
}

/// Inference on one version.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "v2", params(("model" = String, Path), ("version" = String, Path), ("x-deadline-ms" = Option<u64>, Header, description = "Inference deadline in ms")),
    request_body(content((InferRequest = "application/json"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 200, body = InferResponse), (status = 400, body = Object), (status = 404, body = Object), (status = 413, body = Object), (status = 422, body = Object), (status = 429, body = Object), (status = 500, body = Object), (status = 503, body = Object), (status = 504, body = Object)))]
pub async fn infer_version(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    deadline: Result<super::RequestDeadline, ApiError>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, V2Error> {
    let v = parse_version(&version)?;
    run_infer(app, model, Some(v), deadline?.0, headers, body).await
}

/// The element types the protocol defines that dlserve accepts, with their byte sizes.
fn elem_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "INT16" => 2,
        "FP32" | "INT32" => 4,
        "FP64" | "INT64" => 8,
        _ => return None,
    })
}

/// Values of one input, typed but not yet converted to the model's element type.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    /// FP32 and FP64 values.
    Float(Vec<f64>),
    /// Integer values of any width, already checked against the datatype's range.
    Int(Vec<i64>),
    /// BOOL values.
    Bool(Vec<bool>),
}

fn decode_binary(bytes: &[u8], datatype: &str) -> Raw {
    match datatype {
        "FP32" => Raw::Float(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()),
        "FP64" => Raw::Float(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()),
        "INT32" => Raw::Int(bytes.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect()),
        "INT64" => Raw::Int(bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()),
        "INT16" => Raw::Int(bytes.chunks_exact(2).map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i64).collect()),
        "INT8" => Raw::Int(bytes.iter().map(|b| *b as i8 as i64).collect()),
        "UINT8" => Raw::Int(bytes.iter().map(|b| *b as i64).collect()),
        _ => Raw::Bool(bytes.iter().map(|b| *b != 0).collect()),
    }
}

/// The range of an integer datatype.
pub fn int_range(datatype: &str) -> (i64, i64) {
    match datatype {
        "UINT8" => (0, 255),
        "INT8" => (-128, 127),
        "INT16" => (i16::MIN as i64, i16::MAX as i64),
        "INT32" => (i32::MIN as i64, i32::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    }
}

fn decode_json(v: &serde_json::Value, datatype: &str, name: &str) -> Result<Raw, V2Error> {
    fn flatten<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        match v {
            serde_json::Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
            other => out.push(other),
        }
    }
    let mut leaves = Vec::new();
    flatten(v, &mut leaves);
    let wrong = |i: usize| bad(format!("input '{name}': data[{i}] is not a valid {datatype} value"));
    Ok(match datatype {
        "FP32" | "FP64" => Raw::Float(
            leaves.iter().enumerate().map(|(i, x)| x.as_f64().ok_or_else(|| wrong(i))).collect::<Result<_, _>>()?,
        ),
        "BOOL" => Raw::Bool(
            leaves.iter().enumerate().map(|(i, x)| x.as_bool().ok_or_else(|| wrong(i))).collect::<Result<_, _>>()?,
        ),
        _ => {
            let (lo, hi) = int_range(datatype);
            Raw::Int(
                leaves
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x.as_i64().filter(|v| (lo..=hi).contains(v)).ok_or_else(|| wrong(i)))
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

/// Converts to the model's element type where that is exact enough to be safe.
fn convert(raw: Raw, spec: &TensorSpec, datatype: &str) -> Result<TensorData, V2Error> {
    let name = &spec.name;
    match (spec.datatype, raw) {
        ("FP32", Raw::Float(v)) => {
            if let Some(i) = v.iter().position(|x| !x.is_finite() || x.abs() > f32::MAX as f64) {
                return Err(V2Error(ApiError::new(
                    ErrorType::InvalidInput,
                    format!("input '{name}': element {i} is not a finite FP32 value"),
                )));
            }
            Ok(TensorData::F32(v.into_iter().map(|x| x as f32).collect()))
        }
        ("FP32", Raw::Int(v)) => {
            // Integers convert exactly up to 2^24.
            if let Some(i) = v.iter().position(|x| x.unsigned_abs() > 1 << 24) {
                return Err(bad(format!(
                    "input '{name}': {datatype} element {i} cannot be represented exactly in FP32"
                )));
            }
            Ok(TensorData::F32(v.into_iter().map(|x| x as f32).collect()))
        }
        ("FP32", Raw::Bool(v)) => Ok(TensorData::F32(v.into_iter().map(|b| if b { 1.0 } else { 0.0 }).collect())),
        ("INT64", Raw::Int(v)) => Ok(TensorData::I64(v)),
        ("INT64", Raw::Bool(v)) => Ok(TensorData::I64(v.into_iter().map(i64::from).collect())),
        (want, _) => Err(bad(format!("input '{name}' is {want}; {datatype} cannot be converted to it safely"))),
    }
}

async fn run_infer(
    app: AppState,
    model: String,
    version: Option<u64>,
    deadline: crate::batching::Deadline,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, V2Error> {
    let m = V2Model::resolve(&app, &model, version)?;
    let (json_part, binary) = split_body(&headers, body)?;
    let req: InferRequest = super::error::parse_json(&json_part).map_err(V2Error)?;
    let specs = m.inputs();
    let columns =
        decode_inputs(rest_inputs(&req, binary)?, &specs, m.v.config.kind.as_ref(), app.limits.max_items, &model)?;
    let out_specs = m.outputs();
    let wanted = select_outputs(&req, &out_specs, &model)?;
    let items = columns_to_items(&columns);
    let served = m.infer(items, deadline).await.map_err(V2Error)?;
    let resp =
        InferResponse { model_name: model, model_version: m.v.version.to_string(), id: req.id, outputs: Vec::new() };
    let (json, binary_out) = encode_response(resp, &served.outs, &wanted, &out_specs, columns.batch)
        .map_err(|e| V2Error(ApiError::internal(e)))?;
    let mut hdrs = served.headers();
    if binary_out.is_empty() {
        hdrs.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok((hdrs, json).into_response());
    }
    hdrs.insert(HEADER_LENGTH.clone(), HeaderValue::from(json.len()));
    hdrs.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    let mut body = json;
    body.extend_from_slice(&binary_out);
    Ok((hdrs, body).into_response())
}

/// Splits a body into its JSON part and the binary tensor data after it, as the
/// `Inference-Header-Content-Length` header says (all JSON without it).
pub fn split_body(headers: &HeaderMap, body: bytes::Bytes) -> Result<(bytes::Bytes, bytes::Bytes), V2Error> {
    let Some(h) = headers.get(&HEADER_LENGTH) else { return Ok((body, bytes::Bytes::new())) };
    let n: usize = h
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| bad("Inference-Header-Content-Length is not a number"))?;
    if n > body.len() {
        return Err(bad(format!("Inference-Header-Content-Length {n} exceeds the body length {}", body.len())));
    }
    Ok((body.slice(..n), body.slice(n..)))
}

/// The inputs of one infer request, decoded, converted to the model's element types and checked
/// against its contract: one column per model input, in forward's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    /// The batch dimension every input shares.
    pub batch: usize,
    /// Per model input: the per-item shape and the whole column's data.
    pub columns: Vec<(Vec<i64>, TensorData)>,
}

/// Where the values of one input come from.
#[derive(Debug, Clone)]
pub enum InputData<'a> {
    /// JSON `data`, flat or nested.
    Json(&'a serde_json::Value),
    /// Little-endian, row-major bytes, and the field that gave them (for messages): the binary
    /// extension's `parameters.binary_data_size`, or gRPC's `raw_input_contents`.
    Bytes(bytes::Bytes, &'static str),
    /// Values already typed: gRPC's `contents`.
    Values(Raw),
}

/// One input of an infer request, as REST or gRPC carries it.
#[derive(Debug, Clone)]
pub struct InputView<'a> {
    /// Input name (or `input__N`).
    pub name: &'a str,
    /// Shape, batch dimension first.
    pub shape: &'a [i64],
    /// The protocol's datatype name.
    pub datatype: &'a str,
    /// The values.
    pub data: InputData<'a>,
}

/// The inputs of a REST request: JSON `data`, or `binary_data_size` bytes of `binary` taken in
/// input order. Bytes left over after the last input are an error.
pub fn rest_inputs(req: &InferRequest, mut binary: bytes::Bytes) -> Result<Vec<InputView<'_>>, V2Error> {
    let mut views = Vec::with_capacity(req.inputs.len());
    for input in &req.inputs {
        let binary_size = match input.parameters.as_ref().and_then(|p| p.get("binary_data_size")) {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                bad(format!("input '{}': parameters.binary_data_size must be a non-negative integer", input.name))
            })?),
        };
        let data = match (binary_size, &input.data) {
            (Some(n), None) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > binary.len() {
                    return Err(bad(format!(
                        "input '{}': binary_data_size {n} exceeds the {} binary bytes left",
                        input.name,
                        binary.len()
                    )));
                }
                InputData::Bytes(binary.split_to(n), "parameters.binary_data_size")
            }
            (None, Some(d)) => InputData::Json(d),
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "input '{}': give either data or parameters.binary_data_size, not both",
                    input.name
                )))
            }
            (None, None) => {
                return Err(bad(format!("input '{}': give either data or parameters.binary_data_size", input.name)))
            }
        };
        views.push(InputView { name: &input.name, shape: &input.shape, datatype: &input.datatype, data });
    }
    if !binary.is_empty() {
        return Err(bad(format!("{} bytes of binary tensor data follow the last input that takes any", binary.len())));
    }
    Ok(views)
}

/// Matches a request's inputs to the model's (by name or `input__N`), decodes each, converts it
/// exactly to the model's element type, and checks shapes, the batch limit and the kind's value
/// rules. Either protocol's request comes here as [`InputView`]s.
pub fn decode_inputs(
    inputs: Vec<InputView<'_>>,
    specs: &[TensorSpec],
    kind: &dyn ServedKind,
    max_items: usize,
    model: &str,
) -> Result<Columns, V2Error> {
    let names = || specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
    if inputs.len() != specs.len() {
        return Err(bad(format!(
            "model '{model}' takes {} input(s) ({}); the request has {}",
            specs.len(),
            names(),
            inputs.len()
        )));
    }
    let mut columns: Vec<Option<(Vec<i64>, TensorData)>> = vec![None; specs.len()];
    let mut batch: Option<i64> = None;
    for input in inputs {
        let idx = specs
            .iter()
            .position(|s| s.name == input.name)
            .or_else(|| indexed(input.name, "input__", specs.len()))
            .ok_or_else(|| bad(format!("unknown input '{}'; model '{model}' takes {}", input.name, names())))?;
        if columns[idx].is_some() {
            return Err(bad(format!("input '{}' is given twice", input.name)));
        }
        let spec = &specs[idx];
        let size = elem_size(input.datatype).ok_or_else(|| {
            bad(format!(
                "input '{}': datatype '{}' is not supported (use FP32, FP64, INT32, INT64, UINT8, INT8, INT16 or BOOL)",
                input.name, input.datatype
            ))
        })?;
        if input.shape.len() != spec.shape.len() {
            return Err(bad(format!(
                "input '{}': shape {:?} has {} dimension(s); the model takes {} ({:?}, -1 = any size)",
                input.name,
                input.shape,
                input.shape.len(),
                spec.shape.len(),
                spec.shape
            )));
        }
        if let Some(d) = input.shape.iter().find(|d| **d < 0) {
            return Err(bad(format!("input '{}': shape {:?} has a negative dimension {d}", input.name, input.shape)));
        }
        for (i, (got, want)) in input.shape.iter().zip(&spec.shape).enumerate().skip(1) {
            if *want >= 0 && got != want {
                return Err(bad(format!("input '{}': dimension {i} is {got}, the model needs {want}", input.name)));
            }
        }
        let b = input.shape[0];
        if b < 1 || b as usize > max_items {
            return Err(V2Error(ApiError::new(
                ErrorType::InvalidInput,
                format!("input '{}': batch dimension must be between 1 and {max_items}", input.name),
            )));
        }
        if *batch.get_or_insert(b) != b {
            return Err(bad("all inputs must have the same batch dimension"));
        }
        let numel = input.shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d as usize)).ok_or_else(|| {
            bad(format!("input '{}': shape {:?} holds more elements than can be addressed", input.name, input.shape))
        })?;
        let raw = match input.data {
            InputData::Bytes(bytes, field) => {
                let want = numel.checked_mul(size);
                if Some(bytes.len()) != want {
                    return Err(bad(format!(
                        "input '{}': {field} gives {} bytes; shape {:?} of {} needs {}",
                        input.name,
                        bytes.len(),
                        input.shape,
                        input.datatype,
                        want.map_or("more than can be addressed".to_string(), |w| w.to_string())
                    )));
                }
                decode_binary(&bytes, input.datatype)
            }
            InputData::Json(d) => decode_json(d, input.datatype, input.name)?,
            InputData::Values(raw) => raw,
        };
        let data = convert(raw, spec, input.datatype)?;
        if data.len() != numel {
            return Err(bad(format!(
                "input '{}': {} values do not fill shape {:?}",
                input.name,
                data.len(),
                input.shape
            )));
        }
        kind.check_v2_input(idx, input.shape, &data).map_err(|m| V2Error(ApiError::new(ErrorType::InvalidInput, m)))?;
        columns[idx] = Some((input.shape[1..].to_vec(), data));
    }
    Ok(Columns { batch: batch.unwrap_or(0) as usize, columns: columns.into_iter().flatten().collect() })
}

/// `input__3` and `output__3` name a tensor by position.
fn indexed(name: &str, prefix: &str, count: usize) -> Option<usize> {
    name.to_ascii_lowercase().strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok()).filter(|n| *n < count)
}

/// One queue item per row of the batch dimension: row `i` of every column.
pub fn columns_to_items(c: &Columns) -> Vec<Vec<ItemTensor>> {
    (0..c.batch)
        .map(|row| {
            c.columns
                .iter()
                .map(|(shape, data)| {
                    let per = data.len() / c.batch;
                    ItemTensor { shape: shape.clone(), data: data.slice(row * per, (row + 1) * per) }
                })
                .collect()
        })
        .collect()
}

/// The index of the model output a request names (by name or `output__N`).
pub fn output_index(name: &str, out_specs: &[TensorSpec], model: &str) -> Result<usize, V2Error> {
    out_specs.iter().position(|s| s.name == name).or_else(|| indexed(name, "output__", out_specs.len())).ok_or_else(
        || {
            bad(format!(
                "unknown output '{name}'; model '{model}' returns {}",
                out_specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        },
    )
}

/// The outputs to return, by index into the model's outputs, and whether each goes in binary
/// (its own `binary_data`, else the request's `binary_data_output`). All outputs when none is named.
pub fn select_outputs(
    req: &InferRequest,
    out_specs: &[TensorSpec],
    model: &str,
) -> Result<Vec<(usize, bool)>, V2Error> {
    let all_binary =
        req.parameters.as_ref().and_then(|p| p.get("binary_data_output")).and_then(|x| x.as_bool()).unwrap_or(false);
    let Some(list) = &req.outputs else { return Ok((0..out_specs.len()).map(|i| (i, all_binary)).collect()) };
    list.iter()
        .map(|o| {
            let i = output_index(&o.name, out_specs, model)?;
            let binary = o
                .parameters
                .as_ref()
                .and_then(|p| p.get("binary_data"))
                .and_then(|x| x.as_bool())
                .unwrap_or(all_binary);
            Ok((i, binary))
        })
        .collect()
}

/// Output `i` of every item, stacked: the shape (batch first) and the row-major values.
pub fn gather_output(outs: &[crate::batching::ItemOutput], i: usize, batch: usize) -> (Vec<i64>, Vec<f32>) {
    let item_shape = outs.first().and_then(|o| o.outputs.get(i)).map(|t| t.shape.clone()).unwrap_or_default();
    let mut shape = vec![batch as i64];
    shape.extend(item_shape);
    let data = outs.iter().flat_map(|o| o.outputs[i].data.iter().copied()).collect();
    (shape, data)
}

/// The response body: the JSON part (with `resp`'s outputs filled in) and the binary part (the
/// outputs asked for in binary, little-endian FP32, in order). The error is a server fault.
pub fn encode_response(
    mut resp: InferResponse,
    outs: &[crate::batching::ItemOutput],
    wanted: &[(usize, bool)],
    out_specs: &[TensorSpec],
    batch: usize,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut binary_out: Vec<u8> = Vec::new();
    for &(i, as_binary) in wanted {
        let (shape, data) = gather_output(outs, i, batch);
        let name = out_specs[i].name.clone();
        if as_binary {
            let size = data.len() * 4;
            binary_out.extend(data.iter().flat_map(|x| x.to_le_bytes()));
            resp.outputs.push(ResponseOutput {
                name,
                shape,
                datatype: "FP32",
                parameters: Some(serde_json::json!({"binary_data_size": size})),
                data: None,
            });
        } else {
            resp.outputs.push(ResponseOutput { name, shape, datatype: "FP32", parameters: None, data: Some(data) });
        }
    }
    let json = serde_json::to_vec(&resp).map_err(|e| e.to_string())?;
    Ok((json, binary_out))
}

/// Every model in the repository with its state: those the registry knows, then those only on disk.
pub fn index_entries(app: &AppState) -> Vec<IndexEntry> {
    let on_disk = app.registry.discover();
    let known = app.registry.list();
    let mut entries: Vec<IndexEntry> = known
        .iter()
        .map(|m| IndexEntry {
            name: m.name.clone(),
            version: m.versions.last().map(|v| v.version.to_string()),
            state: match m.state {
                ModelState::Ready => "READY",
                ModelState::Loading => "LOADING",
                ModelState::Failed => "UNAVAILABLE",
                ModelState::Unloaded => "UNLOADED",
            },
            reason: m.last_error.clone(),
        })
        .collect();
    // Each encoder is a model of its own under V2 (`<model>.<method>`, see [`V2Model`]).
    for m in &known {
        let method = m.config.as_ref().and_then(|c| c.pointer("/embedding/method")).and_then(|x| x.as_str());
        let Some(method) = method else { continue };
        let name = format!("{}.{method}", m.name);
        if known.iter().any(|k| k.name == name) {
            continue;
        }
        if let Some(of_model) = entries.iter().find(|e| e.name == m.name) {
            let entry = IndexEntry { name, ..of_model.clone() };
            entries.push(entry);
        }
    }
    for name in on_disk {
        if !known.iter().any(|m| m.name == name) {
            entries.push(IndexEntry { name, version: None, state: "UNLOADED", reason: None });
        }
    }
    entries
}

/// The repository index: every model with its state. It only reads, so like `GET /models` it
/// needs no token (load and unload do).
#[utoipa::path(post, path = "/v2/repository/index", tag = "v2", responses((status = 200, body = Vec<IndexEntry>)))]
pub async fn repository_index(State(app): State<AppState>) -> Json<Vec<IndexEntry>> {
    Json(index_entries(&app))
}

/// The configuration of the newest version, in Triton's shape (model configuration extension).
#[utoipa::path(get, path = "/v2/models/{model}/config", tag = "v2", params(("model" = String, Path)), responses((status = 200, body = super::triton::ModelConfigJson), (status = 404, body = Object), (status = 503, body = Object)))]
pub async fn model_config(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<super::triton::ModelConfigJson>, V2Error> {
    let v = app.registry.resolve(&model, None)?;
    Ok(Json(super::triton::model_config(&v)))
}

/// The configuration of one version.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/config", tag = "v2", params(("model" = String, Path), ("version" = String, Path)), responses((status = 200, body = super::triton::ModelConfigJson), (status = 400, body = Object), (status = 404, body = Object), (status = 503, body = Object)))]
pub async fn model_version_config(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<super::triton::ModelConfigJson>, V2Error> {
    let v = app.registry.resolve(&model, Some(parse_version(&version)?))?;
    Ok(Json(super::triton::model_config(&v)))
}

/// The statistics of a model's versions, or of every model's when `model` is `None`.
pub(crate) fn stats_of(
    app: &AppState,
    model: Option<&str>,
    version: Option<u64>,
) -> Result<super::triton::StatsResponse, V2Error> {
    let versions = match (model, version) {
        (None, _) => app.registry.all_serving(),
        (Some(m), None) => app.registry.serving_versions(m)?,
        (Some(m), Some(v)) => vec![app.registry.resolve(m, Some(v))?],
    };
    Ok(super::triton::StatsResponse { model_stats: versions.iter().map(|v| super::triton::model_stats(v)).collect() })
}

/// Inference statistics of every serving version of every model (statistics extension).
#[utoipa::path(get, path = "/v2/models/stats", tag = "v2", responses((status = 200, body = super::triton::StatsResponse)))]
pub async fn all_stats(State(app): State<AppState>) -> Result<Json<super::triton::StatsResponse>, V2Error> {
    Ok(Json(stats_of(&app, None, None)?))
}

/// Inference statistics of every serving version of a model: counts and total nanoseconds since load.
#[utoipa::path(get, path = "/v2/models/{model}/stats", tag = "v2", params(("model" = String, Path)), responses((status = 200, body = super::triton::StatsResponse), (status = 404, body = Object)))]
pub async fn model_stats(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<super::triton::StatsResponse>, V2Error> {
    Ok(Json(stats_of(&app, Some(&model), None)?))
}

/// Inference statistics of one version.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/stats", tag = "v2", params(("model" = String, Path), ("version" = String, Path)), responses((status = 200, body = super::triton::StatsResponse), (status = 400, body = Object), (status = 404, body = Object), (status = 503, body = Object)))]
pub async fn model_version_stats(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<super::triton::StatsResponse>, V2Error> {
    Ok(Json(stats_of(&app, Some(&model), Some(parse_version(&version)?))?))
}

/// Loads (or reloads) a model from the repository.
#[utoipa::path(post, path = "/v2/repository/models/{model}/load", tag = "v2", security(("admin_token" = [])), params(("model" = String, Path)), responses((status = 200, description = "Loaded"), (status = 401, body = Object), (status = 403, body = Object), (status = 404, body = Object), (status = 422, body = Object)))]
pub async fn repository_load(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Result<StatusCode, V2Error> {
    super::models::authorize(&app, &headers)?;
    let reg = app.registry.clone();
    tokio::task::spawn_blocking(move || reg.load(&model))
        .await
        .map_err(|e| V2Error(ApiError::internal(e.to_string())))??;
    Ok(StatusCode::OK)
}

/// Unloads a model; requests in flight finish first.
#[utoipa::path(post, path = "/v2/repository/models/{model}/unload", tag = "v2", security(("admin_token" = [])), params(("model" = String, Path)), responses((status = 200, description = "Unloaded"), (status = 401, body = Object), (status = 403, body = Object), (status = 404, body = Object)))]
pub async fn repository_unload(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Result<StatusCode, V2Error> {
    super::models::authorize(&app, &headers)?;
    app.registry.unload(&model)?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batching::{ItemOutput, Timing};
    use crate::kinds::ModelConfig;
    use crate::tensor::OutputTensor;

    fn generator() -> ModelConfig {
        let t = "kind = \"generator\"\n[generator]\nlatent_dim = 2\nnum_classes = 3\noutput_shape = [1, 1, 2]\n";
        ModelConfig::parse(t, "x").unwrap()
    }

    fn request(v: serde_json::Value) -> InferRequest {
        serde_json::from_value(v).unwrap()
    }

    fn decode(req: &InferRequest, binary: &[u8]) -> Result<Columns, String> {
        let cfg = generator();
        let views = rest_inputs(req, bytes::Bytes::copy_from_slice(binary)).map_err(|e| e.0.message)?;
        decode_inputs(views, &cfg.kind.inputs(), cfg.kind.as_ref(), 8, "g").map_err(|e| e.0.message)
    }

    #[test]
    fn inputs_decode_from_json_and_binary_in_the_model_order() {
        let req = request(serde_json::json!({"inputs": [
            {"name": "labels", "shape": [2], "datatype": "INT32", "data": [1, 2]},
            {"name": "input__0", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
        ]}));
        let bin: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let c = decode(&req, &bin).unwrap();
        assert_eq!(c.batch, 2);
        assert_eq!(c.columns[0], (vec![2], TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])));
        assert_eq!(c.columns[1], (vec![], TensorData::I64(vec![1, 2])));
        let items = columns_to_items(&c);
        assert_eq!(items.len(), 2);
        assert_eq!(items[1][0], ItemTensor::f32(vec![2], vec![3.0, 4.0]));
        assert_eq!(items[1][1], ItemTensor::i64(vec![], vec![2]));
    }

    #[test]
    fn bad_inputs_are_named() {
        let z = |shape: serde_json::Value, extra: serde_json::Value| {
            let mut i = serde_json::json!({"name": "z", "shape": shape, "datatype": "FP32"});
            i.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            request(
                serde_json::json!({"inputs": [i, {"name": "labels", "shape": [1], "datatype": "INT64", "data": [0]}]}),
            )
        };
        let e = decode(&z(serde_json::json!([1, 2, 1]), serde_json::json!({"data": [1, 2]})), &[]).unwrap_err();
        assert!(e.contains("has 3 dimension(s); the model takes 2"), "{e}");
        let e = decode(&z(serde_json::json!([1, 3]), serde_json::json!({"data": [1, 2, 3]})), &[]).unwrap_err();
        assert!(e.contains("dimension 1 is 3, the model needs 2"), "{e}");
        let e = decode(&z(serde_json::json!([1, 2]), serde_json::json!({"parameters": {"binary_data_size": -4}})), &[])
            .unwrap_err();
        assert!(e.contains("binary_data_size must be a non-negative integer"), "{e}");
        let e = decode(&z(serde_json::json!([1, 2]), serde_json::json!({"data": [1, 2]})), &[0; 4]).unwrap_err();
        assert!(e.contains("4 bytes of binary tensor data follow"), "{e}");
        let zeros = vec![0; 18];
        let e = decode(&z(serde_json::json!([9, 2]), serde_json::json!({ "data": zeros })), &[]).unwrap_err();
        assert!(e.contains("batch dimension must be between 1 and 8"), "{e}");
        let req = request(serde_json::json!({"inputs": [
            {"name": "z", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
            {"name": "labels", "shape": [1], "datatype": "INT64", "data": [3]}]}));
        let e = decode(&req, &[]).unwrap_err();
        assert!(e.contains("element 0 must be a class index from 0 to 2"), "the kind's own check: {e}");
    }

    #[test]
    fn outputs_are_selected_by_name_or_index_with_their_binary_flag() {
        let specs = vec![crate::kinds::spec("images", "FP32", vec![-1, 1, 1, 2])];
        let all = request(serde_json::json!({"inputs": [], "parameters": {"binary_data_output": true}}));
        assert_eq!(select_outputs(&all, &specs, "g").unwrap(), vec![(0, true)]);
        let named = request(serde_json::json!({"inputs": [], "outputs": [{"name": "output__0"}]}));
        assert_eq!(select_outputs(&named, &specs, "g").unwrap(), vec![(0, false)]);
        let unknown = request(serde_json::json!({"inputs": [], "outputs": [{"name": "logits"}]}));
        assert!(select_outputs(&unknown, &specs, "g").is_err());
    }

    #[test]
    fn the_response_carries_json_or_binary_outputs() {
        let specs = vec![crate::kinds::spec("images", "FP32", vec![-1, 2])];
        let out = |a: f32, b: f32| ItemOutput {
            outputs: vec![OutputTensor { shape: vec![2], data: vec![a, b] }],
            timing: Timing::default(),
        };
        let outs = vec![out(1.0, 2.0), out(3.0, 4.0)];
        let resp = || InferResponse { model_name: "g".into(), model_version: "1".into(), id: None, outputs: vec![] };
        let (json, bin) = encode_response(resp(), &outs, &[(0, false)], &specs, 2).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["outputs"][0]["shape"], serde_json::json!([2, 2]));
        assert_eq!(v["outputs"][0]["data"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
        assert!(bin.is_empty());
        let (json, bin) = encode_response(resp(), &outs, &[(0, true)], &specs, 2).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(bin[12..16], 4.0f32.to_le_bytes());
    }
}
