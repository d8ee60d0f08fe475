//! Dynamic batching: one bounded queue and a pool of worker OS threads per model version,
//! generic over the engine that computes a batch.
//!
//! A request turns into items (one per image, series, row or generated sample). Each item
//! carries its own oneshot sender; workers cut batches from the queue ([`queue::QueueState`]),
//! hand them to their [`Replica`](crate::engine::Replica), and send each caller its rows.

pub mod queue;
pub mod stats;
pub mod worker;

use crate::tensor::OutputTensor;
use std::time::{Duration, Instant};

pub use crate::engine::InferError;
pub use stats::{Stats, StatsSnapshot};
pub use worker::{wait_for_worker_threads, Batcher, BatcherSpec};

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
