//! Cross-cutting request handling: request ids, tracing spans, the error shape for responses
//! made outside the handlers, per-route metrics, the request timeout, and drain.

use super::error::{ApiError, ErrorType};
use super::{AppState, MODEL_HEADER};
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestId, RequestId};

/// Request ids: 16 random hex digits, unless the client sent `x-request-id`.
#[derive(Clone, Copy, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _req: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("{:016x}", rand::random::<u64>());
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The span of one request; `route` and `status` are filled in as they become known.
pub fn make_span(req: &axum::http::Request<Body>) -> tracing::Span {
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        route = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

/// Records status and latency on the request span and logs one line per response.
pub fn on_response(res: &Response, latency: std::time::Duration, span: &tracing::Span) {
    span.record("status", res.status().as_u16());
    span.record("latency_ms", latency.as_secs_f64() * 1e3);
    tracing::info!(status = res.status().as_u16(), latency_ms = latency.as_secs_f64() * 1e3, "response");
}

/// Gives every error response made outside a handler (unknown route, wrong method, body limit,
/// timeout) the API's error shape; `/v2` errors get the protocol's `{"error": "..."}`.
pub async fn error_shape(req: Request, next: Next) -> Response {
    let v2 = req.uri().path().starts_with("/v2");
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let ty = ErrorType::from_status(status);
    let message = match status {
        StatusCode::NOT_FOUND => "no such route".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => "request body exceeds the body limit (--body-limit-bytes)".to_string(),
        s => s.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let retry = res.headers().get(header::RETRY_AFTER).cloned();
    let allow = res.headers().get(header::ALLOW).cloned();
    let err = ApiError { ty, ..ApiError::new(ty, message) };
    let mut out = if v2 { err.into_v2_response() } else { err.into_response() };
    *out.status_mut() = status;
    if let Some(r) = retry {
        out.headers_mut().insert(header::RETRY_AFTER, r);
    }
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

/// Counts requests per route, model and outcome, and names the route on the span.
pub async fn record(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default();
    tracing::Span::current().record("route", route.as_str());
    let inference =
        ["/classify", "/forecast", "/anomaly", "/generate"].contains(&route.as_str()) || route.ends_with("/infer");
    // A bad deadline header is the handler's to refuse; here only a valid one matters.
    let deadline = if inference { app.deadline(req.headers(), req.extensions()).ok() } else { None };
    let mut res = next.run(req).await;
    if let Some(dl) = deadline {
        // The batcher answers 504 when a result is not ready by the deadline, but decoding,
        // post-processing and encoding on a starved CPU can still finish after it: such a
        // result is not delivered late as a success.
        let now = std::time::Instant::now();
        if res.status().is_success() && now > dl.at {
            let err = ApiError::new(
                ErrorType::DeadlineExceeded,
                format!(
                    "the response was ready {} ms after the deadline of {} ms and was discarded",
                    (now - dl.at).as_millis(),
                    dl.budget.as_millis()
                ),
            );
            let mut late = if route.starts_with("/v2") { err.into_v2_response() } else { err.into_response() };
            for h in [&MODEL_HEADER, &super::VERSION_HEADER] {
                if let Some(v) = res.headers().get(h) {
                    late.headers_mut().insert(h.clone(), v.clone());
                }
            }
            res = late;
        }
    }
    if inference {
        let model = res.headers().get(&MODEL_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
        let outcome = match res.status().as_u16() {
            200..=299 => "ok",
            429 => "rejected",
            504 => "deadline_exceeded",
            503 => "unavailable",
            400..=499 => "client_error",
            _ => "error",
        };
        app.metrics.requests.with_label_values(&[&route, &model, outcome]).inc();
    }
    res
}

/// Applies the whole-request timeout and refuses new work once shutdown has begun.
pub async fn guard(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(super::Arrival(std::time::Instant::now()));
    let path = req.uri().path();
    let health = path.starts_with("/health") || path.starts_with("/v2/health") || path == "/metrics";
    if app.is_draining() && !health {
        let mut res = ApiError {
            retry_after: Some(1),
            ..ApiError::new(ErrorType::ShuttingDown, "the server is shutting down; retry on another instance")
        }
        .into_response();
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    let limit = app.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            ErrorType::DeadlineExceeded,
            format!("request exceeded the request timeout of {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// Turns a panic that escaped a handler into a 500 in the error shape; the panic is logged.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    tracing::error!(panic = %what, "handler panicked");
    ApiError::new(ErrorType::Internal, "internal error; the details are in the server log").into_response()
}
