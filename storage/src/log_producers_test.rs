//! The producer state as the log keeps it: checks on leader appends, recording on replicated
//! appends, snapshots at close, rebuilds after a crash and after truncation.

use bytes::Bytes;

use super::*;
use crate::batch::{encode, BatchParams, NewRecord};
use crate::producers::SequenceError;
use crate::DataDir;

const PID: i64 = 42;

fn idempotent(epoch: i16, first_seq: i32, count: usize) -> Bytes {
    let records: Vec<NewRecord> = (0..count)
        .map(|i| NewRecord {
            timestamp: 1_000 + i as i64,
            key: None,
            value: Some(Bytes::from(format!("v{}", first_seq as usize + i))),
            headers: Vec::new(),
        })
        .collect();
    let params = BatchParams {
        producer_id: PID,
        producer_epoch: epoch,
        base_sequence: first_seq,
        ..BatchParams::default()
    };
    encode(&params, &records).unwrap()
}

fn plain() -> Bytes {
    let record = NewRecord {
        timestamp: 1_000,
        key: None,
        value: Some(Bytes::from_static(b"plain")),
        headers: Vec::new(),
    };
    encode(&BatchParams::default(), &[record]).unwrap()
}

fn open(dir: &std::path::Path) -> (Log, RecoveryStats) {
    let mut data = DataDir::open(dir).unwrap();
    data.set_clock(Arc::new(|| 5_000));
    data.open_log("p-0", LogConfig::default()).unwrap()
}

/// Appends batches 0..n of three records each (sequences 0..3n).
fn append_batches(log: &mut Log, n: i32) {
    append_batches_from(log, 0, n);
}

/// Appends batches `from..to` of three records each (sequences `3 from..3 to`).
fn append_batches_from(log: &mut Log, from: i32, to: i32) {
    for i in from..to {
        let info = log.append(&idempotent(0, i * 3, 3), 0).unwrap();
        assert!(!info.duplicate);
    }
}

#[test]
fn a_retried_batch_is_answered_with_its_first_offsets_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    log.append(&plain(), 0).unwrap(); // offset 0, no producer id
    let first = log.append(&idempotent(0, 0, 3), 0).unwrap();
    assert_eq!((first.base_offset, first.last_offset), (1, 3));
    let again = log.append(&idempotent(0, 0, 3), 0).unwrap();
    assert!(again.duplicate);
    assert_eq!((again.base_offset, again.last_offset), (1, 3));
    assert_eq!(log.log_end_offset(), 4);
    let gap = log.append(&idempotent(0, 5, 1), 0).unwrap_err();
    assert!(matches!(
        gap,
        LogError::Sequence(SequenceError::OutOfOrder {
            expected: 3,
            got: 5,
            ..
        })
    ));
    assert_eq!(log.log_end_offset(), 4, "a refused batch writes nothing");
    log.append(&idempotent(1, 0, 1), 0).unwrap();
    assert!(matches!(
        log.append(&idempotent(0, 3, 1), 0).unwrap_err(),
        LogError::Sequence(SequenceError::StaleEpoch { current: 1, .. })
    ));
}

#[test]
fn a_clean_reopen_reads_no_header_and_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    append_batches(&mut log, 4);
    let before = log.producers().clone();
    log.close().unwrap();
    let (mut log, stats) = open(dir.path());
    assert_eq!(stats.producer_batches_scanned, 0);
    assert_eq!(log.producers(), &before);
    assert!(log.append(&idempotent(0, 9, 3), 0).unwrap().duplicate);
}

#[test]
fn a_crash_rebuilds_from_the_latest_snapshot_and_the_headers_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    append_batches(&mut log, 3);
    log.snapshot_producers().unwrap();
    append_batches_from(&mut log, 3, 5);
    log.flush().unwrap();
    let before = log.producers().clone();
    drop(log); // a crash: no close
    let (log, stats) = open(dir.path());
    assert_eq!(
        stats.producer_batches_scanned, 2,
        "only the batches after the snapshot"
    );
    assert_eq!(log.producers(), &before);
}

#[test]
fn truncation_drops_the_state_above_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path());
    append_batches(&mut log, 2);
    log.snapshot_producers().unwrap();
    append_batches_from(&mut log, 2, 4);
    log.snapshot_producers().unwrap(); // at 12: above the cut below
    log.truncate_to(6).unwrap();
    let entry = log.producers().get(PID).unwrap();
    assert_eq!(entry.batches.back().map(|b| b.last_seq), Some(5));
    // The batch of sequences 6..=8 is gone, so it is new again, not a duplicate.
    let info = log.append(&idempotent(0, 6, 3), 0).unwrap();
    assert!(!info.duplicate);
    assert_eq!(info.base_offset, 6);
    log.close().unwrap();
    let (log, _) = open(dir.path());
    assert_eq!(
        log.producers()
            .get(PID)
            .and_then(|e| e.batches.back().copied())
            .map(|b| (b.last_seq, b.last_offset)),
        Some((8, 8))
    );
}

#[test]
fn replicated_appends_record_the_state_a_new_leader_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = open(dir.path());
    append_batches(&mut leader, 2);
    let bytes = leader.read(0, usize::MAX, i64::MAX).unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (mut follower, _) = open(follower_dir.path());
    follower.append_replicated(&bytes).unwrap();
    assert_eq!(follower.producers(), leader.producers());
    assert!(follower.append(&idempotent(0, 3, 3), 1).unwrap().duplicate);
}

#[test]
fn expiry_goes_by_the_latest_batch_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path()); // clock: 5_000; batch timestamps 1_000..
    append_batches(&mut log, 1);
    assert_eq!(log.expire_producers(10_000), 0);
    assert_eq!(log.expire_producers(3_000), 1);
    assert!(log.producers().is_empty());
    // An expired producer is unknown: any sequence is accepted (see crate::producers).
    assert!(!log.append(&idempotent(0, 0, 3), 0).unwrap().duplicate);
}
