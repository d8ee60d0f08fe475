//! Open Inference Protocol (KServe V2) REST API.

use super::AppState;
use utoipa_axum::router::OpenApiRouter;

/// The `/v2` routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
