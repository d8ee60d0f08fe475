//! `POST /detect`: images to labelled, scored boxes in the pixel coordinates of each upload, or
//! one image with its boxes drawn on it (`format=png`).

use super::error::ApiError;
use super::{images, pipeline, AppState};
use crate::kinds::classifier::{self, Pixels};
use crate::kinds::detector::{self, Detection, Detector, Params, Placement};
use crate::tensor::ItemTensor;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Output format of `/detect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DetectFormat {
    /// Detections as JSON.
    #[default]
    Json,
    /// The (single) image with its boxes and labels drawn on it.
    Png,
}

/// Query parameters of `/detect` (the same names may be sent as multipart fields or JSON members).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DetectQuery {
    /// Model name; when omitted, the default detector (or the only one loaded).
    pub model: Option<String>,
    /// Version; when omitted, the newest served version.
    pub version: Option<u64>,
    /// Minimum score (objectness x class probability), 0 to 1; default from the model's config.
    pub score_threshold: Option<f32>,
    /// IoU above which a lower-scored box of the same class is suppressed, 0 to 1; default from the config.
    pub iou_threshold: Option<f32>,
    /// Most detections per image, 1 to 1000; default from the config.
    pub max_detections: Option<usize>,
    /// `json` (default) or `png` (one image only: the upload with its boxes drawn).
    #[param(inline)]
    pub format: Option<DetectFormat>,
}

/// JSON body of `/detect`: the images as for `/classify`, plus the post-processing parameters.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[schema(example = json!({"model": "digits-detector", "score_threshold": 0.5, "images": [{"base64": "iVBORw0KGgo..."}]}))]
pub struct DetectRequest {
    /// Model name (overrides the query string).
    model: Option<String>,
    /// Version (overrides the query string).
    version: Option<u64>,
    /// See the query parameter.
    score_threshold: Option<f32>,
    /// See the query parameter.
    iou_threshold: Option<f32>,
    /// See the query parameter.
    max_detections: Option<usize>,
    /// The images, 1 to `--max-items-per-request`.
    images: Vec<super::classify::ImageInput>,
}

/// The detections in one image.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageDetections {
    /// Width of the image as uploaded, in pixels.
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// Whether it was inverted (light background) before detection.
    pub inverted: bool,
    /// Detections, best score first.
    pub detections: Vec<Detection>,
}

/// Response of `/detect`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetectResponse {
    /// The model that served the request.
    pub model: String,
    /// Its version.
    pub version: u64,
    /// The parameters applied.
    pub score_threshold: f32,
    /// The IoU threshold applied.
    pub iou_threshold: f32,
    /// The detection cap applied.
    pub max_detections: usize,
    /// One entry per image, in request order.
    pub results: Vec<ImageDetections>,
}

/// Detects objects in images.
///
/// Images come in every form `/classify` takes. Each is converted to the model's channels,
/// inverted when its border is light (`invert = "auto"`), fitted to the model's canvas
/// (`resize = "letterbox"` keeps the aspect ratio and pads with black; `stretch` does not), and
/// batched with other requests' images. The model returns fixed-size candidates; the server
/// scores them (objectness x class probability), drops those under `score_threshold`, runs
/// class-wise non-maximum suppression at `iou_threshold`, keeps the best `max_detections`, and maps
/// the boxes back onto the image as uploaded (`x_min, y_min, x_max, y_max`, pixel edges).
#[utoipa::path(post, path = "/detect", tag = "inference", params(DetectQuery, ("x-deadline-ms" = Option<u64>, Header, description = "Inference deadline in ms")),
    request_body(content(
        (DetectRequest = "application/json"),
        (super::classify::ImageBody = "image/png"), (super::classify::ImageBody = "image/jpeg"), (super::classify::ImageBody = "image/webp"), (super::classify::ImageBody = "image/gif"), (super::classify::ImageBody = "image/bmp"),
        (super::classify::ClassifyMultipart = "multipart/form-data")
    )),
    responses(
        (status = 200, description = "Detections (format=json), or the image with its boxes drawn (format=png)", content(
            (DetectResponse = "application/json", example = json!({"model": "digits-detector", "version": 1, "score_threshold": 0.55, "iou_threshold": 0.45, "max_detections": 100, "results": [{"width": 96, "height": 96, "inverted": false, "detections": [{"label": "9", "index": 9, "score": 0.93, "box": {"x_min": 52.1, "y_min": 12.3, "x_max": 72.8, "y_max": 40.2}}]}]})),
            (Vec<u8> = "image/png")
        )),
        (status = 400, description = "Undecodable image, malformed body, wrong model kind", body = super::error::ErrorBody),
        (status = 404, description = "Unknown model or version", body = super::error::ErrorBody),
        (status = 413, description = "Body or image over its limit", body = super::error::ErrorBody),
        (status = 415, description = "Unsupported content type", body = super::error::ErrorBody),
        (status = 422, description = "Invalid values (thresholds, max_detections, pixels, counts; format=png with several images)", body = super::error::ErrorBody),
        (status = 429, description = "Queue full; see Retry-After", body = super::error::ErrorBody),
        (status = 503, description = "Model not ready", body = super::error::ErrorBody),
        (status = 504, description = "Deadline exceeded", body = super::error::ErrorBody),
    ))]
pub async fn detect(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let q: DetectQuery = Query::try_from_uri(req.uri()).map(|Query(q)| q).map_err(ApiError::from)?;
    let deadline = app.deadline(req.headers(), req.extensions())?;
    let body =
        images::read_images(&app, req, &["score_threshold", "iou_threshold", "max_detections", "format"]).await?;
    let p = &body.params;
    let score = images::param(p, "score_threshold", q.score_threshold, "a number between 0 and 1")?;
    let iou = images::param(p, "iou_threshold", q.iou_threshold, "a number between 0 and 1")?;
    let max_det = images::param(p, "max_detections", q.max_detections, "an integer between 1 and 1000")?;
    let format = match p.get("format").map(String::as_str) {
        None => q.format.unwrap_or_default(),
        Some("json") => DetectFormat::Json,
        Some("png") => DetectFormat::Png,
        Some(_) => return Err(ApiError::invalid("format", "must be json or png")),
    };
    let (v, cfg) = app.pick::<Detector>(body.model.as_deref().or(q.model.as_deref()), body.version.or(q.version))?;
    let params = Params {
        score_threshold: score.unwrap_or(cfg.score_threshold),
        iou_threshold: iou.unwrap_or(cfg.iou_threshold),
        max_detections: max_det.unwrap_or(cfg.max_detections),
    };
    detector::check_params(params.score_threshold, params.iou_threshold, params.max_detections)
        .map_err(|(field, message)| ApiError::invalid(field, message))?;
    let sources = body.sources;
    if format == DetectFormat::Png && sources.len() != 1 {
        return Err(ApiError::invalid("format", "png answers with one image; send exactly one, or use format=json"));
    }
    v.batcher.has_room(sources.len()).map_err(|e| ApiError::from(e).for_model(&v))?;
    let max_pixels = app.limits.max_image_pixels;
    let pre = cfg.clone();
    let keep_rgb = format == DetectFormat::Png;
    let _reserved = app.decode_budget.reserve(&sources).await?;
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
                // The drawing goes on the upload as a person sees it (RGB, not the model's channels).
                let rgb = keep_rgb.then(|| rgb8(&px));
                let (row, place, inverted) = detector::prepare(px, &pre);
                Ok((row, place, inverted, rgb))
            })
            .collect::<Result<Vec<_>, crate::kinds::KindError>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let shape = cfg.input_shape.to_vec();
    let mut meta: Vec<(Placement, bool, Option<Vec<u8>>)> = Vec::with_capacity(prepared.len());
    let mut items = Vec::with_capacity(prepared.len());
    for (row, place, inverted, rgb) in prepared {
        items.push(vec![ItemTensor::f32(shape.clone(), row)]);
        meta.push((place, inverted, rgb));
    }
    let served = pipeline::infer(&v, items, deadline).await?;
    let k = v.labels.len();
    let mut results = Vec::with_capacity(meta.len());
    for (i, (place, inverted, _)) in meta.iter().enumerate() {
        let detections = detector::postprocess(served.first_output(i), k, &params, place, &v.labels);
        results.push(ImageDetections { width: place.width, height: place.height, inverted: *inverted, detections });
    }
    if format == DetectFormat::Png {
        let (place, _, rgb) = meta.pop().expect("one image");
        let mut rgb = rgb.expect("kept for png");
        let dets = results.pop().expect("one result").detections;
        let png = tokio::task::spawn_blocking(move || {
            detector::draw(&mut rgb, place.width, place.height, &dets);
            encode_png(&rgb, place.width, place.height)
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut h = served.headers();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        return Ok((h, png).into_response());
    }
    Ok(served.json(DetectResponse {
        model: v.name.clone(),
        version: v.version,
        score_threshold: params.score_threshold,
        iou_threshold: params.iou_threshold,
        max_detections: params.max_detections,
        results,
    }))
}

/// Float pixels as RGB8 (gray repeated on three channels).
fn rgb8(p: &Pixels) -> Vec<u8> {
    let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    match p {
        Pixels::Gray(b) => b.as_raw().iter().flat_map(|v| [q(*v); 3]).collect(),
        Pixels::Rgb(b) => b.as_raw().iter().map(|v| q(*v)).collect(),
    }
}

/// RGB8 pixels as a PNG file.
pub fn encode_png(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        rgb,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .expect("in-memory PNG encoding of a well-sized buffer cannot fail");
    out
}
