//! Liveness, readiness and metrics.

use super::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Readiness report.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// What keeps the server from being ready (empty when ready).
    pub not_ready: Vec<String>,
}

/// Liveness: 200 while the process is up.
#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, description = "The process is up", body = Object, example = json!({"status": "live"}))))]
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

/// Readiness: 200 only when every configured model is loaded, warmed and has a live worker.
#[utoipa::path(get, path = "/health/ready", tag = "operations", responses(
    (status = 200, description = "Every configured model is ready", body = Readiness),
    (status = 503, description = "Not ready; names what is not", body = Readiness)
))]
pub async fn ready(State(app): State<AppState>) -> impl IntoResponse {
    let mut not_ready = app.registry.not_ready();
    if app.is_draining() {
        not_ready.insert(0, "server is shutting down".to_string());
    }
    let status = if not_ready.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness { status: if not_ready.is_empty() { "ready" } else { "not_ready" }, not_ready };
    (status, Json(body))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render())
}
