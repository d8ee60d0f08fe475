//! Model engines: what loads a model file and runs batches of items through it.
//!
//! The batching workers see only [`Engine`] (makes replicas) and [`Replica`] (runs one batch on
//! the worker's own thread). Everything libtorch-specific lives in the engine files: loading,
//! memory format, pinned copies, thread settings, giving memory back. A second model format is one
//! more file here plus its dispatch in [`open`]; `fake.rs` is a deterministic engine without
//! libtorch for the worker's unit tests.

pub mod fake;
pub mod torchscript;

use crate::manifest::MemoryFormat;
use crate::tensor::{ItemTensor, OutputTensor};
use std::path::Path;
use std::sync::Arc;

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

/// A model file loaded for one device: makes the replicas the workers own.
pub trait Engine: Send + Sync {
    /// The engine's name for `/models` and metadata (`torchscript`).
    fn name(&self) -> &'static str;
    /// A fresh replica on the engine's device (also used to replace one whose worker panicked).
    fn replica(&self) -> Result<Box<dyn Replica>, String>;
    /// Called once the last replica of a closed version is gone: give freed memory back.
    fn release_memory(&self) {}
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

/// Opens the model file of one version for `device`: the dispatch from the file's format to its
/// engine. The error is one line for the caller.
pub fn open(dir: &Path, device: tch::Device, prep: ReplicaPrep) -> Result<Arc<dyn Engine>, String> {
    let pt = dir.join("model.pt");
    let bytes = std::fs::read(&pt).map_err(|e| format!("cannot read: {}", e.kind()))?;
    Ok(Arc::new(torchscript::TorchScript::new(bytes, device, prep)))
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
