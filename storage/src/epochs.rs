//! The leader-epoch cache of a log: the offset at which each leader epoch's records start
//! (Kafka's `leader-epoch-checkpoint`).
//!
//! Replication uses it to find where a follower's log diverges from its new leader's: the
//! leader answers "epoch E ends at offset X in my log" ([`EpochCache::end_offset_for`]), and a
//! follower whose own epoch E goes further cuts its log there. It is a pure, in-memory
//! structure; [`crate::Log`] persists its entries next to the segment checkpoints and rebuilds
//! the part of it that covers a log tail recovered after a crash from the batch headers.
//!
//! Worked example: batches at offsets 0..5 written in epoch 1, 5..8 in epoch 3, log end 8.
//!
//! | asked epoch | answer (epoch, end offset)                     |
//! |-------------|------------------------------------------------|
//! | 0           | (0, 0): before the first epoch, ends where it starts |
//! | 1           | (1, 5): epoch 3 starts at 5                    |
//! | 2           | (1, 5): the largest epoch ≤ 2 is 1             |
//! | 3           | (3, 8): the latest epoch ends at the log end   |
//! | 4           | undefined: later than anything in the log      |

use crate::Offset;

/// Where one leader epoch's records start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: Offset,
}

/// The epochs of a log, ascending in both epoch and start offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// A cache holding `entries` (any order); entries that break the ascending order are
    /// dropped, later epochs winning.
    pub fn from_entries(mut entries: Vec<EpochEntry>) -> EpochCache {
        entries.sort_by_key(|e| e.epoch);
        let mut cache = EpochCache::default();
        for e in entries {
            cache.assign(e.epoch, e.start_offset);
        }
        cache
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start`. Returns whether anything changed, and the
    /// entries it replaced. An epoch already known at the same or an earlier offset changes
    /// nothing; entries that conflict with the new one (a later or equal epoch, or a start at or
    /// after it) are removed first, as Kafka does.
    pub fn assign(&mut self, epoch: i32, start: Offset) -> (bool, Vec<EpochEntry>) {
        if epoch < 0 {
            return (false, vec![]);
        }
        if let Some(last) = self.latest() {
            if last.epoch == epoch && last.start_offset <= start {
                return (false, vec![]);
            }
        }
        let mut removed = Vec::new();
        self.entries.retain(|e| {
            let conflict = e.epoch >= epoch || e.start_offset >= start;
            if conflict {
                removed.push(*e);
            }
            !conflict
        });
        self.entries.push(EpochEntry {
            epoch,
            start_offset: start,
        });
        (true, removed)
    }

    /// The largest epoch at most `requested`, with the offset where it ends: the start of the
    /// next epoch, or `log_end` for the latest. `None` when `requested` is later than every
    /// epoch here (the asker knows more than this log) or the cache is empty. For an epoch
    /// before the first, the answer is `requested` ending where the first epoch starts.
    pub fn end_offset_for(&self, requested: i32, log_end: Offset) -> Option<(i32, Offset)> {
        let latest = self.latest()?;
        if requested >= latest.epoch {
            return (requested == latest.epoch).then_some((latest.epoch, log_end));
        }
        let next = self.entries.iter().position(|e| e.epoch > requested)?;
        let end = self.entries[next].start_offset;
        match next {
            0 => Some((requested, end)),
            i => Some((self.entries[i - 1].epoch, end)),
        }
    }

    /// Drops the entries of epochs that start at or after `end` (the log was cut there).
    pub fn truncate_from_end(&mut self, end: Offset) -> Vec<EpochEntry> {
        let keep = self.entries.partition_point(|e| e.start_offset < end);
        self.entries.split_off(keep)
    }

    /// Drops what lies wholly below `start` (retention moved the log start): the epoch
    /// holding `start` is kept, starting at `start`. Returns the removed entries and the moved
    /// one.
    pub fn truncate_from_start(&mut self, start: Offset) -> (Vec<EpochEntry>, Option<EpochEntry>) {
        let holding = self.entries.partition_point(|e| e.start_offset <= start);
        if holding == 0 {
            return (vec![], None);
        }
        let removed: Vec<_> = self.entries.drain(..holding - 1).collect();
        let first = &mut self.entries[0];
        if first.start_offset == start {
            return (removed, None);
        }
        first.start_offset = start;
        (removed, Some(*first))
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: i32, start_offset: Offset) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    fn example() -> EpochCache {
        EpochCache::from_entries(vec![entry(1, 0), entry(3, 5)])
    }

    #[test]
    fn end_offsets_follow_the_module_doc_table() {
        let c = example();
        let cases = [
            (0, Some((0, 0))),
            (1, Some((1, 5))),
            (2, Some((1, 5))),
            (3, Some((3, 8))),
            (4, None),
        ];
        for (asked, want) in cases {
            assert_eq!(c.end_offset_for(asked, 8), want, "epoch {asked}");
        }
        assert_eq!(EpochCache::default().end_offset_for(1, 8), None);
    }

    #[test]
    fn assign_keeps_the_first_start_of_an_epoch_and_removes_conflicts() {
        let mut c = example();
        assert_eq!(c.assign(3, 7), (false, vec![]));
        assert_eq!(c.assign(5, 8), (true, vec![]));
        assert_eq!(c.entries(), &[entry(1, 0), entry(3, 5), entry(5, 8)]);
        // A lower epoch at a later offset (a follower that was told so by its leader) replaces
        // every entry at or after it.
        let (changed, removed) = c.assign(2, 6);
        assert!(changed);
        assert_eq!(removed, vec![entry(3, 5), entry(5, 8)]);
        assert_eq!(c.entries(), &[entry(1, 0), entry(2, 6)]);
        assert_eq!(c.assign(-1, 9), (false, vec![]));
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = EpochCache::from_entries(vec![entry(1, 0), entry(3, 5), entry(4, 9)]);
        assert_eq!(c.truncate_from_end(9), vec![entry(4, 9)]);
        assert_eq!(c.truncate_from_end(20), vec![]);
        assert_eq!(
            c.truncate_from_start(6),
            (vec![entry(1, 0)], Some(entry(3, 6)))
        );
        assert_eq!(c.truncate_from_start(6), (vec![], None));
        assert_eq!(c.truncate_from_start(2), (vec![], None));
        assert_eq!(c.entries(), &[entry(3, 6)]);
        c.clear();
        assert_eq!(c.latest(), None);
    }

    #[test]
    fn from_entries_sorts_and_drops_out_of_order_ones() {
        let c = EpochCache::from_entries(vec![entry(3, 5), entry(1, 0), entry(2, 7)]);
        // Epoch 2 starting after epoch 3 cannot both hold: the later epoch wins.
        assert_eq!(c.entries(), &[entry(1, 0), entry(3, 5)]);
    }
}
