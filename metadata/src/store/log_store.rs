//! The Raft log and Raft's own durable state (vote, committed, last purged) in RocksDB.
//!
//! Every write is synced (`WriteOptions::set_sync`) before openraft is told it is durable, and
//! runs on a blocking thread so that an fsync never stalls the async executor. Writes are
//! awaited one after the other (`&mut self`), which keeps openraft's rule that IO is applied in
//! the order it was submitted.
//!
//! # Layout
//! - [`LogStore`] — `RaftLogReader` + `RaftLogStorage`;
//! - [`CommitIndex`] — the last committed index openraft saved, for metrics (openraft 0.9's
//!   `RaftMetrics` has no commit index; every commit passes through `save_committed`);
//! - key helpers: a log index is its 8 big-endian bytes, so RocksDB's key order is log order.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{cf, io_err, NodeId, TypeConfig, CF_LOGS, CF_RAFT};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// The Raft log index this node last learned is committed (on the leader and on followers),
/// as openraft saved it through `save_committed`. Cheap to clone; clones share the value.
#[derive(Clone, Debug, Default)]
pub struct CommitIndex(Arc<AtomicU64>);

impl CommitIndex {
    /// The committed index, `None` before anything is committed.
    pub fn get(&self) -> Option<u64> {
        // Stored as index + 1 so that 0 means "nothing yet" (index 0 is a real entry).
        self.0.load(Ordering::Relaxed).checked_sub(1)
    }

    fn set(&self, committed: Option<&LogId<NodeId>>) {
        let v = committed.map_or(0, |l| l.index.saturating_add(1));
        self.0.fetch_max(v, Ordering::Relaxed);
    }
}

/// The metadata Raft log. Cheap to clone: clones share the database (openraft hands clones to
/// its replication tasks as log readers).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    committed: CommitIndex,
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        let store = Self {
            db,
            committed: CommitIndex::default(),
        };
        // What an earlier run committed, until openraft commits more.
        if let Ok(Some(Some(committed))) = store.get_json::<Option<LogId<NodeId>>>(KEY_COMMITTED) {
            store.committed.set(Some(&committed));
        }
        store
    }

    /// The committed index as it moves.
    pub fn commit_index(&self) -> CommitIndex {
        self.committed.clone()
    }

    fn get_json<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<NodeId>> {
        let raw = self
            .db
            .get_cf(cf(&self.db, CF_RAFT), key)
            .map_err(|e| io_err(StorageIOError::read, e))?;
        raw.map(|b| serde_json::from_slice(&b).map_err(|e| io_err(StorageIOError::read, e)))
            .transpose()
    }

    /// Writes `batch` durably on a blocking thread.
    async fn write_synced(&self, batch: WriteBatch) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.write_opt(batch, &opts).map_err(std::io::Error::other)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    async fn put_raft<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        make: impl FnOnce(openraft::AnyError) -> StorageIOError<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        let json = serde_json::to_vec(value).map_err(|e| io_err(StorageIOError::write, e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RAFT), key, json);
        self.write_synced(batch).await.map_err(|e| io_err(make, e))
    }

    fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let mut it = self
            .db
            .iterator_cf(cf(&self.db, CF_LOGS), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(|e| io_err(StorageIOError::read_logs, e))?;
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(&v).map_err(|e| io_err(StorageIOError::read_logs, e))?;
                Ok(Some(*entry.get_log_id()))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let from = index_key(start);
        let it = self.db.iterator_cf(
            cf(&self.db, CF_LOGS),
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in it {
            let (k, v) = item.map_err(|e| io_err(StorageIOError::read_logs, e))?;
            let Some(index) = key_index(&k) else { continue };
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = serde_json::from_slice(&v)
                .map_err(|e| io_err(|s| StorageIOError::read_log_at_index(index, s), e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_json(KEY_LAST_PURGED)?;
        let last_log_id = self.last_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_raft(KEY_VOTE, vote, StorageIOError::write_vote)
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_json(KEY_VOTE)
    }

    // Saved so that a restart re-applies the committed log after the last snapshot at once:
    // the state machine persists only snapshots.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.put_raft(KEY_COMMITTED, &committed, StorageIOError::write)
            .await?;
        self.committed.set(committed.as_ref());
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .get_json::<Option<LogId<NodeId>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let json = serde_json::to_vec(&entry).map_err(|e| {
                io_err(
                    |s| StorageIOError::write_log_entry(*entry.get_log_id(), s),
                    e,
                )
            })?;
            batch.put_cf(
                cf(&self.db, CF_LOGS),
                index_key(entry.get_log_id().index),
                json,
            );
        }
        // Written and synced before returning, so the entries are readable now and durable when
        // the callback runs.
        let res = self.write_synced(batch).await;
        let failed = res.as_ref().err().map(|e| {
            io_err(
                StorageIOError::write_logs,
                std::io::Error::new(e.kind(), e.to_string()),
            )
        });
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS),
            index_key(log_id.index),
            index_key(u64::MAX),
        );
        self.write_synced(batch)
            .await
            .map_err(|e| io_err(StorageIOError::write_logs, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // The purge point and the deletion go in one batch: a crash leaves both or neither.
        let json = serde_json::to_vec(&log_id).map_err(|e| io_err(StorageIOError::write, e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RAFT), KEY_LAST_PURGED, json);
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS),
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        self.write_synced(batch)
            .await
            .map_err(|e| io_err(StorageIOError::write_logs, e))
    }
}
