//! The model repository on disk and the versions loaded from it.
//!
//! ```text
//! models/<name>/config.toml          kind, contract, batching, version policy, device
//! models/<name>/<version>/model.pt   TorchScript
//! models/<name>/<version>/model.pt2  torch.export + AOTInductor package (either or both)
//! ```
//!
//! Each model has a slot holding the versions it serves behind an atomic pointer swap: requests
//! take a snapshot (`Arc`) of the current set and never wait for a load. A (re)load builds and
//! warms the new versions beside the old ones, then swaps; requests that hold the old snapshot
//! finish on it, and the old workers exit when the last of them is done. A failed load leaves
//! whatever was serving in place and records the reason.

mod loader;

use crate::batching::Batcher;
use crate::device::{device_name, DeviceSpec};
use crate::kinds::ModelConfig;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tch::Device;
use utoipa::ToSchema;

pub use loader::LoadError;

/// Registry failures; each maps to one HTTP status in `api::error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// No model of that name in the repository (the name as given, cut to 64 characters).
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    /// The name resolves (through a symlink) to a directory outside the models directory.
    #[error("model '{0}' resolves outside the models directory and is not served")]
    OutsideRepository(String),
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
    /// Loading failed; what was serving before keeps serving. The message names the file.
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
    /// The engine that runs it (`torchscript`, `aoti`).
    pub engine: &'static str,
    /// The model file it serves (`model.pt`, `model.pt2`).
    pub file: &'static str,
    /// What the engine's file was built for (`cpu, ISA AVX2` for a package), when it says.
    pub engine_detail: Option<String>,
    /// The largest batch in effect: the config's, or 1 for a package with a static batch.
    pub max_batch_size: usize,
    /// Class names (classifier, conditional generator), else empty.
    pub labels: Vec<String>,
    /// Seconds the load took, warm-up included.
    pub load_seconds: f64,
    /// When it became ready.
    pub loaded_at: SystemTime,
    /// The queue and workers.
    pub batcher: Batcher,
    /// The queue whose batches run the `[embedding]` method, when the config has one.
    pub embedder: Option<Batcher>,
    /// State an endpoint keeps per version beside its queue, made on first use (a language
    /// model's decoder). It goes when the version does.
    pub runtime: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
}

impl LoadedVersion {
    /// The kind of the model.
    pub fn kind(&self) -> &'static str {
        self.config.kind_name()
    }
    /// Number of classes in the classifier output.
    pub fn classes(&self) -> usize {
        self.labels.len()
    }
}

type Serving = BTreeMap<u64, Arc<LoadedVersion>>;

#[derive(Default)]
struct SlotInfo {
    /// Whether readiness waits for this model: it was in the repository at start-up, or it has
    /// served since. A model added later (hot-add) that fails to load is reported, not waited for.
    required: bool,
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

/// A name for messages: at most 64 characters, so a 10,000-character name is not echoed whole.
fn shown(name: &str) -> String {
    if name.chars().count() <= 64 {
        return name.to_string();
    }
    format!("{}...", name.chars().take(64).collect::<String>())
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
    /// The engine that runs it: `torchscript` (`model.pt`) or `aoti` (`model.pt2`).
    #[schema(example = "torchscript")]
    pub engine: &'static str,
    /// The model file served.
    #[schema(example = "model.pt")]
    pub file: &'static str,
    /// What a package was compiled for (device, CPU vector ISA); absent for TorchScript.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "cpu, ISA AVX2")]
    pub compiled_for: Option<String>,
    /// The largest batch its workers form. 1 with `batched: false` when the file's batch
    /// dimension is static (a `.pt2` exported without a dynamic batch).
    pub max_batch_size: usize,
    /// Whether requests are batched together.
    pub batched: bool,
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
    #[schema(example = "classifier")]
    pub kind: Option<&'static str>,
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
    pub config: Option<serde_json::Value>,
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
        self.load_all_with(|_| {})
    }

    /// Like [`Registry::load_all`], but first parses every config once and calls `before` with the
    /// worker threads the valid ones ask for (the sum of their `instances`, at least 1), before any
    /// worker starts: the server's thread rule needs that sum. A config that fails to parse is
    /// reported by its model's load, like any other load failure.
    pub fn load_all_with(&self, before: impl FnOnce(usize)) -> Vec<(String, Result<(), RegistryError>)> {
        let names = self.discover();
        let parsed: Vec<(String, Option<Arc<ModelConfig>>)> = names
            .into_iter()
            .map(|n| {
                let c = ModelConfig::load(&self.opts.root.join(&n).join("config.toml"), &format!("{n}/config.toml"));
                (n, c.ok().map(Arc::new))
            })
            .collect();
        let instances: usize =
            parsed.iter().filter_map(|(_, c)| c.as_ref()).map(|c| c.manifest.batching.instances).sum();
        before(instances.max(1));
        std::thread::scope(|s| {
            let handles: Vec<_> = parsed
                .into_iter()
                .map(|(n, c)| {
                    s.spawn(move || {
                        let r = self.load_slot(&n, c, true);
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
            return Err(RegistryError::InvalidName(shown(name)));
        }
        let dir = self.opts.root.join(name);
        if !dir.join("config.toml").is_file() {
            return Err(RegistryError::ModelNotFound(shown(name)));
        }
        // A symlink may still point elsewhere: the canonical path must stay under the root.
        let root = std::fs::canonicalize(&self.opts.root).map_err(|_| RegistryError::ModelNotFound(shown(name)))?;
        let canon = std::fs::canonicalize(&dir).map_err(|_| RegistryError::ModelNotFound(shown(name)))?;
        if !canon.starts_with(&root) {
            return Err(RegistryError::OutsideRepository(shown(name)));
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
        self.load_parsed(name, None)
    }

    /// [`Registry::load`] with the config already parsed (start-up parses every config once).
    fn load_parsed(&self, name: &str, parsed: Option<Arc<ModelConfig>>) -> Result<(), RegistryError> {
        self.load_slot(name, parsed, false)
    }

    fn load_slot(&self, name: &str, parsed: Option<Arc<ModelConfig>>, at_start: bool) -> Result<(), RegistryError> {
        let dir = match self.model_dir(name) {
            Ok(d) => d,
            // A model that serves and whose directory is gone keeps serving; say so.
            Err(RegistryError::ModelNotFound(_)) if self.slot(name).is_some_and(|s| !s.serving.load().is_empty()) => {
                let msg = format!("{name}: the model directory is gone; the loaded versions keep serving");
                if let Some(slot) = self.slot(name) {
                    slot.info.lock().unwrap_or_else(|p| p.into_inner()).last_error = Some(msg.clone());
                }
                return Err(RegistryError::LoadFailed(msg));
            }
            Err(e) => return Err(e),
        };
        let slot = self.slot_or_create(name);
        let _admin = slot.admin.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut info = slot.info.lock().unwrap_or_else(|p| p.into_inner());
            info.required |= at_start;
            if slot.serving.load().is_empty() {
                info.state = Some(ModelState::Loading);
            }
        }
        let fingerprint = fingerprint(&dir);
        let result = loader::build_versions(&self.opts, &self.metrics, name, &dir, parsed);
        let mut info = slot.info.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok((cfg, versions)) => {
                let numbers: Vec<u64> = versions.keys().copied().collect();
                slot.serving.store(Arc::new(versions));
                info.state = Some(ModelState::Ready);
                info.required = true;
                info.config = Some(cfg);
                info.last_error = None;
                info.fingerprint = Some(fingerprint);
                tracing::info!(model = name, versions = ?numbers, "model ready");
                Ok(())
            }
            Err((cfg, e)) => {
                let msg = self.scrub(&e.to_string());
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

    /// Stops serving a model. Requests already holding a version finish on it.
    pub fn unload(&self, name: &str) -> Result<(), RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(shown(name)));
        }
        let slot = self.slot(name).ok_or_else(|| RegistryError::ModelNotFound(shown(name)))?;
        let _admin = slot.admin.lock().unwrap_or_else(|p| p.into_inner());
        slot.serving.store(Arc::new(Serving::new()));
        let mut info = slot.info.lock().unwrap_or_else(|p| p.into_inner());
        info.state = Some(ModelState::Unloaded);
        info.fingerprint = None;
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Stops serving every model (at shutdown, after the drain): each version's queue closes once
    /// the requests holding it are gone, and its workers end. See
    /// [`crate::batching::wait_for_worker_threads`].
    pub fn close(&self) {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        for slot in slots.values() {
            let _admin = slot.admin.lock().unwrap_or_else(|p| p.into_inner());
            slot.serving.store(Arc::new(Serving::new()));
        }
    }

    /// The versions of a model serving now, oldest first (empty while none is).
    pub fn serving_versions(&self, name: &str) -> Result<Vec<Arc<LoadedVersion>>, RegistryError> {
        let slot = self.slot(name).ok_or_else(|| RegistryError::ModelNotFound(shown(name)))?;
        let serving = slot.serving.load();
        Ok(serving.values().cloned().collect())
    }

    /// Every version of every model serving now, by model name then version.
    pub fn all_serving(&self) -> Vec<Arc<LoadedVersion>> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Arc<LoadedVersion>> =
            slots.values().flat_map(|s| s.serving.load().values().cloned().collect::<Vec<_>>()).collect();
        all.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        all
    }

    /// The version that serves a request: the one asked for, or the newest.
    pub fn resolve(&self, name: &str, version: Option<u64>) -> Result<Arc<LoadedVersion>, RegistryError> {
        let slot = self.slot(name).ok_or_else(|| RegistryError::ModelNotFound(shown(name)))?;
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
    pub fn sole_version_of_kind(&self, kind: &str) -> Option<Arc<LoadedVersion>> {
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
    pub fn serving_of_kind(&self, kind: &str) -> Vec<String> {
        self.serving_where(|v| v.kind() == kind)
    }

    /// The names of models whose newest serving version passes `pred`, sorted.
    pub fn serving_where(&self, pred: impl Fn(&LoadedVersion) -> bool) -> Vec<String> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = slots
            .values()
            .filter(|s| s.serving.load().values().next_back().is_some_and(|v| pred(v)))
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Metadata of one model.
    pub fn info(&self, name: &str) -> Result<ModelInfo, RegistryError> {
        let slot = self.slot(name).ok_or_else(|| RegistryError::ModelNotFound(shown(name)))?;
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
    ///
    /// The readiness rule: the server is ready when every model it should be serving is ready
    /// and each of its versions has a live worker. It should be serving the models that were in
    /// the repository at start-up and every model that has served since; a model added later
    /// (`POST /models/{name}/load`, the poller) whose load fails is reported in `/models` with its
    /// error but keeps no replica out of a load balancer, while the other models serve.
    pub fn not_ready(&self) -> Vec<String> {
        let slots: Vec<Arc<ModelSlot>> =
            self.slots.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        slots
            .iter()
            .filter(|s| s.info.lock().unwrap_or_else(|p| p.into_inner()).required)
            .map(|s| slot_info(s))
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
            engine: v.engine,
            file: v.file,
            compiled_for: v.engine_detail.clone(),
            max_batch_size: v.max_batch_size,
            batched: v.max_batch_size > 1,
            workers: v.batcher.live_workers(),
            queue_depth: v.batcher.queue_len(),
            load_seconds: v.load_seconds,
            loaded_at_unix: v.loaded_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        })
        .collect();
    let config = serving.values().next_back().map(|v| v.config.clone()).or_else(|| info.config.clone());
    ModelInfo {
        name: slot.name.clone(),
        kind: config.as_ref().map(|c| c.kind_name()),
        state: info.state.unwrap_or(ModelState::Loading),
        device: versions.last().map(|v| v.device.clone()),
        versions,
        last_error: info.last_error.clone(),
        config: config.map(|c| c.to_json()),
    }
}

/// Numbered subdirectories that hold a model.pt or a model.pt2, ascending.
pub(crate) fn versions_on_disk(dir: &Path) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<u64> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("model.pt").is_file() || e.path().join("model.pt2").is_file())
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
        for file in ["model.pt", "model.pt2"] {
            if let Some((len, t)) = stat(&dir.join(v.to_string()).join(file)) {
                fp.push((format!("{v}/{file}"), len, t));
            }
        }
    }
    fp
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
