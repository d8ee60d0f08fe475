//! Worker threads and the handle that request handlers submit items through.
//!
//! Inference runs only on these OS threads, never on tokio's workers. Each thread owns its own
//! replica of the TorchScript module, takes a no-grad guard (grad mode is per thread), and loops:
//! cut a batch under the queue mutex, stack it, move it to the device once, run `forward`, move
//! the outputs back once, and answer every caller through its own oneshot channel.

use super::queue::{BatchKey, Next, Pending, QueueState};
use super::{Deadline, Elem, InferError, ItemOutput, ItemTensor, OutputTensor, TensorData, Timing};
use crate::metrics::Metrics;
use crate::registry::config::{BatchingConfig, MemoryFormat, ModelConfig};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tch::jit::IValue;
use tch::{CModule, Device, Kind, Tensor};
use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<ItemOutput, InferError>>;

/// One queued item.
struct Entry {
    inputs: Vec<ItemTensor>,
    key: BatchKey,
    at: Instant,
    deadline: Instant,
    deadline_ms: u64,
    tx: Reply,
}

impl Pending for Entry {
    fn key(&self) -> &BatchKey {
        &self.key
    }
    fn enqueued_at(&self) -> Instant {
        self.at
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
    fn abandoned(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What a batcher needs to run one model version.
#[derive(Clone)]
pub struct BatcherSpec {
    /// Model name (metrics label).
    pub model: String,
    /// Version number (metrics label).
    pub version: u64,
    /// Where the replicas live.
    pub device: Device,
    /// Queue and batch settings.
    pub batching: BatchingConfig,
    /// The TorchScript file's bytes, kept to load a fresh replica when a worker is replaced.
    pub module_bytes: Arc<Vec<u8>>,
    /// What is done to every replica after loading (replacements included).
    pub prep: ReplicaPrep,
}

/// What is done to a replica right after it is loaded: the config's `memory_format`, then its
/// `setup_method`.
#[derive(Debug, Clone, Default)]
pub struct ReplicaPrep {
    /// Layout of the 4-D weights.
    pub memory_format: MemoryFormat,
    /// A method called once on the replica.
    pub setup_method: Option<String>,
}

impl ReplicaPrep {
    /// The preparation a model's config asks for.
    pub fn of(cfg: &ModelConfig) -> ReplicaPrep {
        ReplicaPrep { memory_format: cfg.memory_format, setup_method: cfg.setup_method.clone() }
    }
}

struct Shared {
    spec: BatcherSpec,
    version_label: String,
    state: Mutex<QueueState<Entry>>,
    cv: Condvar,
    closing: AtomicBool,
    live: AtomicUsize,
    next_worker_id: AtomicUsize,
    metrics: Metrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, QueueState<Entry>> {
        // A panic never happens while this lock is held (only queue bookkeeping runs under it),
        // but recover from poisoning rather than take the whole version down.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn labels(&self) -> [&str; 2] {
        [&self.spec.model, &self.version_label]
    }
    fn count(&self, fate: &str, n: usize) {
        if n > 0 {
            self.metrics.items.with_label_values(&[&self.spec.model, &self.version_label, fate]).inc_by(n as u64);
        }
    }
}

/// The submission handle of one model version. Dropping the last handle closes the queue: the
/// workers finish what is queued and exit, freeing their replicas.
pub struct Batcher {
    shared: Arc<Shared>,
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.cv.notify_all();
        self.shared.metrics.forget_version(&self.shared.spec.model, &self.shared.version_label);
    }
}

/// Loads one replica of a module on `device`, in eval mode, lays out its weights and runs its
/// setup method as `prep` says (call it under a no-grad guard). The error is one line for the
/// caller.
pub fn load_replica(bytes: &[u8], device: Device, prep: &ReplicaPrep) -> Result<CModule, String> {
    // libtorch's messages run over many lines; a TorchScript exception starts with a generic line
    // and ends with the one that says what was raised ("builtins.RuntimeError: ...").
    let summary = |e: tch::TchError| {
        let s = e.to_string();
        let s = s.strip_prefix("Internal torch error: ").unwrap_or(&s);
        let raised = s.lines().map(str::trim).rev().find(|l| {
            l.split_once(": ").is_some_and(|(ty, _)| {
                (ty.ends_with("Error") || ty.ends_with("Exception"))
                    && ty.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            })
        });
        first_line(raised.unwrap_or(s))
    };
    let m = CModule::load_data_on_device(&mut std::io::Cursor::new(bytes), device)
        .and_then(|mut m| m.f_set_eval().map(|_| m))
        .map_err(|e| format!("not a loadable TorchScript module: {}", summary(e)))?;
    if prep.memory_format == MemoryFormat::ChannelsLast {
        to_channels_last(&m).map_err(|e| format!("memory_format channels_last failed: {}", summary(e)))?;
    }
    if let Some(name) = &prep.setup_method {
        m.method_is::<IValue>(name, &[]).map_err(|e| format!("setup_method {name:?} failed: {}", summary(e)))?;
    }
    Ok(m)
}

/// Re-lays every 4-D parameter of `m` out as channels-last, in place: the module's own tensors
/// take the new strides, so its forward runs on them. Convolutions follow their weight's layout,
/// and the layers after them follow their input's.
fn to_channels_last(m: &CModule) -> Result<(), tch::TchError> {
    for (_, mut p) in m.named_parameters()? {
        if p.dim() == 4 {
            // NCHW sizes with NHWC strides: permute to NHWC, copy, and permute the view back.
            p.set_data(&nhwc(&p)?);
        }
    }
    Ok(())
}

/// `t` (4-D, NCHW sizes) with NHWC strides: permuted to NHWC, copied, and the view permuted back.
/// With one channel the permuted view is already contiguous, and `t` comes back as it was.
fn nhwc(t: &Tensor) -> Result<Tensor, tch::TchError> {
    t.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])
}

/// The first non-empty line of a (libtorch) message, at most 300 characters: enough to say what
/// failed without a C++ backtrace.
pub(crate) fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(300).collect()
}

impl Batcher {
    /// Starts one worker thread per replica.
    pub fn start(spec: BatcherSpec, replicas: Vec<CModule>, metrics: Metrics) -> Batcher {
        let b = &spec.batching;
        let delay = Duration::from_secs_f64(b.max_queue_delay_ms / 1000.0);
        let state = QueueState::new(b.queue_capacity, b.max_batch_size, delay);
        let shared = Arc::new(Shared {
            version_label: spec.version.to_string(),
            spec,
            state: Mutex::new(state),
            cv: Condvar::new(),
            closing: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            next_worker_id: AtomicUsize::new(0),
            metrics,
        });
        for module in replicas {
            spawn_worker(shared.clone(), module);
        }
        Batcher { shared }
    }

    /// Live worker threads.
    pub fn live_workers(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Items waiting.
    pub fn queue_len(&self) -> usize {
        self.shared.lock().len()
    }

    /// Whether `n` more items would be admitted now: a cheap check before costly preprocessing,
    /// so a request that will be refused is refused before it decodes anything.
    pub fn has_room(&self, n: usize) -> Result<(), InferError> {
        let s = &self.shared;
        if s.lock().free() < n {
            s.count("rejected", n);
            return Err(InferError::QueueFull {
                model: s.spec.model.clone(),
                capacity: s.spec.batching.queue_capacity,
                retry_after_s: 1,
            });
        }
        Ok(())
    }

    /// Admits all items of one request or none, at once; never waits for room.
    pub fn submit(
        &self,
        items: Vec<Vec<ItemTensor>>,
        deadline: Deadline,
    ) -> Result<Vec<oneshot::Receiver<Result<ItemOutput, InferError>>>, InferError> {
        let s = &self.shared;
        let capacity = s.spec.batching.queue_capacity;
        if items.len() > capacity {
            s.count("rejected", items.len());
            return Err(InferError::TooManyItems { model: s.spec.model.clone(), items: items.len(), capacity });
        }
        for (i, item) in items.iter().enumerate() {
            for t in item {
                let want: i64 = t.shape.iter().product();
                if t.shape.iter().any(|d| *d < 0) || want as usize != t.data.len() {
                    return Err(InferError::InvalidInput(format!(
                        "item {i}: {} values do not fill shape {:?}",
                        t.data.len(),
                        t.shape
                    )));
                }
            }
        }
        if s.closing.load(Ordering::SeqCst) || s.live.load(Ordering::SeqCst) == 0 {
            return Err(InferError::Unavailable);
        }
        if deadline.remaining().is_zero() {
            return Err(deadline.exceeded());
        }
        let now = Instant::now();
        let deadline_at = deadline.at;
        let deadline_ms = deadline.budget.as_millis() as u64;
        let mut rxs = Vec::with_capacity(items.len());
        let entries: Vec<Entry> = items
            .into_iter()
            .map(|inputs| {
                let (tx, rx) = oneshot::channel();
                rxs.push(rx);
                let key = BatchKey(inputs.iter().map(|t| (t.data.elem() as u8, t.shape.clone())).collect());
                Entry { inputs, key, at: now, deadline: deadline_at, deadline_ms, tx }
            })
            .collect();
        let n = entries.len();
        let depth = {
            let mut st = s.lock();
            if let Err(back) = st.try_push_all(entries) {
                drop(st);
                s.count("rejected", back.len());
                return Err(InferError::QueueFull { model: s.spec.model.clone(), capacity, retry_after_s: 1 });
            }
            st.len()
        };
        s.metrics.queue_depth.with_label_values(&s.labels()).set(depth as i64);
        if n == 1 {
            s.cv.notify_one();
        } else {
            s.cv.notify_all();
        }
        Ok(rxs)
    }

    /// Submits the items and waits for all their results, up to `deadline`.
    pub async fn infer(&self, items: Vec<Vec<ItemTensor>>, deadline: Deadline) -> Result<Vec<ItemOutput>, InferError> {
        let rxs = self.submit(items, deadline)?;
        let all = futures::future::join_all(rxs);
        // Dropping the receivers on timeout marks the items abandoned, so queued ones are never computed.
        let results = tokio::time::timeout_at(deadline.at.into(), all).await.map_err(|_| deadline.exceeded())?;
        results.into_iter().map(|r| r.unwrap_or(Err(InferError::WorkerFailed))).collect()
    }
}

fn spawn_worker(shared: Arc<Shared>, module: CModule) {
    let id = shared.next_worker_id.fetch_add(1, Ordering::SeqCst);
    let live = shared.live.fetch_add(1, Ordering::SeqCst) + 1;
    shared.metrics.workers.with_label_values(&shared.labels()).set(live as i64);
    let name = format!("dlserve-{}-v{}-w{}", shared.spec.model, shared.spec.version, id);
    let sh = shared.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || worker_main(sh, module));
    if let Err(e) = spawned {
        tracing::error!(model = %shared.spec.model, error = %e, "cannot spawn worker thread");
        shared.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The process-wide intra-op thread count, for workers whose config sets none (0 = not set).
static DEFAULT_INTRA_OP_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets libtorch's intra-op threads for this thread and as the default of every worker whose
/// config has no `batching.intra_op_threads`.
pub fn set_default_intra_op_threads(n: usize) {
    DEFAULT_INTRA_OP_THREADS.store(n, Ordering::SeqCst);
    tch::set_num_threads(n.max(1) as i32);
}

/// Gives the calling worker thread its own intra-op thread count and returns what libtorch reads
/// back. The count is per thread (the OpenMP ICV), but libtorch initialises a thread's count
/// lazily from the last value any thread set, on the thread's first query: so query first, then
/// set, and do it on every worker (also those using the default), since another model's worker
/// may have set a different value meanwhile.
fn apply_intra_op_threads(wanted: Option<usize>) -> i32 {
    let _ = tch::get_num_threads();
    let n = wanted.unwrap_or_else(|| DEFAULT_INTRA_OP_THREADS.load(Ordering::SeqCst));
    if n > 0 {
        tch::set_num_threads(n as i32);
    }
    tch::get_num_threads()
}

fn worker_main(shared: Arc<Shared>, module: CModule) {
    let _no_grad = tch::no_grad_guard();
    let threads = apply_intra_op_threads(shared.spec.batching.intra_op_threads);
    shared.metrics.intra_op_threads.with_label_values(&shared.labels()).set(threads as i64);
    loop {
        let Some(batch) = next_batch(&shared) else { break };
        let outcome = catch_unwind(AssertUnwindSafe(|| run_batch(&shared, &module, batch)));
        if outcome.is_err() {
            // The callers of this batch see their senders dropped and get WorkerFailed.
            shared.metrics.worker_restarts.with_label_values(&shared.labels()).inc();
            tracing::error!(model = %shared.spec.model, version = shared.spec.version, "worker panicked; replacing it");
            match load_replica(&shared.spec.module_bytes, shared.spec.device, &shared.spec.prep) {
                Ok(fresh) => spawn_worker(shared.clone(), fresh),
                Err(e) => tracing::error!(model = %shared.spec.model, error = %e, "cannot load a replacement replica"),
            }
            break;
        }
    }
    drop(module);
    let live = shared.live.fetch_sub(1, Ordering::SeqCst) - 1;
    if !shared.closing.load(Ordering::SeqCst) {
        shared.metrics.workers.with_label_values(&shared.labels()).set(live as i64);
    }
    if live == 0 {
        // No worker is left to serve what waits: answer it rather than let it hang.
        let left = shared.lock().drain_all();
        for e in left {
            let _ = e.tx.send(Err(InferError::Unavailable));
        }
        if shared.closing.load(Ordering::SeqCst) {
            release_memory();
        }
    }
}

/// Hands freed heap pages back to the OS once a closed version's last replica is gone. glibc
/// keeps the arenas of exited worker threads; without a trim each reload left RSS a little higher
/// (seen in the soak: +8.5% over 9 reloads, almost all of it on reloads, none from traffic).
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Blocks until a batch is ready; `None` when the version is closing and nothing waits.
fn next_batch(shared: &Shared) -> Option<Vec<Entry>> {
    let mut st = shared.lock();
    let mut yielded = false;
    loop {
        // Items are waiting but fewer than a full batch: give the CPU away once before cutting.
        // A worker woken by the first submit preempts the runtime thread that made it when both
        // share a core, and would otherwise take that one item while the runtime still holds
        // more parsed requests; after one yield it takes them together. Where the worker has a
        // core to itself, the yield returns at once (one syscall per batch).
        if !yielded && !st.is_empty() && st.len() < shared.spec.batching.max_batch_size {
            yielded = true;
            drop(st);
            std::thread::yield_now();
            st = shared.lock();
        }
        let now = Instant::now();
        let (next, removed) = st.next(now);
        shared.count("abandoned", removed.abandoned);
        shared.count("expired", removed.expired.len());
        for e in removed.expired {
            let _ = e.tx.send(Err(InferError::DeadlineExceeded { deadline_ms: e.deadline_ms }));
        }
        match next {
            Next::Batch(b) => {
                shared.metrics.queue_depth.with_label_values(&shared.labels()).set(st.len() as i64);
                return Some(b);
            }
            Next::WaitUntil(t) => {
                st = shared.cv.wait_timeout(st, t.saturating_duration_since(now)).unwrap_or_else(|p| p.into_inner()).0;
            }
            Next::Idle => {
                if shared.closing.load(Ordering::SeqCst) {
                    return None;
                }
                shared.metrics.queue_depth.with_label_values(&shared.labels()).set(0);
                st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

#[cfg(feature = "fault-injection")]
/// Test hook: an item whose first value is this sentinel makes the worker panic.
pub const PANIC_SENTINEL: f32 = -7777.0;

fn run_batch(shared: &Shared, module: &CModule, batch: Vec<Entry>) {
    #[cfg(feature = "fault-injection")]
    if batch.iter().any(|e| matches!(&e.inputs[0].data, TensorData::F32(v) if v.first() == Some(&PANIC_SENTINEL))) {
        panic!("fault injection: panic sentinel in input");
    }
    let start = Instant::now();
    let n = batch.len();
    let mut refs: Vec<&[ItemTensor]> = batch.iter().map(|e| e.inputs.as_slice()).collect();
    if shared.spec.batching.fixed_batch_size {
        // Padding rows are computed and discarded: `zip` below stops at the real items.
        let first = refs[0];
        refs.resize(shared.spec.batching.max_batch_size.max(n), first);
    }
    let result = forward_items(module, shared.spec.device, shared.spec.prep.memory_format, &refs);
    let compute_time = start.elapsed();
    let labels = shared.labels();
    shared.metrics.compute.with_label_values(&labels).observe(compute_time.as_secs_f64());
    shared.metrics.batch_size.with_label_values(&labels).observe(n as f64);
    let waits = shared.metrics.queue_wait.with_label_values(&labels);
    match result {
        Ok(per_item) => {
            let replies: Vec<_> = batch
                .into_iter()
                .zip(per_item)
                .map(|(entry, outs)| {
                    let queue = start.saturating_duration_since(entry.at);
                    waits.observe(queue.as_secs_f64());
                    let timing = Timing { queue, compute: compute_time, batch_size: n };
                    (entry.tx, outs.map(|outputs| ItemOutput { outputs, timing }))
                })
                .collect();
            // Counted before the replies go out, so a client that has its answer also finds it in
            // the metrics.
            let failed = replies.iter().filter(|(_, r)| r.is_err()).count();
            shared.count("computed", n - failed);
            shared.count("failed", failed);
            for (tx, reply) in replies {
                let _ = tx.send(reply);
            }
        }
        Err(e) => {
            tracing::error!(model = %shared.spec.model, version = shared.spec.version, batch = n, error = %e, "batch failed");
            shared.count("failed", n);
            for entry in batch {
                let _ = entry.tx.send(Err(e.clone()));
            }
        }
    }
}

/// Per-item outputs of one forward: an item whose output holds NaN or inf gets an error of its own.
pub type PerItem = Vec<Result<Vec<OutputTensor>, InferError>>;

/// Stacks items that share one shape key, runs forward once and splits the outputs per item.
/// Uses only fallible tch calls, so libtorch errors become values. Also used by the warm-up and
/// the in-process benchmark, so they measure exactly what the workers do.
pub fn forward_items(
    module: &CModule,
    device: Device,
    layout: MemoryFormat,
    batch: &[&[ItemTensor]],
) -> Result<PerItem, InferError> {
    let n = batch.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let te = |e: tch::TchError| InferError::Forward(e.to_string());
    let mut inputs = Vec::with_capacity(batch[0].len());
    for (i, first) in batch[0].iter().enumerate() {
        let shape = &first.shape;
        let mut dims = Vec::with_capacity(shape.len() + 1);
        dims.push(n as i64);
        dims.extend_from_slice(shape);
        let host = match first.data.elem() {
            Elem::F32 => stack(batch, i, |d| if let TensorData::F32(v) = d { Some(v) } else { None }),
            Elem::I64 => stack(batch, i, |d| if let TensorData::I64(v) = d { Some(v) } else { None }),
        }
        .map_err(te)?;
        let mut host = host.f_view(dims.as_slice()).map_err(te)?;
        if layout == MemoryFormat::ChannelsLast && dims.len() == 4 && dims[1] > 1 {
            // An image batch in the weights' layout, so the first convolution needs no reorder
            // either. With one channel both layouts are the same bytes.
            host = nhwc(&host).map_err(te)?;
        }
        let t = match device {
            Device::Cpu => host,
            // The batch goes to pinned host memory (CUDA's caching host allocator), so the copy to
            // the device is one DMA that need not block this thread. `_pin_memory(device)` is the
            // form libtorch 2.11 does not warn about: `pin_memory(device)`, the public one in the
            // bindings, logs two deprecation warnings per call. If pinning fails, the batch goes
            // from pageable memory instead (a blocking copy; same result).
            d => match host.f_internal_pin_memory(d) {
                Ok(pinned) => pinned.f_to_device_(d, pinned.kind(), true, false).map_err(te)?,
                Err(_) => host.f_to_device_(d, host.kind(), false, false).map_err(te)?,
            },
        };
        inputs.push(IValue::Tensor(t));
    }
    let out = module.forward_is(&inputs).map_err(te)?;
    let tensors = flatten_outputs(out)?;
    let mut per_item: PerItem = (0..n).map(|_| Ok(Vec::with_capacity(tensors.len()))).collect();
    for (oi, t) in tensors.into_iter().enumerate() {
        let size = t.size();
        if size.first() != Some(&(n as i64)) {
            return Err(InferError::BadOutput(format!("output {oi} has shape {size:?}, expected batch dimension {n}")));
        }
        let host = t
            .f_to_device(Device::Cpu)
            .and_then(|t| t.f_to_kind(Kind::Float))
            .and_then(|t| t.f_contiguous())
            .map_err(te)?;
        let numel: usize = size.iter().product::<i64>() as usize;
        let mut data = vec![0f32; numel];
        host.f_copy_data(&mut data, numel).map_err(te)?;
        let per = numel / n;
        let item_shape = size[1..].to_vec();
        for (j, slot) in per_item.iter_mut().enumerate() {
            let chunk = &data[j * per..(j + 1) * per];
            if let Ok(v) = slot {
                if chunk.iter().all(|x| x.is_finite()) {
                    v.push(OutputTensor { shape: item_shape.clone(), data: chunk.to_vec() });
                } else {
                    *slot = Err(InferError::NonFinite { output: oi });
                }
            }
        }
    }
    Ok(per_item)
}

/// Concatenates input `i` of every item into one host tensor (items of a batch share its dtype).
fn stack<T: tch::kind::Element + Copy>(
    batch: &[&[ItemTensor]],
    i: usize,
    pick: impl Fn(&TensorData) -> Option<&Vec<T>>,
) -> Result<Tensor, tch::TchError> {
    let mut buf = Vec::with_capacity(batch.len() * batch[0][i].data.len());
    for item in batch {
        buf.extend_from_slice(pick(&item[i].data).map(Vec::as_slice).unwrap_or_default());
    }
    Tensor::f_from_slice(&buf)
}

/// A forward may return a tensor, or a tuple/list of tensors; anything else breaks the contract.
fn flatten_outputs(v: IValue) -> Result<Vec<Tensor>, InferError> {
    match v {
        IValue::Tensor(t) => Ok(vec![t]),
        IValue::TensorList(ts) => Ok(ts),
        IValue::Tuple(vs) | IValue::GenericList(vs) => vs
            .into_iter()
            .map(|v| match v {
                IValue::Tensor(t) => Ok(t),
                _ => Err(InferError::BadOutput("forward returned a tuple holding a non-tensor".into())),
            })
            .collect(),
        _ => Err(InferError::BadOutput("forward returned something other than tensors".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batching::ItemTensor;

    fn shipped(model: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(model).join("1/model.pt"))
            .unwrap()
    }

    #[test]
    fn channels_last_relays_the_weights_and_keeps_the_outputs() {
        let _g = tch::no_grad_guard();
        let bytes = shipped("digits-cnn");
        let plain = ReplicaPrep { memory_format: MemoryFormat::Contiguous, setup_method: None };
        let nhwc = ReplicaPrep { memory_format: MemoryFormat::ChannelsLast, setup_method: None };
        let a = load_replica(&bytes, Device::Cpu, &plain).unwrap();
        let b = load_replica(&bytes, Device::Cpu, &nhwc).unwrap();
        // Every 4-D weight with more than one input channel now has NHWC strides (channel
        // stride 1); with one channel both layouts are the same bytes.
        let mut relaid = 0;
        for ((name, pa), (_, pb)) in a.named_parameters().unwrap().iter().zip(b.named_parameters().unwrap().iter()) {
            let s = pa.size();
            if s.len() == 4 && s[1] > 1 {
                relaid += 1;
                assert_eq!(pb.stride(), [s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]], "{name}");
                assert_eq!(
                    pa.stride(),
                    [s[1] * s[2] * s[3], s[2] * s[3], s[3], 1],
                    "{name}: the plain replica is untouched"
                );
            }
        }
        assert_eq!(relaid, 2, "digits-cnn has two convolutions after the first");
        // Same logits up to float rounding, for a batch of distinct images.
        let items: Vec<Vec<ItemTensor>> = (0..5)
            .map(|k| {
                vec![ItemTensor::f32(
                    vec![1, 28, 28],
                    (0..784).map(|i| ((i * (k + 3)) % 17) as f32 / 8.0 - 1.0).collect(),
                )]
            })
            .collect();
        let refs: Vec<&[ItemTensor]> = items.iter().map(|i| i.as_slice()).collect();
        let oa = forward_items(&a, Device::Cpu, MemoryFormat::Contiguous, &refs).unwrap();
        let ob = forward_items(&b, Device::Cpu, MemoryFormat::ChannelsLast, &refs).unwrap();
        for (x, y) in oa.iter().zip(&ob) {
            let (x, y) = (&x.as_ref().unwrap()[0].data, &y.as_ref().unwrap()[0].data);
            assert_eq!(x.len(), 10);
            let worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "logits differ by {worst}");
        }
    }
}
