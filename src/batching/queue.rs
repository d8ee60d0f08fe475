//! The queue logic of one model version, as a plain struct with no threads or channels.
//!
//! Workers call [`QueueState::next`] under the queue's mutex; everything that decides *what* runs
//! next lives here so it can be unit-tested with fake items and a fake clock.
//!
//! Rules:
//! - admission is all-or-nothing per request and never waits: a request whose items do not all
//!   fit is refused at once;
//! - a batch is cut when `max_batch_size` shape-compatible items wait, or when the oldest item
//!   has waited `max_queue_delay`;
//! - only items with the same [`BatchKey`] (per-item input shapes) share a batch; the oldest
//!   item's key is served first, so no shape starves;
//! - items whose caller has gone, or whose deadline has passed, are removed before compute.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The per-item input shapes (and dtypes) that must agree for items to be stacked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey(pub Vec<(u8, Vec<i64>)>);

/// What the queue needs to know about an item.
pub trait Pending {
    /// Shape key for grouping.
    fn key(&self) -> &BatchKey;
    /// When the item was admitted.
    fn enqueued_at(&self) -> Instant;
    /// When the caller stops waiting.
    fn deadline(&self) -> Instant;
    /// Whether the caller has gone away (its receiver was dropped).
    fn abandoned(&self) -> bool;
}

/// What a worker should do next.
#[derive(Debug)]
pub enum Next<T> {
    /// Compute these items as one batch.
    Batch(Vec<T>),
    /// Nothing is ready; look again at this instant (or when notified).
    WaitUntil(Instant),
    /// The queue is empty; wait for a notification.
    Idle,
}

/// Items removed without compute, to be answered by the caller of [`QueueState::next`].
#[derive(Debug)]
pub struct Removed<T> {
    /// Items past their deadline: answer them with a timeout.
    pub expired: Vec<T>,
    /// Number of items whose caller had gone; they are dropped.
    pub abandoned: usize,
}

/// The bounded, shape-aware batching queue.
#[derive(Debug)]
pub struct QueueState<T> {
    items: VecDeque<T>,
    capacity: usize,
    max_batch: usize,
    max_delay: Duration,
}

impl<T: Pending> QueueState<T> {
    /// An empty queue.
    pub fn new(capacity: usize, max_batch: usize, max_delay: Duration) -> Self {
        QueueState { items: VecDeque::new(), capacity, max_batch: max_batch.max(1), max_delay }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Room left before admission refuses.
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.items.len())
    }

    /// Admits all of `items` or none of them; on refusal they are handed back.
    pub fn try_push_all(&mut self, items: Vec<T>) -> Result<(), Vec<T>> {
        if items.len() > self.free() {
            return Err(items);
        }
        self.items.extend(items);
        Ok(())
    }

    /// Removes dead items, then decides whether a batch is ready at `now`.
    pub fn next(&mut self, now: Instant) -> (Next<T>, Removed<T>) {
        let mut removed = Removed { expired: Vec::new(), abandoned: 0 };
        if self.items.iter().any(|i| i.abandoned() || i.deadline() <= now) {
            let mut kept = VecDeque::with_capacity(self.items.len());
            for item in self.items.drain(..) {
                if item.abandoned() {
                    removed.abandoned += 1;
                } else if item.deadline() <= now {
                    removed.expired.push(item);
                } else {
                    kept.push_back(item);
                }
            }
            self.items = kept;
        }
        let Some(oldest) = self.items.front() else {
            return (Next::Idle, removed);
        };
        let key = oldest.key().clone();
        let due = oldest.enqueued_at() + self.max_delay;
        let same = self.items.iter().filter(|i| *i.key() == key).take(self.max_batch).count();
        if same < self.max_batch && now < due {
            let earliest_deadline = self.items.iter().map(Pending::deadline).min().unwrap_or(due);
            return (Next::WaitUntil(due.min(earliest_deadline)), removed);
        }
        let mut batch = Vec::with_capacity(same);
        let mut rest = VecDeque::with_capacity(self.items.len() - same);
        for item in self.items.drain(..) {
            if batch.len() < self.max_batch && *item.key() == key {
                batch.push(item);
            } else {
                rest.push_back(item);
            }
        }
        self.items = rest;
        (Next::Batch(batch), removed)
    }

    /// Takes every waiting item (used when a version is closed with no worker left).
    pub fn drain_all(&mut self) -> Vec<T> {
        self.items.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug)]
    struct Item {
        id: u32,
        key: BatchKey,
        at: Instant,
        deadline: Instant,
        gone: Cell<bool>,
    }

    impl Pending for Item {
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
            self.gone.get()
        }
    }

    fn key(len: i64) -> BatchKey {
        BatchKey(vec![(0, vec![len, 1])])
    }

    fn item(id: u32, len: i64, at: Instant) -> Item {
        Item { id, key: key(len), at, deadline: at + Duration::from_secs(10), gone: Cell::new(false) }
    }

    fn ids(next: Next<Item>) -> Vec<u32> {
        match next {
            Next::Batch(b) => b.into_iter().map(|i| i.id).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn cuts_by_size_before_the_delay() {
        let t0 = Instant::now();
        let mut q = QueueState::new(100, 3, Duration::from_millis(50));
        q.try_push_all((0..4).map(|i| item(i, 5, t0)).collect()).unwrap();
        assert_eq!(ids(q.next(t0).0), vec![0, 1, 2]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn waits_for_the_delay_then_cuts_a_partial_batch() {
        let t0 = Instant::now();
        let mut q = QueueState::new(100, 8, Duration::from_millis(5));
        q.try_push_all(vec![item(0, 5, t0), item(1, 5, t0 + Duration::from_millis(1))]).unwrap();
        match q.next(t0 + Duration::from_millis(2)).0 {
            Next::WaitUntil(t) => assert_eq!(t, t0 + Duration::from_millis(5)),
            other => panic!("{other:?}"),
        }
        assert_eq!(ids(q.next(t0 + Duration::from_millis(5)).0), vec![0, 1]);
        assert!(matches!(q.next(t0).0, Next::Idle));
    }

    #[test]
    fn zero_delay_cuts_at_once() {
        let t0 = Instant::now();
        let mut q = QueueState::new(100, 8, Duration::ZERO);
        q.try_push_all(vec![item(0, 5, t0)]).unwrap();
        assert_eq!(ids(q.next(t0).0), vec![0]);
    }

    #[test]
    fn groups_by_shape_oldest_key_first() {
        let t0 = Instant::now();
        let mut q = QueueState::new(100, 8, Duration::ZERO);
        q.try_push_all(vec![item(0, 5, t0), item(1, 7, t0), item(2, 5, t0), item(3, 7, t0)]).unwrap();
        assert_eq!(ids(q.next(t0).0), vec![0, 2]);
        assert_eq!(ids(q.next(t0).0), vec![1, 3]);
    }

    #[test]
    fn full_queue_refuses_the_whole_request_at_once() {
        let t0 = Instant::now();
        let mut q = QueueState::new(3, 8, Duration::ZERO);
        q.try_push_all(vec![item(0, 5, t0), item(1, 5, t0)]).unwrap();
        let back = q.try_push_all(vec![item(2, 5, t0), item(3, 5, t0)]).unwrap_err();
        assert_eq!(back.len(), 2);
        assert_eq!(q.len(), 2, "nothing of a refused request is admitted");
        q.try_push_all(vec![item(4, 5, t0)]).unwrap();
    }

    #[test]
    fn abandoned_items_are_dropped_before_compute() {
        let t0 = Instant::now();
        let mut q = QueueState::new(10, 8, Duration::ZERO);
        q.try_push_all(vec![item(0, 5, t0), item(1, 5, t0), item(2, 5, t0)]).unwrap();
        q.items[1].gone.set(true);
        let (next, removed) = q.next(t0);
        assert_eq!(removed.abandoned, 1);
        assert_eq!(ids(next), vec![0, 2]);
    }

    #[test]
    fn expired_items_are_returned_not_batched() {
        let t0 = Instant::now();
        let mut q = QueueState::new(10, 8, Duration::from_millis(100));
        let mut late = item(0, 5, t0);
        late.deadline = t0 + Duration::from_millis(1);
        q.try_push_all(vec![late, item(1, 5, t0)]).unwrap();
        let (next, removed) = q.next(t0 + Duration::from_millis(2));
        assert_eq!(removed.expired.iter().map(|i| i.id).collect::<Vec<_>>(), vec![0]);
        assert!(matches!(next, Next::WaitUntil(_)));
    }

    #[test]
    fn wait_never_overshoots_a_deadline() {
        let t0 = Instant::now();
        let mut q = QueueState::new(10, 8, Duration::from_millis(100));
        let mut a = item(0, 5, t0);
        a.deadline = t0 + Duration::from_millis(7);
        q.try_push_all(vec![a]).unwrap();
        match q.next(t0).0 {
            Next::WaitUntil(t) => assert_eq!(t, t0 + Duration::from_millis(7)),
            other => panic!("{other:?}"),
        }
    }
}
