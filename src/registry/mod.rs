//! The model repository on disk and the versions loaded from it.
//!
//! ```text
//! models/<name>/config.toml          kind, contract, batching, version policy, device
//! models/<name>/<version>/model.pt   TorchScript
//! ```
//!
//! Each model has a slot holding the versions it serves behind an atomic pointer swap: requests
//! take a snapshot (`Arc`) of the current set and never wait for a load. A (re)load builds and
//! warms the new versions beside the old ones, then swaps; requests that hold the old snapshot
//! finish on it, and the old workers exit when the last of them is done. A failed load leaves
//! whatever was serving in place and records the reason.

pub mod config;
pub mod device;

use crate::batching::worker::{first_line, forward_items, load_replica, ReplicaPrep};
use crate::batching::{Batcher, BatcherSpec, InferError};
use crate::kinds;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use config::{Kind, ModelConfig, NamedPolicy, VersionPolicy};
use device::{device_name, DeviceSpec};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};
use tch::Device;
use utoipa::ToSchema;

/// Registry failures; each maps to one HTTP status in `api::error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// No model of that name in the repository.
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    /// The model exists but does not serve that version.
    #[error("model '{model}' does not serve version {version} (serving: {serving:?})")]
    VersionNotFound {
        /// The model.
        model: String,
        /// The requested version.
        version: u64,
        /// What it serves.
        serving: Vec<u64>,
    },
    /// The model is known but has no ready version.
    #[error("model '{model}' is not ready ({state}){}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    NotReady {
        /// The model.
        model: String,
        /// Its state.
        state: ModelState,
        /// Its last error, if any.
        reason: Option<String>,
    },
    /// The name could resolve outside the repository, or has characters that are not allowed.
    #[error("invalid model name '{0}': use 1-128 characters from A-Z a-z 0-9 . _ - , starting with a letter or digit")]
    InvalidName(String),
    /// Loading failed; what was serving before keeps serving.
    #[error("{0}")]
    LoadFailed(String),
}

/// Lifecycle of a model slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    /// Being loaded for the first time.
    Loading,
    /// Serving at least one warmed version.
    Ready,
    /// The last load failed and nothing is serving.
    Failed,
    /// Unloaded by an admin.
    Unloaded,
}

impl std::fmt::Display for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Failed => "failed",
            ModelState::Unloaded => "unloaded",
        })
    }
}

/// One loaded, warmed version with its workers.
pub struct LoadedVersion {
    /// Model name.
    pub name: String,
    /// Version number (its directory name).
    pub version: u64,
    /// The config it was loaded with.
    pub config: Arc<ModelConfig>,
    /// Where its replicas live.
    pub device: Device,
    /// Class names (classifier, conditional generator), else empty.
    pub labels: Vec<String>,
    /// Seconds the load took, warm-up included.
    pub load_seconds: f64,
    /// When it became ready.
    pub loaded_at: SystemTime,
    /// The queue and workers.
    pub batcher: Batcher,
}

impl LoadedVersion {
    /// The kind of the model.
    pub fn kind(&self) -> Kind {
        self.config.kind
    }
    /// Number of classes in the classifier output.
    pub fn classes(&self) -> usize {
        self.labels.len()
    }
}

type Serving = BTreeMap<u64, Arc<LoadedVersion>>;

#[derive(Default)]
struct SlotInfo {
    state: Option<ModelState>,
    config: Option<Arc<ModelConfig>>,
    last_error: Option<String>,
    fingerprint: Option<Vec<(String, u64, u128)>>,
}

/// One model name and everything known about it.
pub struct ModelSlot {
    name: String,
    serving: ArcSwap<Serving>,
    info: Mutex<SlotInfo>,
    /// Serialises load, reload and unload of this model.
    admin: Mutex<()>,
}

/// Registry-wide settings.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The models directory.
    pub root: PathBuf,
    /// Device for models whose config has none.
    pub default_device: DeviceSpec,
}

/// All models of the repository.
pub struct Registry {
    opts: RegistryOptions,
    root_display: String,
    slots: RwLock<BTreeMap<String, Arc<ModelSlot>>>,
    metrics: Metrics,
}

/// Whether a model name is safe to use as a directory name under the repository.
pub fn valid_name(name: &str) -> bool {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    !name.is_empty()
        && name.len() <= 128
        && ok_chars
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && !name.contains("..")
}

/// A summary of one version, as listed by `/models`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionInfo {
    /// Version number.
    pub version: u64,
    /// Device of its replicas.
    #[schema(example = "cpu")]
    pub device: String,
    /// Live worker threads.
    pub workers: usize,
    /// Items waiting in its queue.
    pub queue_depth: usize,
    /// Seconds its load took, warm-up included.
    pub load_seconds: f64,
    /// Seconds since the Unix epoch when it became ready.
    pub loaded_at_unix: u64,
}

/// Everything known about one model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelInfo {
    /// Model name.
    #[schema(example = "digits-cnn")]
    pub name: String,
    /// Architecture kind, if the config could be read.
    pub kind: Option<Kind>,
    /// Lifecycle state.
    pub state: ModelState,
    /// Versions being served.
    pub versions: Vec<VersionInfo>,
    /// Device of the served versions (of the newest one).
    pub device: Option<String>,
    /// The last load error, if any.
    pub last_error: Option<String>,
    /// The parsed config (contract, batching, version policy).
    #[schema(value_type = Option<Object>)]
    pub config: Option<ModelConfig>,
}

impl Registry {
    /// An empty registry over `opts.root`; call [`Registry::load_all`] to load what is on disk.
    pub fn new(opts: RegistryOptions, metrics: Metrics) -> Registry {
        let root_display = opts.root.display().to_string();
        Registry { opts, root_display, slots: RwLock::new(BTreeMap::new()), metrics }
    }

    /// The models directory.
    pub fn root(&self) -> &Path {
        &self.opts.root
    }

    /// Names of the model directories on disk (those with a config.toml and a valid name).
    pub fn discover(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.opts.root) else { return Vec::new() };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("config.toml").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        names
    }

    /// Loads every model on disk, in parallel, one thread per model. Failures are recorded per model.
    pub fn load_all(&self) -> Vec<(String, Result<(), RegistryError>)> {
        let names = self.discover();
        std::thread::scope(|s| {
            let handles: Vec<_> = names
                .iter()
                .map(|n| {
                    let n = n.clone();
                    s.spawn(move || {
                        let r = self.load(&n);
                        (n, r)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("load thread panicked")).collect()
        })
    }

    fn slot(&self, name: &str) -> Option<Arc<ModelSlot>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    fn slot_or_create(&self, name: &str) -> Arc<ModelSlot> {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(ModelSlot {
                    name: name.to_string(),
                    serving: ArcSwap::from_pointee(Serving::new()),
                    info: Mutex::new(SlotInfo::default()),
                    admin: Mutex::new(()),
                })
            })
            .clone()
    }

    /// Resolves `name` to a directory inside the repository, refusing anything that could escape it.
    fn model_dir(&self, name: &str) -> Result<PathBuf, RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(name.chars().take(64).collect()));
        }
        let dir = self.opts.root.join(name);
        if !dir.join("config.toml").is_file() {
            return Err(RegistryError::ModelNotFound(name.to_string()));
        }
        // A symlink may still point elsewhere: the canonical path must stay under the root.
        let root =
            std::fs::canonicalize(&self.opts.root).map_err(|_| RegistryError::ModelNotFound(name.to_string()))?;
        let canon = std::fs::canonicalize(&dir).map_err(|_| RegistryError::ModelNotFound(name.to_string()))?;
        if !canon.starts_with(&root) {
            return Err(RegistryError::InvalidName(name.to_string()));
        }
        Ok(dir)
    }

    /// Removes the repository path from a message, so clients never see internal paths.
    fn scrub(&self, msg: &str) -> String {
        msg.replace(&self.root_display, "<models>")
    }

    /// Loads (or reloads) a model from disk: every version its policy selects is loaded and
    /// warmed beside what is serving, then swapped in atomically. On failure nothing changes
    /// except the recorded error.
    pub fn load(&self, name: &str) -> Result<(), RegistryError> {
        let dir = self.model_dir(name)?;
        let slot = self.slot_or_create(name);
        let _admin = slot.admin.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut info = slot.info.lock().unwrap_or_else(|p| p.into_inner());
            if slot.serving.load().is_empty() {
                info.state = Some(ModelState::Loading);
            }
        }
        let fingerprint = fingerprint(&dir);
        let result = self.build_versions(name, &dir);
        let mut info = slot.info.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok((cfg, versions)) => {
                let numbers: Vec<u64> = versions.keys().copied().collect();
                slot.serving.store(Arc::new(versions));
                info.state = Some(ModelState::Ready);
                info.config = Some(cfg);
                info.last_error = None;
                info.fingerprint = Some(fingerprint);
                tracing::info!(model = name, versions = ?numbers, "model ready");
                Ok(())
            }
            Err((cfg, msg)) => {
                let msg = self.scrub(&msg);
                tracing::error!(model = name, error = %msg, "model load failed; previous versions (if any) keep serving");
                if cfg.is_some() {
                    info.config = cfg;
                }
                info.last_error = Some(msg.clone());
                info.fingerprint = Some(fingerprint);
                if slot.serving.load().is_empty() {
                    info.state = Some(ModelState::Failed);
                }
                Err(RegistryError::LoadFailed(msg))
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn build_versions(
        &self,
        name: &str,
        dir: &Path,
    ) -> Result<(Arc<ModelConfig>, Serving), (Option<Arc<ModelConfig>>, String)> {
        let cfg = ModelConfig::load(&dir.join("config.toml"), &format!("{name}/config.toml"))
            .map_err(|e| (None, e.to_string()))?;
        let cfg = Arc::new(cfg);
        let fail = |m: String| (Some(cfg.clone()), m);
        let on_disk = versions_on_disk(dir);
        let wanted: Vec<u64> = match &cfg.version_policy {
            VersionPolicy::Named(NamedPolicy::Latest) => on_disk.last().copied().into_iter().collect(),
            VersionPolicy::Named(NamedPolicy::All) => on_disk.clone(),
            VersionPolicy::Specific(v) => {
                if let Some(missing) = v.iter().find(|v| !on_disk.contains(v)) {
                    return Err(fail(format!(
                        "{name}/config.toml: version_policy: version {missing} has no {name}/{missing}/model.pt"
                    )));
                }
                v.clone()
            }
        };
        if wanted.is_empty() {
            return Err(fail(format!("{name}: no version directory with a model.pt (expected {name}/<N>/model.pt)")));
        }
        let spec = match &cfg.device {
            Some(d) => DeviceSpec::parse(d).map_err(|m| fail(format!("{name}/config.toml: device: {m}")))?,
            None => self.opts.default_device,
        };
        let device = spec.resolve().map_err(|m| fail(format!("{name}: {m}")))?;
        let labels = read_labels(dir, &cfg).map_err(|m| fail(format!("{name}/{m}")))?;
        let mut serving = Serving::new();
        for v in wanted {
            let loaded = self
                .load_version(name, dir, v, cfg.clone(), device, labels.clone())
                .map_err(|m| fail(format!("{name}/{v}/model.pt: {m}")))?;
            serving.insert(v, Arc::new(loaded));
        }
        Ok((cfg, serving))
    }

    fn load_version(
        &self,
        name: &str,
        dir: &Path,
        version: u64,
        cfg: Arc<ModelConfig>,
        device: Device,
        labels: Vec<String>,
    ) -> Result<LoadedVersion, String> {
        let t0 = Instant::now();
        let batching = cfg.batching.for_device(device);
        let path = dir.join(version.to_string()).join("model.pt");
        let bytes = Arc::new(std::fs::read(&path).map_err(|e| format!("cannot read: {}", e.kind()))?);
        let _no_grad = tch::no_grad_guard();
        let prep = ReplicaPrep::of(&cfg);
        let mut replicas = Vec::with_capacity(batching.instances);
        for _ in 0..batching.instances {
            replicas.push(load_replica(&bytes, device, &prep)?);
        }
        // Warm-up doubles as the contract check: batch 1 and max_batch_size on the first replica,
        // max_batch_size on every other one (so each worker's first real batch is warm too).
        let item = kinds::warmup_item(&cfg);
        let max = batching.max_batch_size;
        for (r, module) in replicas.iter().enumerate() {
            let sizes: &[usize] = if r == 0 && !batching.fixed_batch_size { &[1, max] } else { &[max] };
            for &b in sizes {
                let batch: Vec<&[crate::batching::ItemTensor]> = (0..b).map(|_| item.as_slice()).collect();
                let out = forward_items(module, device, prep.memory_format, &batch).map_err(|e| match e {
                    InferError::Forward(m) => format!("warm-up forward at batch size {b} failed: {}", first_line(&m)),
                    other => format!("warm-up at batch size {b}: {other}"),
                })?;
                let first =
                    out.into_iter().next().expect("b >= 1").map_err(|e| format!("warm-up at batch size {b}: {e}"))?;
                let shapes: Vec<Vec<i64>> = first.iter().map(|t| t.shape.clone()).collect();
                kinds::check_outputs(&cfg, labels.len(), &shapes)
                    .map_err(|m| format!("contract check at batch size {b}: {m}"))?;
            }
        }
        let load_seconds = t0.elapsed().as_secs_f64();
        self.metrics.load_seconds.with_label_values(&[name, &version.to_string()]).set(load_seconds);
        tracing::info!(model = name, version, device = %device_name(device), load_seconds, "version loaded and warmed");
        let spec = BatcherSpec { model: name.to_string(), version, device, batching, module_bytes: bytes, prep };
        let batcher = Batcher::start(spec, replicas, self.metrics.clone());
        Ok(LoadedVersion {
            name: name.to_string(),
            version,
            config: cfg,
            device,
            labels,
            load_seconds,
            loaded_at: SystemTime::now(),
            batcher,
        })
    }

    /// Stops serving a model. Requests already holding a version finish on it.
    pub fn unload(&self, name: &str) -> Result<(), RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(name.chars().take(64).collect()));
        }
        let slot = self.slot(name).ok_or_else(|| RegistryError::ModelNotFound(name.to_string()))?;
        let _admin = slot.admin.lock().unwrap_or_else(|p| p.into_inner());
        slot.serving.store(Arc::new(Serving::new()));
        let mut info = slot.info.lock().unwrap_or_else(|p| p.into_inner());
        info.state = Some(ModelState::Unloaded);
        info.fingerprint = None;
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// The version that serves a request: the one asked for, or the newest.
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<LoadedVersion>, RegistryError> {
        let slot = self.slot(name).ok_or_else(|| RegistryError::ModelNotFound(name.to_string()))?;
        let serving = slot.serving.load();
        if serving.is_empty() {
            let info = slot.info.lock().unwrap_or_else(|p| p.into_inner());
            return Err(RegistryError::NotReady {
                model: name.to_string(),
                state: info.state.unwrap_or(ModelState::Loading),
                reason: info.last_error.clone(),
            });
        }
        match version {
            None => Ok(serving.values().next_back().expect("non-empty").clone()),
            Some(v) => serving.get(&v).cloned().ok_or_else(|| RegistryError::VersionNotFound {
                model: name.to_string(),
                version: v,
                serving: serving.keys().copied().collect(),
            }),
        }
    }

    /// The serving version when exactly one model of `kind` serves exactly one version: then
    /// every valid request to that kind's endpoint goes to its queue, known before the body is
    /// parsed.
    pub fn sole_version_of_kind(&self, kind: Kind) -> Option<Arc<LoadedVersion>> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for s in slots.values() {
            let serving = s.serving.load();
            let Some(v) = serving.values().next_back() else { continue };
            if v.kind() != kind {
                continue;
            }
            if found.is_some() || serving.len() != 1 {
                return None;
            }
            found = Some(v.clone());
        }
        found
    }

    /// The names of models that serve `kind` now.
    pub fn serving_of_kind(&self, kind: Kind) -> Vec<String> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .values()
            .filter(|s| s.serving.load().values().next_back().is_some_and(|v| v.kind() == kind))
            .map(|s| s.name.clone())
            .collect()
    }

    /// Metadata of one model.
    pub fn info(&self, name: &str) -> Result<ModelInfo, RegistryError> {
        let slot = self.slot(name).ok_or_else(|| RegistryError::ModelNotFound(name.to_string()))?;
        Ok(slot_info(&slot))
    }

    /// Metadata of every model.
    pub fn list(&self) -> Vec<ModelInfo> {
        let slots: Vec<Arc<ModelSlot>> =
            self.slots.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        slots.iter().map(|s| slot_info(s)).collect()
    }

    /// Models that keep the server from being ready, with the reason; empty when ready.
    /// Unloaded models are not counted: an admin took them out on purpose.
    pub fn not_ready(&self) -> Vec<String> {
        self.list()
            .into_iter()
            .filter_map(|m| match m.state {
                ModelState::Unloaded => None,
                ModelState::Ready => {
                    let dead: Vec<u64> = m.versions.iter().filter(|v| v.workers == 0).map(|v| v.version).collect();
                    (!dead.is_empty()).then(|| format!("{}: no live worker for version(s) {dead:?}", m.name))
                }
                s => Some(match m.last_error {
                    Some(e) => format!("{}: {s}: {e}", m.name),
                    None => format!("{}: {s}", m.name),
                }),
            })
            .collect()
    }

    /// Reloads models whose files changed on disk and loads new model directories. Returns what it did.
    pub fn poll_once(&self) -> Vec<(String, Result<(), RegistryError>)> {
        let mut done = Vec::new();
        for name in self.discover() {
            let Ok(dir) = self.model_dir(&name) else { continue };
            let changed = match self.slot(&name) {
                None => true,
                Some(slot) => {
                    let info = slot.info.lock().unwrap_or_else(|p| p.into_inner());
                    info.state != Some(ModelState::Unloaded) && info.fingerprint.as_ref() != Some(&fingerprint(&dir))
                }
            };
            if changed {
                done.push((name.clone(), self.load(&name)));
            }
        }
        done
    }
}

fn slot_info(slot: &ModelSlot) -> ModelInfo {
    let serving = slot.serving.load();
    let info = slot.info.lock().unwrap_or_else(|p| p.into_inner());
    let versions: Vec<VersionInfo> = serving
        .values()
        .map(|v| VersionInfo {
            version: v.version,
            device: device_name(v.device),
            workers: v.batcher.live_workers(),
            queue_depth: v.batcher.queue_len(),
            load_seconds: v.load_seconds,
            loaded_at_unix: v.loaded_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        })
        .collect();
    let config = serving.values().next_back().map(|v| v.config.clone()).or_else(|| info.config.clone());
    ModelInfo {
        name: slot.name.clone(),
        kind: config.as_ref().map(|c| c.kind),
        state: info.state.unwrap_or(ModelState::Loading),
        device: versions.last().map(|v| v.device.clone()),
        versions,
        last_error: info.last_error.clone(),
        config: config.map(|c| (*c).clone()),
    }
}

/// Numbered subdirectories that hold a model.pt, ascending.
fn versions_on_disk(dir: &Path) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<u64> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("model.pt").is_file())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()))
        .collect();
    v.sort_unstable();
    v
}

/// What a change on disk looks like: config and model files with their sizes and mtimes.
fn fingerprint(dir: &Path) -> Vec<(String, u64, u128)> {
    let stat = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (m.len(), mtime)
        })
    };
    let mut fp = Vec::new();
    if let Some((len, t)) = stat(&dir.join("config.toml")) {
        fp.push(("config.toml".to_string(), len, t));
    }
    for v in versions_on_disk(dir) {
        if let Some((len, t)) = stat(&dir.join(v.to_string()).join("model.pt")) {
            fp.push((v.to_string(), len, t));
        }
    }
    fp
}

fn read_labels(dir: &Path, cfg: &ModelConfig) -> Result<Vec<String>, String> {
    let file = match cfg.kind {
        Kind::Classifier => Some(cfg.classifier.as_ref().expect("validated").labels_file.clone()),
        Kind::Generator => cfg.generator.as_ref().expect("validated").labels_file.clone(),
        _ => None,
    };
    let Some(file) = file else { return Ok(Vec::new()) };
    let text = std::fs::read_to_string(dir.join(&file)).map_err(|e| format!("{file}: cannot read: {}", e.kind()))?;
    let labels: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if labels.is_empty() {
        return Err(format!("{file}: no labels"));
    }
    if let Some(g) = &cfg.generator {
        if g.num_classes as usize != labels.len() {
            return Err(format!("{file}: {} labels but generator.num_classes = {}", labels.len(), g.num_classes));
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape() {
        for bad in ["", "..", "../etc", "a/b", ".hidden", "a..b", "a b", "x\0", &"a".repeat(129)] {
            assert!(!valid_name(bad), "{bad:?} must be refused");
        }
        for good in ["digits-cnn", "co2_lstm", "m.v2", "A1"] {
            assert!(valid_name(good), "{good:?}");
        }
    }
}
