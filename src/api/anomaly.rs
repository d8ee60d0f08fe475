//! `POST /anomaly`: feature rows to anomaly scores, verdicts and the features behind them.

use super::error::ApiError;
use super::{pipeline, ModelSelector};
use crate::kinds::anomaly::{self, Anomaly, Contribution};
use crate::tensor::ItemTensor;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// JSON body of `/anomaly`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"model": "cancer-ae", "rows": [[13.5, 14.4, 87.5, 566.3, 0.098, 0.081, 0.066, 0.043, 0.18, 0.06, 0.3, 1.2, 2.1, 23.6, 0.006, 0.02, 0.025, 0.01, 0.02, 0.003, 15.1, 19.3, 99.7, 711.2, 0.14, 0.21, 0.22, 0.11, 0.29, 0.08]], "top_features": 3}))]
pub struct AnomalyRequest {
    /// Model name (overrides the query string).
    pub model: Option<String>,
    /// Version (overrides the query string).
    pub version: Option<u64>,
    /// Rows to score: arrays of D numbers in the model's feature order, or objects mapping every feature name to its value.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub rows: Vec<serde_json::Value>,
    /// Threshold overriding the model's calibrated one for this request (>= 0).
    pub threshold: Option<f32>,
    /// How many of the most contributing features to return per row (0 to D, default 3).
    pub top_features: Option<usize>,
}

/// The verdict on one row.
#[derive(Debug, Serialize, ToSchema)]
pub struct RowScore {
    /// Reconstruction error: mean squared error over the features in the model's scaled space.
    pub score: f64,
    /// The threshold compared against.
    pub threshold: f32,
    /// `score > threshold`.
    pub is_anomaly: bool,
    /// The features with the largest reconstruction error, largest first.
    pub top_features: Vec<Contribution>,
}

/// Response of `/anomaly`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnomalyResponse {
    /// The model that served the request.
    pub model: String,
    /// Its version.
    pub version: u64,
    /// Whether the threshold is the model's calibrated one (`calibrated`) or the request's (`request`).
    #[schema(example = "calibrated")]
    pub threshold_source: &'static str,
    /// One verdict per row, in request order.
    pub results: Vec<RowScore>,
}

/// Test hook: sleeps this many milliseconds after inference, before post-processing (a CPU too
/// starved to finish in time).
#[cfg(feature = "fault-injection")]
pub const POST_DELAY_HEADER: &str = "x-test-post-delay-ms";

/// Scores rows with an autoencoder anomaly scorer.
///
/// Each row is scaled as the model's config says and reconstructed by the autoencoder; the score
/// is the mean squared reconstruction error, compared with the calibrated threshold (or the
/// request's). The features that contribute most to the error say why a row stands out.
#[utoipa::path(post, path = "/anomaly", tag = "inference", params(ModelSelector, ("x-deadline-ms" = Option<u64>, Header, description = "Inference deadline in ms")),
    request_body(content = AnomalyRequest, content_type = "application/json"),
    responses(
        (status = 200, body = AnomalyResponse),
        super::error::InferErrors,
        (status = 422, description = "Wrong feature count, unknown names, NaN, empty rows, bad threshold", body = super::error::ErrorBody),
    ))]
pub async fn anomaly(call: pipeline::JsonRequest<Anomaly, AnomalyRequest>) -> Result<Response, ApiError> {
    let req = &call.body;
    call.app.check_items("rows", req.rows.len())?;
    let (v, cfg) = call.pick(req.model.as_deref(), req.version)?;
    let (threshold, source) = match req.threshold {
        Some(t) if t.is_finite() && t >= 0.0 => (t, "request"),
        Some(_) => return Err(ApiError::invalid("threshold", "must be a finite number >= 0")),
        None => (cfg.threshold, "calibrated"),
    };
    let d = cfg.features as usize;
    let top = req.top_features.unwrap_or(3.min(d));
    if top > d {
        return Err(ApiError::invalid("top_features", format!("must be between 0 and {d} (the number of features)")));
    }
    let raws = req.rows.iter().enumerate().map(|(i, r)| anomaly::raw_row(r, i, &cfg)).collect::<Result<Vec<_>, _>>()?;
    let scaled = raws.iter().enumerate().map(|(i, r)| anomaly::prepare(r, i, &cfg)).collect::<Result<Vec<_>, _>>()?;
    let items = scaled.iter().map(|x| vec![ItemTensor::f32(vec![d as i64], x.clone())]).collect();
    let served = pipeline::infer(&v, items, call.deadline).await?;
    #[cfg(feature = "fault-injection")]
    if let Some(ms) = call.headers.get(POST_DELAY_HEADER).and_then(|h| h.to_str().ok()?.parse().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let results = (0..raws.len())
        .map(|i| {
            let (score, top_features) = anomaly::score(&scaled[i], served.first_output(i), &raws[i], &cfg, top);
            RowScore { score, threshold, is_anomaly: score > threshold as f64, top_features }
        })
        .collect();
    Ok(served.json(AnomalyResponse { model: v.name.clone(), version: v.version, threshold_source: source, results }))
}
