//! The producer state of a log (Kafka's `ProducerStateManager`): for every idempotent producer
//! id that wrote to the log, its producer epoch and the sequence numbers and offsets of its last
//! [`BATCHES_KEPT`] batches, plus the timestamp of its latest batch for expiry.
//!
//! It is a pure, in-memory structure. [`crate::Log`] checks every batch a leader appends
//! against it ([`ProducerStates::check`]), records every batch written (leader and follower
//! appends alike, so a new leader already has the state), persists snapshots of it next to
//! the segment checkpoints and rebuilds it from a snapshot plus the batch headers after it.
//!
//! # Rules for a leader append (Kafka 2.7+, non-transactional)
//! Worked example: producer 7 wrote batches with sequences 0..=4 and 5..=9 in epoch 0.
//!
//! | incoming (epoch, first..=last seq) | outcome |
//! |---|---|
//! | (0, 10..=14) | append: it follows the last sequence 9 |
//! | (0, 5..=9)   | duplicate of a kept batch: answered with its original offsets, not written |
//! | (0, 12..=14) | `OutOfOrder`: sequence 10 was expected (a gap) |
//! | (0, 3..=7)   | `OutOfOrder`: overlaps but matches no kept batch |
//! | (1, 0..=4)   | append: a new epoch starts at sequence 0, dropping the epoch-0 batches |
//! | (1, 5..=9)   | `OutOfOrder`: a new epoch must start at sequence 0 |
//! | (1, any) once epoch 2 has written | `StaleEpoch` (wire: PRODUCER_FENCED) |
//! | unknown producer id, any sequence | append (Kafka since KIP-360: the state may have been
//!   dropped by expiry or retention, and refusing would stop the producer for good) |
//!
//! Sequences wrap from `i32::MAX` to 0, and a batch's last sequence is its base sequence plus
//! its `last_offset_delta`, as in Kafka.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Buf, BufMut};

use crate::batch::BatchHeader;
use crate::Offset;

/// How many of a producer's latest batches are kept for deduplication (Kafka's
/// `NUM_BATCHES_TO_RETAIN`, which is also the client's bound on in-flight requests per
/// partition).
pub const BATCHES_KEPT: usize = 5;

/// Snapshot format version.
const SNAPSHOT_VERSION: u8 = 1;

/// One batch a producer wrote: its sequence range and where it landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: Offset,
    pub last_offset: Offset,
}

/// What the log knows of one producer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The latest batches of `epoch`, oldest first, at most [`BATCHES_KEPT`].
    pub batches: VecDeque<BatchMeta>,
    /// The greatest record timestamp of the latest batch (Kafka uses it for expiry too, so
    /// that every replica, and a rebuild from the log, agree).
    pub last_timestamp: i64,
}

/// What a leader does with an incoming idempotent batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Write it.
    Append,
    /// It repeats a kept batch: answer with that batch's offsets and write nothing.
    Duplicate(BatchMeta),
}

/// Why a leader refuses an idempotent batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// A newer epoch of the producer id has written to this log.
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    StaleEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// The batch does not continue the producer's sequence (and repeats no kept batch).
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {got} is out of order, expected {expected}"
    )]
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        got: i32,
    },
}

/// The last sequence of a batch: `base_sequence + last_offset_delta`, wrapping past
/// `i32::MAX` to 0 (Kafka's `incrementSequence`).
pub fn last_sequence(base_sequence: i32, last_offset_delta: i32) -> i32 {
    if base_sequence > i32::MAX - last_offset_delta {
        last_offset_delta - (i32::MAX - base_sequence) - 1
    } else {
        base_sequence + last_offset_delta
    }
}

/// The sequence that follows `seq`.
pub fn next_sequence(seq: i32) -> i32 {
    last_sequence(seq, 1)
}

/// The producer states of one log, by producer id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStates {
    entries: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStates {
    /// The entry of `producer_id`.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks a batch a leader is about to append (see the module doc for the rules). A batch
    /// without a producer id is always appended.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if !h.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.entries.get(&h.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        let first = h.base_sequence;
        let out_of_order = |expected| SequenceError::OutOfOrder {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            expected,
            got: first,
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            return match first {
                0 => Ok(SequenceCheck::Append),
                _ => Err(out_of_order(0)),
            };
        }
        let last = last_sequence(first, h.last_offset_delta);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        match entry.batches.back() {
            Some(latest) if first != next_sequence(latest.last_seq) => {
                Err(out_of_order(next_sequence(latest.last_seq)))
            }
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Records a batch written to the log at its final offsets (leader and follower appends,
    /// and rebuilds from the log). A newer epoch replaces the kept batches.
    pub fn record(&mut self, h: &BatchHeader) {
        if !h.has_producer_id() {
            return;
        }
        let entry = self
            .entries
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: h.max_timestamp,
            });
        if entry.epoch != h.producer_epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h.base_sequence, h.last_offset_delta),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while entry.batches.len() > BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
    }

    /// Drops producers whose latest batch is `max_idle_ms` or more older than `now_ms`
    /// (Kafka's `producer.id.expiration.ms`); returns how many went.
    pub fn expire(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < max_idle_ms);
        before - self.entries.len()
    }

    /// The snapshot bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.entries.len() * 64);
        out.put_u8(SNAPSHOT_VERSION);
        out.put_u32(self.entries.len() as u32);
        for (id, e) in &self.entries {
            out.put_i64(*id);
            out.put_i16(e.epoch);
            out.put_i64(e.last_timestamp);
            out.put_u8(e.batches.len() as u8);
            for b in &e.batches {
                out.put_i32(b.first_seq);
                out.put_i32(b.last_seq);
                out.put_i64(b.base_offset);
                out.put_i64(b.last_offset);
            }
        }
        out
    }

    /// Reads snapshot bytes; `None` when they are not a snapshot of this version.
    pub fn decode(mut bytes: &[u8]) -> Option<ProducerStates> {
        if bytes.remaining() < 5 || bytes.get_u8() != SNAPSHOT_VERSION {
            return None;
        }
        let count = bytes.get_u32();
        let mut entries = BTreeMap::new();
        for _ in 0..count {
            if bytes.remaining() < 8 + 2 + 8 + 1 {
                return None;
            }
            let id = bytes.get_i64();
            let epoch = bytes.get_i16();
            let last_timestamp = bytes.get_i64();
            let n = bytes.get_u8() as usize;
            if n > BATCHES_KEPT || bytes.remaining() < n * 24 {
                return None;
            }
            let batches = (0..n)
                .map(|_| BatchMeta {
                    first_seq: bytes.get_i32(),
                    last_seq: bytes.get_i32(),
                    base_offset: bytes.get_i64(),
                    last_offset: bytes.get_i64(),
                })
                .collect();
            entries.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp,
                },
            );
        }
        bytes.is_empty().then_some(ProducerStates { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header of producer `pid`, epoch `epoch`, sequences `first..=first+n-1`, at `offset`.
    fn batch(pid: i64, epoch: i16, first: i32, n: i32, offset: Offset) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 1_000,
            max_timestamp: 1_000 + offset,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: first,
            record_count: n,
        }
    }

    /// Producer 7 with batches 0..=4 at offset 0 and 5..=9 at offset 5, epoch 0.
    fn worked_example() -> ProducerStates {
        let mut s = ProducerStates::default();
        s.record(&batch(7, 0, 0, 5, 0));
        s.record(&batch(7, 0, 5, 5, 5));
        s
    }

    #[test]
    fn the_worked_example_of_the_module_doc() {
        let s = worked_example();
        let ooo = |expected, got, epoch| {
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                epoch,
                expected,
                got,
            })
        };
        let cases: [(BatchHeader, Result<SequenceCheck, SequenceError>); 7] = [
            (batch(7, 0, 10, 5, 99), Ok(SequenceCheck::Append)),
            (
                batch(7, 0, 5, 5, 99),
                Ok(SequenceCheck::Duplicate(BatchMeta {
                    first_seq: 5,
                    last_seq: 9,
                    base_offset: 5,
                    last_offset: 9,
                })),
            ),
            (batch(7, 0, 12, 3, 99), ooo(10, 12, 0)),
            (batch(7, 0, 3, 5, 99), ooo(10, 3, 0)),
            (batch(7, 1, 0, 5, 99), Ok(SequenceCheck::Append)),
            (batch(7, 1, 5, 5, 99), ooo(0, 5, 1)),
            (batch(8, 3, 42, 1, 99), Ok(SequenceCheck::Append)),
        ];
        for (h, want) in cases {
            assert_eq!(s.check(&h), want, "{h:?}");
        }
        let mut fenced = worked_example();
        fenced.record(&batch(7, 2, 0, 1, 10));
        assert_eq!(
            fenced.check(&batch(7, 1, 1, 1, 99)),
            Err(SequenceError::StaleEpoch {
                producer_id: 7,
                epoch: 1,
                current: 2
            })
        );
        assert_eq!(
            fenced.get(7).map(|e| e.batches.len()),
            Some(1),
            "a new epoch replaces the kept batches"
        );
    }

    #[test]
    fn batches_without_a_producer_id_are_neither_checked_nor_kept() {
        let mut s = worked_example();
        let plain = batch(-1, -1, -1, 3, 10);
        assert_eq!(s.check(&plain), Ok(SequenceCheck::Append));
        s.record(&plain);
        assert_eq!(s, worked_example());
    }

    #[test]
    fn only_the_last_five_batches_deduplicate() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&batch(1, 0, i * 2, 2, i64::from(i) * 2));
        }
        assert_eq!(s.get(1).unwrap().batches.len(), BATCHES_KEPT);
        // Batches 2..=6 (sequences 4..=13) are kept; 0 and 1 are forgotten.
        assert!(matches!(
            s.check(&batch(1, 0, 4, 2, 99)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        assert!(s.check(&batch(1, 0, 2, 2, 99)).is_err());
        assert_eq!(s.check(&batch(1, 0, 14, 1, 99)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(next_sequence(i32::MAX), 0);
        let mut s = ProducerStates::default();
        s.record(&batch(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(s.check(&batch(1, 0, 0, 3, 2)), Ok(SequenceCheck::Append));
        assert!(s.check(&batch(1, 0, 1, 3, 2)).is_err());
    }

    #[test]
    fn idle_producers_expire_by_their_latest_batch_timestamp() {
        let mut s = worked_example(); // producer 7's latest timestamp: 1_005
        s.record(&batch(9, 0, 0, 1, 2_000)); // producer 9: 3_000
        assert_eq!(s.expire(1_500, 1_000), 0);
        assert_eq!(s.expire(2_005, 1_000), 1);
        assert!(s.get(7).is_none() && s.get(9).is_some());
        assert_eq!(s.expire(10_000, 1_000), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn snapshots_round_trip_and_refuse_garbage() {
        let mut s = worked_example();
        s.record(&batch(3, 4, 100, 1, 10));
        let bytes = s.encode();
        assert_eq!(ProducerStates::decode(&bytes), Some(s));
        assert_eq!(ProducerStates::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(ProducerStates::decode(&[9, 0, 0, 0, 0]), None);
        assert_eq!(
            ProducerStates::decode(&ProducerStates::default().encode()),
            Some(ProducerStates::default())
        );
    }
}
