//! The replicated metadata log on disk: openraft's type configuration, a RocksDB log store and
//! a state machine whose state is the [`MetadataImage`].
//!
//! One RocksDB per node (under a directory the caller chooses, e.g. `<data_dir>/metadata`)
//! holds everything:
//!
//! | column family | key | value |
//! |---|---|---|
//! | `logs` | log index, 8 bytes big-endian | JSON of the openraft `Entry` |
//! | `raft` | `vote`, `committed`, `last_purged` | JSON of the openraft value |
//! | `snapshot` | `meta`, `data` | JSON of the `SnapshotMeta`; JSON of the image |
//!
//! The state machine persists only its snapshots: applying an entry changes the in-memory
//! image, and a restart loads the last snapshot and lets openraft re-apply the committed log
//! after it (the log store saves the committed log id for that). Restart therefore costs the
//! size of the image plus the log since the last snapshot, never the whole history.
//!
//! Encoding is JSON throughout: the metadata log is small, JSON is readable with `ldb` when
//! debugging, and records evolve by adding `#[serde(default)]` fields.
//!
//! # Layout
//! - this file: [`TypeConfig`], [`MetadataRequest`] (the log's payload), [`MetadataResponse`],
//!   [`open`] and the shared RocksDB handle;
//! - `log_store.rs`: [`LogStore`], openraft's `RaftLogStorage` and `RaftLogReader`;
//! - `state_machine.rs`: [`StateMachine`], openraft's `RaftStateMachine`, its snapshot builder,
//!   and the [`MetadataView`] it publishes;
//! - `store_test.rs`: openraft's storage conformance suite and restart tests.

// openraft's `StorageError` is large (it carries a backtrace and the subject of the failed
// IO); the traits dictate it, and the helpers here return it unchanged rather than boxing it.
#![allow(clippy::result_large_err)]

mod log_store;
mod state_machine;

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use openraft::{AnyError, StorageError, StorageIOError};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use serde::{Deserialize, Serialize};

pub use log_store::{CommitIndex, LogStore};
pub use state_machine::{MetadataView, SnapshotBuilder, StateMachine, ViewError};

use crate::image::ApplyError;
use crate::records::{MetadataOffset, Record};

/// The raft node id of a controller (its `node.id`).
pub type NodeId = u64;

/// The payload of a metadata log entry: records applied together, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRequest {
    /// The records.
    pub records: Vec<Record>,
}

/// A record of a request that the image refused at apply time (see
/// [`MetadataImage::apply`](crate::image::MetadataImage::apply)); the other records applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRefusal {
    /// Position of the record in [`MetadataRequest::records`].
    pub position: usize,
    /// Why.
    pub error: ApplyError,
}

/// The outcome of applying one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataResponse {
    /// Log index of the entry (a broker registration's epoch).
    pub offset: MetadataOffset,
    /// Records that were refused; empty when all applied.
    pub refused: Vec<RecordRefusal>,
}

openraft::declare_raft_types!(
    /// openraft's types for the metadata quorum. Nodes are `BasicNode`s whose address is the
    /// node's internal listener (`host:port`).
    pub TypeConfig:
        D = MetadataRequest,
        R = MetadataResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft handle of the metadata quorum.
pub type MetadataRaft = openraft::Raft<TypeConfig>;

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_RAFT: &str = "raft";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";

/// Opens (or creates) the metadata RocksDB in `dir` and returns its log store and state machine
/// (which loads the last snapshot, if any).
pub fn open(dir: &Path) -> Result<(LogStore, StateMachine), StorageError<NodeId>> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [CF_LOGS, CF_RAFT, CF_SNAPSHOT]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let cfs: Vec<ColumnFamilyDescriptor> = cfs.collect();
    let db = open_when_unlocked(&opts, dir, cfs).map_err(|e| io_err(StorageIOError::read, e))?;
    let db = Arc::new(db);
    let sm = StateMachine::load(db.clone())?;
    Ok((LogStore::new(db), sm))
}

/// Opens the RocksDB, waiting up to two seconds while an earlier instance in this process still
/// holds its lock: openraft's state-machine worker drops its handle a moment after
/// `Raft::shutdown` returns, so a quick restart in the same process would otherwise fail.
fn open_when_unlocked(
    opts: &Options,
    dir: &Path,
    cfs: Vec<ColumnFamilyDescriptor>,
) -> Result<DB, rocksdb::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let descriptors = cfs
            .iter()
            .map(|d| ColumnFamilyDescriptor::new(d.name(), Options::default()));
        match DB::open_cf_descriptors(opts, dir, descriptors) {
            Err(e)
                if e.to_string().contains("lock hold by current process")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Why a metadata Raft node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Opening or reading the metadata RocksDB failed.
    #[error("metadata store: {0}")]
    Storage(#[from] StorageError<NodeId>),
    /// openraft refused to start (bad config) or stopped at once.
    #[error("metadata raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
    /// The openraft config is invalid.
    #[error("metadata raft config: {0}")]
    Config(#[from] openraft::ConfigError),
}

/// A running metadata Raft node: the handle to propose and to manage membership, and the view
/// of its applied image.
pub struct MetadataNode {
    /// openraft's handle. `raft.shutdown()` stops it; dropping every clone and the view closes
    /// the RocksDB.
    pub raft: MetadataRaft,
    /// The applied image, updated after every applied batch.
    pub view: MetadataView,
    /// The committed log index as this node learns it.
    pub commit_index: CommitIndex,
}

/// Opens the metadata store in `dir` and starts Raft node `id` on it with `network`.
/// The node joins a cluster when it is initialized (`raft.initialize`) or added by the leader.
pub async fn start<N>(
    id: NodeId,
    dir: &Path,
    config: openraft::Config,
    network: N,
) -> Result<MetadataNode, StartError>
where
    N: openraft::network::RaftNetworkFactory<TypeConfig>,
{
    let config = Arc::new(config.validate()?);
    let (log, sm) = open(dir)?;
    let view = sm.view();
    let commit_index = log.commit_index();
    let raft = openraft::Raft::new(id, config, network, log, sm).await?;
    Ok(MetadataNode {
        raft,
        view,
        commit_index,
    })
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    // The families are created at open; a missing one is a programming error.
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} is created at open"))
}

/// Wraps any error as an openraft storage error built by `make` (which says what was done).
pub(crate) fn io_err<E: std::error::Error + 'static>(
    make: impl FnOnce(AnyError) -> StorageIOError<NodeId>,
    e: E,
) -> StorageError<NodeId> {
    make(AnyError::new(&e)).into()
}

#[cfg(test)]
#[path = "store_test.rs"]
mod tests;
