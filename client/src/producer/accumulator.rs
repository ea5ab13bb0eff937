//! Batching, without I/O: records collect per partition into batches of up to `batch_size`
//! bytes; a batch is ready when full, when it is `linger` old, or when a flush covers it.
//! Which ready batch may be sent, and how many of a partition travel at once, is decided by
//! `sequences.rs`; the accumulator only keeps the queues and knows which batches are not yet
//! answered, for flushes.
//!
//! Generic over the record and flush-waiter types so that tests can use plain values.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::TopicPartition;

/// Records of one partition, sent in one request.
#[derive(Debug)]
pub(crate) struct Batch<T> {
    /// Increasing in creation order: flushes wait for every batch up to an id.
    pub id: u64,
    pub tp: TopicPartition,
    pub records: Vec<T>,
    /// Sum of the records' estimated sizes.
    pub size: usize,
    pub created: Instant,
    /// No more records go in (it is full, or a flush closed it).
    pub closed: bool,
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Accumulator<T, W> {
    batch_size: usize,
    linger: Duration,
    queues: BTreeMap<TopicPartition, VecDeque<Batch<T>>>,
    next_id: u64,
    /// Batches created and not yet completed.
    outstanding: BTreeSet<u64>,
    /// Flush waiters, each with the last batch id it waits for.
    flushes: Vec<(u64, W)>,
}

impl<T, W> Accumulator<T, W> {
    pub fn new(batch_size: usize, linger: Duration) -> Self {
        Self {
            batch_size,
            linger,
            queues: BTreeMap::new(),
            next_id: 0,
            outstanding: BTreeSet::new(),
            flushes: Vec::new(),
        }
    }

    /// Adds a record of `size` bytes to `tp`'s open batch, or to a new one when it would
    /// overflow `batch_size` (a record larger than that gets a batch of its own). Returns true
    /// when this closed a full batch.
    pub fn append(&mut self, tp: &TopicPartition, record: T, size: usize, now: Instant) -> bool {
        let queue = self.queues.entry(tp.clone()).or_default();
        let mut closed_one = false;
        if let Some(open) = queue.back_mut().filter(|b| !b.closed) {
            if open.size + size <= self.batch_size {
                open.size += size;
                open.records.push(record);
                return false;
            }
            open.closed = true;
            closed_one = true;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.outstanding.insert(id);
        queue.push_back(Batch {
            id,
            tp: tp.clone(),
            records: vec![record],
            size,
            created: now,
            closed: size >= self.batch_size,
        });
        closed_one
    }

    /// The partitions whose first batch may be sent now: full, lingered long enough, or
    /// covered by a flush.
    pub fn ready(&self, now: Instant) -> Vec<TopicPartition> {
        let flush_upto = self.flushes.iter().map(|(id, _)| *id).max();
        self.queues
            .iter()
            .filter_map(|(tp, q)| q.front().map(|b| (tp, b)))
            .filter(|(_, b)| {
                b.closed
                    || now.duration_since(b.created) >= self.linger
                    || flush_upto.is_some_and(|upto| b.id <= upto)
            })
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Takes `tp`'s first batch for sending; it counts as outstanding until
    /// [`Accumulator::completed`].
    pub fn take(&mut self, tp: &TopicPartition) -> Option<Batch<T>> {
        let queue = self.queues.get_mut(tp)?;
        let mut batch = queue.pop_front()?;
        if queue.is_empty() {
            self.queues.remove(tp);
        }
        batch.closed = true;
        Some(batch)
    }

    /// The earliest time a partition's first batch becomes ready by lingering, if that is
    /// still to come; batches ready already are sent or wait for their partition or broker to
    /// have room, which an answer brings.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| q.front())
            .map(|b| b.created + self.linger)
            .filter(|&at| at > now)
            .min()
    }

    /// Batch `id` finished (delivered or failed for good): returns the flush waiters that
    /// have nothing left to wait for.
    pub fn completed(&mut self, id: u64) -> Vec<W> {
        self.outstanding.remove(&id);
        let oldest = self.outstanding.first().copied();
        let (done, waiting) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(upto, _)| oldest.is_none_or(|o| o > *upto));
        self.flushes = waiting;
        done.into_iter().map(|(_, w)| w).collect()
    }

    /// Starts a flush: every batch existing now becomes ready. `waiter` is returned by
    /// [`Accumulator::completed`] once they all finished, or at once when there are none.
    pub fn flush(&mut self, waiter: W) -> Option<W> {
        if self.outstanding.is_empty() {
            return Some(waiter);
        }
        for queue in self.queues.values_mut() {
            if let Some(open) = queue.back_mut() {
                open.closed = true;
            }
        }
        self.flushes.push((self.next_id - 1, waiter));
        None
    }

    /// True when no batch is queued or in flight.
    pub fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(10);

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn acc() -> Accumulator<u32, &'static str> {
        Accumulator::new(100, LINGER)
    }

    #[test]
    fn records_fill_a_batch_until_the_next_would_overflow() {
        let mut a = acc();
        let t0 = Instant::now();
        assert!(!a.append(&tp(0), 1, 40, t0));
        assert!(!a.append(&tp(0), 2, 60, t0));
        assert!(a.ready(t0).is_empty(), "100 of 100 bytes, not yet lingered");
        assert!(
            a.append(&tp(0), 3, 1, t0),
            "the third closes the full batch"
        );
        assert_eq!(a.ready(t0), vec![tp(0)]);
        let b = a.take(&tp(0)).unwrap();
        assert_eq!(b.records, vec![1, 2]);
        assert_eq!(b.size, 100);
        // The second batch lingers until it is full or old enough.
        assert!(a.ready(t0).is_empty());
        assert_eq!(a.ready(t0 + LINGER), vec![tp(0)]);
        assert_eq!(a.take(&tp(0)).unwrap().records, vec![3]);
        assert!(a.completed(b.id).is_empty());
    }

    #[test]
    fn a_batch_is_ready_after_linger_and_the_deadline_says_when() {
        let mut a = acc();
        let t0 = Instant::now();
        a.append(&tp(1), 1, 10, t0);
        a.append(&tp(2), 2, 10, t0 + Duration::from_millis(4));
        assert_eq!(a.next_deadline(t0), Some(t0 + LINGER));
        assert!(a.ready(t0 + Duration::from_millis(9)).is_empty());
        assert_eq!(a.ready(t0 + LINGER), vec![tp(1)]);
        a.take(&tp(1));
        // tp(1) has no batch left; tp(2) lingers until 14 ms.
        assert_eq!(
            a.next_deadline(t0 + LINGER),
            Some(t0 + Duration::from_millis(14))
        );
        assert_eq!(a.next_deadline(t0 + Duration::from_millis(20)), None);
    }

    #[test]
    fn an_oversized_record_gets_a_closed_batch_of_its_own() {
        let mut a = acc();
        let t0 = Instant::now();
        a.append(&tp(0), 1, 10, t0);
        assert!(a.append(&tp(0), 2, 500, t0));
        assert_eq!(a.take(&tp(0)).unwrap().records, vec![1]);
        let b = a.queues[&tp(0)].front().unwrap();
        assert!(b.closed);
        assert_eq!(b.records, vec![2]);
    }

    #[test]
    fn flush_makes_everything_ready_and_waits_for_all_earlier_batches() {
        let mut a = acc();
        let t0 = Instant::now();
        assert_eq!(a.flush("empty"), Some("empty"), "nothing to wait for");
        a.append(&tp(0), 1, 10, t0);
        a.append(&tp(1), 2, 10, t0);
        assert_eq!(a.flush("f1"), None);
        assert_eq!(a.ready(t0), vec![tp(0), tp(1)]);
        // A record after the flush goes to a new batch, which the flush does not wait for.
        let b0 = a.take(&tp(0)).unwrap();
        let b1 = a.take(&tp(1)).unwrap();
        a.append(&tp(0), 3, 10, t0);
        assert!(a.completed(b1.id).is_empty());
        assert_eq!(a.completed(b0.id), vec!["f1"]);
        assert!(!a.is_empty());
        let b2 = a.take(&tp(0)).unwrap();
        assert!(a.completed(b2.id).is_empty());
        assert!(a.is_empty());
    }

    #[test]
    fn partitions_are_independent() {
        let mut a = acc();
        let t0 = Instant::now();
        for p in 0..3 {
            a.append(&tp(p), p as u32, 100, t0);
        }
        assert_eq!(a.ready(t0), vec![tp(0), tp(1), tp(2)]);
        let b = a.take(&tp(1)).unwrap();
        assert_eq!(b.tp, tp(1));
        assert_eq!(a.ready(t0), vec![tp(0), tp(2)]);
        a.append(&tp(1), 9, 100, t0);
        assert_eq!(
            a.ready(t0),
            vec![tp(0), tp(1), tp(2)],
            "a partition's next batch is ready while one is out: sequences.rs decides"
        );
    }
}
