//! `GET /generate`: images from a GAN generator, as a PNG grid or as pixel arrays.

use super::error::ApiError;
use super::{pipeline, AppState, RequestDeadline};
use crate::kinds::generator::{self, Generator};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Output format of `/generate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One PNG image with the samples on a grid.
    #[default]
    Png,
    /// Pixel arrays with their labels.
    Json,
}

/// Query parameters of `/generate`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GenerateQuery {
    /// Model name; when omitted, the default generator (or the only one loaded).
    pub model: Option<String>,
    /// Version; when omitted, the newest served version.
    pub version: Option<u64>,
    /// Number of images, from 1 to the model's `max_n` (default 1).
    #[param(minimum = 1)]
    pub n: Option<usize>,
    /// Seed of the latent vectors; the same seed and parameters give bit-identical output.
    /// When omitted, one is drawn and returned in `x-seed`.
    pub seed: Option<u64>,
    /// For a conditional generator: one class index for all images, or one per image
    /// (comma-separated, exactly n). When omitted, labels are drawn from the seed.
    pub label: Option<String>,
    /// `png` (default) or `json`.
    #[param(inline)]
    pub format: Option<Format>,
}

/// One generated image in JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct GeneratedImage {
    /// The class it was conditioned on (conditional generators only).
    pub label: Option<i64>,
    /// The class name, when the model has a labels file.
    pub label_name: Option<String>,
    /// 8-bit pixels, `[H][W]` for one channel or `[H][W][3]`.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub pixels: serde_json::Value,
}

/// JSON response of `/generate`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResponse {
    /// The model that served the request.
    pub model: String,
    /// Its version.
    pub version: u64,
    /// The seed used.
    pub seed: u64,
    /// The images, in order.
    pub images: Vec<GeneratedImage>,
}

/// Generates images with a GAN generator.
///
/// The server draws each latent vector from its own ChaCha8 RNG, keyed by the seed and the
/// image's index, so the same seed, n and labels give bit-identical output, whatever else is
/// being batched. Pixels are the generator's [-1, 1] output mapped to 0..255.
#[utoipa::path(get, path = "/generate", tag = "inference", params(GenerateQuery, ("x-deadline-ms" = Option<u64>, Header, description = "Inference deadline in ms")),
    responses(
        (status = 200, description = "A PNG grid (format=png), or pixel arrays (format=json)", content(
            (Vec<u8> = "image/png"),
            (GenerateResponse = "application/json")
        ), headers(("x-seed" = u64, description = "The seed used"))),
        (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 422, description = "n, label or seed out of range", body = super::error::ErrorBody),
        (status = 429, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody), (status = 504, body = super::error::ErrorBody),
    ))]
pub async fn generate(
    State(app): State<AppState>,
    q: Result<Query<GenerateQuery>, axum::extract::rejection::QueryRejection>,
    RequestDeadline(deadline): RequestDeadline,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let (v, cfg) = app.pick::<Generator>(q.model.as_deref(), q.version)?;
    let max_n = cfg.max_n.min(app.limits.max_items);
    let n = q.n.unwrap_or(1);
    if n < 1 || n > max_n {
        return Err(ApiError::invalid("n", format!("must be between 1 and {max_n}")));
    }
    let seed = q.seed.unwrap_or_else(rand::random::<u64>);
    let labels = generator::labels(q.label.as_deref(), n, seed, &cfg)?;
    let items = (0..n).map(|i| generator::item(seed, i, &labels, &cfg)).collect();
    let served = pipeline::infer(&v, items, deadline).await?;
    let [c, h, w] = cfg.output_shape.map(|d| d as usize);
    let images: Vec<Vec<u8>> =
        (0..n).map(|i| generator::chw_to_hwc(&generator::to_u8(served.first_output(i)), c, h, w)).collect();
    let mut hdrs = served.headers();
    hdrs.insert(header::HeaderName::from_static("x-seed"), HeaderValue::from(seed));
    match q.format.unwrap_or_default() {
        Format::Png => {
            let png = tokio::task::spawn_blocking(move || generator::png_grid(&images, c, h, w))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            hdrs.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            Ok((hdrs, png).into_response())
        }
        Format::Json => {
            let images = images
                .iter()
                .enumerate()
                .map(|(i, px)| {
                    let label = labels.get(i).copied();
                    GeneratedImage {
                        label,
                        label_name: label.and_then(|l| v.labels.get(l as usize).cloned()),
                        pixels: generator::pixels_json(px, c, w),
                    }
                })
                .collect();
            Ok((hdrs, Json(GenerateResponse { model: v.name.clone(), version: v.version, seed, images }))
                .into_response())
        }
    }
}
