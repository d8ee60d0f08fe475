//! Cross-cutting request handling: request ids, tracing spans, the error shape for responses
//! made outside the handlers, per-route metrics, the request timeout, and drain.
//!
//! Every layer that makes an error response takes the router's [`ErrorFormat`]: each router
//! (domain, `/v2`) is wrapped in its own stack by [`error_layers`], so one router has one shape.

use super::error::{ApiError, ErrorFormat, ErrorType};
use super::{AppState, MODEL_HEADER};
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::{MakeRequestId, RequestId};

/// Request ids: 16 random hex digits, unless the client sent `x-request-id`.
#[derive(Clone, Copy, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _req: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&new_request_id()).ok().map(RequestId::new)
    }
}

/// A fresh request id: 16 random hex digits.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Whether a client's request id is kept: 1 to [`MAX_REQUEST_ID_LEN`] bytes of
/// `A-Z a-z 0-9 . _ - :`, so it cannot forge log lines.
pub fn valid_request_id(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= MAX_REQUEST_ID_LEN
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b':'))
}

/// Longest client `x-request-id` kept; a longer one, or one with other characters than
/// `A-Z a-z 0-9 . _ - :`, is replaced by a fresh id (it is echoed and written into every log line).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Drops a client `x-request-id` that is too long or could forge log lines, so a fresh one is made.
pub async fn sanitize_request_id(mut req: Request, next: Next) -> Response {
    if req.headers().get("x-request-id").is_some_and(|v| !valid_request_id(v.as_bytes())) {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
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
pub fn on_response<B>(res: &axum::http::Response<B>, latency: std::time::Duration, span: &tracing::Span) {
    span.record("status", res.status().as_u16());
    span.record("latency_ms", latency.as_secs_f64() * 1e3);
    tracing::info!(status = res.status().as_u16(), latency_ms = latency.as_secs_f64() * 1e3, "response");
}

/// Gives every error response made outside a handler (wrong method, body limit, extractor
/// rejections) the router's error shape.
pub async fn error_shape(format: ErrorFormat, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    fix_shape(format, res)
}

/// The error shape for a response that has none: any non-2xx that is not JSON yet.
pub fn fix_shape(format: ErrorFormat, res: Response) -> Response {
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
    let mut out = ApiError::new(ty, message).render(format);
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
pub async fn record(State(app): State<AppState>, format: ErrorFormat, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default();
    tracing::Span::current().record("route", route.as_str());
    let inference = crate::kinds::KINDS.iter().any(|k| k.endpoint.split_once(' ').is_some_and(|(_, p)| p == route))
        || route.ends_with("/infer");
    // A bad deadline header is the handler's to refuse; here only a valid one matters. For
    // `/complete` the deadline bounds the time to the first token, not the whole generation.
    let deadline =
        if inference && route != "/complete" { app.deadline(req.headers(), req.extensions()).ok() } else { None };
    let traced = match (&app.tracer, inference) {
        (Some(t), true) => {
            let arrived = req.extensions().get::<super::Arrival>().map_or_else(std::time::Instant::now, |a| a.0);
            t.request(req.headers().get("traceparent").and_then(|v| v.to_str().ok()), arrived)
        }
        _ => None,
    };
    let method = req.method().to_string();
    let mut res = match &traced {
        Some(span) => span.run(next.run(req)).await,
        None => next.run(req).await,
    };
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
            let mut late = err.render(format);
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
        app.metrics.requests.with_label_values(&["http", &route, &model, outcome]).inc();
    }
    if let Some(span) = traced {
        use crate::traces::Attr;
        let status = res.status().as_u16();
        let mut attrs = vec![
            ("http.request.method", Attr::Str(method.clone())),
            ("http.route", Attr::Str(route.clone())),
            ("http.response.status_code", Attr::Int(status as i64)),
        ];
        for (key, h) in [("dlserve.model", &MODEL_HEADER), ("dlserve.model.version", &super::VERSION_HEADER)] {
            if let Some(v) = res.headers().get(h).and_then(|v| v.to_str().ok()) {
                attrs.push((key, Attr::Str(v.to_string())));
            }
        }
        span.end(format!("{method} {route}"), attrs, status >= 500);
    }
    res
}

/// Applies the whole-request timeout and refuses new work once shutdown has begun.
pub async fn guard(State(app): State<AppState>, format: ErrorFormat, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(super::Arrival(std::time::Instant::now()));
    let path = req.uri().path();
    let health = path.starts_with("/health") || path.starts_with("/v2/health") || path == "/metrics";
    if app.is_draining() && !health {
        let mut res = ApiError {
            retry_after: Some(1),
            ..ApiError::new(ErrorType::ShuttingDown, "the server is shutting down; retry on another instance")
        }
        .render(format);
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    #[cfg(feature = "fault-injection")]
    if req.headers().contains_key(PANIC_HEADER) {
        panic!("fault injection: {PANIC_HEADER}");
    }
    let limit = app.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            ErrorType::DeadlineExceeded,
            format!("request exceeded the request timeout of {} ms", limit.as_millis()),
        )
        .render(format),
    }
}

/// Test hook: a request with this header panics inside the router's layers (fault-injection builds only).
#[cfg(feature = "fault-injection")]
pub const PANIC_HEADER: &str = "x-test-panic";

/// Turns a panic that escaped a handler into a 500 in the router's error shape; the panic is logged.
pub fn panic_response(format: ErrorFormat, err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    tracing::error!(panic = %what, "handler panicked");
    ApiError::new(ErrorType::Internal, "internal error; the details are in the server log").render(format)
}

/// Wraps one router in the layers that can answer with an error, all in that router's `format`:
/// metrics per route (innermost, so it sees the final status), error-shape fixer, panic catcher,
/// drain guard with the whole-request timeout, and the body limit.
pub fn error_layers(router: axum::Router<AppState>, state: &AppState, format: ErrorFormat) -> axum::Router<AppState> {
    use tower_http::catch_panic::CatchPanicLayer;
    let body_limit = state.limits.body_limit;
    router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            move |st: State<AppState>, req: Request, next: Next| record(st, format, req, next),
        ))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn(move |req: Request, next: Next| error_shape(format, req, next)))
                .layer(CatchPanicLayer::custom(move |e: Box<dyn std::any::Any + Send + 'static>| {
                    panic_response(format, e)
                }))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    move |st: State<AppState>, req: Request, next: Next| guard(st, format, req, next),
                ))
                // gzip and deflate request bodies are decompressed (other encodings get 415); the
                // body limit below applies to the decompressed bytes, so a bomb gets 413.
                .layer(tower_http::decompression::RequestDecompressionLayer::new().gzip(true).deflate(true))
                .layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
}

/// The answer for a path no router has: 404 in the shape of the router that owns the prefix.
pub async fn not_found(req: Request) -> Response {
    let format = if req.uri().path() == "/v2" || req.uri().path().starts_with("/v2/") {
        ErrorFormat::V2
    } else {
        ErrorFormat::Domain
    };
    ApiError::new(ErrorType::NotFound, "no such route").render(format)
}
