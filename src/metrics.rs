//! Prometheus metrics. Every series is labelled by model and version where it concerns a model;
//! names start with `dlserve_` and carry their unit.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// All metric families of one server.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Inference requests by protocol, route or RPC, model and outcome.
    pub requests: IntCounterVec,
    /// Seconds an item waited in the queue before its batch started.
    pub queue_wait: HistogramVec,
    /// Seconds one batch spent in stacking, forward and splitting.
    pub compute: HistogramVec,
    /// Items per computed batch.
    pub batch_size: HistogramVec,
    /// Items waiting now.
    pub queue_depth: IntGaugeVec,
    /// Items by how they left the queue: computed, rejected, expired, abandoned, failed.
    pub items: IntCounterVec,
    /// Seconds the last load (read, replicas, warm-up) of a version took.
    pub load_seconds: prometheus::GaugeVec,
    /// Live worker threads of a version.
    pub workers: IntGaugeVec,
    /// Worker threads replaced after a panic.
    pub worker_restarts: IntCounterVec,
    /// libtorch intra-op threads of a version's workers, as libtorch reports them.
    pub intra_op_threads: IntGaugeVec,
}

const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let mv = &["model", "version"];
        let requests = IntCounterVec::new(
            Opts::new(
                "dlserve_requests_total",
                "Inference requests by protocol (http, grpc), endpoint (route or RPC), model and outcome",
            ),
            &["protocol", "endpoint", "model", "outcome"],
        )
        .unwrap();
        let queue_wait = HistogramVec::new(
            HistogramOpts::new("dlserve_queue_wait_seconds", "Time an item waited before its batch started")
                .buckets(LATENCY_BUCKETS.to_vec()),
            mv,
        )
        .unwrap();
        let compute = HistogramVec::new(
            HistogramOpts::new("dlserve_compute_seconds", "Time a batch spent stacking, in forward and splitting")
                .buckets(LATENCY_BUCKETS.to_vec()),
            mv,
        )
        .unwrap();
        let batch_size = HistogramVec::new(
            HistogramOpts::new("dlserve_batch_size", "Items per computed batch").buckets(BATCH_BUCKETS.to_vec()),
            mv,
        )
        .unwrap();
        let queue_depth = IntGaugeVec::new(Opts::new("dlserve_queue_depth", "Items waiting in the queue"), mv).unwrap();
        let items = IntCounterVec::new(
            Opts::new("dlserve_items_total", "Queue items by fate: computed, rejected, expired, abandoned, failed"),
            &["model", "version", "fate"],
        )
        .unwrap();
        let load_seconds = prometheus::GaugeVec::new(
            Opts::new("dlserve_model_load_seconds", "Time the last load of a version took, warm-up included"),
            mv,
        )
        .unwrap();
        let workers = IntGaugeVec::new(Opts::new("dlserve_workers", "Live worker threads"), mv).unwrap();
        let worker_restarts =
            IntCounterVec::new(Opts::new("dlserve_worker_restarts_total", "Worker threads replaced after a panic"), mv)
                .unwrap();
        let intra_op_threads = IntGaugeVec::new(
            Opts::new("dlserve_intra_op_threads", "libtorch intra-op threads of each worker, read back from libtorch"),
            mv,
        )
        .unwrap();
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queue_wait.clone()),
            Box::new(compute.clone()),
            Box::new(batch_size.clone()),
            Box::new(queue_depth.clone()),
            Box::new(items.clone()),
            Box::new(load_seconds.clone()),
            Box::new(workers.clone()),
            Box::new(worker_restarts.clone()),
            Box::new(intra_op_threads.clone()),
        ] {
            registry.register(c).unwrap();
        }
        Metrics {
            registry,
            requests,
            queue_wait,
            compute,
            batch_size,
            queue_depth,
            items,
            load_seconds,
            workers,
            worker_restarts,
            intra_op_threads,
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }

    /// Drops the series of a version that is no longer served, so unloads do not leak series.
    pub fn forget_version(&self, model: &str, version: &str) {
        let l = &[model, version];
        let _ = self.queue_depth.remove_label_values(l);
        let _ = self.workers.remove_label_values(l);
        let _ = self.intra_op_threads.remove_label_values(l);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
