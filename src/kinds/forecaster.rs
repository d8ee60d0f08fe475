//! Sequence forecasters (`POST /forecast`): a history of values to a `[T, F]` row in the model's
//! scale, and the model's `[H, F]` (or `[H, F, Q]`, or one-step `[F]`) output back to user units.
//! Horizons beyond the model's own are rolled out by [`Rollout`].

use super::{field_error, invalid, spec, FieldError, Kind, KindError, Scaling, TensorSpec};
use crate::tensor::{ItemTensor, TensorData};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The forecaster kind: `[B, T, F]` history to `[B, H, F]` forecast (or `[B, H, F, Q]`, or `[B, F]`).
pub struct Forecaster;

impl Kind for Forecaster {
    const NAME: &'static str = "forecaster";
    const ENDPOINT: &'static str = "POST /forecast";
    type Config = ForecasterConfig;

    fn validate(f: &ForecasterConfig) -> Result<(), FieldError> {
        if !(1..=1024).contains(&f.features) {
            return Err(field_error("features", "must be between 1 and 1024"));
        }
        if f.min_context == 0 || f.min_context > f.max_context || f.max_context > 100_000 {
            return Err(field_error("min_context", "need 1 <= min_context <= max_context <= 100000"));
        }
        if f.model_horizon == 0 || (f.one_step && f.model_horizon != 1) {
            return Err(field_error("model_horizon", "must be >= 1, and 1 for a one-step model"));
        }
        if f.max_horizon < 1 || f.max_horizon > 10_000 {
            return Err(field_error("max_horizon", "must be between 1 and 10000"));
        }
        if f.quantiles.iter().any(|q| !(*q > 0.0 && *q < 1.0)) {
            return Err(field_error("quantiles", "each must lie strictly between 0 and 1"));
        }
        if f.quantiles.windows(2).any(|w| w[0] >= w[1]) {
            return Err(field_error("quantiles", "must be strictly increasing"));
        }
        if !f.feature_names.is_empty() && f.feature_names.len() as i64 != f.features {
            return Err(field_error("feature_names", format!("needs {} names", f.features)));
        }
        if let Some(s) = &f.scaling {
            s.check(f.features as usize, "scaling")?;
        }
        Ok(())
    }

    fn inputs(f: &ForecasterConfig) -> Vec<TensorSpec> {
        let t = if f.min_context == f.max_context { f.max_context as i64 } else { -1 };
        vec![spec("history", "FP32", vec![-1, t, f.features])]
    }

    fn outputs(f: &ForecasterConfig, _labels: &[String]) -> Vec<TensorSpec> {
        let mut shape = if f.one_step { vec![-1, f.features] } else { vec![-1, f.model_horizon as i64, f.features] };
        if !f.quantiles.is_empty() {
            shape.push(f.quantiles.len() as i64);
        }
        vec![spec("forecast", "FP32", shape)]
    }

    fn warmup_lens(f: &ForecasterConfig) -> Vec<i64> {
        vec![f.min_context as i64, f.max_context as i64]
    }

    /// Variable dimensions still have limits: the history length must be in the model's range.
    fn check_v2_input(f: &ForecasterConfig, input: usize, shape: &[i64], _data: &TensorData) -> Result<(), String> {
        let t = shape.get(1).copied().unwrap_or(0) as usize;
        if input == 0 && (t < f.min_context || t > f.max_context) {
            return Err(format!(
                "input 'history': length {t} is outside the model's context range {}..={}",
                f.min_context, f.max_context
            ));
        }
        Ok(())
    }
}

/// A forecaster's contract (`[forecaster]`): `[B, T, F]` history to `[B, H, F]` forecast (or `[B, H, F, Q]` quantiles).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForecasterConfig {
    /// Features per time step (F).
    pub features: i64,
    /// Shortest history the model accepts (T).
    pub min_context: usize,
    /// Longest history fed to the model; longer histories are cut to the most recent window.
    pub max_context: usize,
    /// Steps the model predicts in one forward (H); 1 for a one-step model.
    pub model_horizon: usize,
    /// Largest horizon a request may ask for; beyond `model_horizon` the server rolls out.
    pub max_horizon: usize,
    /// Whether the model is one-step with output `[B, F]` instead of `[B, H, F]`.
    #[serde(default)]
    pub one_step: bool,
    /// Quantile levels of the last output dimension, if the model outputs `[B, H, F, Q]`.
    #[serde(default)]
    pub quantiles: Vec<f32>,
    /// Scaling applied to the history and inverted on the forecast.
    pub scaling: Option<Scaling>,
    /// Names of the features, in order (optional).
    #[serde(default)]
    pub feature_names: Vec<String>,
}

/// Reads `series` as rows of `f` values; a flat list of numbers is accepted for univariate models.
/// Returns the rows and whether the list was flat (the answer then is flat too).
pub fn series_rows(v: &serde_json::Value, f: usize) -> Result<(Vec<Vec<f64>>, bool), KindError> {
    let serde_json::Value::Array(items) = v else {
        return Err(invalid("series", "must be an array of numbers (or of rows of numbers)"));
    };
    let num = |x: &serde_json::Value, field: String| -> Result<f64, KindError> {
        x.as_f64().ok_or_else(|| invalid(field, "must be a number"))
    };
    if items.first().is_some_and(|x| x.is_array()) {
        let rows = items
            .iter()
            .enumerate()
            .map(|(t, r)| match r {
                serde_json::Value::Array(vals) => {
                    vals.iter().enumerate().map(|(i, x)| num(x, format!("series[{t}][{i}]"))).collect()
                }
                _ => Err(invalid(format!("series[{t}]"), format!("must be a row of {f} numbers"))),
            })
            .collect::<Result<Vec<Vec<f64>>, _>>()?;
        return Ok((rows, false));
    }
    if f != 1 && !items.is_empty() {
        return Err(invalid("series", format!("this model takes {f} features per step; send rows of {f} numbers")));
    }
    let rows = items
        .iter()
        .enumerate()
        .map(|(t, x)| num(x, format!("series[{t}]")).map(|v| vec![v]))
        .collect::<Result<_, _>>()?;
    Ok((rows, true))
}

/// A forecast being rolled out: the model is called on the rolling window until the horizon is
/// covered, each forecast appended to the window. Pure: the caller runs each [`Rollout::next_item`]
/// through the model and hands the output to [`Rollout::feed`].
#[derive(Debug, Clone)]
pub struct Rollout {
    window: Vec<f32>,
    horizon: usize,
    /// Point forecast per step, in the model's scale.
    pub point: Vec<Vec<f32>>,
    /// Per quantile level, the forecast per step, in the model's scale.
    pub quantiles: Vec<Vec<Vec<f32>>>,
}

impl Rollout {
    /// Starts from a prepared history.
    pub fn new(prepared: &Prepared, horizon: usize, cfg: &ForecasterConfig) -> Rollout {
        Rollout {
            window: prepared.window.clone(),
            horizon,
            point: Vec::with_capacity(horizon),
            quantiles: vec![Vec::new(); cfg.quantiles.len()],
        }
    }

    /// The model input for the next forward, or `None` once the horizon is covered.
    pub fn next_item(&self, cfg: &ForecasterConfig) -> Option<Vec<ItemTensor>> {
        if self.point.len() >= self.horizon {
            return None;
        }
        let f = cfg.features as usize;
        Some(vec![ItemTensor::f32(vec![(self.window.len() / f) as i64, f as i64], self.window.clone())])
    }

    /// Takes one forward's output (the item's first output tensor's data).
    pub fn feed(&mut self, data: &[f32], cfg: &ForecasterConfig) {
        let Chunk { point, quantiles } = split_output(data, cfg);
        let take = point.len().min(self.horizon - self.point.len());
        for (j, qv) in quantiles.into_iter().enumerate() {
            self.quantiles[j].extend(qv.into_iter().take(take));
        }
        roll(&mut self.window, &point[..take], cfg);
        self.point.extend(point.into_iter().take(take));
    }
}

/// A validated history, ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The most recent `context_used` steps, scaled, row-major `[T, F]`.
    pub window: Vec<f32>,
    /// Steps fed to the model.
    pub context_used: usize,
    /// Whether the history was longer than `max_context` and cut to its most recent part.
    pub truncated: bool,
}

/// Checks a history (`rows[t][f]`) against the contract and scales its most recent window.
pub fn prepare(rows: &[Vec<f64>], cfg: &ForecasterConfig) -> Result<Prepared, KindError> {
    let f = cfg.features as usize;
    if rows.is_empty() {
        return Err(invalid("series", format!("is empty; send at least {} steps", cfg.min_context)));
    }
    if rows.len() < cfg.min_context {
        return Err(invalid(
            "series",
            format!(
                "has {} steps; the model needs at least {} (and uses at most {})",
                rows.len(),
                cfg.min_context,
                cfg.max_context
            ),
        ));
    }
    for (t, row) in rows.iter().enumerate() {
        if row.len() != f {
            return Err(invalid(
                format!("series[{t}]"),
                format!("has {} values; the model takes {f} feature(s) per step", row.len()),
            ));
        }
        if let Some(i) = row.iter().position(|v| !v.is_finite()) {
            let field = if f == 1 { format!("series[{t}]") } else { format!("series[{t}][{i}]") };
            return Err(invalid(field, "must be a finite number (no NaN or infinity)"));
        }
    }
    let truncated = rows.len() > cfg.max_context;
    let recent = &rows[rows.len() - rows.len().min(cfg.max_context)..];
    let mut window = Vec::with_capacity(recent.len() * f);
    for row in recent {
        for (i, v) in row.iter().enumerate() {
            window.push(scale(*v as f32, i, cfg));
        }
    }
    if let Some(bad) = window.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!("series[{}]", rows.len() - recent.len() + bad / f), "is too large to scale"));
    }
    Ok(Prepared { window, context_used: recent.len(), truncated })
}

fn scale(v: f32, feature: usize, cfg: &ForecasterConfig) -> f32 {
    match &cfg.scaling {
        Some(s) => (v - s.mean[feature]) / s.std[feature],
        None => v,
    }
}

/// Converts a value of feature `feature` from the model's scale back to user units.
pub fn unscale(v: f32, feature: usize, cfg: &ForecasterConfig) -> f32 {
    match &cfg.scaling {
        Some(s) => v * s.std[feature] + s.mean[feature],
        None => v,
    }
}

/// One forward's output, in the model's scale: `point[h][f]`, and `quantiles[q][h][f]` if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Point forecast per step (the median quantile when the model gives quantiles).
    pub point: Vec<Vec<f32>>,
    /// Each quantile level's forecast per step.
    pub quantiles: Vec<Vec<Vec<f32>>>,
}

/// Splits a per-item output into steps, features and quantiles.
pub fn split_output(data: &[f32], cfg: &ForecasterConfig) -> Chunk {
    let f = cfg.features as usize;
    let h = if cfg.one_step { 1 } else { cfg.model_horizon };
    let q = cfg.quantiles.len();
    if q == 0 {
        let point = (0..h).map(|s| data[s * f..(s + 1) * f].to_vec()).collect();
        return Chunk { point, quantiles: Vec::new() };
    }
    let at = |s: usize, i: usize, j: usize| data[(s * f + i) * q + j];
    let quantiles: Vec<Vec<Vec<f32>>> =
        (0..q).map(|j| (0..h).map(|s| (0..f).map(|i| at(s, i, j)).collect()).collect()).collect();
    let mid = median_index(&cfg.quantiles);
    let point = match mid {
        Some(m) => quantiles[m].clone(),
        // No 0.5 level: the mean of the levels stands in for the point forecast.
        None => (0..h).map(|s| (0..f).map(|i| (0..q).map(|j| at(s, i, j)).sum::<f32>() / q as f32).collect()).collect(),
    };
    Chunk { point, quantiles }
}

fn median_index(levels: &[f32]) -> Option<usize> {
    levels.iter().position(|l| (l - 0.5).abs() < 1e-6)
}

/// Checks the requested horizon against the model's limit.
pub fn check_horizon(horizon: usize, cfg: &ForecasterConfig) -> Result<(), KindError> {
    if horizon < 1 || horizon > cfg.max_horizon {
        return Err(invalid("horizon", format!("must be between 1 and {}", cfg.max_horizon)));
    }
    Ok(())
}

/// Appends scaled steps to a rolling window, keeping at most `max_context` steps.
pub fn roll(window: &mut Vec<f32>, steps: &[Vec<f32>], cfg: &ForecasterConfig) {
    let f = cfg.features as usize;
    for s in steps {
        window.extend_from_slice(s);
    }
    let max = cfg.max_context * f;
    if window.len() > max {
        window.drain(..window.len() - max);
    }
}

/// A calendar step between timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A fixed number of seconds.
    Seconds(i64),
    /// A number of calendar months.
    Months(u32),
}

/// Parses a frequency such as `15min`, `1h`, `D`, `W`, `MS`, `M`, `Q`, `Y`, `2d`.
pub fn parse_frequency(s: &str) -> Result<Step, KindError> {
    let err = || invalid("frequency", "must be like 30s, 15min, 1h, 1d, 1w, 1mo, 1q or 1y");
    let s = s.trim();
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: i64 = if digits.is_empty() { 1 } else { digits.parse().map_err(|_| err())? };
    if !(1..=10_000).contains(&n) {
        return Err(err());
    }
    let unit = &s[digits.len()..];
    Ok(match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "second" | "seconds" => Step::Seconds(n),
        "min" | "t" | "minute" | "minutes" => Step::Seconds(60 * n),
        "h" | "hour" | "hours" => Step::Seconds(3600 * n),
        "d" | "day" | "days" => Step::Seconds(86_400 * n),
        "w" | "week" | "weeks" => Step::Seconds(7 * 86_400 * n),
        "mo" | "m" | "ms" | "month" | "months" => Step::Months(n as u32),
        "q" | "qs" | "quarter" | "quarters" => Step::Months(3 * n as u32),
        "y" | "a" | "ys" | "as" | "year" | "years" => Step::Months(12 * n as u32),
        _ => return Err(err()),
    })
}

/// The timestamps of the forecast steps: `start` is the time of the first history step, given
/// as `YYYY-MM-DD` or RFC 3339; the answer keeps the same form.
pub fn timestamps(start: &str, step: Step, history_len: usize, horizon: usize) -> Result<Vec<String>, KindError> {
    use chrono::{DateTime, Months, NaiveDate, TimeDelta};
    let bad = || invalid("start", "must be a date (YYYY-MM-DD) or an RFC 3339 timestamp");
    let overflow = || invalid("start", "forecast timestamps fall outside the representable range");
    let at = |k: usize| -> Result<String, KindError> {
        if let Ok(d) = NaiveDate::parse_from_str(start, "%Y-%m-%d") {
            let d = match step {
                Step::Months(m) => d.checked_add_months(Months::new(m.checked_mul(k as u32).ok_or_else(overflow)?)),
                Step::Seconds(s) => d.checked_add_signed(
                    TimeDelta::try_seconds(s.checked_mul(k as i64).ok_or_else(overflow)?).ok_or_else(overflow)?,
                ),
            };
            return d.map(|d| d.format("%Y-%m-%d").to_string()).ok_or_else(overflow);
        }
        let t = DateTime::parse_from_rfc3339(start).map_err(|_| bad())?;
        let t = match step {
            Step::Months(m) => t.checked_add_months(Months::new(m.checked_mul(k as u32).ok_or_else(overflow)?)),
            Step::Seconds(s) => t.checked_add_signed(
                TimeDelta::try_seconds(s.checked_mul(k as i64).ok_or_else(overflow)?).ok_or_else(overflow)?,
            ),
        };
        t.map(|t| t.to_rfc3339()).ok_or_else(overflow)
    };
    (history_len..history_len + horizon).map(at).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ForecasterConfig {
        ForecasterConfig {
            features: 1,
            min_context: 3,
            max_context: 5,
            model_horizon: 2,
            max_horizon: 6,
            one_step: false,
            quantiles: vec![],
            scaling: Some(Scaling { mean: vec![10.0], std: vec![2.0] }),
            feature_names: vec![],
        }
    }

    fn rows(v: &[f64]) -> Vec<Vec<f64>> {
        v.iter().map(|x| vec![*x]).collect()
    }

    #[test]
    fn warm_up_covers_both_ends_of_the_context_range() {
        let c = crate::kinds::ModelConfig::parse(
            "kind = \"forecaster\"\n[forecaster]\nfeatures = 1\nmin_context = 24\nmax_context = 120\nmodel_horizon = 12\nmax_horizon = 12\n",
            "x",
        )
        .unwrap();
        let lens: Vec<Vec<i64>> = c.kind.warmup_items().iter().map(|i| i[0].shape.clone()).collect();
        assert_eq!(lens, vec![vec![24, 1], vec![120, 1]]);
    }

    #[test]
    fn scales_and_keeps_the_most_recent_window() {
        let p = prepare(&rows(&[0.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0]), &cfg()).unwrap();
        assert!(p.truncated);
        assert_eq!(p.context_used, 5);
        assert_eq!(p.window, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(unscale(5.0, 0, &cfg()), 20.0);
    }

    #[test]
    fn rejects_short_nan_and_wrong_width() {
        assert!(
            matches!(prepare(&rows(&[1.0, 2.0]), &cfg()), Err(KindError::Invalid { ref field, .. }) if field == "series")
        );
        assert!(
            matches!(prepare(&rows(&[1.0, f64::NAN, 2.0]), &cfg()), Err(KindError::Invalid { ref field, .. }) if field == "series[1]")
        );
        let wide = vec![vec![1.0, 2.0]; 4];
        assert!(matches!(prepare(&wide, &cfg()), Err(KindError::Invalid { ref field, .. }) if field == "series[0]"));
        assert!(check_horizon(0, &cfg()).is_err());
        assert!(check_horizon(7, &cfg()).is_err());
        assert!(check_horizon(6, &cfg()).is_ok());
    }

    #[test]
    fn quantile_outputs_split_with_median_as_point() {
        let mut c = cfg();
        c.quantiles = vec![0.1, 0.5, 0.9];
        // [H=2, F=1, Q=3]
        let chunk = split_output(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &c);
        assert_eq!(chunk.point, vec![vec![2.0], vec![5.0]]);
        assert_eq!(chunk.quantiles[0], vec![vec![1.0], vec![4.0]]);
        assert_eq!(chunk.quantiles[2], vec![vec![3.0], vec![6.0]]);
    }

    #[test]
    fn a_rollout_feeds_each_forecast_back_until_the_horizon() {
        let c = cfg();
        let p = prepare(&rows(&[10.0, 12.0, 14.0]), &c).unwrap();
        let mut r = Rollout::new(&p, 3, &c);
        let first = r.next_item(&c).unwrap();
        assert_eq!(first[0].shape, vec![3, 1]);
        r.feed(&[4.0, 5.0], &c);
        let second = r.next_item(&c).unwrap();
        assert_eq!(second[0].data, TensorData::F32(vec![0.0, 1.0, 2.0, 4.0, 5.0]), "forecast appended");
        r.feed(&[6.0, 7.0], &c);
        assert!(r.next_item(&c).is_none());
        assert_eq!(r.point, vec![vec![4.0], vec![5.0], vec![6.0]], "only the horizon is kept");
    }

    #[test]
    fn series_forms() {
        assert_eq!(series_rows(&serde_json::json!([1, 2]), 1).unwrap(), (vec![vec![1.0], vec![2.0]], true));
        assert_eq!(series_rows(&serde_json::json!([[1, 2]]), 2).unwrap(), (vec![vec![1.0, 2.0]], false));
        assert!(
            matches!(series_rows(&serde_json::json!([1, "x"]), 1), Err(KindError::Invalid { ref field, .. }) if field == "series[1]")
        );
        assert!(series_rows(&serde_json::json!([1, 2]), 2).is_err());
        assert!(series_rows(&serde_json::json!({"a": 1}), 1).is_err());
    }

    #[test]
    fn rolling_keeps_max_context() {
        let mut w = vec![1.0, 2.0, 3.0, 4.0];
        roll(&mut w, &[vec![5.0], vec![6.0]], &cfg());
        assert_eq!(w, vec![2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn timestamps_follow_the_calendar() {
        let m = parse_frequency("MS").unwrap();
        assert_eq!(timestamps("2000-11-01", m, 2, 2).unwrap(), vec!["2001-01-01", "2001-02-01"]);
        let h = parse_frequency("1h").unwrap();
        assert_eq!(timestamps("2020-01-01T00:00:00Z", h, 1, 1).unwrap(), vec!["2020-01-01T01:00:00+00:00"]);
        assert!(parse_frequency("fortnight").is_err());
        assert!(timestamps("yesterday", m, 1, 1).is_err());
    }
}
