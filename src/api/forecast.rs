//! `POST /forecast`: a history and a horizon to a forecast, with intervals when the model gives quantiles.

use super::error::ApiError;
use super::{pipeline, ModelSelector};
use crate::kinds::forecaster::{self, Forecaster, Rollout};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// JSON body of `/forecast`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"model": "co2-lstm", "series": [315.4, 316.3, 316.9, 317.6, 318.5, 318.0, 316.6, 314.8, 313.8, 313.3, 314.6, 315.6, 316.3, 316.9, 317.5, 318.4, 318.9, 318.5, 317.1, 315.3, 313.9, 313.9, 314.9, 315.8], "horizon": 12, "start": "1960-01-01", "frequency": "MS"}))]
pub struct ForecastRequest {
    /// Model name (overrides the query string).
    pub model: Option<String>,
    /// Version (overrides the query string).
    pub version: Option<u64>,
    /// The history, oldest first: numbers for a univariate model, or rows of F numbers.
    /// Its length must be at least the model's `min_context`; a longer one is cut to the most recent `max_context` steps.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub series: serde_json::Value,
    /// Steps to forecast, from 1 to the model's `max_horizon`.
    pub horizon: usize,
    /// Time of the first history step (`YYYY-MM-DD` or RFC 3339); with `frequency`, the forecast gets timestamps.
    pub start: Option<String>,
    /// Step between observations: e.g. `30s`, `15min`, `1h`, `D`, `W`, `MS` (month), `Q`, `Y`.
    pub frequency: Option<String>,
}

/// A prediction interval level.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuantileForecast {
    /// The quantile level, e.g. 0.1.
    pub level: f32,
    /// The forecast at that level, shaped like `forecast`.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub values: serde_json::Value,
}

/// Response of `/forecast`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastResponse {
    /// The model that served the request.
    pub model: String,
    /// Its version.
    pub version: u64,
    /// The point forecast, `horizon` steps (numbers, or rows for a multivariate model).
    #[schema(value_type = Vec<serde_json::Value>)]
    pub forecast: serde_json::Value,
    /// Quantile forecasts, when the model gives them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quantiles: Vec<QuantileForecast>,
    /// Timestamps of the forecast steps, when `start` and `frequency` were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamps: Option<Vec<String>>,
    /// History steps the model used.
    pub context_used: usize,
    /// True when the history was longer than the model's `max_context` and only the most recent part was used.
    pub truncated: bool,
    /// Forward passes run (more than one when the horizon exceeds the model's own).
    pub forward_passes: usize,
}

/// Forecasts a series with an LSTM/GRU forecaster.
///
/// The history is scaled as the model's config says, cut to the most recent `max_context`
/// steps, and fed to the model. A horizon beyond the model's own is rolled out by feeding the
/// forecast back in. The response is in the units of the request.
#[utoipa::path(post, path = "/forecast", tag = "inference", params(ModelSelector, ("x-deadline-ms" = Option<u64>, Header, description = "Inference deadline in ms")),
    request_body(content = ForecastRequest, content_type = "application/json"),
    responses(
        (status = 200, body = ForecastResponse),
        super::error::InferErrors,
        (status = 422, description = "Short or long history, NaN, wrong width, horizon out of range", body = super::error::ErrorBody),
    ))]
pub async fn forecast(call: pipeline::JsonRequest<Forecaster, ForecastRequest>) -> Result<Response, ApiError> {
    let req = &call.body;
    let (v, cfg) = call.pick(req.model.as_deref(), req.version)?;
    forecaster::check_horizon(req.horizon, &cfg)?;
    let (rows, flat) = forecaster::series_rows(&req.series, cfg.features as usize)?;
    let step = match (&req.start, &req.frequency) {
        (Some(_), Some(f)) => Some(forecaster::parse_frequency(f)?),
        (None, None) => None,
        _ => {
            return Err(ApiError::invalid(
                if req.start.is_none() { "start" } else { "frequency" },
                "start and frequency go together",
            ))
        }
    };
    let timestamps = match (&req.start, step) {
        (Some(s), Some(st)) => Some(forecaster::timestamps(s, st, rows.len(), req.horizon)?),
        _ => None,
    };
    let prepared = forecaster::prepare(&rows, &cfg)?;
    let mut rollout = Rollout::new(&prepared, req.horizon, &cfg);
    let mut served = pipeline::Served::on(&v);
    while let Some(item) = rollout.next_item(&cfg) {
        served.run(vec![item], call.deadline).await?;
        rollout.feed(served.first_output(0), &cfg);
    }
    let render = |steps: &[Vec<f32>]| -> serde_json::Value {
        let unscaled: Vec<Vec<f32>> = steps
            .iter()
            .map(|s| s.iter().enumerate().map(|(i, x)| forecaster::unscale(*x, i, &cfg)).collect())
            .collect();
        if flat {
            serde_json::json!(unscaled.iter().map(|s| s[0]).collect::<Vec<f32>>())
        } else {
            serde_json::json!(unscaled)
        }
    };
    let quantiles = cfg
        .quantiles
        .iter()
        .zip(&rollout.quantiles)
        .map(|(l, qv)| QuantileForecast { level: *l, values: render(qv) })
        .collect();
    let body = ForecastResponse {
        model: v.name.clone(),
        version: v.version,
        forecast: render(&rollout.point),
        quantiles,
        timestamps,
        context_used: prepared.context_used,
        truncated: prepared.truncated,
        forward_passes: served.timings.len(),
    };
    Ok(served.json(body))
}
