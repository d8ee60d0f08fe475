//! Fixed model configurations shared by the fuzz targets: the shipped models' contracts
//! (digits-cnn, co2-lstm, cancer-ae) plus an RGB classifier so the three-channel paths run too.
#![allow(dead_code)]

use dlserve::kinds::anomaly::AnomalyConfig;
use dlserve::kinds::classifier::{ClassifierConfig, ClassifierOutput, InvertPolicy};
use dlserve::kinds::forecaster::ForecasterConfig;
use dlserve::kinds::Scaling;

/// Pixel limit used by the image targets. The server's default is 4096 * 4096; a smaller one keeps
/// each execution fast while still exercising the "too large" refusal (libFuzzer inputs are small,
/// but a tiny PNG or GIF header can claim any size).
pub const MAX_PIXELS: u64 = 1 << 20;

/// digits-cnn: 1x28x28 grayscale, automatic inversion.
pub fn gray_classifier() -> ClassifierConfig {
    ClassifierConfig {
        input_shape: [1, 28, 28],
        output: ClassifierOutput::Logits,
        labels_file: "labels.txt".into(),
        pixel_scale: 255.0,
        mean: vec![0.1307],
        std: vec![0.3081],
        invert: InvertPolicy::Auto,
    }
}

/// A 3x32x32 RGB classifier that never inverts.
pub fn rgb_classifier() -> ClassifierConfig {
    ClassifierConfig {
        input_shape: [3, 32, 32],
        output: ClassifierOutput::Probabilities,
        labels_file: "labels.txt".into(),
        pixel_scale: 255.0,
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        invert: InvertPolicy::Never,
    }
}

/// co2-lstm: univariate, 24..120 steps of context, 12 steps per forward, horizon up to 48.
pub fn forecaster() -> ForecasterConfig {
    ForecasterConfig {
        features: 1,
        min_context: 24,
        max_context: 120,
        model_horizon: 12,
        max_horizon: 48,
        one_step: false,
        quantiles: vec![],
        scaling: Some(Scaling { mean: vec![335.997], std: vec![14.623] }),
        feature_names: vec!["co2_ppm".into()],
    }
}

/// A multivariate forecaster with quantiles (F = 2, Q = 3).
pub fn forecaster_multi() -> ForecasterConfig {
    ForecasterConfig {
        features: 2,
        min_context: 4,
        max_context: 16,
        model_horizon: 4,
        max_horizon: 16,
        one_step: false,
        quantiles: vec![0.1, 0.5, 0.9],
        scaling: Some(Scaling { mean: vec![10.0, -3.0], std: vec![2.0, 0.5] }),
        feature_names: vec!["a".into(), "b".into()],
    }
}

/// cancer-ae's shape: 30 named, scaled features.
pub fn anomaly() -> AnomalyConfig {
    let names = [
        "mean radius",
        "mean texture",
        "mean perimeter",
        "mean area",
        "mean smoothness",
        "mean compactness",
        "mean concavity",
        "mean concave points",
        "mean symmetry",
        "mean fractal dimension",
        "radius error",
        "texture error",
        "perimeter error",
        "area error",
        "smoothness error",
        "compactness error",
        "concavity error",
        "concave points error",
        "symmetry error",
        "fractal dimension error",
        "worst radius",
        "worst texture",
        "worst perimeter",
        "worst area",
        "worst smoothness",
        "worst compactness",
        "worst concavity",
        "worst concave points",
        "worst symmetry",
        "worst fractal dimension",
    ];
    AnomalyConfig {
        features: 30,
        threshold: 0.976107,
        feature_names: names.iter().map(|s| s.to_string()).collect(),
        scaling: Some(Scaling {
            mean: (0..30).map(|i| 0.5 + i as f32).collect(),
            std: (0..30).map(|i| 0.01 + 0.1 * i as f32).collect(),
        }),
    }
}

/// An unscaled anomaly model without feature names (D = 3).
pub fn anomaly_plain() -> AnomalyConfig {
    AnomalyConfig { features: 3, threshold: 0.5, feature_names: vec![], scaling: None }
}

/// Runs the classifier preprocessing that follows a successful decode, for both configurations.
pub fn classify_image(img: &image::DynamicImage) {
    for cfg in [gray_classifier(), rgb_classifier()] {
        let px = dlserve::kinds::classifier::from_image(img, cfg.input_shape[0]);
        let (row, _) = dlserve::kinds::classifier::to_row(px, &cfg);
        let [c, h, w] = cfg.input_shape;
        assert_eq!(row.len() as i64, c * h * w, "row length must match the model input");
    }
}
