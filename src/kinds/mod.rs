//! What each architecture means: its `config.toml` section, its tensor contract, and the pre- and
//! post-processing that turn a request of its own language into tensor rows and back.
//!
//! A kind is one file here: a type implementing [`Kind`] (its section's type, validation, inputs,
//! outputs, warm-up item, V2 checks, labels) beside its pure domain logic, plus one line in
//! [`KINDS`]. Everything here is pure (no I/O but reading the labels file, no libtorch), so it is
//! unit-tested directly. The registry holds each model's parsed section behind [`ServedKind`];
//! handlers get it back typed through [`ModelConfig::section`].

pub mod anomaly;
pub mod classifier;
pub mod denoiser;
pub mod detector;
pub mod forecaster;
pub mod generator;
pub mod language_model;

use crate::manifest::{from_table, ConfigError, Manifest};
use crate::tensor::{ItemTensor, TensorData};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use utoipa::ToSchema;

/// Every kind the server knows: one line per kind.
pub static KINDS: &[KindDef] = &[
    KindDef::of::<classifier::Classifier>(),
    KindDef::of::<forecaster::Forecaster>(),
    KindDef::of::<anomaly::Anomaly>(),
    KindDef::of::<generator::Generator>(),
    KindDef::of::<detector::Detector>(),
    KindDef::of::<denoiser::Denoiser>(),
    KindDef::of::<language_model::LanguageModel>(),
];

/// The names of every kind, for messages.
pub fn names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

/// Whether `name` is a registered kind.
pub fn is_kind(name: &str) -> bool {
    KINDS.iter().any(|k| k.name == name)
}

/// One architecture: its section of `config.toml` and its contract.
pub trait Kind: Send + Sync + 'static {
    /// The kind's name in configs, errors and `/models` (also its section's name).
    const NAME: &'static str;
    /// The endpoint that serves it, for `/models` and messages.
    const ENDPOINT: &'static str;
    /// Its `[<kind>]` section.
    type Config: serde::de::DeserializeOwned + Serialize + std::fmt::Debug + Send + Sync + 'static;

    /// The rules serde cannot check; the field is relative to the section (`input_shape`).
    fn validate(cfg: &Self::Config) -> Result<(), FieldError>;
    /// The labels file the section names, if the kind has one.
    fn labels_file(_cfg: &Self::Config) -> Option<&str> {
        None
    }
    /// Checks the labels read from that file against the section.
    fn check_labels(_cfg: &Self::Config, _labels: &[String]) -> Result<(), String> {
        Ok(())
    }
    /// The model's inputs, in forward's argument order (-1 = variable dimension).
    fn inputs(cfg: &Self::Config) -> Vec<TensorSpec>;
    /// The model's outputs, in the order forward returns them.
    fn outputs(cfg: &Self::Config, labels: &[String]) -> Vec<TensorSpec>;
    /// Lengths given to variable dimensions in warm-up forwards: the first is used for every
    /// warm-up batch, the others once each at batch 1 (the ends of a range the config allows,
    /// so a model that cannot take them is refused at load, not at the first request).
    fn warmup_lens(_cfg: &Self::Config) -> Vec<i64> {
        vec![1]
    }
    /// Checks one V2 input column beyond its shape and datatype (value ranges the model's
    /// contract implies); the message names the input.
    fn check_v2_input(_cfg: &Self::Config, _input: usize, _shape: &[i64], _data: &TensorData) -> Result<(), String> {
        Ok(())
    }
}

/// A rule a section breaks: the field (relative to the section) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field, without the section prefix.
    pub field: String,
    /// What is wrong and what the limit is.
    pub message: String,
}

/// Shorthand for a [`FieldError`].
pub fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.to_string(), message: message.into() }
}

/// A model's parsed section behind its kind, as the registry and the API hold it.
pub trait ServedKind: Send + Sync + std::fmt::Debug {
    /// The kind's name.
    fn name(&self) -> &'static str;
    /// The section, typed, for [`ModelConfig::section`].
    fn section_any(&self) -> Arc<dyn Any + Send + Sync>;
    /// The section as JSON, for `/models`.
    fn section_json(&self) -> serde_json::Value;
    /// See [`Kind::labels_file`].
    fn labels_file(&self) -> Option<&str>;
    /// See [`Kind::check_labels`].
    fn check_labels(&self, labels: &[String]) -> Result<(), String>;
    /// See [`Kind::inputs`].
    fn inputs(&self) -> Vec<TensorSpec>;
    /// See [`Kind::outputs`].
    fn outputs(&self, labels: &[String]) -> Vec<TensorSpec>;
    /// Zero-valued items of the contract's input shapes for warm-up forwards, one per length of
    /// [`Kind::warmup_lens`]; never empty.
    fn warmup_items(&self) -> Vec<Vec<ItemTensor>>;
    /// See [`Kind::check_v2_input`].
    fn check_v2_input(&self, input: usize, shape: &[i64], data: &TensorData) -> Result<(), String>;
}

struct Typed<K: Kind>(Arc<K::Config>);

impl<K: Kind> std::fmt::Debug for Typed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({:?})", K::NAME, self.0)
    }
}

impl<K: Kind> ServedKind for Typed<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn section_any(&self) -> Arc<dyn Any + Send + Sync> {
        self.0.clone()
    }
    fn section_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.0).unwrap_or(serde_json::Value::Null)
    }
    fn labels_file(&self) -> Option<&str> {
        K::labels_file(&self.0)
    }
    fn check_labels(&self, labels: &[String]) -> Result<(), String> {
        K::check_labels(&self.0, labels)
    }
    fn inputs(&self) -> Vec<TensorSpec> {
        K::inputs(&self.0)
    }
    fn outputs(&self, labels: &[String]) -> Vec<TensorSpec> {
        K::outputs(&self.0, labels)
    }
    fn warmup_items(&self) -> Vec<Vec<ItemTensor>> {
        let item = |var: i64| -> Vec<ItemTensor> {
            K::inputs(&self.0)
                .into_iter()
                .map(|s| {
                    let shape: Vec<i64> = s.shape[1..].iter().map(|d| if *d < 0 { var } else { *d }).collect();
                    let n = shape.iter().product::<i64>() as usize;
                    if s.datatype == "INT64" {
                        ItemTensor::i64(shape, vec![0; n])
                    } else {
                        ItemTensor::f32(shape, vec![0.0; n])
                    }
                })
                .collect()
        };
        let mut lens = K::warmup_lens(&self.0);
        lens.dedup();
        if lens.is_empty() {
            lens.push(1);
        }
        lens.into_iter().map(item).collect()
    }
    fn check_v2_input(&self, input: usize, shape: &[i64], data: &TensorData) -> Result<(), String> {
        K::check_v2_input(&self.0, input, shape, data)
    }
}

/// A kind in [`KINDS`]: its name and how its section is parsed.
pub struct KindDef {
    /// The kind's name.
    pub name: &'static str,
    /// Its endpoint.
    pub endpoint: &'static str,
    parse: ParseSection,
}

/// How a kind's section becomes its typed config.
type ParseSection = fn(toml::Table, &str) -> Result<Arc<dyn ServedKind>, ConfigError>;

impl KindDef {
    /// The entry of kind `K`.
    pub const fn of<K: Kind>() -> KindDef {
        KindDef { name: K::NAME, endpoint: K::ENDPOINT, parse: parse_section::<K> }
    }
}

fn parse_section<K: Kind>(section: toml::Table, file: &str) -> Result<Arc<dyn ServedKind>, ConfigError> {
    let at = |field: &str| if field == "-" { K::NAME.to_string() } else { format!("{}.{field}", K::NAME) };
    let cfg: K::Config = from_table(section).map_err(|(field, message)| ConfigError {
        file: file.into(),
        field: at(&field),
        message,
    })?;
    K::validate(&cfg).map_err(|e| ConfigError { file: file.into(), field: at(&e.field), message: e.message })?;
    Ok(Arc::new(Typed::<K>(Arc::new(cfg))))
}

/// One model's `config.toml`: the common fields and its kind's section.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The fields every model has.
    pub manifest: Manifest,
    /// The kind's section, behind the kind.
    pub kind: Arc<dyn ServedKind>,
}

impl ModelConfig {
    /// Parses and validates `text`, naming `file` in every error.
    pub fn parse(text: &str, file: &str) -> Result<ModelConfig, ConfigError> {
        let mut manifest = Manifest::parse(text, file)?;
        let def = KINDS.iter().find(|k| k.name == manifest.kind).ok_or_else(|| ConfigError {
            file: file.into(),
            field: "kind".into(),
            message: format!("unknown kind '{}'; use one of {}", manifest.kind, names().join(", ")),
        })?;
        let section = manifest.section.take().ok_or_else(|| ConfigError {
            file: file.into(),
            field: def.name.into(),
            message: format!("missing section [{}] for kind = \"{}\"", def.name, def.name),
        })?;
        let kind = (def.parse)(section, file)?;
        Ok(ModelConfig { manifest, kind })
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path, display: &str) -> Result<ModelConfig, ConfigError> {
        Self::parse(&crate::manifest::read(path, display)?, display)
    }

    /// The kind's name.
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// The section, typed, when the model is of kind `K`.
    pub fn section<K: Kind>(&self) -> Option<Arc<K::Config>> {
        self.kind.section_any().downcast::<K::Config>().ok()
    }

    /// The config as JSON for `/models`: the common fields and the section under the kind's name.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.manifest).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(m) = v.as_object_mut() {
            m.insert(self.kind.name().to_string(), self.kind.section_json());
        }
        v
    }

    /// Checks the per-item output shapes of a warm-up forward against the contract.
    pub fn check_outputs(&self, labels: &[String], got: &[Vec<i64>]) -> Result<(), String> {
        let want: Vec<Vec<i64>> = self.kind.outputs(labels).into_iter().map(|s| s.shape[1..].to_vec()).collect();
        let kind = self.kind.name();
        if got.len() < want.len() {
            return Err(format!("forward returned {} output(s), the {kind} contract needs {}", got.len(), want.len()));
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let fits = g.len() == w.len() && g.iter().zip(w).all(|(a, b)| *b < 0 || a == b);
            if !fits {
                return Err(format!("output {i} has per-item shape {g:?}, the {kind} contract declares {w:?}"));
            }
        }
        Ok(())
    }

    /// Reads and checks the labels file the section names, if any: one label per non-empty
    /// line, trimmed. The error names the file (relative to the model directory).
    pub fn read_labels(&self, dir: &Path) -> Result<Vec<String>, String> {
        let Some(file) = self.kind.labels_file() else { return Ok(Vec::new()) };
        let text = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("{file}: cannot read: {}", e.kind()))?;
        // A UTF-8 byte-order mark (Windows editors write one) is no part of the first label.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let labels: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        if labels.is_empty() {
            return Err(format!("{file}: no labels"));
        }
        self.kind.check_labels(&labels).map_err(|m| format!("{file}: {m}"))?;
        Ok(labels)
    }
}

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

/// A [`TensorSpec`].
pub fn spec(name: &str, datatype: &'static str, shape: Vec<i64>) -> TensorSpec {
    TensorSpec { name: name.to_string(), datatype, shape }
}

/// Affine scaling between user units and the model's training scale: `model = (x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    /// Per-feature mean.
    pub mean: Vec<f32>,
    /// Per-feature standard deviation (must be > 0).
    pub std: Vec<f32>,
}

impl Scaling {
    /// Checks the lengths and values for `n` features; the field is relative to the scaling table.
    pub fn check(&self, n: usize, at: &str) -> Result<(), FieldError> {
        if self.mean.len() != n || self.mean.iter().any(|v| !v.is_finite()) {
            return Err(field_error(&format!("{at}.mean"), format!("needs {n} finite values")));
        }
        if self.std.len() != n || self.std.iter().any(|v| !positive(*v)) {
            return Err(field_error(&format!("{at}.std"), format!("needs {n} positive values")));
        }
        Ok(())
    }
}

/// Finite and strictly positive (NaN is neither).
pub fn positive(v: f32) -> bool {
    v.is_finite() && v > 0.0
}

/// Whether a configured file name stays in the model directory.
pub fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.contains("..")
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
    /// An image whose header the decoder refuses to read for its size (413).
    #[error("{field}: image dimensions exceed the decoder's limits ({message})")]
    TooLargeToRead {
        /// The request field or part.
        field: String,
        /// The decoder's reason.
        message: String,
    },
}

/// Shorthand for [`KindError::Invalid`].
pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> KindError {
    KindError::Invalid { field: field.into(), message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSIFIER: &str = r#"
kind = "classifier"
[classifier]
input_shape = [1, 28, 28]
mean = [0.1307]
std = [0.3081]
"#;

    #[test]
    fn the_section_comes_back_typed_and_only_as_its_own_kind() {
        let c = ModelConfig::parse(CLASSIFIER, "m/config.toml").unwrap();
        assert_eq!(c.kind_name(), "classifier");
        let s = c.section::<classifier::Classifier>().unwrap();
        assert_eq!(s.labels_file, "labels.txt");
        assert!(c.section::<anomaly::Anomaly>().is_none());
        assert_eq!(c.to_json()["classifier"]["input_shape"], serde_json::json!([1, 28, 28]));
        assert_eq!(c.to_json()["batching"]["max_batch_size"], 32);
    }

    #[test]
    fn errors_name_the_section_field() {
        let e = ModelConfig::parse(&CLASSIFIER.replace("mean = [0.1307]", "mean = [0.1, 0.2]"), "x").unwrap_err();
        assert_eq!(e.field, "classifier.mean");
        let e =
            ModelConfig::parse(&CLASSIFIER.replace("mean = [0.1307]", "mean = [0.1]\ncolour = 1"), "x").unwrap_err();
        assert_eq!(e.field, "classifier.colour");
        let e = ModelConfig::parse(&CLASSIFIER.replace("mean = [0.1307]\n", ""), "x").unwrap_err();
        assert_eq!(e.field, "classifier.mean", "{e}");
        let e = ModelConfig::parse("kind = \"classifier\"\n", "x").unwrap_err();
        assert_eq!(e.field, "classifier");
        let e = ModelConfig::parse("kind = \"transformer\"\n", "x").unwrap_err();
        assert_eq!(e.field, "kind");
        assert!(e.message.contains("classifier, forecaster, anomaly, generator"), "{}", e.message);
    }

    #[test]
    fn warm_up_items_follow_the_inputs() {
        let g = "kind = \"generator\"\n[generator]\nlatent_dim = 4\nnum_classes = 3\noutput_shape = [1, 2, 2]\n";
        let c = ModelConfig::parse(g, "x").unwrap();
        let items = c.kind.warmup_items();
        assert_eq!(items.len(), 1);
        let item = &items[0];
        assert_eq!(item.len(), 2);
        assert_eq!(item[0], ItemTensor::f32(vec![4], vec![0.0; 4]));
        assert_eq!(item[1], ItemTensor::i64(vec![], vec![0]));
        assert!(c.check_outputs(&[], &[vec![1, 2, 2]]).is_ok());
        assert!(c.check_outputs(&[], &[vec![1, 2, 3]]).is_err());
        assert!(c.check_outputs(&[], &[]).is_err());
    }
}
