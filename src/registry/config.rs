//! `models/<name>/config.toml`: what a model is, the tensor contract it promises, and how it is served.
//!
//! Parsing is strict (`deny_unknown_fields`) so that a typo is an error naming the field rather
//! than a silently ignored setting. [`ModelConfig::validate`] checks what serde cannot: ranges,
//! lengths that must agree, and the section that must match the declared kind.

use serde::{Deserialize, Serialize};
use std::path::Path;
use utoipa::ToSchema;

/// The four architectures dlserve knows how to serve, each with its own endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// CNN image classifier, served by `POST /classify`.
    Classifier,
    /// Sequence forecaster (LSTM/GRU), served by `POST /forecast`.
    Forecaster,
    /// Autoencoder anomaly scorer, served by `POST /anomaly`.
    Anomaly,
    /// GAN generator, served by `GET /generate`.
    Generator,
}

impl Kind {
    /// The lowercase name used in configs, URLs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Classifier => "classifier",
            Kind::Forecaster => "forecaster",
            Kind::Anomaly => "anomaly",
            Kind::Generator => "generator",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which version directories are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VersionPolicy {
    /// `"latest"` (the highest numbered directory) or `"all"`.
    Named(NamedPolicy),
    /// An explicit list of version numbers.
    Specific(Vec<u64>),
}

/// The named version policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NamedPolicy {
    /// Only the highest numbered version directory.
    Latest,
    /// Every version directory.
    All,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Named(NamedPolicy::Latest)
    }
}

/// Memory layout of a module's 4-D weights, applied to every replica after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFormat {
    /// As saved in the TorchScript file (usually NCHW, row-major).
    #[default]
    Contiguous,
    /// NHWC: channels innermost.
    ChannelsLast,
}

/// Dynamic batching settings of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Largest number of items stacked into one forward.
    pub max_batch_size: usize,
    /// Longest time the oldest waiting item waits for a batch to fill, in milliseconds
    /// (fractions allowed). 0 means a free worker takes whatever is queued at once: batches then
    /// form only from what accumulates while the workers are busy.
    pub max_queue_delay_ms: f64,
    /// Items that may wait in the queue; past this, requests are refused at once (429).
    pub queue_capacity: usize,
    /// Worker threads, each with its own replica of the module.
    pub instances: usize,
    /// Run every forward at exactly `max_batch_size` rows, padding with copies of the first item.
    /// libtorch picks kernels by batch size, so a row's floats can differ by a few ULP between
    /// batch sizes; a fixed size makes each item's output independent of what it was batched
    /// with (bit-identical generator output per seed), at the cost of computing the padding.
    pub fixed_batch_size: bool,
    /// libtorch intra-op threads of each worker's forwards; the server default
    /// (`--intra-op-threads`, by default cores / all models' `instances`) when absent. More
    /// threads than that rule gives can pay off for a large model with the cores to itself, but
    /// with several models served on few cores they slowed every model (BENCHMARKS.md,
    /// "Threads per model").
    pub intra_op_threads: Option<usize>,
    /// `[batching.cpu]`: settings that replace the ones above when the model runs on CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<DeviceBatching>,
    /// `[batching.cuda]`: settings that replace the ones above when the model runs on a GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda: Option<DeviceBatching>,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_batch_size: 32,
            max_queue_delay_ms: 1.0,
            queue_capacity: 512,
            instances: 1,
            fixed_batch_size: false,
            intra_op_threads: None,
            cpu: None,
            cuda: None,
        }
    }
}

/// Batching settings for one device type, each replacing the model's own when set. A model's
/// best batch size and whether it needs padding can differ between CPU and GPU kernels.
/// `instances` is not among them: the thread rule counts instances before devices are resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBatching {
    /// Replaces `max_batch_size`.
    pub max_batch_size: Option<usize>,
    /// Replaces `max_queue_delay_ms`.
    pub max_queue_delay_ms: Option<f64>,
    /// Replaces `queue_capacity`.
    pub queue_capacity: Option<usize>,
    /// Replaces `fixed_batch_size`.
    pub fixed_batch_size: Option<bool>,
    /// Replaces `intra_op_threads`.
    pub intra_op_threads: Option<usize>,
}

impl BatchingConfig {
    /// The settings a model uses on `device`: its own, with the device type's table applied.
    pub fn for_device(&self, device: tch::Device) -> BatchingConfig {
        let table = match device {
            tch::Device::Cpu => self.cpu.as_ref(),
            _ => self.cuda.as_ref(),
        };
        let mut b = BatchingConfig { cpu: None, cuda: None, ..self.clone() };
        if let Some(t) = table {
            b.max_batch_size = t.max_batch_size.unwrap_or(b.max_batch_size);
            b.max_queue_delay_ms = t.max_queue_delay_ms.unwrap_or(b.max_queue_delay_ms);
            b.queue_capacity = t.queue_capacity.unwrap_or(b.queue_capacity);
            b.fixed_batch_size = t.fixed_batch_size.unwrap_or(b.fixed_batch_size);
            b.intra_op_threads = t.intra_op_threads.or(b.intra_op_threads);
        }
        b
    }

    /// Checks ranges, naming fields under `prefix` (`batching`, `batching.cpu`, ...).
    fn check(&self, prefix: &str) -> Result<(), (String, String)> {
        let fail = |key: &str, m: String| Err((format!("{prefix}.{key}"), m));
        if self.max_batch_size == 0 || self.max_batch_size > MAX_BATCH_SIZE {
            return fail("max_batch_size", format!("must be between 1 and {MAX_BATCH_SIZE}"));
        }
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE_CAPACITY {
            return fail("queue_capacity", format!("must be between 1 and {MAX_QUEUE_CAPACITY}"));
        }
        if self.instances == 0 || self.instances > MAX_INSTANCES {
            return fail("instances", format!("must be between 1 and {MAX_INSTANCES}"));
        }
        if self.intra_op_threads.is_some_and(|n| n == 0 || n > MAX_INTRA_OP_THREADS) {
            return fail("intra_op_threads", format!("must be between 1 and {MAX_INTRA_OP_THREADS}"));
        }
        if !(0.0..=10_000.0).contains(&self.max_queue_delay_ms) {
            return fail("max_queue_delay_ms", "must be between 0 and 10000".into());
        }
        Ok(())
    }
}

/// How a classifier's images are turned into its input tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Input shape per item, `[C, H, W]`; C is 1 (grayscale) or 3 (RGB).
    pub input_shape: [i64; 3],
    /// Whether the model returns `logits` (softmax is applied by the server) or `probabilities`.
    #[serde(default = "default_output")]
    pub output: ClassifierOutput,
    /// File next to config.toml with one class name per line, in output order.
    #[serde(default = "default_labels_file")]
    pub labels_file: String,
    /// Pixel value that maps to 1.0 before normalisation (255 for 8-bit images).
    #[serde(default = "default_pixel_scale")]
    pub pixel_scale: f32,
    /// Per-channel mean subtracted after scaling.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean.
    pub std: Vec<f32>,
    /// Whether to invert images: `auto` inverts when the border is lighter than mid-grey.
    #[serde(default)]
    pub invert: InvertPolicy,
}

/// Meaning of a classifier's output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierOutput {
    /// Unnormalised scores; the server applies softmax.
    Logits,
    /// Already a probability distribution.
    Probabilities,
}

/// When to invert an image before it is normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvertPolicy {
    /// Invert when the mean of the border pixels is lighter than mid-grey (dark ink on paper).
    #[default]
    Auto,
    /// Never invert.
    Never,
    /// Always invert.
    Always,
}

fn default_output() -> ClassifierOutput {
    ClassifierOutput::Logits
}
fn default_labels_file() -> String {
    "labels.txt".to_string()
}
fn default_pixel_scale() -> f32 {
    255.0
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

/// A forecaster's contract: `[B, T, F]` history to `[B, H, F]` forecast (or `[B, H, F, Q]` quantiles).
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

/// An anomaly scorer's contract: `[B, D]` rows to their reconstruction `[B, D]`.
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

/// A generator's contract: `z [B, Z]` (+ `labels [B]` int64) to images `[B, C, H, W]` in [-1, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Latent size (Z).
    pub latent_dim: i64,
    /// Number of classes of a conditional generator; 0 for an unconditional one.
    #[serde(default)]
    pub num_classes: i64,
    /// Output shape per item, `[C, H, W]`.
    pub output_shape: [i64; 3],
    /// Optional class names file for a conditional generator.
    pub labels_file: Option<String>,
    /// Largest `n` one request may ask for.
    #[serde(default = "default_max_n")]
    pub max_n: usize,
}

fn default_max_n() -> usize {
    64
}

/// One model's `config.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The architecture, which decides the endpoint and the contract.
    pub kind: Kind,
    /// Free text shown in `/models`.
    #[serde(default)]
    pub description: String,
    /// Device override: `auto`, `cpu`, `cuda` or `cuda:N`; the server default when absent.
    pub device: Option<String>,
    /// Which version directories are served.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// A TorchScript method taking no arguments that is called once on every replica right after
    /// it is loaded on its device, before warm-up: for work that must happen on the device, such
    /// as packing an RNN's weights into the single buffer cuDNN wants (see models/co2-lstm).
    /// A missing method, or one that raises, fails the load.
    pub setup_method: Option<String>,
    /// Memory layout of the module's 4-D weights (convolution kernels) once loaded. `channels_last`
    /// stores them as NHWC, so that convolutions, batch norms and poolings run libtorch's
    /// channels-last kernels: on CPU these avoid oneDNN's layout reorders and a scalar max-pool
    /// loop (BENCHMARKS.md, "Channels-last CNNs"). Outputs are the same up to float rounding.
    #[serde(default)]
    pub memory_format: MemoryFormat,
    /// Dynamic batching settings.
    #[serde(default)]
    pub batching: BatchingConfig,
    /// Contract of a classifier.
    pub classifier: Option<ClassifierConfig>,
    /// Contract of a forecaster.
    pub forecaster: Option<ForecasterConfig>,
    /// Contract of an anomaly scorer.
    pub anomaly: Option<AnomalyConfig>,
    /// Contract of a generator.
    pub generator: Option<GeneratorConfig>,
}

/// A config that cannot be served, with the field at fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    /// The file, relative to the models directory.
    pub file: String,
    /// The dotted path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Hard limits that keep one config from taking the whole machine.
pub const MAX_BATCH_SIZE: usize = 4096;
/// Largest queue capacity a config may declare.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;
/// Largest number of worker threads per model version.
pub const MAX_INSTANCES: usize = 64;
/// Largest `batching.intra_op_threads`.
pub const MAX_INTRA_OP_THREADS: usize = 256;

impl ModelConfig {
    /// Parses and validates `text`, naming `file` in every error.
    pub fn parse(text: &str, file: &str) -> Result<ModelConfig, ConfigError> {
        let cfg: ModelConfig = toml::from_str(text).map_err(|e| {
            let field = e.span().map(|s| field_at(text, s.start)).unwrap_or_default();
            ConfigError { file: file.to_string(), field, message: e.message().to_string() }
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path, display: &str) -> Result<ModelConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: display.to_string(),
            field: "-".into(),
            message: format!("cannot read: {}", e.kind()),
        })?;
        Self::parse(&text, display)
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err =
            |field: &str, message: String| ConfigError { file: file.to_string(), field: field.to_string(), message };
        // The model's own settings, then each device table applied to them: a bad value in a
        // table is named with the table's path, since the model's own already passed.
        let b = &self.batching;
        b.check("batching")
            .and_then(|_| b.for_device(tch::Device::Cpu).check("batching.cpu"))
            .and_then(|_| b.for_device(tch::Device::Cuda(0)).check("batching.cuda"))
            .map_err(|(field, m)| err(&field, m))?;
        if let Some(d) = &self.device {
            crate::registry::device::DeviceSpec::parse(d).map_err(|m| err("device", m))?;
        }
        if let Some(m) = &self.setup_method {
            let ident = m.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident || m.len() > 64 || m == "forward" {
                return Err(err(
                    "setup_method",
                    "must name a TorchScript method other than forward (letters, digits and _, at most 64)".into(),
                ));
            }
        }
        if let VersionPolicy::Specific(v) = &self.version_policy {
            if v.is_empty() {
                return Err(err("version_policy", "an explicit list must name at least one version".into()));
            }
        }
        let sections = [
            ("classifier", self.classifier.is_some()),
            ("forecaster", self.forecaster.is_some()),
            ("anomaly", self.anomaly.is_some()),
            ("generator", self.generator.is_some()),
        ];
        for (name, present) in sections {
            if present && name != self.kind.as_str() {
                return Err(err(name, format!("section does not match kind = \"{}\"", self.kind)));
            }
        }
        match self.kind {
            Kind::Classifier => {
                let c = self
                    .classifier
                    .as_ref()
                    .ok_or_else(|| err("classifier", "missing section for kind = \"classifier\"".into()))?;
                let [ch, h, w] = c.input_shape;
                if ch != 1 && ch != 3 {
                    return Err(err("classifier.input_shape", "channels must be 1 or 3".into()));
                }
                if !(1..=4096).contains(&h) || !(1..=4096).contains(&w) {
                    return Err(err("classifier.input_shape", "height and width must be between 1 and 4096".into()));
                }
                if c.mean.len() != ch as usize {
                    return Err(err("classifier.mean", format!("needs {ch} values, one per channel")));
                }
                if c.std.len() != ch as usize || c.std.iter().any(|s| !positive(*s)) {
                    return Err(err("classifier.std", format!("needs {ch} positive values, one per channel")));
                }
                if !positive(c.pixel_scale) {
                    return Err(err("classifier.pixel_scale", "must be positive".into()));
                }
                if c.labels_file.contains('/') || c.labels_file.contains("..") {
                    return Err(err("classifier.labels_file", "must be a file name in the model directory".into()));
                }
            }
            Kind::Forecaster => {
                let f = self
                    .forecaster
                    .as_ref()
                    .ok_or_else(|| err("forecaster", "missing section for kind = \"forecaster\"".into()))?;
                if !(1..=1024).contains(&f.features) {
                    return Err(err("forecaster.features", "must be between 1 and 1024".into()));
                }
                if f.min_context == 0 || f.min_context > f.max_context || f.max_context > 100_000 {
                    return Err(err("forecaster.min_context", "need 1 <= min_context <= max_context <= 100000".into()));
                }
                if f.model_horizon == 0 || (f.one_step && f.model_horizon != 1) {
                    return Err(err("forecaster.model_horizon", "must be >= 1, and 1 for a one-step model".into()));
                }
                if f.max_horizon < 1 || f.max_horizon > 10_000 {
                    return Err(err("forecaster.max_horizon", "must be between 1 and 10000".into()));
                }
                if f.quantiles.iter().any(|q| !(*q > 0.0 && *q < 1.0)) {
                    return Err(err("forecaster.quantiles", "each must lie strictly between 0 and 1".into()));
                }
                if f.quantiles.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(err("forecaster.quantiles", "must be strictly increasing".into()));
                }
                if !f.feature_names.is_empty() && f.feature_names.len() as i64 != f.features {
                    return Err(err("forecaster.feature_names", format!("needs {} names", f.features)));
                }
                if let Some(s) = &f.scaling {
                    check_scaling(s, f.features as usize)
                        .map_err(|(fld, m)| err(&format!("forecaster.scaling.{fld}"), m))?;
                }
            }
            Kind::Anomaly => {
                let a = self
                    .anomaly
                    .as_ref()
                    .ok_or_else(|| err("anomaly", "missing section for kind = \"anomaly\"".into()))?;
                if !(1..=65_536).contains(&a.features) {
                    return Err(err("anomaly.features", "must be between 1 and 65536".into()));
                }
                if !a.threshold.is_finite() || a.threshold < 0.0 {
                    return Err(err("anomaly.threshold", "must be a finite number >= 0".into()));
                }
                if !a.feature_names.is_empty() && a.feature_names.len() as i64 != a.features {
                    return Err(err("anomaly.feature_names", format!("needs {} names", a.features)));
                }
                if let Some(s) = &a.scaling {
                    check_scaling(s, a.features as usize)
                        .map_err(|(fld, m)| err(&format!("anomaly.scaling.{fld}"), m))?;
                }
            }
            Kind::Generator => {
                let g = self
                    .generator
                    .as_ref()
                    .ok_or_else(|| err("generator", "missing section for kind = \"generator\"".into()))?;
                if !(1..=65_536).contains(&g.latent_dim) {
                    return Err(err("generator.latent_dim", "must be between 1 and 65536".into()));
                }
                if !(0..=100_000).contains(&g.num_classes) {
                    return Err(err("generator.num_classes", "must be between 0 and 100000".into()));
                }
                let [c, h, w] = g.output_shape;
                if !(c == 1 || c == 3) || !(1..=2048).contains(&h) || !(1..=2048).contains(&w) {
                    return Err(err("generator.output_shape", "needs C in {1, 3} and H, W between 1 and 2048".into()));
                }
                if g.max_n == 0 || g.max_n > 1024 {
                    return Err(err("generator.max_n", "must be between 1 and 1024".into()));
                }
                if let Some(l) = &g.labels_file {
                    if l.contains('/') || l.contains("..") {
                        return Err(err("generator.labels_file", "must be a file name in the model directory".into()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Finite and strictly positive (NaN is neither).
fn positive(v: f32) -> bool {
    v.is_finite() && v > 0.0
}

fn check_scaling(s: &Scaling, n: usize) -> Result<(), (&'static str, String)> {
    if s.mean.len() != n || s.mean.iter().any(|v| !v.is_finite()) {
        return Err(("mean", format!("needs {n} finite values")));
    }
    if s.std.len() != n || s.std.iter().any(|v| !positive(*v)) {
        return Err(("std", format!("needs {n} positive values")));
    }
    Ok(())
}

/// Best-effort name of the TOML key around byte `pos`, for error messages.
fn field_at(text: &str, pos: usize) -> String {
    let before = &text[..pos.min(text.len())];
    let line = before.rsplit('\n').next().unwrap_or("");
    let full_line = text[before.len() - line.len()..].lines().next().unwrap_or("");
    let section = before
        .lines()
        .rev()
        .find_map(|l| {
            let t = l.trim();
            (t.starts_with('[') && t.ends_with(']')).then(|| t.trim_matches(|c| c == '[' || c == ']').to_string())
        })
        .unwrap_or_default();
    let key = full_line.split('=').next().unwrap_or("").trim();
    match (section.is_empty(), key.is_empty() || key.starts_with('[')) {
        (true, true) => "-".to_string(),
        (true, false) => key.to_string(),
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSIFIER: &str = r#"
kind = "classifier"
description = "digits"
[batching]
max_batch_size = 16
[classifier]
input_shape = [1, 28, 28]
mean = [0.1307]
std = [0.3081]
"#;

    #[test]
    fn parses_a_classifier_with_defaults() {
        let c = ModelConfig::parse(CLASSIFIER, "m/config.toml").unwrap();
        assert_eq!(c.kind, Kind::Classifier);
        assert_eq!(c.batching.max_batch_size, 16);
        assert_eq!(c.batching.instances, 1);
        assert_eq!(c.version_policy, VersionPolicy::Named(NamedPolicy::Latest));
        assert_eq!(c.classifier.unwrap().labels_file, "labels.txt");
    }

    #[test]
    fn unknown_field_names_file_and_field() {
        let text = CLASSIFIER.replace("max_batch_size = 16", "max_batch_sise = 16");
        let e = ModelConfig::parse(&text, "m/config.toml").unwrap_err();
        assert_eq!(e.file, "m/config.toml");
        assert_eq!(e.field, "batching.max_batch_sise");
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }

    #[test]
    fn out_of_range_batch_is_rejected_with_its_field() {
        let text = CLASSIFIER.replace("max_batch_size = 16", "max_batch_size = 0");
        let e = ModelConfig::parse(&text, "x").unwrap_err();
        assert_eq!(e.field, "batching.max_batch_size");
    }

    #[test]
    fn section_must_match_kind() {
        let text = CLASSIFIER.replace("kind = \"classifier\"", "kind = \"anomaly\"");
        let e = ModelConfig::parse(&text, "x").unwrap_err();
        assert_eq!(e.field, "classifier");
    }

    #[test]
    fn mean_length_must_match_channels() {
        let text = CLASSIFIER.replace("mean = [0.1307]", "mean = [0.1, 0.2]");
        let e = ModelConfig::parse(&text, "x").unwrap_err();
        assert_eq!(e.field, "classifier.mean");
    }

    #[test]
    fn version_policy_forms() {
        let t = format!("version_policy = [1, 3]\n{CLASSIFIER}");
        assert_eq!(ModelConfig::parse(&t, "x").unwrap().version_policy, VersionPolicy::Specific(vec![1, 3]));
        let t = format!("version_policy = \"all\"\n{CLASSIFIER}");
        assert_eq!(ModelConfig::parse(&t, "x").unwrap().version_policy, VersionPolicy::Named(NamedPolicy::All));
    }

    #[test]
    fn device_tables_replace_batching_settings_on_their_device_only() {
        let text = "kind = \"classifier\"\n[batching]\nmax_batch_size = 16\nfixed_batch_size = true\n\
                    [batching.cpu]\nfixed_batch_size = false\nmax_batch_size = 8\n\
                    [batching.cuda]\nmax_batch_size = 64\nintra_op_threads = 2\n\
                    [classifier]\ninput_shape = [1, 28, 28]\nmean = [0.1307]\nstd = [0.3081]\n";
        let c = ModelConfig::parse(text, "x").unwrap();
        let cpu = c.batching.for_device(tch::Device::Cpu);
        assert_eq!((cpu.max_batch_size, cpu.fixed_batch_size, cpu.intra_op_threads), (8, false, None));
        let gpu = c.batching.for_device(tch::Device::Cuda(1));
        assert_eq!((gpu.max_batch_size, gpu.fixed_batch_size, gpu.intra_op_threads), (64, true, Some(2)));
        assert!(cpu.cpu.is_none() && gpu.cuda.is_none(), "the effective settings carry no tables");
        // Errors name the table.
        let bad = text.replace("max_batch_size = 64", "max_batch_size = 0");
        assert_eq!(ModelConfig::parse(&bad, "x").unwrap_err().field, "batching.cuda.max_batch_size");
        let bad = text.replace("[batching.cpu]\n", "[batching.cpu]\ninstances = 2\n");
        let e = ModelConfig::parse(&bad, "x").unwrap_err();
        assert_eq!(e.field, "batching.cpu.instances");
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }

    #[test]
    fn memory_format_defaults_to_contiguous_and_names_itself_when_wrong() {
        assert_eq!(ModelConfig::parse(CLASSIFIER, "x").unwrap().memory_format, MemoryFormat::Contiguous);
        let t = format!("memory_format = \"channels_last\"\n{CLASSIFIER}");
        assert_eq!(ModelConfig::parse(&t, "x").unwrap().memory_format, MemoryFormat::ChannelsLast);
        let t = format!("memory_format = \"nhwc\"\n{CLASSIFIER}");
        let e = ModelConfig::parse(&t, "x").unwrap_err();
        assert_eq!(e.field, "memory_format");
        assert!(e.message.contains("channels_last"), "{}", e.message);
    }

    #[test]
    fn setup_method_must_be_a_plain_method_name() {
        let t = format!("setup_method = \"prepare_2\"\n{CLASSIFIER}");
        assert_eq!(ModelConfig::parse(&t, "x").unwrap().setup_method.as_deref(), Some("prepare_2"));
        for bad in ["forward", "", "2go", "a.b", "x y"] {
            let t = format!("setup_method = \"{bad}\"\n{CLASSIFIER}");
            assert_eq!(ModelConfig::parse(&t, "x").unwrap_err().field, "setup_method", "{bad:?}");
        }
    }
}
