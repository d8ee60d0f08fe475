//! Model engines: what loads a model file and runs batches of items through it.
//!
//! The batching workers see only [`Engine`] (makes replicas) and [`Replica`] (runs one batch on
//! the worker's own thread). Everything libtorch-specific lives in the engine files: loading,
//! memory format, pinned copies, thread settings, giving memory back. There are two: TorchScript
//! files (`torchscript.rs`, `model.pt`) and torch.export + AOTInductor packages (`aoti.rs`,
//! `model.pt2`); [`open`] picks one per version. `fake.rs` is a deterministic engine without
//! libtorch for the worker's unit tests. Both real engines stack a batch and split its outputs
//! with the same two functions here, so they differ only in how the model is loaded and called.

pub mod aoti;
pub mod fake;
pub mod torchscript;

use crate::manifest::{MemoryFormat, ModelFormat};
use crate::tensor::{Elem, ItemTensor, OutputTensor, TensorData};
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

pub use torchscript::{set_default_intra_op_threads, set_inter_op_threads};

/// Why an item was not computed, or its result not returned. `Clone` so that one failure of a
/// batch reaches every caller in it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    /// Admission refused: the queue has no room for the request's items.
    #[error("the queue of {model} is full ({capacity} items); retry after {retry_after_s} s")]
    QueueFull {
        /// The model.
        model: String,
        /// Its queue capacity.
        capacity: usize,
        /// Suggested wait before retrying, in seconds.
        retry_after_s: u64,
    },
    /// More items in one request than the queue could ever hold.
    #[error("the request carries {items} items but the queue of {model} holds at most {capacity}")]
    TooManyItems {
        /// The model.
        model: String,
        /// Items in the request.
        items: usize,
        /// Queue capacity.
        capacity: usize,
    },
    /// The deadline passed before the result was ready.
    #[error("the request was not served within its deadline of {deadline_ms} ms")]
    DeadlineExceeded {
        /// The deadline that applied.
        deadline_ms: u64,
    },
    /// `forward` raised; the message is for logs, not clients.
    #[error("model forward failed: {0}")]
    Forward(String),
    /// The model returned NaN or infinity.
    #[error("the model produced a non-finite value (NaN or infinity) in output {output}")]
    NonFinite {
        /// Index of the output tensor.
        output: usize,
    },
    /// The output broke the contract (e.g. wrong batch dimension).
    #[error("the model output breaks its contract: {0}")]
    BadOutput(String),
    /// The worker panicked while computing this item; it has been replaced.
    #[error("the worker computing this request failed and was replaced")]
    WorkerFailed,
    /// An item's data does not match its declared shape (a bug in the caller, or a bad V2 request).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The version is shutting down or has no live worker.
    #[error("model version is not serving")]
    Unavailable,
}

/// Per-item outputs of one forward: an item whose output holds NaN or inf gets an error of its own.
pub type PerItem = Vec<Result<Vec<OutputTensor>, InferError>>;

/// What is done to a replica right after it is loaded: the config's `memory_format`, then its
/// `setup_method`.
#[derive(Debug, Clone, Default)]
pub struct ReplicaPrep {
    /// Layout of the 4-D weights.
    pub memory_format: MemoryFormat,
    /// A method called once on the replica.
    pub setup_method: Option<String>,
    /// The method every batch runs through; `forward` when `None` (an `[embedding]` queue runs
    /// the encoder method).
    pub method: Option<String>,
}

/// The batch sizes a model file accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchLimit {
    /// Any (TorchScript: shapes are not specialised).
    Any,
    /// At most this many (a `.pt2` exported with a bounded batch dimension; 1 when it is static).
    UpTo(usize),
    /// Dynamic but undeclared: the warm-up forwards find out.
    Unknown,
}

/// A model file loaded for one device: makes the replicas the workers own.
pub trait Engine: Send + Sync {
    /// The engine's name for `/models` and metadata (`torchscript`, `aoti`).
    fn name(&self) -> &'static str;
    /// The file in the version directory it serves (`model.pt`, `model.pt2`).
    fn file(&self) -> &'static str;
    /// A fresh replica on the engine's device (also used to replace one whose worker panicked).
    fn replica(&self) -> Result<Box<dyn Replica>, String>;
    /// Called once the last replica of a closed version is gone: give freed memory back.
    fn release_memory(&self) {}
    /// The batch sizes its file accepts.
    fn batch_limit(&self) -> BatchLimit {
        BatchLimit::Any
    }
    /// What the file was built for, when the engine knows (`cpu, ISA AVX2`), for `/models`.
    fn detail(&self) -> Option<String> {
        None
    }
}

/// One replica, owned by one worker thread.
pub trait Replica: Send {
    /// Called on the worker thread before its first batch: takes the thread's compute settings
    /// (`intra_op_threads`, or the server default when `None`) and returns the threads in effect.
    fn enter_thread(&mut self, intra_op_threads: Option<usize>) -> usize;
    /// Stacks items that share one shape key, runs the model once, and splits the outputs per
    /// item. Errors are values: a failing batch fails only its own items.
    fn forward(&mut self, batch: &[&[ItemTensor]]) -> Result<PerItem, InferError>;
}

/// Opens the model file of one version for `device`: `model.pt2` or `model.pt` as `format`
/// says (`auto`: the package when there is one compiled for `device`, else the TorchScript file).
/// `item` is the kind's warm-up item, which a package's inputs are checked against before any of
/// its code is loaded. The error is one line for the caller.
pub fn open(
    dir: &Path,
    device: Device,
    format: ModelFormat,
    prep: ReplicaPrep,
    item: &[ItemTensor],
) -> Result<Arc<dyn Engine>, String> {
    let (pt, pt2) = (dir.join("model.pt"), dir.join("model.pt2"));
    let torchscript = || -> Result<Arc<dyn Engine>, String> {
        let bytes = std::fs::read(&pt).map_err(|e| format!("model.pt: cannot read: {}", e.kind()))?;
        Ok(Arc::new(torchscript::TorchScript::new(bytes, device, prep.clone())))
    };
    let package = || -> Result<Arc<dyn Engine>, String> {
        Ok(Arc::new(aoti::Aoti::open(&pt2, device, &prep, item).map_err(|e| format!("model.pt2: {e}"))?))
    };
    match format {
        ModelFormat::Torchscript => torchscript(),
        ModelFormat::Pt2 => package(),
        ModelFormat::Auto => match (pt2.exists(), pt.exists()) {
            (false, _) => torchscript(),
            (true, false) => package(),
            (true, true) => {
                let for_device = aoti::metadata(&pt2, prep.method.as_deref().unwrap_or("model"))
                    .map(|m| m.get("AOTI_DEVICE_KEY").map(String::as_str).unwrap_or("cpu") == device_key(device))
                    .unwrap_or(false);
                if for_device {
                    package()
                } else {
                    tracing::info!(dir = %dir.display(), "model.pt2 is not compiled for {}: serving model.pt", device_key(device));
                    torchscript()
                }
            }
        },
    }
}

/// AOTInductor's name for a device type.
fn device_key(device: Device) -> &'static str {
    if device.is_cuda() {
        "cuda"
    } else {
        "cpu"
    }
}

/// Stacks input `i` of every item of a batch (all share one shape key) into one tensor per input,
/// `[n, item shape...]`, laid out as `layout` says, on `device`. Uses only fallible tch calls.
pub fn stack_inputs(batch: &[&[ItemTensor]], device: Device, layout: MemoryFormat) -> Result<Vec<Tensor>, InferError> {
    let n = batch.len();
    let te = |e: tch::TchError| InferError::Forward(summarize(&e.to_string()));
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
        inputs.push(t);
    }
    Ok(inputs)
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

/// Splits a forward's output tensors (each `[n, ...]`) into per-item float outputs on the host. An
/// output without the batch dimension breaks the contract; an item whose values are not all
/// finite gets an error of its own.
pub fn split_outputs(tensors: Vec<Tensor>, n: usize) -> Result<PerItem, InferError> {
    let te = |e: tch::TchError| InferError::Forward(summarize(&e.to_string()));
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

/// `t` (4-D, NCHW sizes) with NHWC strides: permuted to NHWC, copied, and the view permuted back.
/// With one channel the permuted view is already contiguous, and `t` comes back as it was.
fn nhwc(t: &Tensor) -> Result<Tensor, tch::TchError> {
    t.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])
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

/// The gist of an engine's (libtorch's) message: the line naming what was raised when there is
/// one ("RuntimeError: mat1 and mat2 shapes cannot be multiplied ..."), else the first non-empty
/// line; cut at a word boundary past 600 characters. C++ backtraces and TorchScript tracebacks
/// stay in the full message, which is logged.
pub fn summarize(msg: &str) -> String {
    let s = msg.strip_prefix("Internal torch error: ").unwrap_or(msg);
    let raised = s.lines().map(str::trim).rev().find(|l| {
        l.split_once(": ").is_some_and(|(ty, _)| {
            (ty.ends_with("Error") || ty.ends_with("Exception"))
                && ty.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        })
    });
    let line = raised.unwrap_or_else(|| s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or(""));
    const MAX: usize = 600;
    if line.chars().count() <= MAX {
        return line.to_string();
    }
    let cut: String = line.chars().take(MAX).collect();
    let at = cut.rfind(' ').unwrap_or(cut.len());
    format!("{}...", &cut[..at])
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn the_summary_keeps_what_was_raised() {
        let m = "The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript:\n  \
                 File \"x.py\", line 3\n    return self.net(z)\nRuntimeError: mat1 and mat2 shapes cannot be \
                 multiplied (1x31 and 32x768)\n";
        assert_eq!(summarize(m), "RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x31 and 32x768)");
        assert_eq!(summarize("\n  open failed\nmore"), "open failed");
        let long = "word ".repeat(300);
        let s = summarize(&long);
        assert!(s.len() <= 604 && s.ends_with("word..."), "cut at a word: {s}");
    }
}
