//! `POST /classify`: images to top-k labels with probabilities.

use super::error::ApiError;
use super::{images, pipeline, AppState};
use crate::kinds::classifier::{self, Class, Classifier};
use crate::tensor::ItemTensor;
use axum::extract::{Query, Request, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use images::IMAGE_TYPES;

/// Query parameters of `/classify`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClassifyQuery {
    /// Model name; when omitted, the default classifier (or the only one loaded).
    pub model: Option<String>,
    /// Version; when omitted, the newest served version.
    pub version: Option<u64>,
    /// How many classes to return per image: 1 to the number of classes (default 5, or fewer if the model has fewer classes).
    pub top_k: Option<usize>,
}

/// One image in a JSON request: either `base64` (an encoded PNG/JPEG/WebP/GIF/BMP file) or
/// `pixels` (values from 0 to 255, nested `[H][W]`/`[H][W][C]`, or flat with `shape`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    /// A base64-encoded image file.
    pub base64: Option<String>,
    /// Raw pixel values in [0, 255]: nested arrays `[H][W]` or `[H][W][C]`, or a flat array with `shape`.
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    pub pixels: Option<serde_json::Value>,
    /// Shape of flat `pixels`: `[H, W]` or `[H, W, C]` with C = 1 or 3.
    pub shape: Option<Vec<usize>>,
}

/// JSON body of `/classify`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"model": "digits-cnn", "top_k": 3, "images": [{"base64": "iVBORw0KGgo..."}]}))]
pub struct ClassifyRequest {
    /// Model name (overrides the query string).
    pub model: Option<String>,
    /// Version (overrides the query string).
    pub version: Option<u64>,
    /// Classes to return per image.
    pub top_k: Option<usize>,
    /// The images, 1 to `--max-items-per-request`.
    pub images: Vec<ImageInput>,
}

/// `multipart/form-data` body: one or more image files, plus optional text fields.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ClassifyMultipart {
    /// Image files (any field name; each file part is one image).
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
    /// Model name.
    model: Option<String>,
    /// Classes to return per image.
    top_k: Option<usize>,
}

/// A raw image body.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ImageBody(#[allow(dead_code)] Vec<u8>);

/// The result for one image.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageResult {
    /// The most probable class.
    #[schema(example = "7")]
    pub label: String,
    /// Its probability.
    pub probability: f32,
    /// The `top_k` classes, most probable first.
    pub top_k: Vec<Class>,
    /// Whether the image was inverted (light background detected) before classification.
    pub inverted: bool,
}

/// Response of `/classify`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifyResponse {
    /// The model that served the request.
    #[schema(example = "digits-cnn")]
    pub model: String,
    /// Its version.
    pub version: u64,
    /// One result per image, in request order.
    pub results: Vec<ImageResult>,
}

/// Classifies images with a CNN classifier.
///
/// Send a raw image body (`image/png`, `image/jpeg`, `image/webp`, `image/gif`, `image/bmp`),
/// `multipart/form-data` with one or more image files, or JSON with base64 images or raw pixel
/// arrays. Each image is decoded, converted to the model's channels, inverted when its border is
/// light (dark ink on paper) if the model's config says `invert = "auto"`, resized, normalised,
/// and batched with other requests' images. Images larger than `--max-image-pixels` are refused
/// with 413 from their header, before decoding.
#[utoipa::path(post, path = "/classify", tag = "inference", params(ClassifyQuery, ("x-deadline-ms" = Option<u64>, Header, description = "Inference deadline in ms")),
    request_body(content(
        (ClassifyRequest = "application/json"),
        (ImageBody = "image/png"), (ImageBody = "image/jpeg"), (ImageBody = "image/webp"), (ImageBody = "image/gif"), (ImageBody = "image/bmp"),
        (ClassifyMultipart = "multipart/form-data")
    )),
    responses(
        (status = 200, body = ClassifyResponse, example = json!({"model": "digits-cnn", "version": 1, "results": [{"label": "7", "probability": 0.998, "top_k": [{"label": "7", "index": 7, "probability": 0.998}], "inverted": true}]})),
        (status = 400, description = "Undecodable image, malformed body, wrong model kind", body = super::error::ErrorBody),
        (status = 404, description = "Unknown model or version", body = super::error::ErrorBody),
        (status = 413, description = "Body or image over its limit", body = super::error::ErrorBody),
        (status = 415, description = "Unsupported content type", body = super::error::ErrorBody),
        (status = 422, description = "Invalid values (top_k, pixels, counts)", body = super::error::ErrorBody),
        (status = 429, description = "Queue full; see Retry-After", body = super::error::ErrorBody),
        (status = 503, description = "Model not ready", body = super::error::ErrorBody),
        (status = 504, description = "Deadline exceeded", body = super::error::ErrorBody),
    ))]
pub async fn classify(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let q: ClassifyQuery = Query::try_from_uri(req.uri()).map(|Query(q)| q).map_err(ApiError::from)?;
    let deadline = app.deadline(req.headers(), req.extensions())?;
    let body = images::read_images(&app, req, &["top_k"]).await?;
    let top_k = images::param(&body.params, "top_k", q.top_k, "a positive integer")?;
    let sources = body.sources;
    let (v, cfg) = app.pick::<Classifier>(body.model.as_deref().or(q.model.as_deref()), body.version.or(q.version))?;
    // Refuse at once, before decoding anything, when the queue has no room for these images.
    v.batcher.has_room(sources.len()).map_err(|e| ApiError::from(e).for_model(&v))?;
    let classes = v.classes();
    let top_k = match top_k {
        None => 5.min(classes),
        Some(k) if k >= 1 && k <= classes => k,
        Some(_) => {
            return Err(ApiError::invalid("top_k", format!("must be between 1 and {classes} (the number of classes)")))
        }
    };
    let max_pixels = app.limits.max_image_pixels;
    let pre = cfg.clone();
    let _reserved = app.decode_budget.reserve(&sources).await?;
    let rows = tokio::task::spawn_blocking(move || classifier::preprocess_all(sources, &pre, max_pixels))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let shape = cfg.input_shape.to_vec();
    let inverted: Vec<bool> = rows.iter().map(|r| r.1).collect();
    let items = rows.into_iter().map(|(row, _)| vec![ItemTensor::f32(shape.clone(), row)]).collect();
    let served = pipeline::infer(&v, items, deadline).await?;
    let results = inverted
        .into_iter()
        .enumerate()
        .map(|(i, inverted)| {
            let top = classifier::top_k(served.first_output(i), cfg.output, &v.labels, top_k);
            ImageResult { label: top[0].label.clone(), probability: top[0].probability, top_k: top, inverted }
        })
        .collect();
    Ok(served.json(ClassifyResponse { model: v.name.clone(), version: v.version, results }))
}
