//! Triton's model configuration and statistics extensions, shared by REST (`/v2/models/{m}/config`,
//! `/v2/models/{m}/stats`) and gRPC (`ModelConfig`, `ModelStatistics`): tools written for Triton
//! (perf_analyzer, model analyzer, `tritonclient`'s `get_model_config`) read these to learn the
//! batch limit and the tensors, and to follow queue and compute time.
//!
//! The configuration is what dlserve runs, in Triton's JSON field names: dims leave out the batch
//! dimension (as Triton's do when `max_batch_size` > 0), `instance_group` counts the version's
//! worker replicas, `dynamic_batching` gives the queue delay. The statistics come from the
//! version's batcher ([`crate::batching::Stats`]); an item counts as one Triton request, and
//! stacking and splitting are inside `compute_infer` (`compute_input` and `compute_output` are 0).

use crate::batching::stats::Duration64;
use crate::kinds::TensorSpec;
use crate::registry::LoadedVersion;
use serde::Serialize;
use utoipa::ToSchema;

/// One tensor of a model configuration.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ConfigTensor {
    /// Tensor name.
    pub name: String,
    /// `TYPE_FP32` or `TYPE_INT64`.
    pub data_type: String,
    /// Dimensions after the batch dimension; -1 marks a variable one.
    pub dims: Vec<i64>,
}

/// Replicas of the model and where they run.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct InstanceGroup {
    /// The model's name.
    pub name: String,
    /// `KIND_CPU` or `KIND_GPU`.
    pub kind: &'static str,
    /// Worker replicas.
    pub count: u32,
    /// The GPU index, for `KIND_GPU`.
    pub gpus: Vec<i32>,
}

/// The dynamic batcher's settings.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct DynamicBatching {
    /// Batch sizes the batcher prefers: none, it takes what has arrived up to `max_batch_size`.
    pub preferred_batch_size: Vec<i32>,
    /// Longest time the oldest item waits for a batch to fill.
    pub max_queue_delay_microseconds: u64,
}

/// A model configuration, in Triton's field names.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ModelConfigJson {
    /// Model name.
    pub name: String,
    /// `pytorch_torchscript` or `pytorch_aoti`.
    pub platform: &'static str,
    /// Always `pytorch`.
    pub backend: &'static str,
    /// The largest batch the version computes.
    pub max_batch_size: u32,
    /// Inputs in forward's argument order.
    pub input: Vec<ConfigTensor>,
    /// Outputs in forward's return order.
    pub output: Vec<ConfigTensor>,
    /// Replicas.
    pub instance_group: Vec<InstanceGroup>,
    /// Batcher settings.
    pub dynamic_batching: DynamicBatching,
}

/// The V2 platform name of a version's engine.
pub fn platform(v: &LoadedVersion) -> &'static str {
    if v.engine == "aoti" {
        "pytorch_aoti"
    } else {
        "pytorch_torchscript"
    }
}

fn config_tensor(t: &TensorSpec) -> ConfigTensor {
    ConfigTensor { name: t.name.clone(), data_type: format!("TYPE_{}", t.datatype), dims: t.shape[1..].to_vec() }
}

/// The configuration a version runs with.
pub fn model_config(v: &LoadedVersion) -> ModelConfigJson {
    let b = v.batcher.batching();
    let (kind, gpus) = match v.device {
        tch::Device::Cuda(i) => ("KIND_GPU", vec![i as i32]),
        _ => ("KIND_CPU", vec![]),
    };
    ModelConfigJson {
        name: v.name.clone(),
        platform: platform(v),
        backend: "pytorch",
        max_batch_size: v.max_batch_size as u32,
        input: v.config.kind.inputs().iter().map(config_tensor).collect(),
        output: v.config.kind.outputs(&v.labels).iter().map(config_tensor).collect(),
        instance_group: vec![InstanceGroup { name: v.name.clone(), kind, count: b.instances as u32, gpus }],
        dynamic_batching: DynamicBatching {
            preferred_batch_size: vec![],
            max_queue_delay_microseconds: (b.max_queue_delay_ms * 1000.0).round() as u64,
        },
    }
}

/// A count and the total nanoseconds of what it counts.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Default)]
pub struct StatDuration {
    /// How many.
    pub count: u64,
    /// Total nanoseconds.
    pub ns: u64,
}

impl From<Duration64> for StatDuration {
    fn from(d: Duration64) -> Self {
        StatDuration { count: d.count, ns: d.ns }
    }
}

/// Cumulative per-item figures.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Default)]
pub struct InferStats {
    /// Items answered with outputs: time from admission to answer.
    pub success: StatDuration,
    /// Items whose forward failed.
    pub fail: StatDuration,
    /// Time waiting in the queue.
    pub queue: StatDuration,
    /// Always 0: stacking is part of `compute_infer`.
    pub compute_input: StatDuration,
    /// The batch's stacking, forward and splitting, per computed item.
    pub compute_infer: StatDuration,
    /// Always 0: splitting is part of `compute_infer`.
    pub compute_output: StatDuration,
    /// Always 0: there is no response cache.
    pub cache_hit: StatDuration,
    /// Always 0: there is no response cache.
    pub cache_miss: StatDuration,
}

/// Figures of the batches of one size.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct BatchStats {
    /// Items per batch.
    pub batch_size: u64,
    /// Always 0 (inside `compute_infer`).
    pub compute_input: StatDuration,
    /// Batches of this size and their compute time.
    pub compute_infer: StatDuration,
    /// Always 0 (inside `compute_infer`).
    pub compute_output: StatDuration,
}

/// The statistics of one version.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ModelStats {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Milliseconds since the Unix epoch of the last batch; 0 when none ran.
    pub last_inference: u64,
    /// Items computed.
    pub inference_count: u64,
    /// Batches computed.
    pub execution_count: u64,
    /// Per-item figures.
    pub inference_stats: InferStats,
    /// Per-batch-size figures.
    pub batch_stats: Vec<BatchStats>,
}

/// The statistics response: one entry per version.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct StatsResponse {
    /// One entry per serving version.
    pub model_stats: Vec<ModelStats>,
}

/// The statistics of a version so far.
pub fn model_stats(v: &LoadedVersion) -> ModelStats {
    let s = v.batcher.stats();
    ModelStats {
        name: v.name.clone(),
        version: v.version.to_string(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: InferStats {
            success: s.success.into(),
            fail: s.fail.into(),
            queue: s.queue.into(),
            compute_infer: s.compute.into(),
            compute_input: StatDuration { count: s.compute.count, ns: 0 },
            compute_output: StatDuration { count: s.compute.count, ns: 0 },
            ..InferStats::default()
        },
        batch_stats: s
            .batches
            .iter()
            .map(|(size, d)| BatchStats {
                batch_size: *size as u64,
                compute_input: StatDuration { count: d.count, ns: 0 },
                compute_infer: (*d).into(),
                compute_output: StatDuration { count: d.count, ns: 0 },
            })
            .collect(),
    }
}
