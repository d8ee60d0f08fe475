//! Loading one model from its directory: config, version policy, device, labels, then for each
//! version an engine, its replicas, warm-up forwards that double as the contract check, and the
//! workers. Nothing here touches what is serving; the caller swaps the result in.

use super::{versions_on_disk, LoadedVersion, RegistryOptions, Serving};
use crate::batching::{Batcher, BatcherSpec, InferError};
use crate::device::{device_name, DeviceSpec};
use crate::engine::{self, BatchLimit, ReplicaPrep};
use crate::kinds::ModelConfig;
use crate::manifest::{ConfigError, NamedPolicy, VersionPolicy};
use crate::metrics::Metrics;
use crate::tensor::ItemTensor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tch::Device;

/// Why a model (or one of its versions) could not be loaded. Messages name the file at fault,
/// relative to the models directory.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The config does not parse or breaks a rule.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The version policy names a version that is not on disk.
    #[error("{model}/config.toml: version_policy: version {version} has no {model}/{version}/model.pt or model.pt2")]
    MissingVersion {
        /// The model.
        model: String,
        /// The version named.
        version: u64,
    },
    /// No version directory holds a model file.
    #[error("{model}: no version directory with a model file (expected {model}/<N>/model.pt or model.pt2)")]
    NoVersion {
        /// The model.
        model: String,
    },
    /// The device cannot be had on this machine.
    #[error("{model}: {message}")]
    Device {
        /// The model.
        model: String,
        /// Why.
        message: String,
    },
    /// The labels file is missing, empty, or disagrees with the config.
    #[error("{model}/{message}")]
    Labels {
        /// The model.
        model: String,
        /// The file and what is wrong.
        message: String,
    },
    /// The model file cannot be read or loaded by its engine.
    #[error("{model}/{version}/{message}")]
    Engine {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// The file and the engine's reason (`model.pt2: the package was compiled for cuda ...`).
        message: String,
    },
    /// A warm-up forward failed or its output breaks the kind's contract.
    #[error("{model}/{version}/{file}: {what} at batch size {batch}: {cause}")]
    Warmup {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// The model file being served (`model.pt`, `model.pt2`).
        file: &'static str,
        /// `warm-up forward failed` or `contract check`.
        what: &'static str,
        /// The batch size of the forward.
        batch: usize,
        /// What the engine or the contract check said.
        cause: String,
    },
}

/// A failed load: the config if it parsed (shown by `/models`), and why.
pub(super) type Failed = (Option<Arc<ModelConfig>>, LoadError);

/// Builds every version a model's policy selects, warmed and with workers, beside what serves.
/// On failure the config (if it parsed) comes back with the error, for `/models`.
pub(super) fn build_versions(
    opts: &RegistryOptions,
    metrics: &Metrics,
    name: &str,
    dir: &Path,
    parsed: Option<Arc<ModelConfig>>,
) -> Result<(Arc<ModelConfig>, Serving), Failed> {
    let cfg = match parsed {
        Some(c) => c,
        None => Arc::new(
            ModelConfig::load(&dir.join("config.toml"), &format!("{name}/config.toml"))
                .map_err(|e| (None, e.into()))?,
        ),
    };
    let fail = |e: LoadError| (Some(cfg.clone()), e);
    let on_disk = versions_on_disk(dir);
    let wanted: Vec<u64> = match &cfg.manifest.version_policy {
        VersionPolicy::Named(NamedPolicy::Latest) => on_disk.last().copied().into_iter().collect(),
        VersionPolicy::Named(NamedPolicy::All) => on_disk.clone(),
        VersionPolicy::Specific(v) => {
            if let Some(missing) = v.iter().find(|v| !on_disk.contains(v)) {
                return Err(fail(LoadError::MissingVersion { model: name.into(), version: *missing }));
            }
            v.clone()
        }
    };
    if wanted.is_empty() {
        return Err(fail(LoadError::NoVersion { model: name.into() }));
    }
    // The device string was checked when the config was parsed.
    let spec = cfg.manifest.device.as_deref().map(DeviceSpec::parse).transpose().ok().flatten();
    let device = spec
        .unwrap_or(opts.default_device)
        .resolve()
        .map_err(|message| fail(LoadError::Device { model: name.into(), message }))?;
    let labels = cfg.read_labels(dir).map_err(|message| fail(LoadError::Labels { model: name.into(), message }))?;
    let mut serving = Serving::new();
    for v in wanted {
        let loaded = load_version(metrics, name, dir, v, cfg.clone(), device, labels.clone()).map_err(fail)?;
        serving.insert(v, Arc::new(loaded));
    }
    Ok((cfg, serving))
}

fn load_version(
    metrics: &Metrics,
    name: &str,
    dir: &Path,
    version: u64,
    cfg: Arc<ModelConfig>,
    device: Device,
    labels: Vec<String>,
) -> Result<LoadedVersion, LoadError> {
    let t0 = Instant::now();
    let batching = cfg.manifest.batching.for_device(device);
    let prep = ReplicaPrep {
        memory_format: cfg.manifest.memory_format,
        setup_method: cfg.manifest.setup_method.clone(),
        method: None,
    };
    let vdir = dir.join(version.to_string());
    let items = cfg.kind.warmup_items();
    let check = |shapes: &[Vec<i64>]| cfg.check_outputs(&labels, shapes);
    let format = cfg.manifest.format;
    let queue = Queue { name, version, dir: &vdir, device, format, batching: &batching, items: &items };
    let (engine_name, replicas, engine, batching) = queue.open(prep.clone(), &check)?;
    // `[embedding]`: a second queue on the same file whose batches run the encoder method.
    let embedder = match &cfg.manifest.embedding {
        None => None,
        Some(e) => {
            let dim = e.dim;
            let check = |shapes: &[Vec<i64>]| match shapes.first() {
                Some(s) if s.as_slice() == [dim] => Ok(()),
                Some(s) => Err(format!(
                    "embedding method {:?} returns per-item shape {s:?}, [embedding] declares [{dim}]",
                    e.method
                )),
                None => Err(format!("embedding method {:?} returned no tensor", e.method)),
            };
            let (_, replicas, engine, batching) =
                queue.open(ReplicaPrep { method: Some(e.method.clone()), ..prep }, &check)?;
            let spec = BatcherSpec { model: format!("{name}.{}", e.method), version, batching };
            Some(Batcher::start(spec, engine, replicas, metrics.clone()))
        }
    };
    let load_seconds = t0.elapsed().as_secs_f64();
    metrics.load_seconds.with_label_values(&[name, &version.to_string()]).set(load_seconds);
    tracing::info!(model = name, version, device = %device_name(device), engine = engine_name, load_seconds, "version loaded and warmed");
    let (detail, file) = (engine.detail(), engine.file());
    let max_batch_size = batching.max_batch_size;
    let spec = BatcherSpec { model: name.to_string(), version, batching };
    let batcher = Batcher::start(spec, engine, replicas, metrics.clone());
    Ok(LoadedVersion {
        name: name.to_string(),
        version,
        config: cfg,
        device,
        engine: engine_name,
        engine_detail: detail,
        file,
        max_batch_size,
        labels,
        load_seconds,
        loaded_at: SystemTime::now(),
        batcher,
        embedder,
        runtime: std::sync::OnceLock::new(),
    })
}

/// What opening one queue of a version needs.
struct Queue<'a> {
    name: &'a str,
    version: u64,
    dir: &'a Path,
    device: Device,
    format: crate::manifest::ModelFormat,
    batching: &'a crate::manifest::BatchingConfig,
    /// Warm-up items: the first for every warm-up batch, the others once each at batch 1.
    items: &'a [Vec<ItemTensor>],
}

/// Checks a warm-up's per-item output shapes against a contract.
type ShapeCheck<'a> = dyn Fn(&[Vec<i64>]) -> Result<(), String> + 'a;

type Opened = (
    &'static str,
    Vec<Box<dyn crate::engine::Replica>>,
    Arc<dyn crate::engine::Engine>,
    crate::manifest::BatchingConfig,
);

impl Queue<'_> {
    /// Opens the engine with `prep`, makes the replicas and warms them. Warm-up doubles as the
    /// contract check (`check` sees the first item's output shapes): batch 1 and max_batch_size
    /// on the first replica, max_batch_size on every other one (so each worker's first real
    /// batch is warm too). Returns the batching in effect: a file whose batch dimension is
    /// static at 1 is served unbatched, and a `max_batch_size` the file cannot run is refused.
    fn open(&self, prep: ReplicaPrep, check: &ShapeCheck<'_>) -> Result<Opened, LoadError> {
        let (name, version) = (self.name, self.version);
        let engine_error = |message: String| LoadError::Engine { model: name.into(), version, message };
        let engine = engine::open(self.dir, self.device, self.format, prep, &self.items[0]).map_err(engine_error)?;
        let file = engine.file();
        let mut batching = self.batching.clone();
        match engine.batch_limit() {
            BatchLimit::UpTo(1) if batching.max_batch_size > 1 => {
                tracing::info!(model = name, version, "{file} has a static batch of 1: served unbatched");
                batching.max_batch_size = 1;
                batching.fixed_batch_size = false;
            }
            BatchLimit::UpTo(b) if batching.max_batch_size > b => {
                return Err(engine_error(format!(
                    "{file}: batching.max_batch_size is {}, but the package accepts batches of at most {b}; \
                     lower max_batch_size or export with a larger batch dimension",
                    batching.max_batch_size
                )));
            }
            _ => {}
        }
        let mut replicas = Vec::with_capacity(batching.instances);
        for _ in 0..batching.instances {
            replicas.push(engine.replica().map_err(|m| engine_error(format!("{file}: {m}")))?);
        }
        let max = batching.max_batch_size;
        let warmup = |what: &'static str, batch: usize, cause: String| LoadError::Warmup {
            model: name.into(),
            version,
            file,
            what,
            batch,
            cause,
        };
        for (r, replica) in replicas.iter_mut().enumerate() {
            let sizes: &[usize] = if r == 0 && !batching.fixed_batch_size && max > 1 { &[1, max] } else { &[max] };
            let mut runs: Vec<(usize, &[ItemTensor])> = sizes.iter().map(|&b| (b, self.items[0].as_slice())).collect();
            if r == 0 {
                let at = if batching.fixed_batch_size { max } else { 1 };
                runs.extend(self.items[1..].iter().map(|i| (at, i.as_slice())));
            }
            for (b, item) in runs {
                let batch: Vec<&[ItemTensor]> = (0..b).map(|_| item).collect();
                let out = replica.forward(&batch).map_err(|e| match e {
                    InferError::Forward(m) => warmup("warm-up forward failed", b, m),
                    other => warmup("warm-up", b, other.to_string()),
                })?;
                let first = out
                    .into_iter()
                    .next()
                    .ok_or_else(|| warmup("warm-up", b, "no output for the first item".into()))?;
                let first = first.map_err(|e| warmup("warm-up", b, e.to_string()))?;
                let shapes: Vec<Vec<i64>> = first.iter().map(|t| t.shape.clone()).collect();
                check(&shapes).map_err(|m| warmup("contract check", b, m))?;
            }
        }
        Ok((engine.name(), replicas, engine, batching))
    }
}
