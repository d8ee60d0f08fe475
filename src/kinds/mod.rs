//! What each architecture means: its tensor contract, and the pre- and post-processing that turn
//! a request of its own language into tensor rows and back.
//!
//! Everything here is pure (no I/O, no libtorch), so it is unit-tested directly.

pub mod anomaly;
pub mod classifier;
pub mod forecaster;
pub mod generator;

use crate::batching::ItemTensor;
use crate::registry::config::{Kind, ModelConfig};
use serde::Serialize;
use utoipa::ToSchema;

/// A named tensor of the contract, as the Open Inference Protocol describes it (-1 = variable).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// V2 datatype: `FP32` or `INT64`.
    pub datatype: &'static str,
    /// Shape with the batch dimension first; -1 marks a variable dimension.
    pub shape: Vec<i64>,
}

fn spec(name: &str, datatype: &'static str, shape: Vec<i64>) -> TensorSpec {
    TensorSpec { name: name.to_string(), datatype, shape }
}

/// The model's inputs, in forward's argument order.
pub fn inputs(cfg: &ModelConfig) -> Vec<TensorSpec> {
    match cfg.kind {
        Kind::Classifier => {
            let [c, h, w] = cfg.classifier.as_ref().expect("validated").input_shape;
            vec![spec("images", "FP32", vec![-1, c, h, w])]
        }
        Kind::Forecaster => {
            let f = cfg.forecaster.as_ref().expect("validated");
            let t = if f.min_context == f.max_context { f.max_context as i64 } else { -1 };
            vec![spec("history", "FP32", vec![-1, t, f.features])]
        }
        Kind::Anomaly => vec![spec("features", "FP32", vec![-1, cfg.anomaly.as_ref().expect("validated").features])],
        Kind::Generator => {
            let g = cfg.generator.as_ref().expect("validated");
            let mut v = vec![spec("z", "FP32", vec![-1, g.latent_dim])];
            if g.num_classes > 0 {
                v.push(spec("labels", "INT64", vec![-1]));
            }
            v
        }
    }
}

/// The model's outputs, in the order forward returns them.
pub fn outputs(cfg: &ModelConfig, classes: usize) -> Vec<TensorSpec> {
    match cfg.kind {
        Kind::Classifier => {
            let c = cfg.classifier.as_ref().expect("validated");
            let name = match c.output {
                crate::registry::config::ClassifierOutput::Logits => "logits",
                crate::registry::config::ClassifierOutput::Probabilities => "probabilities",
            };
            vec![spec(name, "FP32", vec![-1, classes as i64])]
        }
        Kind::Forecaster => {
            let f = cfg.forecaster.as_ref().expect("validated");
            let mut shape =
                if f.one_step { vec![-1, f.features] } else { vec![-1, f.model_horizon as i64, f.features] };
            if !f.quantiles.is_empty() {
                shape.push(f.quantiles.len() as i64);
            }
            vec![spec("forecast", "FP32", shape)]
        }
        Kind::Anomaly => {
            vec![spec("reconstruction", "FP32", vec![-1, cfg.anomaly.as_ref().expect("validated").features])]
        }
        Kind::Generator => {
            let [c, h, w] = cfg.generator.as_ref().expect("validated").output_shape;
            vec![spec("images", "FP32", vec![-1, c, h, w])]
        }
    }
}

/// One zero-valued item of the contract's input shapes, for warm-up forwards.
pub fn warmup_item(cfg: &ModelConfig) -> Vec<ItemTensor> {
    inputs(cfg)
        .into_iter()
        .map(|s| {
            let shape: Vec<i64> = s.shape[1..]
                .iter()
                .map(|d| if *d < 0 { cfg.forecaster.as_ref().map_or(1, |f| f.min_context as i64) } else { *d })
                .collect();
            let n: i64 = shape.iter().product();
            if s.datatype == "INT64" {
                ItemTensor::i64(shape, vec![0; n as usize])
            } else {
                ItemTensor::f32(shape, vec![0.0; n as usize])
            }
        })
        .collect()
}

/// Checks the per-item output shapes of a warm-up forward against the contract.
pub fn check_outputs(cfg: &ModelConfig, classes: usize, got: &[Vec<i64>]) -> Result<(), String> {
    let want: Vec<Vec<i64>> = outputs(cfg, classes).into_iter().map(|s| s.shape[1..].to_vec()).collect();
    if got.len() < want.len() {
        return Err(format!(
            "forward returned {} output(s), the {} contract needs {}",
            got.len(),
            cfg.kind,
            want.len()
        ));
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if g != w {
            return Err(format!("output {i} has per-item shape {g:?}, the {} contract declares {w:?}", cfg.kind));
        }
    }
    Ok(())
}

/// A request error found before any tensor is built; maps to 4xx.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KindError {
    /// A value is out of range, malformed, or the wrong length (422).
    #[error("{field}: {message}")]
    Invalid {
        /// The request field at fault.
        field: String,
        /// What is wrong and what the limit is.
        message: String,
    },
    /// An image could not be decoded (400).
    #[error("{field}: cannot decode image: {message}")]
    Undecodable {
        /// The request field or part.
        field: String,
        /// The decoder's reason.
        message: String,
    },
    /// An image is larger than the pixel limit (413).
    #[error("{field}: image of {width}x{height} pixels exceeds the limit of {limit} pixels")]
    TooLarge {
        /// The request field or part.
        field: String,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The pixel limit.
        limit: u64,
    },
}

/// Shorthand for [`KindError::Invalid`].
pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> KindError {
    KindError::Invalid { field: field.into(), message: message.into() }
}
