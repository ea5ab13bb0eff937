//! The idempotent producer's identity and per-partition sequence numbers, without I/O.
//!
//! The driver gives each batch its producer id, epoch and base sequence when it takes the
//! batch for sending. A partition has one batch in flight at a time and a retry resends the
//! same bytes, so the broker sees every partition's sequences in order and recognises a
//! retried batch that was written already (it answers with the first write's offset).
//!
//! A batch that fails for good (retries or delivery timeout spent, or a non-retriable error
//! such as `OUT_OF_ORDER_SEQUENCE`) may or may not be in the log, and the partition's next
//! sequence is unknown to the client. The rule (simpler than Kafka's per-partition
//! bookkeeping, and correct with one batch in flight per partition): bump the epoch locally
//! and restart every partition at sequence 0. Brokers accept a newer epoch starting at 0, and
//! a batch of the old epoch still in flight for another partition is retried under the old
//! epoch, which that partition has not seen superseded yet. When the epoch would pass
//! `i16::MAX`, the producer asks for a new producer id instead (as Kafka's client does).

use std::collections::HashMap;

use crate::record_batch::ProducerFields;
use crate::TopicPartition;

/// What the producer puts in the headers of its batches.
#[derive(Debug)]
pub(crate) struct Sequences {
    producer_id: i64,
    epoch: i16,
    next: HashMap<TopicPartition, i32>,
}

impl Sequences {
    pub fn new(producer_id: i64, epoch: i16) -> Self {
        Self {
            producer_id,
            epoch,
            next: HashMap::new(),
        }
    }

    /// The header fields of `tp`'s next batch of `records` records; moves the partition's
    /// sequence past them (wrapping at `i32::MAX`, as Kafka's broker expects).
    pub fn assign(&mut self, tp: &TopicPartition, records: usize) -> ProducerFields {
        let next = self.next.entry(tp.clone()).or_insert(0);
        let base_sequence = *next;
        let records = i32::try_from(records).unwrap_or(i32::MAX);
        *next = wrapping_add(base_sequence, records);
        ProducerFields {
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            base_sequence,
        }
    }

    /// A batch failed for good: a new epoch, every partition from sequence 0. Returns false
    /// when the epoch is spent and the producer needs a new id ([`Sequences::new`]).
    pub fn bump_epoch(&mut self) -> bool {
        self.next.clear();
        match self.epoch.checked_add(1) {
            Some(epoch) => {
                self.epoch = epoch;
                true
            }
            None => false,
        }
    }
}

/// `seq + n` wrapping past `i32::MAX` to 0.
fn wrapping_add(seq: i32, n: i32) -> i32 {
    let sum = i64::from(seq) + i64::from(n);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn each_partition_counts_its_own_records() {
        let mut s = Sequences::new(7, 0);
        assert_eq!(s.assign(&tp(0), 3).base_sequence, 0);
        assert_eq!(s.assign(&tp(1), 2).base_sequence, 0);
        assert_eq!(s.assign(&tp(0), 1).base_sequence, 3);
        let f = s.assign(&tp(0), 5);
        assert_eq!(
            (f.producer_id, f.producer_epoch, f.base_sequence),
            (7, 0, 4)
        );
    }

    #[test]
    fn a_failure_bumps_the_epoch_and_restarts_every_partition() {
        let mut s = Sequences::new(7, 0);
        s.assign(&tp(0), 3);
        s.assign(&tp(1), 3);
        assert!(s.bump_epoch());
        let f = s.assign(&tp(1), 1);
        assert_eq!((f.producer_epoch, f.base_sequence), (1, 0));
        let mut spent = Sequences::new(7, i16::MAX);
        assert!(!spent.bump_epoch());
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(wrapping_add(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(wrapping_add(i32::MAX, 1), 0);
        assert_eq!(wrapping_add(i32::MAX - 1, 3), 1);
    }
}
