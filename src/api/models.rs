//! The model registry over HTTP: list and inspect, and (with the admin token) load, unload, reload.

use super::error::{ApiError, ErrorType};
use super::AppState;
use crate::registry::ModelInfo;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

/// The list of models.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Every model the registry knows, loaded or not.
    pub models: Vec<ModelInfo>,
}

/// Outcome of an admin action.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminResult {
    /// The model.
    pub model: String,
    /// What was done: `loaded`, `unloaded` or `reloaded`.
    #[schema(example = "reloaded")]
    pub action: &'static str,
    /// The model's metadata after the action.
    pub info: Option<ModelInfo>,
}

/// Lists every model with its kind, versions, state and device.
#[utoipa::path(get, path = "/models", tag = "models", responses((status = 200, body = ModelList)))]
pub async fn list_models(State(app): State<AppState>) -> Json<ModelList> {
    Json(ModelList { models: app.registry.list() })
}

/// Full metadata of one model: contract, batching settings, versions, state and last error.
#[utoipa::path(get, path = "/models/{name}", tag = "models", params(("name" = String, Path, description = "Model name")), responses(
    (status = 200, body = ModelInfo),
    (status = 404, body = super::error::ErrorBody)
))]
pub async fn get_model(State(app): State<AppState>, Path(name): Path<String>) -> Result<Json<ModelInfo>, ApiError> {
    Ok(Json(app.registry.info(&name)?))
}

/// Checks the admin bearer token in constant time. Admin routes answer 404 when no token is configured.
pub fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &app.admin_token else {
        return Err(ApiError::new(
            ErrorType::NotFound,
            "admin routes are disabled; start the server with DLSERVE_ADMIN_TOKEN to enable them",
        ));
    };
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::new(ErrorType::Unauthorized, "missing Authorization: Bearer <token>"));
    };
    let given = value.as_bytes().strip_prefix(b"Bearer ").unwrap_or(b"");
    if given.is_empty() {
        return Err(ApiError::new(ErrorType::Unauthorized, "expected Authorization: Bearer <token>"));
    }
    if bool::from(given.ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorType::Forbidden, "invalid admin token"))
    }
}

/// Runs a blocking registry action (libtorch loads) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(e.to_string()))
}

/// Authorises, runs a registry action off the async workers, and reports the model afterwards.
async fn admin(
    app: AppState,
    headers: &HeaderMap,
    name: String,
    action: &'static str,
    run: fn(&crate::registry::Registry, &str) -> Result<(), crate::registry::RegistryError>,
) -> Result<Json<AdminResult>, ApiError> {
    authorize(&app, headers)?;
    let reg = app.registry.clone();
    let n = name.clone();
    blocking(move || run(&reg, &n)).await??;
    Ok(Json(AdminResult { info: app.registry.info(&name).ok(), model: name, action }))
}

/// Loads a model from the repository (also one added to disk after start-up).
#[utoipa::path(post, path = "/models/{name}/load", tag = "models", security(("admin_token" = [])), params(("name" = String, Path)), responses(
    (status = 200, body = AdminResult),
    (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
    (status = 404, body = super::error::ErrorBody), (status = 422, description = "Load failed; what was serving keeps serving", body = super::error::ErrorBody)
))]
pub async fn load_model(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<AdminResult>, ApiError> {
    admin(app, &headers, name, "loaded", crate::registry::Registry::load).await
}

/// Stops serving a model; requests in flight finish first.
#[utoipa::path(post, path = "/models/{name}/unload", tag = "models", security(("admin_token" = [])), params(("name" = String, Path)), responses(
    (status = 200, body = AdminResult),
    (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)
))]
pub async fn unload_model(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<AdminResult>, ApiError> {
    admin(app, &headers, name, "unloaded", crate::registry::Registry::unload).await
}

/// Reloads a model from disk with zero downtime: the new versions are loaded and warmed beside
/// the old ones, then swapped in atomically. If the load fails, the old versions keep serving.
#[utoipa::path(post, path = "/models/{name}/reload", tag = "models", security(("admin_token" = [])), params(("name" = String, Path)), responses(
    (status = 200, body = AdminResult),
    (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
    (status = 404, body = super::error::ErrorBody), (status = 422, description = "Load failed; what was serving keeps serving", body = super::error::ErrorBody)
))]
pub async fn reload_model(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<AdminResult>, ApiError> {
    admin(app, &headers, name, "reloaded", crate::registry::Registry::load).await
}
