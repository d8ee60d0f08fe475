//! `models/<name>/config.toml`: the fields every model has (kind, device, version policy,
//! batching, replica preparation) and, untouched, the one section named after its kind.
//!
//! A leaf below the kinds: this module knows no kind. [`Manifest::parse`] reads the common fields
//! strictly (`deny_unknown_fields`), so a typo is an error naming its field, and hands the kind's
//! section on as a TOML table; `kinds::ModelConfig::parse` gives it to the kind that owns it.

use serde::{Deserialize, Serialize};
use std::path::Path;
use utoipa::ToSchema;

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

/// Which model file of a version directory is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// `model.pt2` when the directory has one compiled for the model's device, else `model.pt`.
    #[default]
    Auto,
    /// `model.pt` (TorchScript), through libtorch's JIT.
    Torchscript,
    /// `model.pt2` (torch.export + AOTInductor package), through libtorch's package loader.
    Pt2,
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

/// The tables every model may have beside its kind's section.
const COMMON_TABLES: [&str; 2] = ["batching", "embedding"];

/// `[embedding]`: a second method of the model that maps the same inputs to latent vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// The TorchScript method (`@torch.jit.export`) that returns `[B, dim]` latent vectors.
    pub method: String,
    /// The latent size.
    pub dim: i64,
}

/// The fields every model's `config.toml` has, plus its kind's section as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The architecture, which decides the endpoint and the contract (a registered kind's name).
    pub kind: String,
    /// Free text shown in `/models`.
    #[serde(default)]
    pub description: String,
    /// Device override: `auto`, `cpu`, `cuda` or `cuda:N`; the server default when absent.
    pub device: Option<String>,
    /// Which version directories are served.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// When several models of this kind are loaded, a request that names none goes to the one
    /// marked `default_for_kind = true` (`--default-model` still wins over it).
    #[serde(default)]
    pub default_for_kind: bool,
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
    /// The model file to serve: `auto` (a `.pt2` compiled for the model's device, else the
    /// TorchScript file), `torchscript` or `pt2`.
    #[serde(default)]
    pub format: ModelFormat,
    /// Dynamic batching settings.
    #[serde(default)]
    pub batching: BatchingConfig,
    /// `[embedding]`: the model also exposes its encoder (an autoencoder's latent vectors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingConfig>,
    /// The section named after the kind, as read (`None` when the file has none); the kind parses it.
    #[serde(skip)]
    #[schema(ignore)]
    pub section: Option<toml::Table>,
}

impl Manifest {
    /// Parses the common fields of `text` and keeps the kind's section, naming `file` in every error.
    pub fn parse(text: &str, file: &str) -> Result<Manifest, ConfigError> {
        let err = |field: &str, message: String| ConfigError { file: file.into(), field: field.into(), message };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            let field = e.span().map(|s| field_at(text, s.start)).unwrap_or_else(|| "-".into());
            err(&field, e.message().to_string())
        })?;
        let kind = match table.get("kind") {
            Some(toml::Value::String(k)) => k.clone(),
            Some(_) => return Err(err("kind", "must be a string naming the model's kind".into())),
            None => return Err(err("kind", "missing; name the model's kind, e.g. kind = \"classifier\"".into())),
        };
        let section = match table.remove(&kind) {
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => return Err(err(&kind, format!("must be a table ([{kind}])"))),
            None => None,
        };
        // Any other table at the top level that is no common field is another kind's section.
        let stray =
            table.iter().find(|(k, v)| v.is_table() && !COMMON_TABLES.contains(&k.as_str())).map(|(k, _)| k.clone());
        if let Some(k) = stray {
            return Err(err(
                &k,
                format!("section does not match kind = \"{kind}\" (a model has one section, named after its kind)"),
            ));
        }
        let mut m: Manifest = from_table(table).map_err(|(field, message)| err(&field, message))?;
        m.section = section;
        m.validate(file)?;
        Ok(m)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path, display: &str) -> Result<Manifest, ConfigError> {
        Self::parse(&read(path, display)?, display)
    }

    /// Checks the rules serde cannot express for the common fields.
    fn validate(&self, file: &str) -> Result<(), ConfigError> {
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
            crate::device::DeviceSpec::parse(d).map_err(|m| err("device", m))?;
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
        if let Some(e) = &self.embedding {
            let ident = e.method.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && e.method.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident || e.method.len() > 64 {
                return Err(err("embedding.method", "must name a method (letters, digits and _, at most 64)".into()));
            }
            if !(1..=65_536).contains(&e.dim) {
                return Err(err("embedding.dim", "must be between 1 and 65536".into()));
            }
        }
        if let VersionPolicy::Specific(v) = &self.version_policy {
            if v.is_empty() {
                return Err(err("version_policy", "an explicit list must name at least one version".into()));
            }
        }
        Ok(())
    }
}

/// Reads a config file's text; the error names `display` (the file relative to the models directory).
pub fn read(path: &Path, display: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: display.to_string(),
        field: "-".into(),
        message: format!("cannot read: {}", e.kind()),
    })
}

/// Deserializes a TOML table strictly, naming the dotted path of the field at fault
/// (`batching.max_batch_sise`) beside serde's message.
pub fn from_table<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // Unknown and missing fields are reported on their parent; name the field itself.
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        // serde_path_to_error puts an unknown field in the path, a missing one not.
        let field = match (path.as_str(), named) {
            (".", Some(n)) => n,
            (".", None) => "-".to_string(),
            (p, Some(n)) if p != n && !p.ends_with(&format!(".{n}")) => format!("{p}.{n}"),
            (p, _) => p.to_string(),
        };
        (field, message)
    })
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
    fn parses_the_common_fields_and_keeps_the_section() {
        let c = Manifest::parse(CLASSIFIER, "m/config.toml").unwrap();
        assert_eq!(c.kind, "classifier");
        assert_eq!(c.batching.max_batch_size, 16);
        assert_eq!(c.batching.instances, 1);
        assert_eq!(c.version_policy, VersionPolicy::Named(NamedPolicy::Latest));
        let section = c.section.unwrap();
        assert_eq!(section["input_shape"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn unknown_field_names_file_and_field() {
        let text = CLASSIFIER.replace("max_batch_size = 16", "max_batch_sise = 16");
        let e = Manifest::parse(&text, "m/config.toml").unwrap_err();
        assert_eq!(e.file, "m/config.toml");
        assert_eq!(e.field, "batching.max_batch_sise");
        assert!(e.message.contains("unknown field"), "{}", e.message);
        let e = Manifest::parse(&format!("colour = 1\n{CLASSIFIER}"), "x").unwrap_err();
        assert_eq!(e.field, "colour");
        let e = Manifest::parse("kind = \"classifier\"\n[batching]\nmax_batch_size = \"x\"\n", "x").unwrap_err();
        assert_eq!(e.field, "batching.max_batch_size");
        let e = Manifest::parse("kind = \"classifier\"\nbatching = [\n", "x").unwrap_err();
        assert_eq!(e.file, "x", "a syntax error names the file: {e}");
    }

    #[test]
    fn out_of_range_batch_is_rejected_with_its_field() {
        let text = CLASSIFIER.replace("max_batch_size = 16", "max_batch_size = 0");
        let e = Manifest::parse(&text, "x").unwrap_err();
        assert_eq!(e.field, "batching.max_batch_size");
    }

    #[test]
    fn a_section_of_another_kind_is_named() {
        let text = CLASSIFIER.replace("kind = \"classifier\"", "kind = \"anomaly\"");
        let e = Manifest::parse(&text, "x").unwrap_err();
        assert_eq!(e.field, "classifier");
        assert!(e.message.contains("does not match kind"), "{}", e.message);
        let e = Manifest::parse("description = \"no kind\"\n", "x").unwrap_err();
        assert_eq!(e.field, "kind");
    }

    #[test]
    fn an_embedding_section_is_a_common_table() {
        let t = format!("{CLASSIFIER}[embedding]\nmethod = \"encode\"\ndim = 16\n");
        let e = Manifest::parse(&t, "x").unwrap().embedding.unwrap();
        assert_eq!((e.method.as_str(), e.dim), ("encode", 16));
        let bad = t.replace("dim = 16", "dim = 0");
        assert_eq!(Manifest::parse(&bad, "x").unwrap_err().field, "embedding.dim");
    }

    #[test]
    fn version_policy_forms() {
        let t = format!("version_policy = [1, 3]\n{CLASSIFIER}");
        assert_eq!(Manifest::parse(&t, "x").unwrap().version_policy, VersionPolicy::Specific(vec![1, 3]));
        let t = format!("version_policy = \"all\"\n{CLASSIFIER}");
        assert_eq!(Manifest::parse(&t, "x").unwrap().version_policy, VersionPolicy::Named(NamedPolicy::All));
    }

    #[test]
    fn device_tables_replace_batching_settings_on_their_device_only() {
        let text = "kind = \"classifier\"\n[batching]\nmax_batch_size = 16\nfixed_batch_size = true\n\
                    [batching.cpu]\nfixed_batch_size = false\nmax_batch_size = 8\n\
                    [batching.cuda]\nmax_batch_size = 64\nintra_op_threads = 2\n\
                    [classifier]\ninput_shape = [1, 28, 28]\nmean = [0.1307]\nstd = [0.3081]\n";
        let c = Manifest::parse(text, "x").unwrap();
        let cpu = c.batching.for_device(tch::Device::Cpu);
        assert_eq!((cpu.max_batch_size, cpu.fixed_batch_size, cpu.intra_op_threads), (8, false, None));
        let gpu = c.batching.for_device(tch::Device::Cuda(1));
        assert_eq!((gpu.max_batch_size, gpu.fixed_batch_size, gpu.intra_op_threads), (64, true, Some(2)));
        assert!(cpu.cpu.is_none() && gpu.cuda.is_none(), "the effective settings carry no tables");
        // Errors name the table.
        let bad = text.replace("max_batch_size = 64", "max_batch_size = 0");
        assert_eq!(Manifest::parse(&bad, "x").unwrap_err().field, "batching.cuda.max_batch_size");
        let bad = text.replace("[batching.cpu]\n", "[batching.cpu]\ninstances = 2\n");
        let e = Manifest::parse(&bad, "x").unwrap_err();
        assert_eq!(e.field, "batching.cpu.instances");
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }

    #[test]
    fn memory_format_defaults_to_contiguous_and_names_itself_when_wrong() {
        assert_eq!(Manifest::parse(CLASSIFIER, "x").unwrap().memory_format, MemoryFormat::Contiguous);
        let t = format!("memory_format = \"channels_last\"\n{CLASSIFIER}");
        assert_eq!(Manifest::parse(&t, "x").unwrap().memory_format, MemoryFormat::ChannelsLast);
        let t = format!("memory_format = \"nhwc\"\n{CLASSIFIER}");
        let e = Manifest::parse(&t, "x").unwrap_err();
        assert_eq!(e.field, "memory_format");
        assert!(e.message.contains("channels_last"), "{}", e.message);
    }

    #[test]
    fn setup_method_must_be_a_plain_method_name() {
        let t = format!("setup_method = \"prepare_2\"\n{CLASSIFIER}");
        assert_eq!(Manifest::parse(&t, "x").unwrap().setup_method.as_deref(), Some("prepare_2"));
        for bad in ["forward", "", "2go", "a.b", "x y"] {
            let t = format!("setup_method = \"{bad}\"\n{CLASSIFIER}");
            assert_eq!(Manifest::parse(&t, "x").unwrap_err().field, "setup_method", "{bad:?}");
        }
    }
}
