//! One partition replica on this broker: its log, its role (leader or not, at which epoch,
//! with which ISR and topic settings) as of the last applied metadata image, and its high
//! watermark.
//!
//! Concurrency: the log sits behind a `RwLock` so fetches read concurrently while appends
//! (which take `&mut Log`) are serialized; callers run both on blocking threads. Durability
//! uses the log's group commit: [`Partition::flush_to`] holds an async lock for one fsync at a
//! time, and a waiter that gets the lock after another's fsync finds its offset already covered,
//! so concurrent acks=all produces share one fsync.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use keel_metadata::records::{BrokerId, LeaderEpoch, TopicId};
use keel_storage::batch::BatchHeader;
use keel_storage::{Log, Offset};
use tokio::sync::watch;

use super::error::PartitionError;
use super::hw::compute_hw;
use super::TopicSettings;

/// This broker's view of its role for the partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// Whether this broker leads the partition.
    pub leader: bool,
    /// The leader epoch from the image.
    pub leader_epoch: LeaderEpoch,
    /// The ISR from the image.
    pub isr: Vec<BrokerId>,
    /// The topic's settings.
    pub settings: TopicSettings,
}

/// Offsets of a partition at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: Offset,
    pub high_watermark: Offset,
    pub log_end: Offset,
}

/// What one produce appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    /// The offset after the last record appended.
    pub next_offset: Offset,
    pub log_start: Offset,
}

/// One partition replica hosted here.
pub struct Partition {
    pub topic_id: TopicId,
    pub index: i32,
    me: BrokerId,
    /// `None` once closed or deleted; a request that finds it so is told to retry.
    log: RwLock<Option<Log>>,
    role: Mutex<Role>,
    hw: watch::Sender<Offset>,
    /// Bumped whenever any partition's high watermark moves; wakes long-polling fetches.
    data_version: Arc<watch::Sender<u64>>,
    flush_lock: tokio::sync::Mutex<()>,
}

impl Partition {
    /// A partition over an opened log.
    pub fn new(
        topic_id: TopicId,
        index: i32,
        me: BrokerId,
        log: Log,
        role: Role,
        data_version: Arc<watch::Sender<u64>>,
    ) -> Partition {
        // The high watermark is not checkpointed yet: it starts at the log start and the
        // first role update computes it (the whole log at once for an ISR of one).
        let (hw, _) = watch::channel(log.log_start_offset());
        let p = Partition {
            topic_id,
            index,
            me,
            log: RwLock::new(Some(log)),
            role: Mutex::new(role),
            hw,
            data_version,
            flush_lock: tokio::sync::Mutex::new(()),
        };
        p.update_hw();
        p
    }

    /// The role as of the last applied image.
    pub fn role(&self) -> Role {
        self.role.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies a new role from the image: leadership, epoch, ISR, settings.
    pub fn set_role(&self, role: Role) {
        let config = role.settings.log.clone();
        *self.role.lock().unwrap_or_else(|p| p.into_inner()) = role;
        if let Some(log) = self.log_mut().as_mut() {
            if log.config() != &config {
                if let Err(e) = log.set_config(config) {
                    tracing::warn!(log = %log.name(), error = %e, "topic config not applied");
                }
            }
        }
        self.update_hw();
    }

    fn log_ref(&self) -> std::sync::RwLockReadGuard<'_, Option<Log>> {
        self.log.read().unwrap_or_else(|p| p.into_inner())
    }

    fn log_mut(&self) -> std::sync::RwLockWriteGuard<'_, Option<Log>> {
        self.log.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> Offset {
        *self.hw.borrow()
    }

    /// Recomputes the high watermark from the log end and the ISR; wakes waiters if it moved.
    fn update_hw(&self) {
        let role = self.role();
        let Some(leo) = self.log_ref().as_ref().map(Log::log_end_offset) else {
            return;
        };
        if !role.leader {
            return;
        }
        let current = self.high_watermark().min(leo);
        // Followers do not fetch yet, so no follower has reported a log end offset.
        let hw = compute_hw(self.me, leo, &role.isr, &BTreeMap::new(), current);
        let moved = self.hw.send_if_modified(|v| {
            let changed = *v != hw;
            *v = hw;
            changed
        });
        if moved {
            self.data_version.send_modify(|v| *v += 1);
        }
    }

    /// Log start, high watermark and log end now.
    pub fn offsets(&self) -> Result<Offsets, PartitionError> {
        let guard = self.log_ref();
        let log = guard.as_ref().ok_or(PartitionError::LeaderNotAvailable)?;
        Ok(Offsets {
            log_start: log.log_start_offset(),
            high_watermark: self.high_watermark(),
            log_end: log.log_end_offset(),
        })
    }

    /// Appends validated batches as the leader, at the current leader epoch. Blocking (a
    /// buffered write and index updates): call it on a blocking thread.
    pub fn append(&self, batches: &[Bytes]) -> Result<Appended, PartitionError> {
        let role = self.role();
        if !role.leader {
            return Err(PartitionError::LeaderNotAvailable);
        }
        let appended = {
            let mut guard = self.log_mut();
            let log = guard.as_mut().ok_or(PartitionError::LeaderNotAvailable)?;
            let mut base = None;
            for batch in batches {
                let info = log.append(batch, role.leader_epoch)?;
                base.get_or_insert(info.base_offset);
            }
            Appended {
                base_offset: base.unwrap_or(log.log_end_offset()),
                next_offset: log.log_end_offset(),
                log_start: log.log_start_offset(),
            }
        };
        self.update_hw();
        Ok(appended)
    }

    /// Waits until everything below `offset` is fsynced, running (or joining) a group commit.
    pub async fn flush_to(self: &Arc<Self>, offset: Offset) -> Result<(), PartitionError> {
        let _one_at_a_time = self.flush_lock.lock().await;
        let job = {
            let guard = self.log_ref();
            let log = guard.as_ref().ok_or(PartitionError::LeaderNotAvailable)?;
            if log.flushed_offset() >= offset {
                return Ok(());
            }
            log.begin_flush()
        };
        let (job, result) = tokio::task::spawn_blocking(move || {
            let result = job.sync();
            (job, result)
        })
        .await
        .map_err(|_| PartitionError::LeaderNotAvailable)?;
        let mut guard = self.log_mut();
        let log = guard.as_mut().ok_or(PartitionError::LeaderNotAvailable)?;
        let durable = log.finish_flush(job, result)?;
        if durable < offset {
            // Truncated meanwhile (not possible on a leader today); report rather than lie.
            return Err(PartitionError::LeaderNotAvailable);
        }
        Ok(())
    }

    /// Waits until the high watermark reaches `offset`.
    pub async fn wait_for_hw(&self, offset: Offset) {
        let mut rx = self.hw.subscribe();
        let _ = rx.wait_for(|hw| *hw >= offset).await;
    }

    /// Whole batches from the one holding `from`, about `max_bytes` (at least one batch),
    /// below the high watermark. Blocking (positioned reads): call it on a blocking thread.
    pub fn read(&self, from: Offset, max_bytes: usize) -> Result<(Bytes, Offsets), PartitionError> {
        let hw = self.high_watermark();
        let guard = self.log_ref();
        let log = guard.as_ref().ok_or(PartitionError::LeaderNotAvailable)?;
        let offsets = Offsets {
            log_start: log.log_start_offset(),
            high_watermark: hw,
            log_end: log.log_end_offset(),
        };
        let out_of_range = PartitionError::OffsetOutOfRange {
            offset: from,
            log_start: offsets.log_start,
            high_watermark: hw,
        };
        // Valid positions run from the log start to the log end; between the high watermark
        // and the log end the read is empty (the records are not replicated yet), as in Kafka.
        if from < offsets.log_start || from > offsets.log_end {
            return Err(out_of_range);
        }
        let bytes = log.read(from, max_bytes, hw)?;
        Ok((bytes, offsets))
    }

    /// The first record at or after `timestamp` below the high watermark: offset, timestamp
    /// and the leader epoch of its batch.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(Offset, i64, LeaderEpoch)>, PartitionError> {
        let hw = self.high_watermark();
        let guard = self.log_ref();
        let log = guard.as_ref().ok_or(PartitionError::LeaderNotAvailable)?;
        let Some((offset, ts)) = log.offset_for_timestamp(timestamp)? else {
            return Ok(None);
        };
        if offset >= hw {
            return Ok(None);
        }
        let first = log.read(offset, 1, hw)?;
        let epoch = BatchHeader::parse(&first).map_or(-1, |h| h.partition_leader_epoch);
        Ok(Some((offset, ts, epoch)))
    }

    /// The record with the largest timestamp below the high watermark (Kafka's
    /// MAX_TIMESTAMP): the first record carrying the log's greatest timestamp.
    pub fn max_timestamp(&self) -> Result<Option<(Offset, i64, LeaderEpoch)>, PartitionError> {
        let max = self.log_ref().as_ref().and_then(Log::max_timestamp);
        match max {
            Some(ts) => self.offset_for_timestamp(ts),
            None => Ok(None),
        }
    }

    /// Takes the log out (to close or delete it); later requests are told to retry.
    pub fn take_log(&self) -> Option<Log> {
        self.log_mut().take()
    }
}
