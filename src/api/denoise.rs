//! `POST /denoise`: noisy images to cleaned ones, as a PNG (one image) or as pixel arrays.

use super::error::ApiError;
use super::{images, pipeline, AppState};
use crate::kinds::classifier;
use crate::kinds::denoiser::{self, Denoiser};
use crate::kinds::generator;
use crate::tensor::ItemTensor;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Output format of `/denoise`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DenoiseFormat {
    /// The cleaned image as a PNG file (one image per request).
    #[default]
    Png,
    /// Pixel arrays, one per image.
    Json,
}

/// Query parameters of `/denoise`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DenoiseQuery {
    /// Model name; when omitted, the default denoiser (or the only one loaded).
    pub model: Option<String>,
    /// Version; when omitted, the newest served version.
    pub version: Option<u64>,
    /// `png` (default; one image) or `json` (pixel arrays, any number of images).
    #[param(inline)]
    pub format: Option<DenoiseFormat>,
}

/// JSON body of `/denoise`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[schema(example = json!({"model": "digits-denoiser", "format": "json", "images": [{"base64": "iVBORw0KGgo..."}]}))]
pub struct DenoiseRequest {
    /// Model name (overrides the query string).
    model: Option<String>,
    /// Version (overrides the query string).
    version: Option<u64>,
    /// `png` or `json`.
    format: Option<DenoiseFormat>,
    /// The images, 1 to `--max-items-per-request`.
    images: Vec<super::classify::ImageInput>,
}

/// One cleaned image.
#[derive(Debug, Serialize, ToSchema)]
pub struct DenoisedImage {
    /// 8-bit pixels at the model's resolution, `[H][W]` (one channel) or `[H][W][3]`, in the
    /// polarity of the upload.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub pixels: serde_json::Value,
    /// Whether the upload was inverted for the model (and the result inverted back).
    pub inverted: bool,
}

/// JSON response of `/denoise`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DenoiseResponse {
    /// The model that served the request.
    pub model: String,
    /// Its version.
    pub version: u64,
    /// Width of every result (the model's).
    pub width: u32,
    /// Height of every result.
    pub height: u32,
    /// One per image, in request order.
    pub results: Vec<DenoisedImage>,
}

/// Removes noise from images with a denoising autoencoder.
///
/// Images come in every form `/classify` takes. Each is converted to the model's channels,
/// inverted when its border is light (`invert = "auto"`: the model works on light strokes on
/// black), resized to the model's input and batched with other requests' images. The result is at
/// the model's resolution, inverted back when the upload was, so it looks like what was sent.
#[utoipa::path(post, path = "/denoise", tag = "inference", params(DenoiseQuery, ("x-deadline-ms" = Option<u64>, Header, description = "Inference deadline in ms")),
    request_body(content(
        (DenoiseRequest = "application/json"),
        (super::classify::ImageBody = "image/png"), (super::classify::ImageBody = "image/jpeg"), (super::classify::ImageBody = "image/webp"), (super::classify::ImageBody = "image/gif"), (super::classify::ImageBody = "image/bmp"),
        (super::classify::ClassifyMultipart = "multipart/form-data")
    )),
    responses(
        (status = 200, description = "The cleaned image (format=png) or pixel arrays (format=json)", content(
            (Vec<u8> = "image/png"),
            (DenoiseResponse = "application/json")
        )),
        (status = 400, description = "Undecodable image, malformed body, wrong model kind", body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
        (status = 413, description = "Body or image over its limit", body = super::error::ErrorBody),
        (status = 415, body = super::error::ErrorBody),
        (status = 422, description = "Invalid values (pixels, counts; format=png with several images)", body = super::error::ErrorBody),
        (status = 429, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody), (status = 504, body = super::error::ErrorBody),
    ))]
pub async fn denoise(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let q: DenoiseQuery = Query::try_from_uri(req.uri()).map(|Query(q)| q).map_err(ApiError::from)?;
    let deadline = app.deadline(req.headers(), req.extensions())?;
    let body = images::read_images(&app, req, &["format"]).await?;
    let format = match body.params.get("format").map(String::as_str) {
        None => q.format.unwrap_or_default(),
        Some("json") => DenoiseFormat::Json,
        Some("png") => DenoiseFormat::Png,
        Some(_) => return Err(ApiError::invalid("format", "must be png or json")),
    };
    let (v, cfg) = app.pick::<Denoiser>(body.model.as_deref().or(q.model.as_deref()), body.version.or(q.version))?;
    let sources = body.sources;
    if format == DenoiseFormat::Png && sources.len() != 1 {
        return Err(ApiError::invalid("format", "png answers with one image; send exactly one, or use format=json"));
    }
    v.batcher.has_room(sources.len()).map_err(|e| ApiError::from(e).for_model(&v))?;
    let (rows, inverted) = prepare_all(sources, &cfg, &app).await?;
    let shape = cfg.input_shape.to_vec();
    let items = rows.into_iter().map(|r| vec![ItemTensor::f32(shape.clone(), r)]).collect();
    let served = pipeline::infer(&v, items, deadline).await?;
    let [c, h, w] = cfg.input_shape.map(|d| d as usize);
    let pixels: Vec<Vec<u8>> = inverted
        .iter()
        .enumerate()
        .map(|(i, inv)| denoiser::to_pixels(served.first_output(i), c, h, w, *inv))
        .collect();
    if format == DenoiseFormat::Png {
        let png = generator::png_grid(&pixels, c, h, w);
        let mut hdrs = served.headers();
        hdrs.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        return Ok((hdrs, png).into_response());
    }
    let results = pixels
        .iter()
        .zip(inverted)
        .map(|(px, inverted)| DenoisedImage { pixels: generator::pixels_json(px, c, w), inverted })
        .collect();
    Ok(served.json(DenoiseResponse {
        model: v.name.clone(),
        version: v.version,
        width: w as u32,
        height: h as u32,
        results,
    }))
}

/// Decodes and prepares every image off the async workers: the model rows and whether each was
/// inverted.
pub async fn prepare_all(
    sources: Vec<classifier::Source>,
    cfg: &std::sync::Arc<denoiser::DenoiserConfig>,
    app: &super::App,
) -> Result<(Vec<Vec<f32>>, Vec<bool>), ApiError> {
    let max_pixels = app.limits.max_image_pixels;
    let _reserved = app.decode_budget.reserve(&sources).await?;
    let pre = cfg.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        sources
            .into_iter()
            .map(|s| {
                let px = classifier::source_pixels(
                    s,
                    pre.input_shape[0],
                    pre.pixel_scale,
                    pre.alpha_background,
                    max_pixels,
                )?;
                Ok(denoiser::prepare(px, &pre))
            })
            .collect::<Result<Vec<_>, crate::kinds::KindError>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(prepared.into_iter().unzip())
}
