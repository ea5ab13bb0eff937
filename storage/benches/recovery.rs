//! Time to open a large partition log after a clean and after an unclean shutdown.
//!
//! `cargo bench -p keel-storage --bench recovery` writes a `$KEEL_BENCH_LOG_GIB` GiB log
//! (default 10) of 1 MiB batches into `$KEEL_BENCH_DIR` (default: the temp folder), closes it,
//! and times reopening it; then appends `$KEEL_BENCH_UNFLUSHED_MIB` MiB (default 256) without
//! a flush, drops the log as a crash would, and times the recovering open. Prints one table.

use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_storage::batch::{encode, BatchParams, NewRecord};
use keel_storage::{DataDir, LogConfig, RecoveryStats};

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn batch_1mib() -> Bytes {
    let records: Vec<NewRecord> = (0..1024)
        .map(|i| NewRecord {
            timestamp: 1_700_000_000_000 + i,
            key: None,
            value: Some(Bytes::from(vec![(i % 251) as u8; 1024])),
            headers: Vec::new(),
        })
        .collect();
    encode(&BatchParams::default(), &records).expect("encode")
}

fn config() -> LogConfig {
    LogConfig {
        retention_ms: None,
        // 1024 records of 1 KiB make a batch just over Kafka's default max.message.bytes.
        max_message_bytes: 2 << 20,
        ..LogConfig::default()
    }
}

fn timed_open(data: &DataDir) -> (keel_storage::Log, RecoveryStats, Duration) {
    let start = Instant::now();
    let (log, stats) = data.open_log("bench-0", config()).expect("open");
    (log, stats, start.elapsed())
}

fn row(label: &str, size: u64, stats: &RecoveryStats, took: Duration) {
    println!(
        "| {label:<28} | {:>8.2} GiB | {:>12} | {:>14} | {:>10.3} s |",
        size as f64 / (1u64 << 30) as f64,
        stats.clean,
        stats.bytes_scanned,
        took.as_secs_f64()
    );
}

fn main() {
    // Cargo runs bench targets with `--bench` (and a filter) even under `cargo test`;
    // only do the heavy work when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let gib = env_u64("KEEL_BENCH_LOG_GIB", 10);
    let unflushed_mib = env_u64("KEEL_BENCH_UNFLUSHED_MIB", 256);
    let dir = match std::env::var_os("KEEL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("temp dir"),
        None => tempfile::tempdir().expect("temp dir"),
    };
    let batch = batch_1mib();
    let data = DataDir::open(dir.path()).expect("data dir");
    let (mut log, _) = data.open_log("bench-0", config()).expect("log");
    let write_start = Instant::now();
    let batches = (gib << 30) / batch.len() as u64;
    for _ in 0..batches {
        log.append(&batch, 0).expect("append");
    }
    log.close().expect("close");
    eprintln!(
        "wrote {gib} GiB in {:.1} s",
        write_start.elapsed().as_secs_f64()
    );

    println!("| open after                   | log size     | clean        | bytes scanned  | open time    |");
    println!("|------------------------------|--------------|--------------|----------------|--------------|");
    for round in 1..=3 {
        let (log, stats, took) = timed_open(&data);
        row(
            &format!("clean shutdown (run {round})"),
            log.size_bytes(),
            &stats,
            took,
        );
        log.close().expect("close");
    }
    let (mut log, _, _) = timed_open(&data);
    for _ in 0..unflushed_mib {
        log.append(&batch, 0).expect("append");
    }
    drop(log);
    let (log, stats, took) = timed_open(&data);
    row(
        &format!("crash, {unflushed_mib} MiB unflushed"),
        log.size_bytes(),
        &stats,
        took,
    );
    drop(log);
}
