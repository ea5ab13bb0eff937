//! The RocksDB [`OffsetIndex`]: one database per data directory, shared by all its logs.
//!
//! # Layout
//! Three column families, each keyed by `log name ‖ 0x00 ‖ suffix` so that one log's entries
//! are contiguous and a range delete drops them. Log names never contain 0x00 or 0x01, so
//! `name ‖ 0x01` bounds a log's range.
//! - `offsets`: suffix = offset (u64 big-endian), value = segment base ‖ position.
//! - `times`: suffix = timestamp with the sign bit flipped (so negative times sort first),
//!   value = offset.
//! - `meta`: suffix = checkpoint name (UTF-8), value = the checkpoint's own encoding.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use super::{IndexOp, OffsetEntry, OffsetIndex, TimeEntry};
use crate::error::IndexError;
use crate::Offset;

const CF_OFFSETS: &str = "offsets";
const CF_TIMES: &str = "times";
const CF_META: &str = "meta";

pub struct RocksIndex {
    db: DB,
    path: PathBuf,
}

fn backend(e: rocksdb::Error) -> IndexError {
    IndexError::Backend(Arc::new(e))
}

fn log_prefix(log: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(log.len() + 1 + 8);
    key.extend_from_slice(log.as_bytes());
    key.push(0);
    key
}

fn log_end(log: &str) -> Vec<u8> {
    let mut key = log.as_bytes().to_vec();
    key.push(1);
    key
}

fn offset_key(log: &str, offset: Offset) -> Vec<u8> {
    let mut key = log_prefix(log);
    key.extend_from_slice(&(offset as u64).to_be_bytes());
    key
}

fn time_key(log: &str, timestamp: i64) -> Vec<u8> {
    let mut key = log_prefix(log);
    key.extend_from_slice(&((timestamp as u64) ^ (1 << 63)).to_be_bytes());
    key
}

fn meta_key(log: &str, name: &str) -> Vec<u8> {
    let mut key = log_prefix(log);
    key.extend_from_slice(name.as_bytes());
    key
}

fn suffix_u64(key: &[u8], log: &str) -> Option<u64> {
    let suffix = key.get(log.len() + 1..)?;
    Some(u64::from_be_bytes(suffix.try_into().ok()?))
}

fn corrupt(log: &str, what: &'static str) -> IndexError {
    IndexError::Corrupt {
        log: log.to_owned(),
        what,
    }
}

fn decode_offset_entry(log: &str, key: &[u8], value: &[u8]) -> Result<OffsetEntry, IndexError> {
    let offset = suffix_u64(key, log).ok_or_else(|| corrupt(log, "offset key"))? as Offset;
    let value: [u8; 16] = value.try_into().map_err(|_| corrupt(log, "offset entry"))?;
    let (segment, position) = value.split_at(8);
    Ok(OffsetEntry {
        offset,
        segment: u64::from_be_bytes(segment.try_into().unwrap_or_default()) as Offset,
        position: u64::from_be_bytes(position.try_into().unwrap_or_default()),
    })
}

fn decode_time_entry(log: &str, key: &[u8], value: &[u8]) -> Result<TimeEntry, IndexError> {
    let raw = suffix_u64(key, log).ok_or_else(|| corrupt(log, "time key"))?;
    let value: [u8; 8] = value.try_into().map_err(|_| corrupt(log, "time entry"))?;
    Ok(TimeEntry {
        timestamp: (raw ^ (1 << 63)) as i64,
        offset: u64::from_be_bytes(value) as Offset,
    })
}

impl RocksIndex {
    /// Opens (or creates) the index database in `path`.
    pub fn open(path: &Path) -> Result<RocksIndex, IndexError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // The index is small and rebuilt from segments when lost; a modest memtable keeps
        // memory per data directory flat however many partitions it holds.
        opts.set_write_buffer_size(16 << 20);
        let cfs = [CF_OFFSETS, CF_TIMES, CF_META]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(backend)?;
        Ok(RocksIndex {
            db,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // The three families are created at open; a missing one is a programming error.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} was created at open"))
    }

    /// Keys of time entries of `log` that `keep` rejects, scanning from one end of the
    /// log's range while entries are rejected. Time entries are ordered like offsets, so the
    /// rejected ones form a run at one end.
    fn time_keys_to_drop(
        &self,
        log: &str,
        from_end: bool,
        drop: impl Fn(Offset) -> bool,
    ) -> Result<Vec<Vec<u8>>, IndexError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_TIMES));
        if from_end {
            it.seek_for_prev(log_end(log));
        } else {
            it.seek(log_prefix(log));
        }
        let prefix = log_prefix(log);
        let mut keys = Vec::new();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            if !key.starts_with(&prefix) {
                break;
            }
            if !drop(decode_time_entry(log, key, value)?.offset) {
                break;
            }
            keys.push(key.to_vec());
            if from_end {
                it.prev();
            } else {
                it.next();
            }
        }
        it.status().map_err(backend)?;
        Ok(keys)
    }

    fn add_op(&self, log: &str, op: &IndexOp, batch: &mut WriteBatch) -> Result<(), IndexError> {
        match op {
            IndexOp::PutOffset(e) => {
                let mut value = [0u8; 16];
                value[..8].copy_from_slice(&(e.segment as u64).to_be_bytes());
                value[8..].copy_from_slice(&e.position.to_be_bytes());
                batch.put_cf(self.cf(CF_OFFSETS), offset_key(log, e.offset), value);
            }
            IndexOp::PutTime(e) => {
                batch.put_cf(
                    self.cf(CF_TIMES),
                    time_key(log, e.timestamp),
                    (e.offset as u64).to_be_bytes(),
                );
            }
            IndexOp::TruncateFrom(from) => {
                batch.delete_range_cf(self.cf(CF_OFFSETS), offset_key(log, *from), log_end(log));
                for key in self.time_keys_to_drop(log, true, |o| o >= *from)? {
                    batch.delete_cf(self.cf(CF_TIMES), key);
                }
            }
            IndexOp::DeleteBefore(before) => {
                batch.delete_range_cf(
                    self.cf(CF_OFFSETS),
                    log_prefix(log),
                    offset_key(log, *before),
                );
                for key in self.time_keys_to_drop(log, false, |o| o < *before)? {
                    batch.delete_cf(self.cf(CF_TIMES), key);
                }
            }
            IndexOp::PutMeta { key, value } => {
                batch.put_cf(self.cf(CF_META), meta_key(log, key), value);
            }
            IndexOp::DeleteMeta { key } => {
                batch.delete_cf(self.cf(CF_META), meta_key(log, key));
            }
            IndexOp::DropLog => {
                for cf in [CF_OFFSETS, CF_TIMES, CF_META] {
                    batch.delete_range_cf(self.cf(cf), log_prefix(log), log_end(log));
                }
            }
        }
        Ok(())
    }
}

impl OffsetIndex for RocksIndex {
    fn apply(&self, log: &str, ops: &[IndexOp], durable: bool) -> Result<(), IndexError> {
        let mut batch = WriteBatch::default();
        for op in ops {
            self.add_op(log, op, &mut batch)?;
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(durable);
        self.db.write_opt(batch, &opts).map_err(backend)
    }

    fn floor_offset(&self, log: &str, offset: Offset) -> Result<Option<OffsetEntry>, IndexError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_OFFSETS));
        it.seek_for_prev(offset_key(log, offset));
        match (it.key(), it.value()) {
            (Some(key), Some(value)) if key.starts_with(&log_prefix(log)) => {
                decode_offset_entry(log, key, value).map(Some)
            }
            _ => it.status().map(|_| None).map_err(backend),
        }
    }

    fn last_time_before(&self, log: &str, timestamp: i64) -> Result<Option<TimeEntry>, IndexError> {
        let Some(below) = timestamp.checked_sub(1) else {
            return Ok(None);
        };
        let mut it = self.db.raw_iterator_cf(self.cf(CF_TIMES));
        it.seek_for_prev(time_key(log, below));
        match (it.key(), it.value()) {
            (Some(key), Some(value)) if key.starts_with(&log_prefix(log)) => {
                decode_time_entry(log, key, value).map(Some)
            }
            _ => it.status().map(|_| None).map_err(backend),
        }
    }

    fn meta(&self, log: &str, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        self.db
            .get_cf(self.cf(CF_META), meta_key(log, key))
            .map_err(backend)
    }

    fn meta_with_prefix(
        &self,
        log: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        let start = meta_key(log, prefix);
        let skip = log.len() + 1;
        let mut it = self.db.raw_iterator_cf(self.cf(CF_META));
        it.seek(&start);
        let mut found = Vec::new();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            if !key.starts_with(&start) {
                break;
            }
            let name = std::str::from_utf8(&key[skip..]).map_err(|_| corrupt(log, "meta key"))?;
            found.push((name.to_owned(), value.to_vec()));
            it.next();
        }
        it.status().map_err(backend)?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Suite;

    #[test]
    fn passes_the_conformance_suite() {
        let dirs = std::sync::Mutex::new(Vec::new());
        Suite::test_all(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let index = RocksIndex::open(dir.path()).expect("open index");
            dirs.lock().unwrap().push(dir);
            index
        });
    }

    #[test]
    fn entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let entry = OffsetEntry {
            offset: 42,
            segment: 40,
            position: 4096,
        };
        {
            let index = RocksIndex::open(dir.path()).unwrap();
            index
                .apply("t-0", &[IndexOp::PutOffset(entry)], true)
                .unwrap();
        }
        let index = RocksIndex::open(dir.path()).unwrap();
        assert_eq!(index.floor_offset("t-0", 100).unwrap(), Some(entry));
    }
}
