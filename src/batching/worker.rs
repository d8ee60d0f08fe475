//! Worker threads and the handle that request handlers submit items through.
//!
//! Inference runs only on these OS threads, never on tokio's workers. Each thread owns its own
//! [`Replica`] and loops: cut a batch under the queue mutex, hand it to the replica, and answer
//! every caller through its own oneshot channel. A panic in a forward is caught; the batch's
//! callers get `WorkerFailed` and the engine makes a fresh replica for a fresh thread.

use super::queue::{BatchKey, Next, Pending, QueueState};
use super::{Deadline, InferError, ItemOutput, Timing};
use crate::engine::{Engine, Replica};
use crate::manifest::BatchingConfig;
use crate::metrics::Metrics;
use crate::tensor::ItemTensor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
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
    /// The traced request it belongs to, when traces are on and the request was sampled.
    trace: Option<crate::traces::Traced>,
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
    /// Queue and batch settings (already for the version's device).
    pub batching: BatchingConfig,
}

struct Shared {
    spec: BatcherSpec,
    engine: Arc<dyn Engine>,
    version_label: String,
    state: Mutex<QueueState<Entry>>,
    cv: Condvar,
    closing: AtomicBool,
    live: AtomicUsize,
    next_worker_id: AtomicUsize,
    metrics: Metrics,
    stats: super::Stats,
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

impl Batcher {
    /// Starts one worker thread per replica; `engine` makes replacements.
    pub fn start(
        spec: BatcherSpec,
        engine: Arc<dyn Engine>,
        replicas: Vec<Box<dyn Replica>>,
        metrics: Metrics,
    ) -> Batcher {
        let b = &spec.batching;
        let delay = Duration::from_secs_f64(b.max_queue_delay_ms / 1000.0);
        let state = QueueState::new(b.queue_capacity, b.max_batch_size, delay);
        let shared = Arc::new(Shared {
            version_label: spec.version.to_string(),
            spec,
            engine,
            state: Mutex::new(state),
            cv: Condvar::new(),
            closing: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            next_worker_id: AtomicUsize::new(0),
            metrics,
            stats: super::Stats::default(),
        });
        for replica in replicas {
            spawn_worker(shared.clone(), replica);
        }
        Batcher { shared }
    }

    /// Inference statistics since the version was loaded.
    pub fn stats(&self) -> super::StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// The queue and batch settings the version runs with.
    pub fn batching(&self) -> &BatchingConfig {
        &self.shared.spec.batching
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
        let trace = crate::traces::current();
        let deadline_at = deadline.at;
        let deadline_ms = deadline.budget.as_millis() as u64;
        let mut rxs = Vec::with_capacity(items.len());
        let entries: Vec<Entry> = items
            .into_iter()
            .map(|inputs| {
                let (tx, rx) = oneshot::channel();
                rxs.push(rx);
                let key = BatchKey(inputs.iter().map(|t| (t.data.elem() as u8, t.shape.clone())).collect());
                Entry { inputs, key, at: now, deadline: deadline_at, deadline_ms, tx, trace: trace.clone() }
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

/// Worker threads alive in the process, with a condvar signalled as each one ends (after its
/// replica, and with the last worker of a version its engine, have been dropped).
static THREADS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

fn thread_count(delta: isize) {
    let mut n = THREADS.0.lock().unwrap_or_else(|p| p.into_inner());
    *n = n.saturating_add_signed(delta);
    THREADS.1.notify_all();
}

/// Waits up to `within` for every worker thread to end (after the registry closed the queues, at
/// shutdown), so that what their engines clean up on drop (unpacked `.pt2` packages and their
/// copies in the temporary directory) is gone before the process exits. The threads still
/// running when the time is up.
pub fn wait_for_worker_threads(within: Duration) -> usize {
    let guard = THREADS.0.lock().unwrap_or_else(|p| p.into_inner());
    let (n, _) = THREADS.1.wait_timeout_while(guard, within, |n| *n > 0).unwrap_or_else(|p| p.into_inner());
    *n
}

fn spawn_worker(shared: Arc<Shared>, replica: Box<dyn Replica>) {
    let id = shared.next_worker_id.fetch_add(1, Ordering::SeqCst);
    let live = shared.live.fetch_add(1, Ordering::SeqCst) + 1;
    shared.metrics.workers.with_label_values(&shared.labels()).set(live as i64);
    let name = format!("dlserve-{}-v{}-w{}", shared.spec.model, shared.spec.version, id);
    let sh = shared.clone();
    thread_count(1);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        worker_main(sh, replica);
        thread_count(-1);
    });
    if let Err(e) = spawned {
        tracing::error!(model = %shared.spec.model, error = %e, "cannot spawn worker thread");
        shared.live.fetch_sub(1, Ordering::SeqCst);
        thread_count(-1);
    }
}

fn worker_main(shared: Arc<Shared>, mut replica: Box<dyn Replica>) {
    let threads = replica.enter_thread(shared.spec.batching.intra_op_threads);
    shared.metrics.intra_op_threads.with_label_values(&shared.labels()).set(threads as i64);
    loop {
        let Some(batch) = next_batch(&shared) else { break };
        let outcome = catch_unwind(AssertUnwindSafe(|| run_batch(&shared, replica.as_mut(), batch)));
        if outcome.is_err() {
            // The callers of this batch see their senders dropped and get WorkerFailed.
            shared.metrics.worker_restarts.with_label_values(&shared.labels()).inc();
            tracing::error!(model = %shared.spec.model, version = shared.spec.version, "worker panicked; replacing it");
            match shared.engine.replica() {
                Ok(fresh) => spawn_worker(shared.clone(), fresh),
                Err(e) => tracing::error!(model = %shared.spec.model, error = %e, "cannot load a replacement replica"),
            }
            break;
        }
    }
    drop(replica);
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
            shared.engine.release_memory();
        }
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

fn run_batch(shared: &Shared, replica: &mut dyn Replica, batch: Vec<Entry>) {
    #[cfg(feature = "fault-injection")]
    if batch
        .iter()
        .any(|e| matches!(&e.inputs[0].data, crate::tensor::TensorData::F32(v) if v.first() == Some(&PANIC_SENTINEL)))
    {
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
    let result = replica.forward(&refs);
    let compute_time = start.elapsed();
    let labels = shared.labels();
    shared.metrics.compute.with_label_values(&labels).observe(compute_time.as_secs_f64());
    shared.metrics.batch_size.with_label_values(&labels).observe(n as f64);
    let waits = shared.metrics.queue_wait.with_label_values(&labels);
    let waits_of: Vec<Duration> = batch.iter().map(|e| start.saturating_duration_since(e.at)).collect();
    if batch.iter().any(|e| e.trace.is_some()) {
        trace_batch(shared, &batch, start, compute_time, result.is_err());
    }
    match result {
        Ok(per_item) => {
            let replies: Vec<_> = batch
                .into_iter()
                .zip(per_item)
                .zip(&waits_of)
                .map(|((entry, outs), &queue)| {
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
            shared.stats.record_batch(n, failed, compute_time, &waits_of);
            for (tx, reply) in replies {
                let _ = tx.send(reply);
            }
        }
        Err(e) => {
            tracing::error!(model = %shared.spec.model, version = shared.spec.version, batch = n, error = %e, "batch failed");
            shared.count("failed", n);
            shared.stats.record_batch(n, n, compute_time, &waits_of);
            for entry in batch {
                let _ = entry.tx.send(Err(e.clone()));
            }
        }
    }
}

/// The spans of one batch: `dlserve.batch` (its own trace, linked to every traced request in it),
/// and per traced item `dlserve.queue` and `dlserve.compute` under the item's request span.
fn trace_batch(shared: &Shared, batch: &[Entry], start: Instant, compute: Duration, failed: bool) {
    use crate::traces::{random_span_id, random_trace_id, wall, Attr, SpanCtx, SpanRecord};
    let (begin, end) = (wall(start), wall(start) + compute);
    let attrs = || {
        vec![
            ("dlserve.model", Attr::Str(shared.spec.model.clone())),
            ("dlserve.model.version", Attr::Int(shared.spec.version as i64)),
            ("dlserve.batch.size", Attr::Int(batch.len() as i64)),
        ]
    };
    let traced: Vec<&crate::traces::Traced> = batch.iter().filter_map(|e| e.trace.as_ref()).collect();
    let batch_ctx = SpanCtx { trace_id: random_trace_id(), span_id: random_span_id() };
    let tracer = &traced[0].tracer;
    tracer.emit(SpanRecord {
        ctx: batch_ctx,
        parent: None,
        name: "dlserve.batch".into(),
        server: false,
        start: begin,
        end,
        attrs: attrs(),
        links: traced.iter().map(|t| t.ctx).collect(),
        error: failed,
    });
    for e in batch {
        let Some(t) = &e.trace else { continue };
        let child = |name: &str, s, f, error| SpanRecord {
            ctx: SpanCtx { trace_id: t.ctx.trace_id, span_id: random_span_id() },
            parent: Some(t.ctx.span_id),
            name: name.into(),
            server: false,
            start: s,
            end: f,
            attrs: attrs(),
            links: vec![batch_ctx],
            error,
        };
        t.tracer.emit(child("dlserve.queue", wall(e.at), begin, false));
        t.tracer.emit(child("dlserve.compute", begin, end, failed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;

    fn start(engine: &Arc<FakeEngine>, max_batch: usize, instances: usize) -> Batcher {
        let batching = BatchingConfig {
            max_batch_size: max_batch,
            max_queue_delay_ms: 0.0,
            queue_capacity: 64,
            instances,
            ..BatchingConfig::default()
        };
        let spec = BatcherSpec { model: "fake".into(), version: 1, batching };
        let replicas = (0..instances).map(|_| engine.replica().unwrap()).collect();
        Batcher::start(spec, engine.clone(), replicas, Metrics::new())
    }

    fn item(v: f32) -> Vec<ItemTensor> {
        vec![ItemTensor::f32(vec![2], vec![v, v])]
    }

    fn deadline() -> Deadline {
        Deadline::after(Duration::from_secs(5))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn items_that_wait_while_the_worker_is_busy_share_one_batch() {
        let engine = Arc::new(FakeEngine::default());
        let b = Arc::new(start(&engine, 8, 1));
        let busy = b.submit(vec![item(FakeEngine::SLEEP_MS_MIN + 150.0)], deadline()).unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let many = b.infer((0..5).map(|i| item(i as f32)).collect(), deadline()).await.unwrap();
        for (i, o) in many.iter().enumerate() {
            assert_eq!(o.outputs[0].data, vec![i as f32 * 2.0 + 1.0; 2], "each item gets its own rows");
            assert_eq!(o.timing.batch_size, 5);
        }
        assert!(busy.into_iter().next().unwrap().await.unwrap().is_ok());
        assert_eq!(*engine.batches.lock().unwrap(), vec![1, 5]);
        // Never more than max_batch_size per forward.
        let big = b.infer((0..20).map(|i| item(i as f32)).collect(), deadline()).await.unwrap();
        assert_eq!(big.len(), 20);
        assert!(engine.batches.lock().unwrap()[2..].iter().all(|n| *n <= 8));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_batch_fails_alone_and_its_worker_is_replaced() {
        let engine = Arc::new(FakeEngine::default());
        let b = start(&engine, 4, 1);
        let metrics = b.shared.metrics.clone();
        let e = b.infer(vec![item(FakeEngine::PANIC)], deadline()).await.unwrap_err();
        assert_eq!(e, InferError::WorkerFailed);
        let ok = b.infer(vec![item(3.0)], deadline()).await.unwrap();
        assert_eq!(ok[0].outputs[0].data, vec![7.0, 7.0]);
        assert_eq!(engine.replicas.load(Ordering::SeqCst), 2, "a fresh replica replaced the panicked one");
        assert_eq!(b.live_workers(), 1);
        assert_eq!(metrics.worker_restarts.with_label_values(&["fake", "1"]).get(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nan_output_fails_only_its_item_and_a_failed_forward_fails_its_batch() {
        let engine = Arc::new(FakeEngine::default());
        let b = Arc::new(start(&engine, 8, 1));
        let busy = b.submit(vec![item(FakeEngine::SLEEP_MS_MIN + 100.0)], deadline()).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let rx = b.submit(vec![item(1.0), item(FakeEngine::NAN), item(2.0)], deadline()).unwrap();
        let mut got = Vec::new();
        for r in rx {
            got.push(r.await.unwrap());
        }
        assert!(got[0].is_ok() && got[2].is_ok());
        assert_eq!(got[1], Err(InferError::NonFinite { output: 0 }));
        drop(busy);
        let e = b.infer(vec![item(FakeEngine::FAIL)], deadline()).await.unwrap_err();
        assert!(matches!(e, InferError::Forward(ref m) if m.contains("fail sentinel")), "{e:?}");
        assert_eq!(engine.replicas.load(Ordering::SeqCst), 1, "an error is a value, not a panic");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_item_past_its_deadline_is_answered_and_never_computed() {
        let engine = Arc::new(FakeEngine::default());
        let b = Arc::new(start(&engine, 8, 1));
        let busy = b.submit(vec![item(FakeEngine::SLEEP_MS_MIN + 200.0)], deadline()).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let short = Deadline::after(Duration::from_millis(50));
        let e = b.infer(vec![item(5.0)], short).await.unwrap_err();
        assert_eq!(e, InferError::DeadlineExceeded { deadline_ms: 50 });
        assert!(busy.into_iter().next().unwrap().await.unwrap().is_ok());
        b.infer(vec![item(1.0)], deadline()).await.unwrap();
        assert_eq!(*engine.batches.lock().unwrap(), vec![1, 1], "the expired item was not computed");
        // A deadline already past is refused before it is queued.
        let gone = Deadline::from(Instant::now() - Duration::from_millis(5), Duration::from_millis(1));
        assert!(matches!(b.submit(vec![item(1.0)], gone), Err(InferError::DeadlineExceeded { .. })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_a_version_answers_what_waits_and_releases_memory() {
        let engine = Arc::new(FakeEngine::default());
        let b = start(&engine, 8, 2);
        b.infer(vec![item(1.0)], deadline()).await.unwrap();
        drop(b);
        for _ in 0..100 {
            if engine.released.load(Ordering::SeqCst) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the last worker of a closed version releases memory once");
    }
}
