//! `kill -9` a process in the middle of appending, then recover its log.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_storage::batch::{decode, split};
use keel_storage::{DataDir, LogConfig, Offset};

/// Starts the writer, waits until it has flushed at least `min_flushed`, kills it with
/// SIGKILL, and returns the last offset it reported as flushed.
fn run_writer_and_kill(dir: &std::path::Path, min_flushed: Offset) -> Offset {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel-log-writer"))
        .arg(dir)
        .arg("crash-0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start keel-log-writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut flushed = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read writer output");
        flushed = line
            .strip_prefix("flushed ")
            .and_then(|n| n.parse().ok())
            .expect("writer prints 'flushed N'");
        if flushed >= min_flushed || Instant::now() > deadline {
            break;
        }
    }
    // SIGKILL while the writer is mid-append: it never stops between reports.
    child.kill().expect("kill -9 the writer");
    child.wait().expect("reap the writer");
    assert!(
        flushed >= min_flushed,
        "writer reached only {flushed} before the deadline"
    );
    flushed
}

/// Reads the whole log and checks that offsets are dense from 0 and each value is its offset.
fn check_log(dir: &std::path::Path) -> Offset {
    let data = DataDir::open(dir).expect("open data dir");
    let config = LogConfig {
        segment_bytes: 256 * 1024,
        ..LogConfig::default()
    };
    let (log, _) = data.open_log("crash-0", config).expect("recover log");
    let mut next = 0;
    loop {
        let bytes = log.read(next, 1 << 20, Offset::MAX).expect("read");
        if bytes.is_empty() {
            break;
        }
        for one in split(&bytes) {
            for record in decode(one.expect("whole batch"))
                .expect("valid batch")
                .records
            {
                assert_eq!(record.offset, next, "offsets are dense");
                let value = record.value.expect("value");
                assert_eq!(
                    std::str::from_utf8(&value)
                        .unwrap()
                        .parse::<Offset>()
                        .unwrap(),
                    next
                );
                next += 1;
            }
        }
    }
    assert_eq!(next, log.log_end_offset());
    log.close().expect("close");
    next
}

#[test]
fn kill_9_during_appends_loses_nothing_flushed_and_recovers_a_valid_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut durable = 0;
    for round in 1..=3 {
        let flushed = run_writer_and_kill(dir.path(), durable + 2_000);
        let end = check_log(dir.path());
        assert!(
            end >= flushed,
            "round {round}: recovered {end} < flushed {flushed}"
        );
        durable = end;
    }
}
