//! An in-memory [`OffsetIndex`], for tests and as the reference the RocksDB one must match.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{IndexOp, OffsetEntry, OffsetIndex, TimeEntry};
use crate::error::IndexError;
use crate::Offset;

#[derive(Default)]
pub struct MemIndex {
    logs: Mutex<HashMap<String, LogEntries>>,
}

#[derive(Default)]
struct LogEntries {
    offsets: BTreeMap<Offset, OffsetEntry>,
    times: BTreeMap<i64, Offset>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl MemIndex {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_log<T>(&self, log: &str, f: impl FnOnce(&LogEntries) -> T) -> T {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        match logs.get(log) {
            Some(entries) => f(entries),
            None => f(&LogEntries::default()),
        }
    }
}

impl OffsetIndex for MemIndex {
    fn apply(&self, log: &str, ops: &[IndexOp], _durable: bool) -> Result<(), IndexError> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let entries = logs.entry(log.to_owned()).or_default();
        for op in ops {
            match op {
                IndexOp::PutOffset(e) => {
                    entries.offsets.insert(e.offset, *e);
                }
                IndexOp::PutTime(e) => {
                    entries.times.insert(e.timestamp, e.offset);
                }
                IndexOp::TruncateFrom(from) => {
                    entries.offsets.retain(|o, _| o < from);
                    entries.times.retain(|_, o| *o < *from);
                }
                IndexOp::DeleteBefore(before) => {
                    entries.offsets.retain(|o, _| o >= before);
                    entries.times.retain(|_, o| *o >= *before);
                }
                IndexOp::PutMeta { key, value } => {
                    entries.meta.insert(key.clone(), value.clone());
                }
                IndexOp::DeleteMeta { key } => {
                    entries.meta.remove(key);
                }
                IndexOp::DropLog => *entries = LogEntries::default(),
            }
        }
        Ok(())
    }

    fn floor_offset(&self, log: &str, offset: Offset) -> Result<Option<OffsetEntry>, IndexError> {
        Ok(self.with_log(log, |e| {
            e.offsets.range(..=offset).next_back().map(|(_, v)| *v)
        }))
    }

    fn last_time_before(&self, log: &str, timestamp: i64) -> Result<Option<TimeEntry>, IndexError> {
        Ok(self.with_log(log, |e| {
            e.times
                .range(..timestamp)
                .next_back()
                .map(|(&timestamp, &offset)| TimeEntry { timestamp, offset })
        }))
    }

    fn meta(&self, log: &str, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self.with_log(log, |e| e.meta.get(key).cloned()))
    }

    fn meta_with_prefix(
        &self,
        log: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        Ok(self.with_log(log, |e| {
            e.meta
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_the_conformance_suite() {
        crate::testing::Suite::test_all(super::MemIndex::new);
    }
}
