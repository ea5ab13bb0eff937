//! Append and read throughput of a partition log on real files and the RocksDB index.
//!
//! `cargo bench -p keel-storage --bench log`. Files go to `$KEEL_BENCH_DIR` (default: the
//! system temp folder); put it on the disk you want to measure. 1 KiB records, batches of
//! 16 KiB and 1 MiB, with and without an fsync per batch; reads from the page cache.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keel_storage::batch::{encode, BatchParams, NewRecord};
use keel_storage::{DataDir, LogConfig};

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("KEEL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("temp dir in KEEL_BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// A batch of `count` 1 KiB records with incompressible-looking values.
fn batch_of_1k_records(count: usize) -> Bytes {
    let records: Vec<NewRecord> = (0..count)
        .map(|i| NewRecord {
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{i:08}"))),
            value: Some(Bytes::from(
                (0..1024u32)
                    .map(|j| (j.wrapping_mul(2654435761) >> 13) as u8 ^ i as u8)
                    .collect::<Vec<u8>>(),
            )),
            headers: Vec::new(),
        })
        .collect();
    encode(&BatchParams::default(), &records).expect("encode")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        retention_ms: None,
        // 1024 records of 1 KiB make a batch just over Kafka's default max.message.bytes.
        max_message_bytes: 2 << 20,
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (label, records) in [("16KiB", 16), ("1MiB", 1024)] {
        let batch = batch_of_1k_records(records);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        for fsync in [false, true] {
            let id = BenchmarkId::new(if fsync { "fsync" } else { "no_fsync" }, label);
            group.bench_with_input(id, &batch, |b, batch| {
                b.iter_custom(|iters| {
                    // A fresh log per sample keeps the disk use bounded by one sample.
                    let dir = bench_dir();
                    let data = DataDir::open(dir.path()).expect("data dir");
                    let (mut log, _) = data.open_log("bench-0", config()).expect("log");
                    let start = Instant::now();
                    for _ in 0..iters {
                        log.append(batch, 0).expect("append");
                        if fsync {
                            log.flush().expect("flush");
                        }
                    }
                    start.elapsed()
                });
            });
        }
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    const LOG_BYTES: usize = 512 << 20;
    let dir = bench_dir();
    let data = DataDir::open(dir.path()).expect("data dir");
    let (mut log, _) = data.open_log("bench-0", config()).expect("log");
    let batch = batch_of_1k_records(1024);
    for _ in 0..LOG_BYTES / batch.len() {
        log.append(&batch, 0).expect("append");
    }
    log.flush().expect("flush");
    let end = log.log_end_offset();

    let mut group = c.benchmark_group("read");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for max_bytes in [1 << 20, 4 << 20] {
        group.throughput(Throughput::Bytes(max_bytes as u64));
        group.bench_function(BenchmarkId::new("page_cache", max_bytes), |b| {
            let mut next = 0;
            b.iter(|| {
                if next >= end {
                    next = 0;
                }
                let bytes = log.read(next, max_bytes, i64::MAX).expect("read");
                next += (bytes.len() / batch.len()) as i64 * 1024;
                bytes
            });
        });
    }
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
