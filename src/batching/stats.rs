//! Cumulative inference statistics of one model version, in the shape of Triton's statistics
//! extension (`GET /v2/models/{m}/stats`): counts and total durations since the version was
//! loaded. Workers record each batch once, under a mutex held for a few additions.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and the total time of what it counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Duration64 {
    /// How many.
    pub count: u64,
    /// Their total duration in nanoseconds.
    pub ns: u64,
}

impl Duration64 {
    fn add(&mut self, n: u64, d: Duration) {
        self.count += n;
        self.ns = self.ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// What one version has done since it was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Milliseconds since the Unix epoch of the last computed batch; 0 when none.
    pub last_inference_ms: u64,
    /// Items computed (Triton's `inference_count`).
    pub inference_count: u64,
    /// Batches computed (Triton's `execution_count`).
    pub execution_count: u64,
    /// Items answered with outputs, and their time from admission to answer.
    pub success: Duration64,
    /// Items whose forward failed, and their time from admission to failure.
    pub fail: Duration64,
    /// Time items waited in the queue before their batch started.
    pub queue: Duration64,
    /// Time of the batches of computed items (stacking, forward and splitting), counted per item.
    pub compute: Duration64,
    /// Per batch size: the batches of that size and their compute time.
    pub batches: BTreeMap<usize, Duration64>,
}

/// The statistics of one version.
#[derive(Debug, Default)]
pub struct Stats(Mutex<StatsSnapshot>);

impl Stats {
    /// Records one computed batch of `n` items, `failed` of which got an error, that took
    /// `compute`; `queued` holds each item's queue wait.
    pub fn record_batch(&self, n: usize, failed: usize, compute: Duration, queued: &[Duration]) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.last_inference_ms = now_ms;
        s.execution_count += 1;
        s.inference_count += n as u64;
        s.batches.entry(n).or_default().add(1, compute);
        let ok = (n - failed.min(n)) as u64;
        s.compute.add(ok, compute * ok as u32);
        let mut total_wait = Duration::ZERO;
        for &q in queued {
            s.queue.add(1, q);
            total_wait += q;
        }
        // Each item's time is its own wait plus the batch's compute; split the total by outcome.
        let whole = total_wait + compute * n as u32;
        let per_item = if n > 0 { whole / n as u32 } else { Duration::ZERO };
        s.success.add(ok, per_item * ok as u32);
        s.fail.add(n as u64 - ok, per_item * (n as u64 - ok) as u32);
    }

    /// The figures so far.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_add_up_per_item_and_per_batch_size() {
        let s = Stats::default();
        let ms = Duration::from_millis;
        s.record_batch(2, 0, ms(10), &[ms(1), ms(3)]);
        s.record_batch(1, 1, ms(4), &[ms(2)]);
        let snap = s.snapshot();
        assert_eq!((snap.inference_count, snap.execution_count), (3, 2));
        assert_eq!(snap.queue, Duration64 { count: 3, ns: 6_000_000 });
        assert_eq!(snap.compute, Duration64 { count: 2, ns: 20_000_000 });
        assert_eq!(snap.success, Duration64 { count: 2, ns: 24_000_000 });
        assert_eq!(snap.fail, Duration64 { count: 1, ns: 6_000_000 });
        assert_eq!(snap.batches[&2], Duration64 { count: 1, ns: 10_000_000 });
        assert_eq!(snap.batches[&1], Duration64 { count: 1, ns: 4_000_000 });
        assert!(snap.last_inference_ms > 1_700_000_000_000);
    }
}
