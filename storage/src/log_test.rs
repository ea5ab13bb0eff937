use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::batch::{encode, BatchParams, NewRecord};
use crate::config::MIN_SEGMENT_BYTES;
use crate::index::mem::MemIndex;
use crate::DataDir;

struct Fixture {
    dir: tempfile::TempDir,
    data: DataDir,
    now: Arc<AtomicI64>,
}

const T0: i64 = 1_700_000_000_000;

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        Self::with(dir, data)
    }

    fn in_memory() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::with_index(dir.path(), Arc::new(MemIndex::new()));
        Self::with(dir, data)
    }

    fn with(dir: tempfile::TempDir, mut data: DataDir) -> Fixture {
        let now = Arc::new(AtomicI64::new(T0));
        let clock = now.clone();
        data.set_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        Fixture { dir, data, now }
    }

    /// Reopens the data directory, as a restarted process would.
    fn reopen(self) -> Fixture {
        let Fixture { dir, data, now } = self;
        drop(data);
        let mut data = DataDir::open(dir.path()).unwrap();
        let clock = now.clone();
        data.set_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        Fixture { dir, data, now }
    }

    fn open(&self, config: LogConfig) -> (Log, RecoveryStats) {
        self.data.open_log("t-0", config).unwrap()
    }

    fn segment_path(&self, base: Offset) -> std::path::PathBuf {
        self.dir
            .path()
            .join("logs/t-0")
            .join(segment::file_name(base))
    }
}

/// A batch of `count` records with `value_len`-byte values, timestamps from `ts`.
fn batch(count: usize, value_len: usize, ts: i64) -> Bytes {
    let records: Vec<NewRecord> = (0..count)
        .map(|i| NewRecord {
            timestamp: ts + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'v'; value_len])),
            headers: Vec::new(),
        })
        .collect();
    encode(&BatchParams::default(), &records).unwrap()
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// Every record offset in the log from `from`, read batch by batch through `read`.
fn offsets(log: &Log, from: Offset) -> Vec<Offset> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let bytes = log.read(next, 1 << 20, Offset::MAX).unwrap();
        if bytes.is_empty() {
            return out;
        }
        for one in batch::split(&bytes) {
            let decoded = batch::decode(one.unwrap()).unwrap();
            out.extend(
                decoded
                    .records
                    .iter()
                    .map(|r| r.offset)
                    .filter(|o| *o >= from),
            );
            next = decoded.header.last_offset() + 1;
        }
    }
}

#[test]
fn append_assigns_offsets_and_keeps_the_produced_bytes() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    let produced = batch(3, 10, T0);
    let first = log.append(&produced, 7).unwrap();
    assert_eq!((first.base_offset, first.last_offset), (0, 2));
    let second = log.append(&batch(2, 10, T0), 7).unwrap();
    assert_eq!((second.base_offset, second.last_offset), (3, 4));
    assert_eq!(log.log_end_offset(), 5);

    let stored = log.read(0, 1 << 20, Offset::MAX).unwrap();
    let header = BatchHeader::parse(&stored).unwrap();
    assert_eq!(header.partition_leader_epoch, 7);
    // Only base offset and leader epoch differ from what the producer sent.
    assert_eq!(&stored[8..12], &produced[8..12]);
    assert_eq!(&stored[16..produced.len()], &produced[16..]);
    batch::validate(&stored[..produced.len()], usize::MAX).unwrap();
    assert_eq!(offsets(&log, 0), vec![0, 1, 2, 3, 4]);
    assert_eq!(offsets(&log, 4), vec![4]);
}

#[test]
fn read_honours_max_bytes_upper_bound_and_range() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    for _ in 0..10 {
        log.append(&batch(1, 500, T0), 0).unwrap();
    }
    let one = log.read(0, 1, Offset::MAX).unwrap();
    assert_eq!(
        BatchHeader::parse(&one).unwrap().total_len(),
        one.len(),
        "at least one batch"
    );
    let some = log.read(0, 2000, Offset::MAX).unwrap();
    assert!(some.len() <= 2000 && some.len() > one.len());
    let below_hw = log.read(0, 1 << 20, 4).unwrap();
    assert_eq!(below_hw.len(), 4 * one.len());
    assert!(log.read(4, 1 << 20, 4).unwrap().is_empty());
    assert!(log.read(10, 100, Offset::MAX).unwrap().is_empty());
    assert!(matches!(
        log.read(11, 100, Offset::MAX),
        Err(LogError::OffsetOutOfRange {
            offset: 11,
            log_start: 0,
            log_end: 10
        })
    ));
    assert!(matches!(
        log.read(-1, 100, Offset::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn bad_batches_are_refused_and_change_nothing() {
    let f = Fixture::new();
    let config = LogConfig {
        max_message_bytes: 2000,
        ..small()
    };
    let (mut log, _) = f.open(config);
    log.append(&batch(2, 10, T0), 0).unwrap();
    let size = log.size_bytes();

    let mut corrupt = batch(2, 10, T0).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let truncated = batch(2, 10, T0).slice(..70);
    let oversized = batch(1, 3000, T0);
    let mut bad_codec = batch(1, 10, T0).to_vec();
    bad_codec[22] |= 0x07;
    for bad in [
        &corrupt[..],
        &truncated[..],
        &oversized[..],
        &bad_codec[..],
        &[][..],
    ] {
        assert!(matches!(log.append(bad, 0), Err(LogError::InvalidBatch(_))));
    }
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.size_bytes(), size);
    assert_eq!(offsets(&log, 0), vec![0, 1]);
}

#[test]
fn set_config_changes_the_limit_for_later_appends_and_refuses_bad_values() {
    let f = Fixture::new();
    let (mut log, _) = f.open(LogConfig {
        max_message_bytes: 2000,
        ..small()
    });
    let big = batch(1, 3000, T0);
    assert!(matches!(
        log.append(&big, 0),
        Err(LogError::InvalidBatch(_))
    ));
    log.set_config(LogConfig {
        max_message_bytes: 8000,
        ..small()
    })
    .unwrap();
    assert_eq!(log.append(&big, 0).unwrap().base_offset, 0);
    let bad = LogConfig {
        segment_bytes: 1,
        ..small()
    };
    assert!(matches!(
        log.set_config(bad),
        Err(LogError::InvalidConfig(_))
    ));
    assert_eq!(log.config().max_message_bytes, 8000);
}

#[test]
fn segments_roll_by_size_and_by_age() {
    let f = Fixture::new();
    let config = LogConfig {
        segment_bytes: 4096,
        segment_ms: 60_000,
        ..small()
    };
    let (mut log, _) = f.open(config);
    for _ in 0..20 {
        log.append(&batch(2, 400, T0), 0).unwrap();
    }
    assert!(log.segment_count() >= 4, "{} segments", log.segment_count());
    assert_eq!(offsets(&log, 0), (0..40).collect::<Vec<_>>());
    assert_eq!(offsets(&log, 17), (17..40).collect::<Vec<_>>());

    let before = log.segment_count();
    f.now.fetch_add(60_000, Ordering::SeqCst);
    log.append(&batch(1, 10, T0), 0).unwrap();
    assert_eq!(log.segment_count(), before + 1, "an old segment rolls");
    assert!(f.segment_path(40).exists());
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    // Batches of 10 records, timestamps T0 + 100*i + j.
    for i in 0..50 {
        log.append(&batch(10, 100, T0 + 100 * i), 0).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(T0 - 5).unwrap(), Some((0, T0)));
    assert_eq!(log.offset_for_timestamp(T0 + 3).unwrap(), Some((3, T0 + 3)));
    assert_eq!(
        log.offset_for_timestamp(T0 + 1205).unwrap(),
        Some((125, T0 + 1205))
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 1250).unwrap(),
        Some((130, T0 + 1300))
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 4909).unwrap(),
        Some((499, T0 + 4909))
    );
    assert_eq!(log.offset_for_timestamp(T0 + 4910).unwrap(), None);
}

#[test]
fn clean_restart_reads_no_segment_data() {
    let mut f = Fixture::new();
    for round in 1..=3 {
        let (mut log, stats) = f.open(small());
        assert_eq!(stats.bytes_scanned, 0, "round {round}");
        for _ in 0..200 * round {
            log.append(&batch(4, 200, T0), 0).unwrap();
        }
        log.close().unwrap();
        f = f.reopen();
    }
    let (log, stats) = f.open(small());
    assert!(stats.clean);
    assert_eq!(
        stats.bytes_scanned, 0,
        "however large the log, nothing is rescanned"
    );
    assert!(log.size_bytes() > 1 << 20);
    assert_eq!(log.log_end_offset(), 4 * 200 * 6);
    assert_eq!(offsets(&log, 4790), (4790..4800).collect::<Vec<_>>());
    assert_eq!(log.offset_for_timestamp(T0 + 3).unwrap(), Some((3, T0 + 3)));
}

#[test]
fn unclean_restart_scans_only_the_unflushed_tail() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    for _ in 0..500 {
        log.append(&batch(4, 200, T0), 0).unwrap();
    }
    log.flush().unwrap();
    let flushed_size = log.size_bytes();
    let tail = batch(4, 200, T0);
    for _ in 0..5 {
        log.append(&tail, 0).unwrap();
    }
    drop(log); // no close: like a crash after the page cache got the writes
    let f = f.reopen();
    let (mut log, stats) = f.open(small());
    assert!(!stats.clean);
    assert_eq!(stats.batches_recovered, 5);
    assert!(stats.bytes_scanned >= 5 * tail.len() as u64);
    assert!(
        stats.bytes_scanned < flushed_size / 4,
        "scanned {}",
        stats.bytes_scanned
    );
    assert_eq!(stats.bytes_truncated, 0);
    assert_eq!(log.log_end_offset(), 2020);
    assert_eq!(log.append(&batch(1, 1, T0), 0).unwrap().base_offset, 2020);
    assert_eq!(offsets(&log, 2010).len(), 11);
}

#[test]
fn torn_tail_is_cut_and_the_log_goes_on() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    for _ in 0..10 {
        log.append(&batch(2, 100, T0), 0).unwrap();
    }
    log.flush().unwrap();
    let good = log.log_end_offset();
    let last = log.append(&batch(2, 100, T0), 0).unwrap();
    let active = log.active().base;
    drop(log);
    // Half of the last batch reached the disk.
    let path = f.segment_path(active);
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 40).unwrap();
    drop(file);

    let f = f.reopen();
    let (mut log, stats) = f.open(small());
    assert!(stats.bytes_truncated > 0);
    assert_eq!(log.log_end_offset(), good);
    assert!(last.base_offset == good);
    assert_eq!(log.append(&batch(1, 1, T0), 0).unwrap().base_offset, good);
    assert_eq!(offsets(&log, 0), (0..=good).collect::<Vec<_>>());
}

#[test]
fn corrupt_unflushed_batch_and_everything_after_it_are_cut() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    log.append(&batch(2, 100, T0), 0).unwrap();
    log.flush().unwrap();
    let victim = log.append(&batch(2, 100, T0), 0).unwrap();
    log.append(&batch(2, 100, T0), 0).unwrap();
    drop(log);
    let path = f.segment_path(0);
    let mut bytes = std::fs::read(&path).unwrap();
    let one = bytes.len() / 3;
    bytes[one + 70] ^= 0x55; // inside the second batch's records, under its CRC
    std::fs::write(&path, &bytes).unwrap();

    let f = f.reopen();
    let (log, stats) = f.open(small());
    assert_eq!(log.log_end_offset(), victim.base_offset);
    assert_eq!(stats.bytes_truncated, 2 * one as u64);
    assert_eq!(offsets(&log, 0), vec![0, 1]);
}

#[test]
fn crash_after_rolls_recovers_every_segment_after_the_recovery_point() {
    let f = Fixture::new();
    let config = LogConfig {
        segment_bytes: 4096,
        ..small()
    };
    let (mut log, _) = f.open(config.clone());
    log.append(&batch(2, 400, T0), 0).unwrap();
    log.flush().unwrap();
    for _ in 0..30 {
        log.append(&batch(2, 400, T0), 0).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 3);
    drop(log);
    let f = f.reopen();
    let (log, stats) = f.open(config);
    assert_eq!(stats.batches_recovered, 30);
    assert_eq!(log.segment_count(), segments);
    assert_eq!(offsets(&log, 0), (0..62).collect::<Vec<_>>());
}

#[test]
fn truncate_to_removes_the_batch_holding_the_offset_and_all_after() {
    let f = Fixture::new();
    let config = LogConfig {
        segment_bytes: 4096,
        ..small()
    };
    let (mut log, _) = f.open(config.clone());
    for _ in 0..40 {
        log.append(&batch(3, 300, T0), 0).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(
        log.truncate_to(100).unwrap(),
        99,
        "offset 100 sits in batch 99..=101"
    );
    assert_eq!(log.log_end_offset(), 99);
    assert_eq!(offsets(&log, 90), (90..99).collect::<Vec<_>>());
    assert_eq!(log.append(&batch(1, 1, T0), 0).unwrap().base_offset, 99);
    assert_eq!(log.truncate_to(30).unwrap(), 30);
    assert_eq!(offsets(&log, 0), (0..30).collect::<Vec<_>>());
    assert_eq!(log.truncate_to(500).unwrap(), 30, "beyond the end: no-op");
    assert_eq!(log.flushed_offset(), 30);
    drop(log);
    let f = f.reopen();
    let (log, _) = f.open(config);
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(offsets(&log, 0), (0..30).collect::<Vec<_>>());
}

#[test]
fn truncate_fully_starts_empty_at_the_offset() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    log.append(&batch(5, 10, T0), 0).unwrap();
    log.truncate_fully_and_start_at(1000).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1000));
    assert!(matches!(
        log.read(0, 100, Offset::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let replicated = {
        let records = [NewRecord {
            timestamp: T0,
            key: None,
            value: Some(Bytes::from_static(b"x")),
            headers: vec![],
        }];
        let params = BatchParams {
            base_offset: 1000,
            ..BatchParams::default()
        };
        encode(&params, &records).unwrap()
    };
    log.append_replicated(&replicated).unwrap();
    assert_eq!(offsets(&log, 1000), vec![1000]);
}

#[test]
fn replicated_batches_keep_their_offsets_and_must_be_contiguous() {
    let f = Fixture::new();
    let (mut leader, _) = f.data.open_log("leader-0", small()).unwrap();
    let (mut follower, _) = f.data.open_log("follower-0", small()).unwrap();
    for i in 0..5 {
        leader.append(&batch(3, 50, T0 + i), 4).unwrap();
    }
    let fetched = leader.read(0, 1 << 20, Offset::MAX).unwrap();
    let info = follower.append_replicated(&fetched).unwrap().unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 14));
    assert_eq!(follower.read(0, 1 << 20, Offset::MAX).unwrap(), fetched);

    let again = leader.read(3, 1 << 20, Offset::MAX).unwrap();
    assert!(matches!(
        follower.append_replicated(&again),
        Err(LogError::NonContiguous {
            expected: 15,
            got: 3
        })
    ));
    let mut broken = fetched.to_vec();
    broken.truncate(broken.len() - 1);
    leader.append(&batch(1, 1, T0), 4).unwrap();
    assert!(follower.append_replicated(&broken).is_err());
    assert_eq!(follower.log_end_offset(), 15, "a bad fetch changes nothing");
}

#[test]
fn retention_deletes_whole_old_segments_below_the_high_watermark() {
    let f = Fixture::new();
    let config = LogConfig {
        segment_bytes: 4096,
        retention_ms: Some(3_600_000),
        ..small()
    };
    let (mut log, _) = f.open(config.clone());
    for i in 0..40 {
        log.append(&batch(2, 400, T0 + i), 0).unwrap();
    }
    f.now.fetch_add(1_000, Ordering::SeqCst);
    assert_eq!(
        log.apply_retention(Offset::MAX).unwrap().segments_deleted,
        0,
        "nothing old yet"
    );

    f.now.fetch_add(3_600_000, Ordering::SeqCst);
    let held = log.apply_retention(20).unwrap();
    assert!(
        held.log_start <= 20,
        "nothing at or above the high watermark goes"
    );
    let all = log.apply_retention(Offset::MAX).unwrap();
    assert_eq!(
        all.log_start, 80,
        "the expired active segment rolled and went too"
    );
    assert_eq!(log.log_start_offset(), 80);
    assert!(matches!(
        log.read(0, 100, Offset::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.append(&batch(1, 1, T0), 0).unwrap().base_offset, 80);
    log.close().unwrap();
    let f = f.reopen();
    let (log, _) = f.open(config);
    assert_eq!(log.log_start_offset(), 80);
    assert_eq!(offsets(&log, 80), vec![80]);
}

#[test]
fn retention_by_size_keeps_the_log_under_the_limit() {
    let f = Fixture::in_memory();
    let config = LogConfig {
        segment_bytes: 4096,
        retention_ms: None,
        retention_bytes: Some(10_000),
        ..small()
    };
    let (mut log, _) = f.open(config);
    for _ in 0..40 {
        log.append(&batch(2, 400, T0), 0).unwrap();
    }
    let before = log.size_bytes();
    let outcome = log.apply_retention(Offset::MAX).unwrap();
    assert!(outcome.segments_deleted > 0);
    assert!(log.size_bytes() >= 10_000 - 4096 && log.size_bytes() <= 10_000 + 4096);
    assert_eq!(before - outcome.bytes_deleted, log.size_bytes());
    assert_eq!(
        offsets(&log, outcome.log_start).first(),
        Some(&outcome.log_start)
    );
}

#[test]
fn delete_before_drops_only_whole_segments_below_the_offset_and_survives_a_restart() {
    let f = Fixture::new();
    let config = LogConfig {
        segment_bytes: 4096,
        retention_ms: None,
        ..small()
    };
    let (mut log, _) = f.open(config.clone());
    for _ in 0..20 {
        log.append(&batch(2, 400, T0), 0).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 3);
    // An offset inside a segment keeps that segment: the new start is a segment base <= it.
    let outcome = log.delete_before(21).unwrap();
    assert!(outcome.segments_deleted > 0);
    assert!(log.log_start_offset() <= 21 && log.log_start_offset() > 0);
    assert_eq!(
        offsets(&log, log.log_start_offset()).first(),
        Some(&log.log_start_offset())
    );
    // Nothing below the start, nothing at or after 21 lost.
    assert!(log.read(0, 1 << 20, Offset::MAX).is_err());
    assert!(offsets(&log, log.log_start_offset()).contains(&39));
    // Never the active segment, even past the end.
    log.delete_before(Offset::MAX).unwrap();
    assert_eq!(log.segment_count(), 1);
    let start = log.log_start_offset();
    log.close().unwrap();
    let f = f.reopen();
    let (log, _) = f.open(config);
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), 40);
}

#[test]
fn group_commit_flush_covers_appends_made_before_it_began() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    log.append(&batch(2, 10, T0), 0).unwrap();
    let job = log.begin_flush();
    log.append(&batch(2, 10, T0), 0).unwrap();
    let result = std::thread::scope(|s| s.spawn(|| job.sync()).join().unwrap());
    assert_eq!(log.finish_flush(job, result).unwrap(), 2);
    assert!(log.unflushed_bytes() > 0);
    assert_eq!(log.flush().unwrap(), 4);
    assert_eq!(log.unflushed_bytes(), 0);
}

#[test]
fn a_failed_fsync_poisons_the_log() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    log.append(&batch(1, 10, T0), 0).unwrap();
    let job = log.begin_flush();
    let failure = StorageError::new(
        Subject::Segment("x".into()),
        Verb::Sync,
        std::io::Error::other("EIO"),
    );
    assert!(log.finish_flush(job, Err(failure)).is_err());
    assert!(log.is_poisoned());
    assert!(matches!(
        log.append(&batch(1, 10, T0), 0),
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(log.flush(), Err(LogError::Poisoned { .. })));
    assert_eq!(offsets(&log, 0), vec![0], "reads still work");
}

#[test]
fn invalid_names_and_configs_are_refused() {
    let f = Fixture::new();
    for name in ["", "a/b", "..", "x y", &"n".repeat(256)] {
        assert!(matches!(
            f.data.open_log(name, small()),
            Err(LogError::InvalidName { .. })
        ));
    }
    let bad = LogConfig {
        segment_bytes: 1,
        ..small()
    };
    assert!(matches!(
        f.data.open_log("t-1", bad),
        Err(LogError::InvalidConfig(_))
    ));
    assert_eq!(f.data.log_names().unwrap(), Vec::<String>::new());
}

#[test]
fn logs_share_one_index_without_mixing() {
    let f = Fixture::new();
    let (mut a, _) = f.data.open_log("a-0", small()).unwrap();
    let (mut b, _) = f.data.open_log("a-00", small()).unwrap();
    for _ in 0..50 {
        a.append(&batch(1, 300, T0), 0).unwrap();
    }
    b.append(&batch(7, 10, T0), 0).unwrap();
    assert_eq!(offsets(&b, 0), (0..7).collect::<Vec<_>>());
    assert_eq!(offsets(&a, 45), (45..50).collect::<Vec<_>>());
    f.data.delete_log(a).unwrap();
    assert_eq!(f.data.log_names().unwrap(), vec!["a-00".to_owned()]);
    assert_eq!(offsets(&b, 0), (0..7).collect::<Vec<_>>());
}

fn epochs_of(log: &Log) -> Vec<(i32, Offset)> {
    log.epochs()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

#[test]
fn leader_epochs_are_tracked_persisted_and_answer_end_offsets() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    log.append(&batch(2, 10, T0), 1).unwrap(); // 0..2 in epoch 1
    log.append(&batch(3, 10, T0), 1).unwrap(); // 2..5
    log.assign_epoch(3).unwrap(); // became leader at 5, nothing appended yet
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 5)));
    log.append(&batch(3, 10, T0), 3).unwrap(); // 5..8
    assert_eq!(epochs_of(&log), vec![(1, 0), (3, 5)]);
    assert_eq!(log.latest_epoch(), Some(3));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, 5)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 8)));
    assert_eq!(log.end_offset_for_epoch(4), None);
    log.checkpoint_high_watermark(6).unwrap();
    log.close().unwrap();

    let f = f.reopen();
    let (mut log, stats) = f.open(small());
    assert!(stats.clean);
    assert_eq!(epochs_of(&log), vec![(1, 0), (3, 5)]);
    assert_eq!(log.checkpointed_high_watermark(), Some(6));

    // An epoch begun at the log end with no records goes when the log is cut at its end.
    log.assign_epoch(4).unwrap();
    assert_eq!(log.truncate_to(8).unwrap(), 8);
    assert_eq!(log.latest_epoch(), Some(3));
    // A follower told that its epoch 3 diverges cuts its log; the epoch goes with it.
    assert_eq!(log.truncate_to(5).unwrap(), 5);
    assert_eq!(epochs_of(&log), vec![(1, 0)]);
    assert_eq!(log.checkpointed_high_watermark(), Some(5));
    log.truncate_fully_and_start_at(20).unwrap();
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.checkpointed_high_watermark(), None);
}

#[test]
fn epochs_of_a_crashed_tail_are_rebuilt_from_the_surviving_batches() {
    let f = Fixture::new();
    let (mut log, _) = f.open(small());
    log.append(&batch(2, 10, T0), 1).unwrap();
    log.flush().unwrap();
    log.append(&batch(2, 10, T0), 2).unwrap(); // 2..4, epoch 2, unflushed
    log.append(&batch(2, 10, T0), 4).unwrap(); // 4..6, epoch 4, torn below
    let end = log.size_bytes();
    drop(log);
    // Tear the last batch: its epoch must not survive.
    let path = f.segment_path(0);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(end - 3).unwrap();
    let f = f.reopen();
    let (log, stats) = f.open(small());
    assert!(!stats.clean);
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(epochs_of(&log), vec![(1, 0), (2, 2)]);
    assert_eq!(log.end_offset_for_epoch(4), None);
}

#[test]
fn retention_moves_the_first_epoch_start_with_the_log_start() {
    let f = Fixture::new();
    let config = LogConfig {
        segment_bytes: MIN_SEGMENT_BYTES,
        retention_bytes: Some(1),
        ..small()
    };
    let (mut log, _) = f.open(config);
    for epoch in [1, 1, 1, 2, 2, 2] {
        log.append(&batch(20, 200, T0), epoch).unwrap();
    }
    let outcome = log.apply_retention(log.log_end_offset()).unwrap();
    assert!(outcome.log_start > 0);
    let first = log.epochs()[0];
    assert_eq!(first.start_offset, log.log_start_offset());
    assert_eq!(log.latest_epoch(), Some(2));
}
