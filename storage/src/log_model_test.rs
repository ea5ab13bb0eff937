//! Model-based test: random appends, flushes, truncations, retention, clean restarts and
//! crashes with torn tails, checked after every step against a plain list of records.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::batch::{encode, BatchParams, NewRecord};
use crate::DataDir;

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
    },
    Flush,
    /// Truncate at this fraction (per mille) of the way from log start to log end.
    Truncate {
        at_per_mille: u16,
    },
    RetainBytes {
        limit: u64,
    },
    CleanRestart,
    /// Drop the log without closing it, then cut up to `chop` unflushed bytes off the tail.
    Crash {
        chop: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..8, 0usize..600).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        2 => Just(Op::Flush),
        1 => (0u16..=1000).prop_map(|at_per_mille| Op::Truncate { at_per_mille }),
        1 => (2_000u64..20_000).prop_map(|limit| Op::RetainBytes { limit }),
        1 => Just(Op::CleanRestart),
        2 => (0u16..3000).prop_map(|chop| Op::Crash { chop }),
    ]
}

/// What the log must hold: the first offset and each record's value, in order.
struct Model {
    start: Offset,
    values: Vec<Bytes>,
}

impl Model {
    fn end(&self) -> Offset {
        self.start + self.values.len() as Offset
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(dir: &std::path::Path) -> Log {
    let mut data = DataDir::open(dir).unwrap();
    data.set_clock(Arc::new(|| 1_700_000_000_000));
    data.open_log("m-0", config()).unwrap().0
}

/// Every (offset, value) in the log, read through the public read path.
fn contents(log: &Log) -> Vec<(Offset, Bytes)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    loop {
        let bytes = log.read(next, 3000, Offset::MAX).unwrap();
        if bytes.is_empty() {
            return out;
        }
        for one in batch::split(&bytes) {
            let decoded = batch::decode(one.unwrap()).unwrap();
            for r in decoded.records {
                if r.offset >= next {
                    out.push((r.offset, r.value.unwrap_or_default()));
                }
            }
            next = decoded.header.last_offset() + 1;
        }
    }
}

fn check(log: &Log, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_start_offset(), model.start);
    prop_assert_eq!(log.log_end_offset(), model.end());
    let expected: Vec<(Offset, Bytes)> = model
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| (model.start + i as Offset, v.clone()))
        .collect();
    prop_assert_eq!(contents(log), expected);
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let mut model = Model {
        start: 0,
        values: Vec::new(),
    };
    let mut counter = 0u64;
    for op in ops {
        match op {
            Op::Append { records, value_len } => {
                let values: Vec<Bytes> = (0..records)
                    .map(|_| {
                        counter += 1;
                        let mut v = format!("{counter}:").into_bytes();
                        v.resize(value_len.max(v.len()), b'x');
                        Bytes::from(v)
                    })
                    .collect();
                let batch_records: Vec<NewRecord> = values
                    .iter()
                    .map(|v| NewRecord {
                        timestamp: 1_700_000_000_000,
                        key: None,
                        value: Some(v.clone()),
                        headers: Vec::new(),
                    })
                    .collect();
                let batch = encode(&BatchParams::default(), &batch_records).unwrap();
                let info = log.append(&batch, 0).unwrap();
                prop_assert_eq!(info.base_offset, model.end());
                model.values.extend(values);
            }
            Op::Flush => {
                prop_assert_eq!(log.flush().unwrap(), model.end());
            }
            Op::Truncate { at_per_mille } => {
                let span = model.end() - model.start;
                let target = model.start + span * at_per_mille as Offset / 1000;
                let new_end = log.truncate_to(target).unwrap();
                prop_assert!(new_end <= target.max(model.start) || new_end == model.end());
                model.values.truncate((new_end - model.start) as usize);
            }
            Op::RetainBytes { limit } => {
                log.config.retention_bytes = Some(limit);
                let outcome = log.apply_retention(Offset::MAX).unwrap();
                log.config.retention_bytes = None;
                let dropped = (outcome.log_start - model.start) as usize;
                model.values.drain(..dropped);
                model.start = outcome.log_start;
            }
            Op::CleanRestart => {
                log.close().unwrap();
                log = open(dir.path());
                prop_assert_eq!(log.unflushed_bytes(), 0);
            }
            Op::Crash { chop } => {
                let flushed = log.flushed_offset();
                let unflushed = log.unflushed_bytes();
                let active = log.active().path.clone();
                let active_size = log.active().size;
                drop(log);
                let cut = (chop as u64).min(unflushed).min(active_size);
                if cut > 0 {
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&active)
                        .unwrap();
                    file.set_len(active_size - cut).unwrap();
                }
                log = open(dir.path());
                // Whatever survives is a prefix of what was written and keeps every flushed
                // record.
                let end = log.log_end_offset();
                prop_assert!(
                    end >= flushed,
                    "lost flushed data: end {} < flushed {}",
                    end,
                    flushed
                );
                prop_assert!(end <= model.end());
                if cut == 0 {
                    prop_assert_eq!(end, model.end(), "nothing was cut, nothing may be lost");
                }
                model.values.truncate((end - model.start) as usize);
            }
        }
        check(&log, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
