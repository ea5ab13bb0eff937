//! The metadata state machine: the [`MetadataImage`], the last applied log id and membership,
//! and snapshots of them in RocksDB.
//!
//! Applying entries changes only memory; durability comes from snapshots (built by openraft's
//! snapshot policy, or received from the leader) plus the log tail that openraft re-applies at
//! start-up. A snapshot is the image serialized as JSON with openraft's `SnapshotMeta` beside
//! it; both are written in one synced batch.
//!
//! After every applied batch the new image is published on a watch channel: a
//! [`MetadataView`] is how the rest of the node reads metadata without touching Raft.
//!
//! # Layout
//! - [`StateMachine`] — `RaftStateMachine`;
//! - [`SnapshotBuilder`] — a frozen copy of the state, serialized and stored by
//!   `build_snapshot`;
//! - [`MetadataView`] — the read side of the watch channel.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogId, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::watch;

use super::{cf, io_err, MetadataResponse, NodeId, RecordRefusal, TypeConfig, CF_SNAPSHOT};
use crate::image::MetadataImage;
use crate::records::MetadataOffset;

const KEY_META: &[u8] = b"meta";
const KEY_DATA: &[u8] = b"data";

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// Shared between the state machine and its snapshot builders.
struct Shared {
    db: Arc<DB>,
    /// Serializes snapshot writes, so that an older built snapshot never replaces a newer one.
    snapshot_lock: Mutex<()>,
    /// Makes snapshot ids unique within this process.
    snapshot_seq: AtomicU64,
}

impl Shared {
    /// Stores a snapshot unless the stored one is newer. Blocking (synced write).
    fn store_snapshot(&self, meta: &Meta, data: &[u8]) -> Result<(), StorageError<NodeId>> {
        let sig = Some(meta.signature());
        let _guard = self.snapshot_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cur, _)) = self.read_snapshot()? {
            if cur.last_log_id > meta.last_log_id {
                return Ok(());
            }
        }
        let meta_json = serde_json::to_vec(meta)
            .map_err(|e| io_err(|s| StorageIOError::write_snapshot(sig.clone(), s), e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_SNAPSHOT), KEY_META, meta_json);
        batch.put_cf(cf(&self.db, CF_SNAPSHOT), KEY_DATA, data);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| io_err(|s| StorageIOError::write_snapshot(sig, s), e))
    }

    fn read_snapshot(&self) -> Result<Option<(Meta, Vec<u8>)>, StorageError<NodeId>> {
        let read = |key| {
            self.db
                .get_cf(cf(&self.db, CF_SNAPSHOT), key)
                .map_err(|e| io_err(|s| StorageIOError::read_snapshot(None, s), e))
        };
        let (Some(meta), Some(data)) = (read(KEY_META)?, read(KEY_DATA)?) else {
            return Ok(None);
        };
        let meta: Meta = serde_json::from_slice(&meta)
            .map_err(|e| io_err(|s| StorageIOError::read_snapshot(None, s), e))?;
        Ok(Some((meta, data)))
    }
}

/// The metadata state machine.
pub struct StateMachine {
    shared: Arc<Shared>,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    view: watch::Sender<Arc<MetadataImage>>,
}

fn decode_image(meta: &Meta, data: &[u8]) -> Result<MetadataImage, StorageError<NodeId>> {
    serde_json::from_slice(data).map_err(|e| {
        io_err(
            |s| StorageIOError::read_snapshot(Some(meta.signature()), s),
            e,
        )
    })
}

impl StateMachine {
    /// Loads the last stored snapshot, if any.
    pub(crate) fn load(db: Arc<DB>) -> Result<Self, StorageError<NodeId>> {
        let shared = Arc::new(Shared {
            db,
            snapshot_lock: Mutex::new(()),
            snapshot_seq: AtomicU64::new(0),
        });
        let (image, last_applied, membership) = match shared.read_snapshot()? {
            Some((meta, data)) => (
                decode_image(&meta, &data)?,
                meta.last_log_id,
                meta.last_membership,
            ),
            None => (MetadataImage::default(), None, StoredMembership::default()),
        };
        let image = Arc::new(image);
        let (view, _) = watch::channel(image.clone());
        Ok(Self {
            shared,
            image,
            last_applied,
            membership,
            view,
        })
    }

    /// A view of the image that follows every applied entry.
    pub fn view(&self) -> MetadataView {
        MetadataView {
            rx: self.view.subscribe(),
        }
    }

    fn install(&mut self, meta: &Meta, image: MetadataImage) {
        self.image = Arc::new(image);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.view.send_replace(self.image.clone());
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetadataResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Copy-on-write: clones the image only while a reader still holds the previous version
        // (the view always does, so one clone per applied batch, not per entry).
        let image = Arc::make_mut(&mut self.image);
        let mut out = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            let mut resp = MetadataResponse {
                offset: log_id.index,
                refused: Vec::new(),
            };
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(req) => {
                    for (position, record) in req.records.iter().enumerate() {
                        if let Err(error) = image.apply(log_id.index, record) {
                            // Every node refuses it the same way; report it to the proposer.
                            tracing::warn!(offset = log_id.index, position, %error, "metadata record refused");
                            resp.refused.push(RecordRefusal { position, error });
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(log_id), m);
                }
            }
            image.set_offset(log_id.index);
            self.last_applied = Some(log_id);
            out.push(resp);
        }
        self.view.send_replace(self.image.clone());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            image: self.image.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let image = decode_image(meta, &data)?;
        let shared = self.shared.clone();
        let stored_meta = meta.clone();
        // The snapshot is the state machine's only durable state: store it before using it.
        tokio::task::spawn_blocking(move || shared.store_snapshot(&stored_meta, &data))
            .await
            .map_err(|e| {
                io_err(
                    |s| StorageIOError::write_snapshot(Some(meta.signature()), s),
                    e,
                )
            })??;
        self.install(meta, image);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.shared.read_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// A frozen copy of the state machine, turned into a stored snapshot by `build_snapshot`.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = serde_json::to_vec(&*self.image)
            .map_err(|e| io_err(|s| StorageIOError::write_snapshot(None, s), e))?;
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
            None => format!("none-{seq}"),
        };
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let shared = self.shared.clone();
        let (m, d) = (meta.clone(), data.clone());
        tokio::task::spawn_blocking(move || shared.store_snapshot(&m, &d))
            .await
            .map_err(|e| {
                io_err(
                    |s| StorageIOError::write_snapshot(Some(meta.signature()), s),
                    e,
                )
            })??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Read-only access to the latest applied metadata image, for the broker and the controller's
/// request handlers. Cheap to clone.
#[derive(Clone)]
pub struct MetadataView {
    rx: watch::Receiver<Arc<MetadataImage>>,
}

/// The view's state machine is gone (the Raft node shut down).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// The state machine was dropped.
    #[error("the metadata state machine has stopped")]
    Closed,
    /// The offset was not reached in time.
    #[error("metadata offset {wanted} not reached within {timeout:?} (at {reached})")]
    Timeout {
        /// Wanted offset.
        wanted: MetadataOffset,
        /// Offset reached.
        reached: MetadataOffset,
        /// How long it waited.
        timeout: Duration,
    },
    /// The condition did not hold in time.
    #[error("metadata condition not met within {timeout:?} (at offset {reached})")]
    ConditionTimeout {
        /// Offset reached.
        reached: MetadataOffset,
        /// How long it waited.
        timeout: Duration,
    },
}

impl MetadataView {
    /// A view fed by the returned sender instead of a state machine: how a broker without the
    /// controller role follows the image it receives from a controller.
    pub fn channel(initial: MetadataImage) -> (watch::Sender<Arc<MetadataImage>>, MetadataView) {
        let (tx, rx) = watch::channel(Arc::new(initial));
        (tx, MetadataView { rx })
    }

    /// A receiver that is woken at every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.rx.clone()
    }

    /// The latest image.
    pub fn current(&self) -> Arc<MetadataImage> {
        self.rx.borrow().clone()
    }

    /// The offset of the latest applied entry.
    pub fn offset(&self) -> MetadataOffset {
        self.rx.borrow().offset
    }

    /// Waits until the image has applied `offset`, up to `timeout`.
    pub async fn wait_for_offset(
        &mut self,
        offset: MetadataOffset,
        timeout: Duration,
    ) -> Result<Arc<MetadataImage>, ViewError> {
        let res = tokio::time::timeout(timeout, self.rx.wait_for(|img| img.offset >= offset))
            .await
            .map(|r| r.map(|img| img.clone()));
        match res {
            Ok(Ok(img)) => Ok(img),
            Ok(Err(_)) => Err(ViewError::Closed),
            Err(_) => Err(ViewError::Timeout {
                wanted: offset,
                reached: self.offset(),
                timeout,
            }),
        }
    }

    /// Waits until `cond` holds for the image, up to `timeout`.
    pub async fn wait_until(
        &mut self,
        timeout: Duration,
        cond: impl FnMut(&Arc<MetadataImage>) -> bool,
    ) -> Result<Arc<MetadataImage>, ViewError> {
        let res = tokio::time::timeout(timeout, self.rx.wait_for(cond))
            .await
            .map(|r| r.map(|img| img.clone()));
        match res {
            Ok(Ok(img)) => Ok(img),
            Ok(Err(_)) => Err(ViewError::Closed),
            Err(_) => Err(ViewError::ConditionTimeout {
                reached: self.offset(),
                timeout,
            }),
        }
    }
}
