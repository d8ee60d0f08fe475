//! The one error shape of the API and the one table that maps errors to HTTP status.
//!
//! When to use what: handlers return [`ApiError`]; domain errors ([`RegistryError`],
//! [`InferError`], [`KindError`]) convert into it with `?`, and [`ErrorType::status`] is the only
//! place where a status code is chosen. Every non-2xx response has the body
//! `{"error": {"type": "...", "message": "...", "field": "..."}}` — except under `/v2`, where the
//! Open Inference Protocol prescribes `{"error": "..."}`. Details of 5xx errors are logged, never
//! sent.

use crate::batching::InferError;
use crate::kinds::KindError;
use crate::registry::RegistryError;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Error categories; each has exactly one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// Malformed request (bad JSON, bad query string).
    BadRequest,
    /// Well-formed but out of range, wrong length, NaN, etc.
    InvalidInput,
    /// An image that cannot be decoded.
    UndecodableImage,
    /// The model exists but is of another kind than the endpoint serves.
    WrongKind,
    /// No model is named and none is the default.
    ModelRequired,
    /// The body or an image is larger than allowed.
    PayloadTooLarge,
    /// The content type is not one the endpoint accepts.
    UnsupportedMediaType,
    /// No such route, model or version.
    NotFound,
    /// The HTTP method is not allowed on the route.
    MethodNotAllowed,
    /// Admin route without a bearer token.
    Unauthorized,
    /// Admin route with a wrong token.
    Forbidden,
    /// The queue is full: retry after the `Retry-After` seconds.
    Overloaded,
    /// The model is loading, failed, unloaded, or has no live worker.
    ModelNotReady,
    /// A model version failed to load; what was serving keeps serving.
    LoadFailed,
    /// The server is shutting down.
    ShuttingDown,
    /// The request was not served within its deadline.
    DeadlineExceeded,
    /// Inference failed (forward raised, NaN output, worker failure).
    InferenceFailed,
    /// Anything else that is the server's fault.
    Internal,
}

impl ErrorType {
    /// The single error-to-status table.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadRequest | ErrorType::UndecodableImage | ErrorType::WrongKind | ErrorType::ModelRequired => {
                StatusCode::BAD_REQUEST
            }
            ErrorType::InvalidInput | ErrorType::LoadFailed => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
            ErrorType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorType::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorType::Forbidden => StatusCode::FORBIDDEN,
            ErrorType::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorType::ModelNotReady | ErrorType::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorType::InferenceFailed | ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The single error-to-gRPC-code table, the twin of [`ErrorType::status`].
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            ErrorType::BadRequest
            | ErrorType::InvalidInput
            | ErrorType::UndecodableImage
            | ErrorType::WrongKind
            | ErrorType::ModelRequired
            | ErrorType::PayloadTooLarge
            | ErrorType::UnsupportedMediaType => Code::InvalidArgument,
            ErrorType::NotFound => Code::NotFound,
            ErrorType::MethodNotAllowed => Code::Unimplemented,
            ErrorType::Unauthorized => Code::Unauthenticated,
            ErrorType::Forbidden => Code::PermissionDenied,
            ErrorType::Overloaded => Code::ResourceExhausted,
            ErrorType::LoadFailed => Code::FailedPrecondition,
            ErrorType::ModelNotReady | ErrorType::ShuttingDown => Code::Unavailable,
            ErrorType::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorType::InferenceFailed | ErrorType::Internal => Code::Internal,
        }
    }

    /// The category a bare status stands for, for responses made outside the handlers.
    pub fn from_status(s: StatusCode) -> ErrorType {
        match s.as_u16() {
            400 => ErrorType::BadRequest,
            401 => ErrorType::Unauthorized,
            403 => ErrorType::Forbidden,
            404 => ErrorType::NotFound,
            405 => ErrorType::MethodNotAllowed,
            408 | 504 => ErrorType::DeadlineExceeded,
            413 => ErrorType::PayloadTooLarge,
            415 => ErrorType::UnsupportedMediaType,
            422 => ErrorType::InvalidInput,
            429 => ErrorType::Overloaded,
            503 => ErrorType::ModelNotReady,
            s if s < 500 => ErrorType::BadRequest,
            _ => ErrorType::Internal,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error answers every JSON inference endpoint shares, for its OpenAPI entry (each endpoint
/// adds its own 422 with what it checks): `responses((status = 200, ...), InferErrors, (status = 422, ...))`.
pub struct InferErrors;

impl utoipa::IntoResponses for InferErrors {
    fn responses() -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
        use utoipa::openapi::{content::Content, response::ResponseBuilder, Ref};
        [
            (400, "Malformed body or query, or a model of another kind"),
            (404, "Unknown model or version"),
            (413, "Body over its limit"),
            (415, "Not application/json"),
            (429, "Queue full; see Retry-After"),
            (503, "Model not ready, or the server is draining"),
            (504, "Deadline exceeded"),
        ]
        .into_iter()
        .map(|(status, description)| {
            let body = Content::new(Some(Ref::from_schema_name("ErrorBody")));
            let response = ResponseBuilder::new().description(description).content("application/json", body).build();
            (status.to_string(), response.into())
        })
        .collect()
    }
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Category (decides the status).
    #[serde(rename = "type")]
    pub ty: ErrorType,
    /// Human-readable explanation naming the field and limit where there is one.
    #[schema(example = "horizon: must be between 1 and 48")]
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "horizon")]
    pub field: Option<String>,
}

/// An error on its way to becoming a response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Category.
    pub ty: ErrorType,
    /// Message for the client (for 5xx a generic one; the detail goes to the log).
    pub message: String,
    /// The field at fault.
    pub field: Option<String>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
    /// Detail logged for 5xx, never sent.
    pub detail: Option<String>,
    /// The model version the request had resolved to, named in `x-model-name`/`x-model-version`.
    pub model: Option<(String, u64)>,
}

impl ApiError {
    /// An error of a type with a message.
    pub fn new(ty: ErrorType, message: impl Into<String>) -> ApiError {
        ApiError { ty, message: message.into(), field: None, retry_after: None, detail: None, model: None }
    }
    /// A server-side failure: `detail` is logged, the client sees a generic message.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(ErrorType::Internal, "internal error; the details are in the server log")
        }
    }
    /// Invalid input in `field`.
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
        let field = field.into();
        ApiError {
            message: format!("{field}: {message}"),
            field: Some(field),
            ..ApiError::new(ErrorType::InvalidInput, "")
        }
    }
    /// A bad request in `field`.
    pub fn bad_request(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
        ApiError { ty: ErrorType::BadRequest, ..ApiError::invalid(field, message) }
    }
    /// Names the model version that was serving the failed request.
    pub fn for_model(mut self, v: &crate::registry::LoadedVersion) -> ApiError {
        self.model = Some((v.name.clone(), v.version));
        self
    }
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.ty.status()
    }
    /// The message as sent, with 5xx details logged here.
    fn client_message(&self) -> String {
        if self.status().is_server_error() {
            if let Some(d) = &self.detail {
                tracing::error!(error_type = ?self.ty, detail = %d, "request failed");
            }
        }
        self.message.clone()
    }
    /// The gRPC status: the code from [`ErrorType::grpc_code`], the message REST sends (for
    /// `INTERNAL` the generic one, the detail logged), and `retry-after` as metadata.
    pub fn into_grpc_status(self) -> tonic::Status {
        let code = self.ty.grpc_code();
        let message = self.client_message();
        let mut status = tonic::Status::new(code, message);
        if let Some(s) = self.retry_after {
            status.metadata_mut().insert("retry-after", s.into());
        }
        status
    }

    /// The domain shape's body (5xx details logged here), for an error inside a response already
    /// under way (a stream's `error` event).
    pub fn into_body(self) -> ErrorBody {
        let message = self.client_message();
        ErrorBody { error: ErrorDetail { ty: self.ty, message, field: self.field } }
    }

    /// Renders in the Open Inference Protocol's shape, `{"error": "..."}`.
    pub fn into_v2_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.client_message() });
        finish(status, self.retry_after, self.model, axum::Json(body).into_response())
    }

    /// Renders in the shape of the router the request came through.
    pub fn render(self, format: ErrorFormat) -> Response {
        match format {
            ErrorFormat::Domain => self.into_response(),
            ErrorFormat::V2 => self.into_v2_response(),
        }
    }
}

/// The error body shape of one router: each router renders every error in its own shape, also
/// those its middleware makes (drain, timeout, panic, body limit, wrong method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `{"error": {"type", "message", "field"}}`: the domain endpoints, models and operations.
    Domain,
    /// `{"error": "..."}`: the Open Inference Protocol under `/v2`.
    V2,
}

fn finish(status: StatusCode, retry_after: Option<u64>, model: Option<(String, u64)>, mut resp: Response) -> Response {
    *resp.status_mut() = status;
    if let Some((name, version)) = model {
        if let Ok(v) = HeaderValue::from_str(&name) {
            resp.headers_mut().insert(crate::api::MODEL_HEADER.clone(), v);
            resp.headers_mut().insert(crate::api::VERSION_HEADER.clone(), HeaderValue::from(version));
        }
    }
    if let Some(s) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body =
            ErrorBody { error: ErrorDetail { ty: self.ty, message: self.client_message(), field: self.field.clone() } };
        finish(status, self.retry_after, self.model, axum::Json(body).into_response())
    }
}

impl From<KindError> for ApiError {
    fn from(e: KindError) -> ApiError {
        let message = e.to_string();
        match e {
            KindError::Invalid { field, .. } => {
                ApiError { message, field: Some(field), ..ApiError::new(ErrorType::InvalidInput, "") }
            }
            KindError::Undecodable { field, .. } => {
                ApiError { message, field: Some(field), ..ApiError::new(ErrorType::UndecodableImage, "") }
            }
            KindError::TooLarge { field, .. } | KindError::TooLargeToRead { field, .. } => {
                ApiError { message, field: Some(field), ..ApiError::new(ErrorType::PayloadTooLarge, "") }
            }
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let message = e.to_string();
        match e {
            RegistryError::ModelNotFound(_) | RegistryError::VersionNotFound { .. } => {
                ApiError::new(ErrorType::NotFound, message)
            }
            RegistryError::NotReady { .. } => {
                ApiError { retry_after: Some(5), ..ApiError::new(ErrorType::ModelNotReady, message) }
            }
            RegistryError::InvalidName(_) | RegistryError::OutsideRepository(_) => {
                ApiError { field: Some("model".into()), ..ApiError::new(ErrorType::InvalidInput, message) }
            }
            RegistryError::LoadFailed(_) => ApiError::new(ErrorType::LoadFailed, message),
        }
    }
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> ApiError {
        let message = e.to_string();
        match e {
            InferError::QueueFull { retry_after_s, .. } => {
                ApiError { retry_after: Some(retry_after_s), ..ApiError::new(ErrorType::Overloaded, message) }
            }
            InferError::TooManyItems { .. } => ApiError::new(ErrorType::InvalidInput, message),
            InferError::InvalidInput(m) => ApiError::new(ErrorType::InvalidInput, m),
            InferError::DeadlineExceeded { .. } => ApiError::new(ErrorType::DeadlineExceeded, message),
            InferError::Unavailable => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    ErrorType::ModelNotReady,
                    "the model version is not serving (reloading, unloaded or without a live worker); retry",
                )
            },
            InferError::NonFinite { .. } => {
                ApiError { detail: Some(message.clone()), ..ApiError::new(ErrorType::InferenceFailed, message) }
            }
            InferError::Forward(_) | InferError::BadOutput(_) | InferError::WorkerFailed => ApiError {
                detail: Some(message),
                ..ApiError::new(
                    ErrorType::InferenceFailed,
                    "inference failed for this batch; the details are in the server log",
                )
            },
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        match r {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::new(ErrorType::UnsupportedMediaType, "expected Content-Type: application/json")
            }
            JsonRejection::BytesRejection(b) => ApiError::from(b),
            other => ApiError::new(ErrorType::BadRequest, other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorType::PayloadTooLarge, "request body exceeds the body limit (--body-limit-bytes)")
        } else {
            ApiError::new(ErrorType::BadRequest, r.body_text())
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        let text = r.body_text();
        let text = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text).to_string();
        let field = text.split(':').next().filter(|f| !f.contains(' ')).map(String::from);
        ApiError { field, ..ApiError::new(ErrorType::BadRequest, format!("query string: {text}")) }
    }
}

/// Parses a JSON body, naming the path of the offending field (`rows[3][2]`) in errors.
///
/// A valid body is parsed once, without path tracking, which takes 1.7-1.9x as long (BENCHMARKS.md,
/// "JSON parsing"). Only a body that fails is parsed again, tracking the path, to build the error.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut *de) {
        // Only trailing characters fail the plain parse and pass this one.
        Ok(v) => {
            de.end().map(|()| v).map_err(|e| ApiError::new(ErrorType::BadRequest, format!("invalid JSON body: {e}")))
        }
        Err(e) => Err(path_error(bytes, e)),
    }
}

/// The error of a JSON body that failed to parse, naming the path of the offending field.
fn path_error(bytes: &[u8], e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax()
        && (inner.to_string().contains("number out of range") || non_finite_at(bytes, inner.line(), inner.column()))
    {
        let field = (path != ".").then_some(path);
        let at = field.clone().unwrap_or_else(|| "body".into());
        return ApiError {
            field,
            ..ApiError::new(
                ErrorType::InvalidInput,
                format!("{at}: must be a finite number (NaN and infinity are not accepted)"),
            )
        };
    }
    let status = if inner.is_data() { ErrorType::InvalidInput } else { ErrorType::BadRequest };
    let field = (path != ".").then_some(path);
    let message = match &field {
        Some(f) => format!("{f}: {inner}"),
        None => format!("invalid JSON body: {inner}"),
    };
    ApiError { field, ..ApiError::new(status, message) }
}

/// Whether a JSON syntax error sits on a NaN/Infinity token.
fn non_finite_at(bytes: &[u8], line: usize, column: usize) -> bool {
    let Some(text) = std::str::from_utf8(bytes).ok() else { return false };
    let Some(l) = text.lines().nth(line.saturating_sub(1)) else { return false };
    let start = column.saturating_sub(3).min(l.len());
    let end = (column + 1).min(l.len());
    let around = l.get(start..end).unwrap_or("");
    let tail = l.get(column.saturating_sub(1).min(l.len())..).unwrap_or("");
    around.contains('N')
        || around.contains('I')
        || tail.starts_with("NaN")
        || tail.starts_with("Infinity")
        || tail.starts_with("-Infinity")
        || (around.chars().any(|c| c.is_ascii_digit()) && (around.contains('e') || around.contains('E')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_a_status_and_round_trips_from_it() {
        for t in [
            ErrorType::InvalidInput,
            ErrorType::Overloaded,
            ErrorType::DeadlineExceeded,
            ErrorType::UnsupportedMediaType,
        ] {
            assert_eq!(ErrorType::from_status(t.status()), t);
        }
        assert_eq!(ErrorType::Overloaded.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn json_errors_name_the_path() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            horizon: usize,
        }
        let e = parse_json::<Body>(br#"{"horizon": -1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("horizon"));
        assert_eq!(e.ty, ErrorType::InvalidInput);
        let e = parse_json::<Body>(b"{").unwrap_err();
        assert_eq!(e.ty, ErrorType::BadRequest);
        let e = parse_json::<serde_json::Value>(br#"{"series": [1.0, NaN, 2.0]}"#).unwrap_err();
        assert_eq!(e.ty, ErrorType::InvalidInput, "{}", e.message);
        let e = parse_json::<serde_json::Value>(br#"{"rows": [[1, Infinity]]}"#).unwrap_err();
        assert_eq!(e.ty, ErrorType::InvalidInput, "{}", e.message);
        // Valid bodies take the fast path; trailing characters after one are refused.
        assert_eq!(parse_json::<Body>(br#" {"horizon": 3} "#).unwrap().horizon, 3);
        let e = parse_json::<Body>(br#"{"horizon": 3} {"horizon": 4}"#).unwrap_err();
        assert_eq!(e.ty, ErrorType::BadRequest);
        assert!(e.message.contains("trailing characters"), "{}", e.message);
    }

    #[test]
    fn server_errors_hide_details() {
        let e = ApiError::from(InferError::Forward("/secret/path.py line 3".into()));
        assert!(!e.message.contains("secret"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
