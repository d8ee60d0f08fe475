//! TorchScript files (`model.pt`) through libtorch's JIT (`tch::CModule`).
//!
//! All libtorch specifics of serving a TorchScript model are here: loading a replica in eval
//! mode, channels-last weights, the setup method, stacking a batch into one tensor (pinned host
//! memory on CUDA), splitting the outputs, NaN checks, per-thread intra-op settings, and giving
//! memory back when a version closes.

use super::{
    nhwc, release_memory, split_outputs, stack_inputs, summarize, Engine, InferError, PerItem, Replica, ReplicaPrep,
};
use crate::manifest::MemoryFormat;
use crate::tensor::ItemTensor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tch::jit::IValue;
use tch::{CModule, Device, Tensor};

/// A TorchScript file held in memory, ready to load replicas on one device.
pub struct TorchScript {
    bytes: Arc<Vec<u8>>,
    device: Device,
    prep: ReplicaPrep,
}

impl TorchScript {
    /// Keeps the file's bytes (replacement replicas load from them, not from disk).
    pub fn new(bytes: Vec<u8>, device: Device, prep: ReplicaPrep) -> TorchScript {
        TorchScript { bytes: Arc::new(bytes), device, prep }
    }
}

impl Engine for TorchScript {
    fn name(&self) -> &'static str {
        "torchscript"
    }

    fn file(&self) -> &'static str {
        "model.pt"
    }

    fn replica(&self) -> Result<Box<dyn Replica>, String> {
        let module = tch::no_grad(|| load_module(&self.bytes, self.device, &self.prep))?;
        Ok(Box::new(TsReplica {
            module,
            device: self.device,
            layout: self.prep.memory_format,
            method: self.prep.method.clone(),
        }))
    }

    fn release_memory(&self) {
        release_memory();
    }
}

/// One loaded TorchScript module on its device.
pub struct TsReplica {
    module: CModule,
    device: Device,
    layout: MemoryFormat,
    method: Option<String>,
}

impl Replica for TsReplica {
    fn enter_thread(&mut self, intra_op_threads: Option<usize>) -> usize {
        apply_intra_op_threads(intra_op_threads).max(1) as usize
    }

    fn forward(&mut self, batch: &[&[ItemTensor]]) -> Result<PerItem, InferError> {
        // Grad mode is per thread; inference never records a graph.
        tch::no_grad(|| run_items(&self.module, self.method.as_deref(), self.device, self.layout, batch))
    }
}

/// Loads one module on `device`, in eval mode, lays out its weights and runs its setup method as
/// `prep` says (call it under a no-grad guard). The error is one line for the caller, keeping
/// what libtorch says was raised.
pub fn load_module(bytes: &[u8], device: Device, prep: &ReplicaPrep) -> Result<CModule, String> {
    let summary = |e: tch::TchError| summarize(&e.to_string());
    if bytes.is_empty() {
        return Err("not a loadable TorchScript module: the file is empty".into());
    }
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

/// The process-wide intra-op thread count, for workers whose config sets none (0 = not set).
static DEFAULT_INTRA_OP_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets libtorch's intra-op threads for this thread and as the default of every worker whose
/// config has no `batching.intra_op_threads`.
pub fn set_default_intra_op_threads(n: usize) {
    DEFAULT_INTRA_OP_THREADS.store(n, Ordering::SeqCst);
    tch::set_num_threads(n.max(1) as i32);
}

/// Sets libtorch's inter-op threads (TorchScript fork/wait only). libtorch allows this once per
/// process, before any parallel work; later calls (a second server in one test process) keep the
/// first value.
pub fn set_inter_op_threads(n: usize) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tch::set_num_interop_threads(n.max(1) as i32));
}

/// Gives the calling worker thread its own intra-op thread count and returns what libtorch reads
/// back. The count is per thread (the OpenMP ICV), but libtorch initialises a thread's count
/// lazily from the last value any thread set, on the thread's first query: so query first, then
/// set, and do it on every worker (also those using the default), since another model's worker
/// may have set a different value meanwhile.
pub(super) fn apply_intra_op_threads(wanted: Option<usize>) -> i32 {
    let _ = tch::get_num_threads();
    let n = wanted.unwrap_or_else(|| DEFAULT_INTRA_OP_THREADS.load(Ordering::SeqCst));
    if n > 0 {
        tch::set_num_threads(n as i32);
    }
    tch::get_num_threads()
}

/// Stacks items that share one shape key, runs forward once and splits the outputs per item.
/// Uses only fallible tch calls, so libtorch errors become values. Also used by the warm-up and
/// the in-process benchmark, so they measure exactly what the workers do.
pub fn forward_items(
    module: &CModule,
    device: Device,
    layout: MemoryFormat,
    batch: &[&[ItemTensor]],
) -> Result<PerItem, InferError> {
    run_items(module, None, device, layout, batch)
}

/// [`forward_items`] through `method` (`forward` when `None`).
pub fn run_items(
    module: &CModule,
    method: Option<&str>,
    device: Device,
    layout: MemoryFormat,
    batch: &[&[ItemTensor]],
) -> Result<PerItem, InferError> {
    let n = batch.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let te = |e: tch::TchError| InferError::Forward(summarize(&e.to_string()));
    let inputs: Vec<IValue> = stack_inputs(batch, device, layout)?.into_iter().map(IValue::Tensor).collect();
    let out = match method {
        None => module.forward_is(&inputs),
        Some(name) => module.method_is(name, &inputs),
    }
    .map_err(te)?;
    split_outputs(flatten_outputs(out)?, n)
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

    fn shipped(model: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(model).join("1/model.pt"))
            .unwrap()
    }

    #[test]
    fn channels_last_relays_the_weights_and_keeps_the_outputs() {
        let _g = tch::no_grad_guard();
        let bytes = shipped("digits-cnn");
        let plain = ReplicaPrep { memory_format: MemoryFormat::Contiguous, setup_method: None, method: None };
        let nhwc = ReplicaPrep { memory_format: MemoryFormat::ChannelsLast, setup_method: None, method: None };
        let a = load_module(&bytes, Device::Cpu, &plain).unwrap();
        let b = load_module(&bytes, Device::Cpu, &nhwc).unwrap();
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
