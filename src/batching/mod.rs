//! Dynamic batching: one bounded queue and a pool of worker OS threads per model version.
//!
//! A request turns into items (one per image, series, row or generated sample). Each item
//! carries its own oneshot sender; workers cut batches from the queue ([`queue::QueueState`]),
//! stack them into one tensor per input, run `forward` once, and send each caller its rows.

pub mod queue;
pub mod worker;

use std::time::{Duration, Instant};

pub use worker::{set_default_intra_op_threads, Batcher, BatcherSpec};

/// When a request stops waiting: its budget counts from its arrival, not from when it reaches
/// the queue, so time spent reading, parsing and decoding is part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// The instant the caller gives up.
    pub at: Instant,
    /// The whole budget, for error messages.
    pub budget: Duration,
}

impl Deadline {
    /// A deadline `budget` after `start`.
    pub fn from(start: Instant, budget: Duration) -> Deadline {
        Deadline { at: start + budget, budget }
    }
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Deadline {
        Deadline::from(Instant::now(), budget)
    }
    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
    /// The error for a missed deadline.
    pub fn exceeded(&self) -> InferError {
        InferError::DeadlineExceeded { deadline_ms: self.budget.as_millis() as u64 }
    }
}

/// Element type of an input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Elem {
    /// 32-bit float.
    F32,
    /// 64-bit integer (class labels).
    I64,
}

/// The data of one item's input tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// float32 values, row-major.
    F32(Vec<f32>),
    /// int64 values, row-major.
    I64(Vec<i64>),
}

impl TensorData {
    /// Element count.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn elem(&self) -> Elem {
        match self {
            TensorData::F32(_) => Elem::F32,
            TensorData::I64(_) => Elem::I64,
        }
    }
}

/// One input tensor of one item: the shape excludes the batch dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemTensor {
    /// Shape of this item's slice, without the batch dimension.
    pub shape: Vec<i64>,
    /// Its values.
    pub data: TensorData,
}

impl ItemTensor {
    /// A float tensor.
    pub fn f32(shape: Vec<i64>, data: Vec<f32>) -> ItemTensor {
        ItemTensor { shape, data: TensorData::F32(data) }
    }
    /// An int64 tensor.
    pub fn i64(shape: Vec<i64>, data: Vec<i64>) -> ItemTensor {
        ItemTensor { shape, data: TensorData::I64(data) }
    }
}

/// One output tensor of one item, always float32 on the host; the shape excludes the batch dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Shape of this item's slice.
    pub shape: Vec<i64>,
    /// Its values.
    pub data: Vec<f32>,
}

/// Where the time of one item went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    /// Time between admission and the start of its batch.
    pub queue: Duration,
    /// Time its batch took to stack, compute and split.
    pub compute: Duration,
    /// Items in its batch.
    pub batch_size: usize,
}

/// The result of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemOutput {
    /// One tensor per model output, in the model's order.
    pub outputs: Vec<OutputTensor>,
    /// Where the time went.
    pub timing: Timing,
}

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
