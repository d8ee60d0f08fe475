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
    /// A NumPy `.npz` archive with `images` (uint8 `[n, H, W]` or `[n, H, W, 3]`) and `labels`
    /// (int64 `[n]`, -1 for an unconditional generator), streamed; `n` up to 10,000.
    Npz,
}

/// The most images one `format=npz` request may ask for.
pub const MAX_N_NPZ: usize = 10_000;

/// Images generated per round of a `format=npz` stream.
const NPZ_CHUNK: usize = 64;

/// Query parameters of `/generate`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GenerateQuery {
    /// Model name; when omitted, the default generator (or the only one loaded).
    pub model: Option<String>,
    /// Version; when omitted, the newest served version.
    pub version: Option<u64>,
    /// Number of images, from 1 to the model's `max_n` (default 1); up to 10,000 with `format=npz`.
    #[param(minimum = 1)]
    pub n: Option<usize>,
    /// Seed of the latent vectors; the same seed and parameters give bit-identical output.
    /// When omitted, one is drawn and returned in `x-seed`.
    pub seed: Option<u64>,
    /// For a conditional generator: one class index for all images, or one per image
    /// (comma-separated, exactly n). When omitted, labels are drawn from the seed.
    pub label: Option<String>,
    /// `png` (default), `json`, or `npz` (a training set: streamed NumPy arrays).
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
        (status = 200, description = "A PNG grid (format=png), pixel arrays (format=json), or a NumPy archive with `images` and `labels` (format=npz, streamed)", content(
            (Vec<u8> = "image/png"),
            (GenerateResponse = "application/json"),
            (Vec<u8> = "application/x-npz")
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
    if q.format == Some(Format::Npz) {
        return npz(&app, v, cfg, q).await;
    }
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
        Format::Npz => unreachable!("answered above"),
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

/// `format=npz`: the archive is produced in rounds of [`NPZ_CHUNK`] images through the model's
/// queue and sent as it is made, so memory stays flat whatever `n` is; a client that goes away
/// stops the rounds (the next send fails). A full queue makes a round wait and retry (the status
/// is already sent); any other failure ends the stream early, which the client sees as a
/// truncated archive.
async fn npz(
    app: &super::App,
    v: std::sync::Arc<crate::registry::LoadedVersion>,
    cfg: std::sync::Arc<generator::GeneratorConfig>,
    q: GenerateQuery,
) -> Result<Response, ApiError> {
    use crate::npz::{npy_header, NpzWriter};
    let n = q.n.unwrap_or(1);
    if !(1..=MAX_N_NPZ).contains(&n) {
        return Err(ApiError::invalid("n", format!("must be between 1 and {MAX_N_NPZ} for format=npz")));
    }
    let seed = q.seed.unwrap_or_else(rand::random::<u64>);
    let labels = generator::labels(q.label.as_deref(), n, seed, &cfg)?;
    v.batcher.has_room(1).map_err(|e| ApiError::from(e).for_model(&v))?;
    let [c, h, w] = cfg.output_shape.map(|d| d as usize);
    let shape: Vec<usize> = if c == 1 { vec![n, h, w] } else { vec![n, h, w, c] };
    let round_deadline = app.limits.default_deadline;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(2);
    let task_v = v.clone();
    tokio::spawn(async move {
        let v = task_v;
        let mut zip = NpzWriter::default();
        let send = |b: Vec<u8>| tx.send(Ok(bytes::Bytes::from(b)));
        // labels.npy first: known from the seed before any image.
        let mut part = zip.begin("labels.npy");
        let mut body = npy_header("<i8", &[n]);
        let values: Vec<i64> = if labels.is_empty() { vec![-1; n] } else { labels.clone() };
        body.extend(values.iter().flat_map(|l| l.to_le_bytes()));
        zip.data(&body);
        part.extend(body);
        part.extend(zip.end());
        part.extend(zip.begin("images.npy"));
        let header = npy_header("|u1", &shape);
        zip.data(&header);
        part.extend(header);
        if send(part).await.is_err() {
            return;
        }
        let mut start = 0;
        while start < n {
            let end = (start + NPZ_CHUNK).min(n);
            let items: Vec<_> = (start..end).map(|i| generator::item(seed, i, &labels, &cfg)).collect();
            let outs = match v.batcher.infer(items, crate::batching::Deadline::after(round_deadline)).await {
                Ok(o) => o,
                Err(crate::batching::InferError::QueueFull { .. }) if !tx.is_closed() => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(model = %v.name, error = %e, done = start, n, "npz stream ended early");
                    return;
                }
            };
            let mut chunk = Vec::with_capacity((end - start) * c * h * w);
            for o in &outs {
                chunk.extend(generator::chw_to_hwc(&generator::to_u8(&o.outputs[0].data), c, h, w));
            }
            zip.data(&chunk);
            if send(chunk).await.is_err() {
                return; // the client has gone
            }
            start = end;
        }
        let mut tail = zip.end();
        tail.extend(zip.finish());
        let _ = send(tail).await;
    });
    // A closed receiver keeps answering None, so the body may poll past its end (an `unfold`
    // stream panics when it is).
    let mut rx = rx;
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut hdrs = axum::http::HeaderMap::new();
    hdrs.insert(
        super::MODEL_HEADER.clone(),
        HeaderValue::from_str(&v.name).unwrap_or(HeaderValue::from_static("invalid")),
    );
    hdrs.insert(super::VERSION_HEADER.clone(), HeaderValue::from(v.version));
    hdrs.insert(header::HeaderName::from_static("x-seed"), HeaderValue::from(seed));
    hdrs.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-npz"));
    hdrs.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{}-{seed}.npz\"", v.name))
            .unwrap_or(HeaderValue::from_static("attachment")),
    );
    Ok((hdrs, axum::body::Body::from_stream(stream)).into_response())
}
