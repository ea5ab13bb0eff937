//! The sparse offset index, the time index and the per-log checkpoints, behind one trait.
//!
//! A partition log keeps its record bytes in segment files and everything it needs to find
//! them again here: which file position holds a given offset, which offset to start from for
//! a timestamp, and small checkpoints (recovery point, clean-shutdown marker, segment facts).
//! Every entry is keyed by the log's name, so one store serves every partition of a data
//! directory. The trait knows nothing of RocksDB: [`rocks::RocksIndex`] is the real engine and
//! [`mem::MemIndex`] the in-memory one; both pass [`crate::testing::Suite`].
//!
//! The index is derived data: recovery rebuilds the part written after the last flush from the
//! segments, so index writes need not be durable on their own; only checkpoints that recovery
//! trusts are written with `durable = true`.

pub mod mem;
pub mod rocks;

use crate::error::IndexError;
use crate::Offset;

/// "The batch starting at `offset` lies in segment `segment` at byte `position`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub offset: Offset,
    pub segment: Offset,
    pub position: u64,
}

/// "No record up to and including the batch at `offset` has a timestamp above `timestamp`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub offset: Offset,
}

/// One change to a log's index; a slice of them is applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOp {
    PutOffset(OffsetEntry),
    PutTime(TimeEntry),
    /// Removes offset and time entries whose offset is `>=` this one (log truncation).
    TruncateFrom(Offset),
    /// Removes offset and time entries whose offset is `<` this one (retention).
    DeleteBefore(Offset),
    PutMeta {
        key: String,
        value: Vec<u8>,
    },
    DeleteMeta {
        key: String,
    },
    /// Removes everything the log has in the index.
    DropLog,
}

/// Storage for the indexes and checkpoints of many logs.
///
/// Time entries are written in offset order with non-decreasing timestamps, so both orders
/// agree; implementations may rely on that.
pub trait OffsetIndex: Send + Sync + 'static {
    /// Applies `ops` atomically; with `durable`, they survive a power loss once this returns.
    fn apply(&self, log: &str, ops: &[IndexOp], durable: bool) -> Result<(), IndexError>;

    /// The entry with the greatest offset `<= offset`.
    fn floor_offset(&self, log: &str, offset: Offset) -> Result<Option<OffsetEntry>, IndexError>;

    /// The entry with the greatest timestamp `< timestamp`.
    fn last_time_before(&self, log: &str, timestamp: i64) -> Result<Option<TimeEntry>, IndexError>;

    fn meta(&self, log: &str, key: &str) -> Result<Option<Vec<u8>>, IndexError>;

    /// Every checkpoint of the log whose key starts with `prefix`, in key order.
    fn meta_with_prefix(
        &self,
        log: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, IndexError>;
}
