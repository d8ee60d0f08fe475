//! Autoencoder anomaly scorers (`POST /anomaly`): feature rows to scaled `[D]` rows, and
//! reconstructions to a score (mean squared error in the scaled space), a verdict, and the
//! features that explain it.

use super::{field_error, invalid, spec, FieldError, Kind, KindError, Scaling, TensorSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The anomaly kind: `[B, D]` rows to their reconstruction `[B, D]`.
pub struct Anomaly;

impl Kind for Anomaly {
    const NAME: &'static str = "anomaly";
    const ENDPOINT: &'static str = "POST /anomaly";
    type Config = AnomalyConfig;

    fn validate(a: &AnomalyConfig) -> Result<(), FieldError> {
        if !(1..=65_536).contains(&a.features) {
            return Err(field_error("features", "must be between 1 and 65536"));
        }
        if !a.threshold.is_finite() || a.threshold < 0.0 {
            return Err(field_error("threshold", "must be a finite number >= 0"));
        }
        if !a.feature_names.is_empty() && a.feature_names.len() as i64 != a.features {
            return Err(field_error("feature_names", format!("needs {} names", a.features)));
        }
        if let Some(s) = &a.scaling {
            s.check(a.features as usize, "scaling")?;
        }
        Ok(())
    }

    fn inputs(a: &AnomalyConfig) -> Vec<TensorSpec> {
        vec![spec("features", "FP32", vec![-1, a.features])]
    }

    fn outputs(a: &AnomalyConfig, _labels: &[String]) -> Vec<TensorSpec> {
        vec![spec("reconstruction", "FP32", vec![-1, a.features])]
    }
}

/// An anomaly scorer's contract (`[anomaly]`): `[B, D]` rows to their reconstruction `[B, D]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Features per row (D).
    pub features: i64,
    /// Calibrated threshold on the score; a score above it is an anomaly.
    pub threshold: f32,
    /// Names of the features, in order (optional, length D when given).
    #[serde(default)]
    pub feature_names: Vec<String>,
    /// Scaling applied to rows before the model; the score is computed in the scaled space.
    pub scaling: Option<Scaling>,
}

/// Reads one request row: an array of D numbers in the model's order, or an object naming every
/// feature.
pub fn raw_row(row: &serde_json::Value, idx: usize, cfg: &AnomalyConfig) -> Result<Vec<f64>, KindError> {
    match row {
        serde_json::Value::Array(vals) => vals
            .iter()
            .enumerate()
            .map(|(j, x)| x.as_f64().ok_or_else(|| invalid(format!("rows[{idx}][{j}]"), "must be a number")))
            .collect(),
        serde_json::Value::Object(m) => named_row(m, idx, cfg),
        _ => Err(invalid(
            format!("rows[{idx}]"),
            format!("must be an array of {} numbers or an object of feature values", cfg.features),
        )),
    }
}

/// Scales one row of `D` finite values for the model.
pub fn prepare(row: &[f64], idx: usize, cfg: &AnomalyConfig) -> Result<Vec<f32>, KindError> {
    let d = cfg.features as usize;
    if row.len() != d {
        return Err(invalid(format!("rows[{idx}]"), format!("has {} values; the model takes {d} features", row.len())));
    }
    if let Some(i) = row.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!("rows[{idx}][{i}]"), "must be a finite number (no NaN or infinity)"));
    }
    let scaled: Vec<f32> = row
        .iter()
        .enumerate()
        .map(|(i, v)| match &cfg.scaling {
            Some(s) => (*v as f32 - s.mean[i]) / s.std[i],
            None => *v as f32,
        })
        .collect();
    if let Some(i) = scaled.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!("rows[{idx}][{i}]"), "is too large to scale"));
    }
    Ok(scaled)
}

/// Orders a named row (feature name to value) by the model's feature names.
pub fn named_row(
    row: &serde_json::Map<String, serde_json::Value>,
    idx: usize,
    cfg: &AnomalyConfig,
) -> Result<Vec<f64>, KindError> {
    if cfg.feature_names.is_empty() {
        return Err(invalid(format!("rows[{idx}]"), "this model has no feature names; send an array of numbers"));
    }
    if let Some(unknown) = row.keys().find(|k| !cfg.feature_names.contains(k)) {
        return Err(invalid(format!("rows[{idx}].{unknown}"), "is not a feature of this model"));
    }
    cfg.feature_names
        .iter()
        .map(|name| match row.get(name) {
            Some(serde_json::Value::Number(n)) => {
                n.as_f64().ok_or_else(|| invalid(format!("rows[{idx}].{name}"), "must be a number"))
            }
            Some(_) => Err(invalid(format!("rows[{idx}].{name}"), "must be a number")),
            None => Err(invalid(format!("rows[{idx}].{name}"), "is missing")),
        })
        .collect()
}

/// How much one feature contributes to a row's score.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Contribution {
    /// Feature name (or its index as text when the model has no names).
    #[schema(example = "worst concave points")]
    pub feature: String,
    /// Index of the feature.
    pub index: usize,
    /// The value sent.
    pub value: f64,
    /// What the autoencoder reconstructed, in the same units.
    pub reconstructed: f64,
    /// Share of the row's squared error that this feature accounts for, in [0, 1].
    pub share: f32,
}

/// Score (mean squared error in the scaled space) and the `top` features by squared error.
/// Computed in f64: a value far outside the training range (1e20) squares past f32's range.
pub fn score(scaled: &[f32], recon: &[f32], raw: &[f64], cfg: &AnomalyConfig, top: usize) -> (f64, Vec<Contribution>) {
    let errs: Vec<f64> = scaled.iter().zip(recon).map(|(x, r)| (*x as f64 - *r as f64).powi(2)).collect();
    let total: f64 = errs.iter().sum();
    let score = total / errs.len().max(1) as f64;
    let mut idx: Vec<usize> = (0..errs.len()).collect();
    idx.sort_by(|a, b| errs[*b].total_cmp(&errs[*a]).then(a.cmp(b)));
    let contributions = idx
        .into_iter()
        .take(top)
        .map(|i| {
            let reconstructed = match &cfg.scaling {
                Some(s) => recon[i] as f64 * s.std[i] as f64 + s.mean[i] as f64,
                None => recon[i] as f64,
            };
            Contribution {
                feature: cfg.feature_names.get(i).cloned().unwrap_or_else(|| i.to_string()),
                index: i,
                value: raw[i],
                reconstructed,
                share: if total > 0.0 { (errs[i] / total) as f32 } else { 0.0 },
            }
        })
        .collect();
    (score, contributions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AnomalyConfig {
        AnomalyConfig {
            features: 3,
            threshold: 0.5,
            feature_names: vec!["a".into(), "b".into(), "c".into()],
            scaling: Some(Scaling { mean: vec![0.0, 10.0, 0.0], std: vec![1.0, 2.0, 1.0] }),
        }
    }

    #[test]
    fn scores_in_the_scaled_space_and_explains() {
        let c = cfg();
        let raw = [1.0, 14.0, 0.0];
        let x = prepare(&raw, 0, &c).unwrap();
        assert_eq!(x, vec![1.0, 2.0, 0.0]);
        let (s, top) = score(&x, &[1.0, 0.0, 0.0], &raw, &c, 2);
        assert!((s - 4.0 / 3.0).abs() < 1e-6);
        // Far outside the training range the score stays a finite number.
        let (big, _) = score(
            &[1e20],
            &[0.0],
            &[1e20],
            &AnomalyConfig { features: 1, threshold: 1.0, feature_names: vec![], scaling: None },
            1,
        );
        assert!(big.is_finite() && big > 9e39, "{big}");
        assert_eq!(top[0].feature, "b");
        assert!((top[0].share - 1.0).abs() < 1e-6);
        assert!((top[0].reconstructed - 10.0).abs() < 1e-9);
    }

    #[test]
    fn rejects_wrong_width_and_nan() {
        let c = cfg();
        assert!(matches!(prepare(&[1.0, 2.0], 4, &c), Err(KindError::Invalid { ref field, .. }) if field == "rows[4]"));
        assert!(
            matches!(prepare(&[1.0, f64::INFINITY, 0.0], 1, &c), Err(KindError::Invalid { ref field, .. }) if field == "rows[1][1]")
        );
    }

    #[test]
    fn named_rows_follow_the_model_order() {
        let c = cfg();
        let m: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"c": 3, "a": 1, "b": 2}"#).unwrap();
        assert_eq!(named_row(&m, 0, &c).unwrap(), vec![1.0, 2.0, 3.0]);
        let m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r#"{"a": 1, "b": 2}"#).unwrap();
        assert!(matches!(named_row(&m, 0, &c), Err(KindError::Invalid { ref field, .. }) if field == "rows[0].c"));
        let m: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"a": 1, "b": 2, "c": 3, "d": 4}"#).unwrap();
        assert!(named_row(&m, 0, &c).is_err());
    }
}
