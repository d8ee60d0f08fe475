//! `POST /embed`: rows (tabular autoencoders) or images (image autoencoders) to the latent vectors
//! of the model's encoder, through the model's `[embedding]` queue.

use super::error::{parse_json, ApiError, ErrorType};
use super::{denoise, images, AppState};
use crate::batching::Deadline;
use crate::kinds::anomaly::{self, Anomaly};
use crate::kinds::denoiser::Denoiser;
use crate::kinds::Kind;
use crate::registry::LoadedVersion;
use crate::tensor::ItemTensor;
use axum::extract::{FromRequest, Query, Request, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// JSON body of `/embed` for a tabular model (for an image model, send images as to `/classify`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"model": "cancer-ae", "rows": [[13.5, 14.4, 87.5, 566.3, 0.098, 0.081, 0.066, 0.043, 0.18, 0.06, 0.3, 1.2, 2.1, 23.6, 0.006, 0.02, 0.025, 0.01, 0.02, 0.003, 15.1, 19.3, 99.7, 711.2, 0.14, 0.21, 0.22, 0.11, 0.29, 0.08]]}))]
pub struct EmbedRowsRequest {
    /// Model name (overrides the query string).
    pub model: Option<String>,
    /// Version (overrides the query string).
    pub version: Option<u64>,
    /// Rows as for `/anomaly`: arrays of D numbers, or objects naming every feature.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub rows: Vec<serde_json::Value>,
}

/// Response of `/embed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbedResponse {
    /// The model that served the request.
    #[schema(example = "cancer-ae")]
    pub model: String,
    /// Its version.
    pub version: u64,
    /// Length of every vector (the `[embedding]` table's `dim`).
    pub dim: usize,
    /// One latent vector per row or image, in request order.
    pub embeddings: Vec<Vec<f32>>,
}

/// Maps rows or images to latent vectors with an autoencoder's encoder.
///
/// Models with an `[embedding]` table in their config serve here (`GET /models` shows it):
/// tabular autoencoders (kind `anomaly`) take `{"rows": [...]}` scaled as for `/anomaly`; image
/// autoencoders (kind `denoiser`) take images in every form `/classify` takes, prepared as for
/// `/denoise`. The vectors come from the model's encoder method, batched in a queue of its own.
#[utoipa::path(post, path = "/embed", tag = "inference", params(super::ModelSelector, ("x-deadline-ms" = Option<u64>, Header, description = "Inference deadline in ms")),
    request_body(content(
        (EmbedRowsRequest = "application/json"),
        (super::classify::ImageBody = "image/png"), (super::classify::ImageBody = "image/jpeg"), (super::classify::ImageBody = "image/webp"), (super::classify::ImageBody = "image/gif"), (super::classify::ImageBody = "image/bmp"),
        (super::classify::ClassifyMultipart = "multipart/form-data")
    )),
    responses(
        (status = 200, body = EmbedResponse, example = json!({"model": "digits-denoiser", "version": 1, "dim": 32, "embeddings": [[0.12, -1.3, 0.5]]})),
        (status = 400, description = "Undecodable image, malformed body, a model without an encoder or of the wrong input type", body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody), (status = 415, body = super::error::ErrorBody),
        (status = 422, description = "Wrong feature count, NaN, empty rows, bad pixels", body = super::error::ErrorBody),
        (status = 429, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody), (status = 504, body = super::error::ErrorBody),
    ))]
pub async fn embed(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let q: super::ModelSelector = Query::try_from_uri(req.uri()).map(|Query(q)| q).map_err(ApiError::from)?;
    let deadline = app.deadline(req.headers(), req.extensions())?;
    let body = if images::media_type(&req) == "application/json" {
        let bytes = bytes::Bytes::from_request(req, &()).await.map_err(ApiError::from)?;
        let has_rows = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
            .is_ok_and(|m| m.contains_key("rows"));
        if has_rows {
            let req: EmbedRowsRequest = parse_json(&bytes)?;
            app.check_items("rows", req.rows.len())?;
            let v = pick(&app, Anomaly::NAME, req.model.as_deref().or(q.model.as_deref()), req.version.or(q.version))?;
            let cfg =
                v.config.section::<Anomaly>().ok_or_else(|| ApiError::internal("anomaly model without its section"))?;
            let d = cfg.features;
            let items = req
                .rows
                .iter()
                .enumerate()
                .map(|(i, r)| anomaly::prepare(&anomaly::raw_row(r, i, &cfg)?, i, &cfg))
                .map(|r| r.map(|x| vec![ItemTensor::f32(vec![d], x)]))
                .collect::<Result<Vec<_>, _>>()?;
            return run(&v, items, deadline).await;
        }
        images::json_images(&app, &bytes, &[])?
    } else {
        images::read_images(&app, req, &[]).await?
    };
    let v = pick(&app, Denoiser::NAME, body.model.as_deref().or(q.model.as_deref()), body.version.or(q.version))?;
    let cfg = v.config.section::<Denoiser>().ok_or_else(|| ApiError::internal("denoiser model without its section"))?;
    let (rows, _) = denoise::prepare_all(body.sources, &cfg, &app).await?;
    let shape = cfg.input_shape.to_vec();
    let items = rows.into_iter().map(|r| vec![ItemTensor::f32(shape.clone(), r)]).collect();
    run(&v, items, deadline).await
}

/// The model for an embedding of `kind`'s input: the named one (which must have an encoder and
/// take that input), else the only one with an encoder that does.
fn pick(
    app: &super::App,
    kind: &'static str,
    model: Option<&str>,
    version: Option<u64>,
) -> Result<Arc<LoadedVersion>, ApiError> {
    let input = if kind == Anomaly::NAME { "rows" } else { "images" };
    let fits = |v: &LoadedVersion| v.embedder.is_some() && v.kind() == kind;
    let name = match model.filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => {
            let mut names = app.registry.serving_where(fits);
            match names.len() {
                1 => names.remove(0),
                0 => return Err(ApiError::new(ErrorType::NotFound, format!("no model that embeds {input} is loaded"))),
                _ => {
                    return Err(ApiError {
                        field: Some("model".into()),
                        ..ApiError::new(
                            ErrorType::ModelRequired,
                            format!("model: several models embed {input} ({}); name one", names.join(", ")),
                        )
                    })
                }
            }
        }
    };
    let v = app.registry.resolve(&name, version)?;
    if !fits(&v) {
        let why = if v.embedder.is_none() {
            format!("model: '{name}' has no encoder (no [embedding] table in its config)")
        } else {
            format!("model: '{name}' is a {} model and does not take {input}", v.kind())
        };
        return Err(ApiError { field: Some("model".into()), ..ApiError::new(ErrorType::WrongKind, why) });
    }
    Ok(v)
}

async fn run(v: &Arc<LoadedVersion>, items: Vec<Vec<ItemTensor>>, deadline: Deadline) -> Result<Response, ApiError> {
    let embedder = v.embedder.as_ref().ok_or_else(|| ApiError::internal("picked without an encoder"))?;
    embedder.has_room(items.len()).map_err(|e| ApiError::from(e).for_model(v))?;
    let mut served = super::pipeline::Served::on(v);
    served.run_on(embedder, items, deadline).await?;
    let embeddings: Vec<Vec<f32>> = (0..served.outs.len()).map(|i| served.first_output(i).to_vec()).collect();
    let dim = v.config.manifest.embedding.as_ref().map_or(0, |e| e.dim as usize);
    Ok(served.json(EmbedResponse { model: v.name.clone(), version: v.version, dim, embeddings }))
}
