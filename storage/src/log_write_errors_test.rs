//! Writes the disk refuses (a full disk): the refused batch changes nothing, and a log whose
//! files may disagree with its index after a failure is poisoned.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::*;
use crate::batch::{encode, BatchParams, NewRecord};
use crate::error::IndexError;
use crate::index::mem::MemIndex;
use crate::index::{OffsetEntry, TimeEntry};
use crate::DataDir;

/// The in-memory index, refusing every write while `full` is set, as RocksDB does once a
/// write hit a full disk.
#[derive(Default)]
struct RefusingIndex {
    inner: MemIndex,
    full: AtomicBool,
}

impl OffsetIndex for RefusingIndex {
    fn apply(&self, log: &str, ops: &[IndexOp], durable: bool) -> Result<(), IndexError> {
        if self.full.load(Ordering::SeqCst) {
            let e = std::io::Error::from_raw_os_error(28);
            return Err(IndexError::Backend(Arc::new(e)));
        }
        self.inner.apply(log, ops, durable)
    }

    fn floor_offset(&self, log: &str, offset: Offset) -> Result<Option<OffsetEntry>, IndexError> {
        self.inner.floor_offset(log, offset)
    }

    fn last_time_before(&self, log: &str, timestamp: i64) -> Result<Option<TimeEntry>, IndexError> {
        self.inner.last_time_before(log, timestamp)
    }

    fn meta(&self, log: &str, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        self.inner.meta(log, key)
    }

    fn meta_with_prefix(
        &self,
        log: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        self.inner.meta_with_prefix(log, prefix)
    }
}

fn idempotent(first_seq: i32, ts: i64) -> Bytes {
    let record = NewRecord {
        timestamp: ts,
        key: None,
        value: Some(Bytes::from(format!("v{first_seq}"))),
        headers: Vec::new(),
    };
    let params = BatchParams {
        producer_id: 7,
        producer_epoch: 0,
        base_sequence: first_seq,
        ..BatchParams::default()
    };
    encode(&params, &[record]).unwrap()
}

/// Index entries on every batch, so that every append writes to the index.
fn config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 1,
        ..LogConfig::default()
    }
}

fn open(dir: &std::path::Path) -> (Log, Arc<RefusingIndex>) {
    let index = Arc::new(RefusingIndex::default());
    let data = DataDir::with_index(dir, index.clone());
    let (log, _) = data.open_log("p-0", config()).unwrap();
    (log, index)
}

#[test]
fn a_batch_the_index_refuses_changes_nothing_and_its_offsets_go_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, index) = open(dir.path());
    log.append(&idempotent(0, 1_000), 0).unwrap();
    let size = log.size_bytes();
    index.full.store(true, Ordering::SeqCst);
    // A later timestamp and a new leader epoch: both would change state if kept.
    let refused = log.append(&idempotent(1, 9_000), 1).unwrap_err();
    assert!(matches!(refused, LogError::Index(_)), "{refused}");
    assert!(!log.is_poisoned(), "a refused write does not poison");
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(log.size_bytes(), size, "the written bytes were cut off");
    assert_eq!(log.max_timestamp(), Some(1_000));
    assert_eq!(log.latest_epoch(), Some(0));
    index.full.store(false, Ordering::SeqCst);
    // The producer state did not record the refused batch: its retry is new, not a duplicate.
    let retried = log.append(&idempotent(1, 9_000), 1).unwrap();
    assert!(!retried.duplicate);
    assert_eq!(retried.base_offset, 1);
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(log.max_timestamp(), Some(9_000));
    let bytes = log.read(0, 1 << 20, Offset::MAX).unwrap();
    let values: Vec<_> = batch::split(&bytes)
        .map(|b| batch::decode(b.unwrap()).unwrap().records[0].value.clone())
        .collect();
    assert_eq!(
        values,
        vec![Some(Bytes::from("v0")), Some(Bytes::from("v1"))]
    );
}

#[test]
fn a_replicated_batch_the_index_refuses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = open(&dir.path().join("leader"));
    leader.append(&idempotent(0, 1_000), 3).unwrap();
    let fetched = leader.read(0, 1 << 20, Offset::MAX).unwrap();
    let (mut follower, index) = open(&dir.path().join("follower"));
    index.full.store(true, Ordering::SeqCst);
    assert!(follower.append_replicated(&fetched).is_err());
    assert_eq!(follower.log_end_offset(), 0);
    assert_eq!(follower.latest_epoch(), None);
    assert_eq!(follower.size_bytes(), 0);
    index.full.store(false, Ordering::SeqCst);
    assert_eq!(
        follower
            .append_replicated(&fetched)
            .unwrap()
            .unwrap()
            .base_offset,
        0
    );
    assert_eq!(follower.latest_epoch(), Some(3));
}

#[test]
fn a_truncation_the_index_refuses_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, index) = open(dir.path());
    for seq in 0..5 {
        log.append(&idempotent(seq, 1_000), 0).unwrap();
    }
    index.full.store(true, Ordering::SeqCst);
    assert!(log.truncate_to(2).is_err());
    assert!(log.is_poisoned(), "files and index may disagree now");
    index.full.store(false, Ordering::SeqCst);
    assert!(matches!(
        log.append(&idempotent(5, 1_000), 0),
        Err(LogError::Poisoned { .. })
    ));
}
