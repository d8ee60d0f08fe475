//! A deterministic engine without libtorch, for unit tests of the queue and the workers.
//!
//! Every item's single output is its first input's values times two plus one. Sentinel first
//! values change what a forward does, so a test can make one batch misbehave:
//! [`FakeEngine::PANIC`] panics, [`FakeEngine::NAN`] returns NaN for that item,
//! [`FakeEngine::FAIL`] fails the whole batch, and a value in `SLEEP_MS_MIN..` sleeps that many
//! milliseconds above `SLEEP_MS_MIN` before answering.

use super::{Engine, InferError, PerItem, Replica};
use crate::tensor::{ItemTensor, OutputTensor, TensorData};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The fake engine; it records the size of every batch it ran and how many replicas it made.
#[derive(Default)]
pub struct FakeEngine {
    /// Batch sizes in the order they ran.
    pub batches: Arc<Mutex<Vec<usize>>>,
    /// Replicas made so far.
    pub replicas: AtomicUsize,
    /// Whether [`Engine::release_memory`] was called.
    pub released: AtomicUsize,
}

impl FakeEngine {
    /// A first value that makes the forward panic.
    pub const PANIC: f32 = -1001.0;
    /// A first value whose item gets a NaN output.
    pub const NAN: f32 = -1002.0;
    /// A first value that fails the whole batch.
    pub const FAIL: f32 = -1003.0;
    /// First values from this one up sleep (value - SLEEP_MS_MIN) milliseconds.
    pub const SLEEP_MS_MIN: f32 = 100_000.0;
}

impl Engine for FakeEngine {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn file(&self) -> &'static str {
        "model.fake"
    }
    fn replica(&self) -> Result<Box<dyn Replica>, String> {
        self.replicas.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FakeReplica { batches: self.batches.clone() }))
    }
    fn release_memory(&self) {
        self.released.fetch_add(1, Ordering::SeqCst);
    }
}

struct FakeReplica {
    batches: Arc<Mutex<Vec<usize>>>,
}

impl Replica for FakeReplica {
    fn enter_thread(&mut self, intra_op_threads: Option<usize>) -> usize {
        intra_op_threads.unwrap_or(1)
    }

    fn forward(&mut self, batch: &[&[ItemTensor]]) -> Result<PerItem, InferError> {
        self.batches.lock().unwrap_or_else(|p| p.into_inner()).push(batch.len());
        let firsts: Vec<f32> = batch
            .iter()
            .map(|item| match &item[0].data {
                TensorData::F32(v) => v.first().copied().unwrap_or(0.0),
                TensorData::I64(v) => v.first().copied().unwrap_or(0) as f32,
            })
            .collect();
        if firsts.contains(&FakeEngine::PANIC) {
            panic!("fake engine: panic sentinel");
        }
        if firsts.contains(&FakeEngine::FAIL) {
            return Err(InferError::Forward("fake engine: fail sentinel".into()));
        }
        if let Some(ms) = firsts.iter().find(|v| **v >= FakeEngine::SLEEP_MS_MIN) {
            std::thread::sleep(Duration::from_millis((ms - FakeEngine::SLEEP_MS_MIN) as u64));
        }
        Ok(batch
            .iter()
            .zip(firsts)
            .map(|(item, first)| {
                if first == FakeEngine::NAN {
                    return Err(InferError::NonFinite { output: 0 });
                }
                let data = match &item[0].data {
                    TensorData::F32(v) => v.iter().map(|x| x * 2.0 + 1.0).collect(),
                    TensorData::I64(v) => v.iter().map(|x| *x as f32 * 2.0 + 1.0).collect(),
                };
                Ok(vec![OutputTensor { shape: item[0].shape.clone(), data }])
            })
            .collect())
    }
}
