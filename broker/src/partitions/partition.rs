//! One partition replica on this broker: its log, its role (leader or follower, at which
//! epoch, with which ISR and topic settings) as of the last applied metadata image, and its
//! high watermark.
//!
//! Concurrency: the log sits behind a `RwLock` so fetches read concurrently while appends
//! (which take `&mut Log`) are serialized; callers run both on blocking threads. Durability
//! uses the log's group commit: [`Partition::flush_to`] holds an async lock for one fsync at a
//! time, and a waiter that gets the lock after another's fsync finds its offset already covered,
//! so concurrent acks=all produces share one fsync.
//!
//! Replication (the leader serving follower fetches, a follower applying what it fetched) is
//! in the child module `replication`.

mod replication;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use keel_metadata::records::{BrokerId, LeaderEpoch, PartitionEpoch, TopicId};
use keel_storage::batch::BatchHeader;
use keel_storage::{Log, Offset};
use tokio::sync::watch;

use super::error::PartitionError;
use super::hw::compute_hw;
use super::isr::FollowerState;
use super::TopicSettings;

pub use replication::{Fetched, IsrProposal, ReplicaFetch};

/// This broker's view of its role for the partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// The partition's leader, from the image.
    pub leader_id: Option<BrokerId>,
    /// Whether this broker leads the partition.
    pub leader: bool,
    /// The leader epoch from the image.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch from the image (AlterPartition proposals are based on it).
    pub partition_epoch: PartitionEpoch,
    /// The replicas, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// The ISR from the image.
    pub isr: Vec<BrokerId>,
    /// Replicas a reassignment is adding (their copy traffic is throttled).
    pub adding: Vec<BrokerId>,
    /// The topic's settings.
    pub settings: TopicSettings,
}

impl Role {
    /// `NOT_LEADER` with this role's leader and epoch (no endpoint: callers that have the
    /// image add it).
    pub fn not_leader(&self) -> PartitionError {
        PartitionError::NotLeader {
            leader: self.leader_id,
            endpoint: None,
            leader_epoch: self.leader_epoch,
        }
    }
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
    /// The offset after the last record appended (for a duplicate, after its first write).
    pub next_offset: Offset,
    /// An idempotent producer's retry of a batch already written: nothing was appended and
    /// the offsets are the first write's.
    pub duplicate: bool,
    pub log_start: Offset,
    /// The leader epoch the records were written in.
    pub leader_epoch: LeaderEpoch,
}

/// A replica being added by a reassignment, and its log end offset as the leader last saw it.
pub type CopyProgress = (BrokerId, Option<Offset>);

/// What a leader tracks beyond its log: its followers and an ISR change in flight.
#[derive(Debug, Default)]
struct LeaderState {
    followers: BTreeMap<BrokerId, FollowerState>,
    /// Where the current leader epoch starts in the log.
    epoch_start: Offset,
    /// The ISR asked of the controller and not yet seen in the image, with when it was asked.
    pending: Option<(Vec<BrokerId>, i64)>,
}

/// Wake-ups shared by every partition of the broker.
#[derive(Clone, Default)]
pub struct Signals {
    /// Bumped whenever any partition's high watermark moves; wakes long-polling fetches.
    pub high_watermark: Arc<watch::Sender<u64>>,
    /// Bumped whenever a leader appends; wakes long-polling replica fetches.
    pub appended: Arc<watch::Sender<u64>>,
    /// Leader changes seen: a hosted partition got a new leader epoch with a leader.
    pub leader_changes: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the data directory takes writes; every partition reports its disk failures.
    pub disk: Arc<super::disk::DiskHealth>,
}

/// One partition replica hosted here.
pub struct Partition {
    pub topic_id: TopicId,
    /// The topic's name, for log lines (a topic is never renamed).
    pub topic: String,
    pub index: i32,
    me: BrokerId,
    /// `None` once closed or deleted; a request that finds it so is told to retry.
    log: RwLock<Option<Log>>,
    role: Mutex<Role>,
    leader_state: Mutex<LeaderState>,
    hw: watch::Sender<Offset>,
    /// Whether this broker leads, and at which epoch; wakes acks=all waiters on a change.
    leadership: watch::Sender<(bool, LeaderEpoch)>,
    signals: Signals,
    flush_lock: tokio::sync::Mutex<()>,
    /// When the last fsync finished (ms since the Unix epoch), for `flush.mode=interval`.
    last_flush_ms: std::sync::atomic::AtomicI64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Partition {
    /// A partition over an opened log. The high watermark starts where the log's checkpoint
    /// left it, so a restart exposes what was exposed before.
    pub fn new(
        topic_id: TopicId,
        topic: String,
        index: i32,
        me: BrokerId,
        log: Log,
        role: Role,
        signals: Signals,
    ) -> Partition {
        let hw = log
            .checkpointed_high_watermark()
            .unwrap_or(log.log_start_offset())
            .max(log.log_start_offset());
        let follower = Role {
            leader: false,
            ..role.clone()
        };
        let p = Partition {
            topic_id,
            topic,
            index,
            me,
            log: RwLock::new(Some(log)),
            role: Mutex::new(follower),
            leader_state: Mutex::new(LeaderState::default()),
            hw: watch::channel(hw).0,
            leadership: watch::channel((false, role.leader_epoch)).0,
            signals,
            flush_lock: tokio::sync::Mutex::new(()),
            last_flush_ms: std::sync::atomic::AtomicI64::new(now_ms()),
        };
        p.set_role(role);
        p
    }

    /// The role as of the last applied image.
    pub fn role(&self) -> Role {
        self.role.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a reassignment is adding `broker` as a replica (its copy is throttled).
    pub fn is_adding(&self, broker: BrokerId) -> bool {
        let role = self.role.lock().unwrap_or_else(|p| p.into_inner());
        role.adding.contains(&broker)
    }

    fn leader_state(&self) -> std::sync::MutexGuard<'_, LeaderState> {
        self.leader_state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a new role from the image: leadership, epoch, ISR, settings. Taking over
    /// leadership records the new epoch's start in the log and gives every ISR member the
    /// lag limit to show up.
    pub fn set_role(&self, role: Role) {
        let old = std::mem::replace(
            &mut *self.role.lock().unwrap_or_else(|p| p.into_inner()),
            role.clone(),
        );
        let took_over = role.leader && (!old.leader || old.leader_epoch != role.leader_epoch);
        self.note_leader_change(&old, &role);
        let mut log_end = None;
        if let Some(log) = self.log_mut().as_mut() {
            if log.config() != &role.settings.log {
                if let Err(e) = log.set_config(role.settings.log.clone()) {
                    tracing::warn!(topic = %self.topic, partition = self.index, log = %log.name(),
                        error = %e, "topic config not applied");
                }
            }
            if took_over {
                if let Err(e) = log.assign_epoch(role.leader_epoch) {
                    tracing::error!(topic = %self.topic, partition = self.index, log = %log.name(),
                        error = %e, "could not record the leader epoch");
                }
            }
            log_end = Some(log.log_end_offset());
        }
        {
            let mut st = self.leader_state();
            if took_over || !role.leader {
                let now = now_ms();
                st.followers = role
                    .isr
                    .iter()
                    .filter(|m| **m != self.me && role.leader)
                    .map(|m| (*m, FollowerState::fresh(now)))
                    .collect();
                st.epoch_start = log_end.unwrap_or(0);
                st.pending = None;
            }
            if old.partition_epoch != role.partition_epoch {
                st.pending = None;
            }
        }
        self.leadership.send_if_modified(|v| {
            let new = (role.leader, role.leader_epoch);
            let changed = *v != new;
            *v = new;
            changed
        });
        self.update_hw();
    }

    /// Counts and logs a new leader epoch with a leader (an election this broker saw).
    fn note_leader_change(&self, old: &Role, new: &Role) {
        if new.leader_epoch <= old.leader_epoch || new.leader_id.is_none() {
            return;
        }
        self.signals
            .leader_changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(topic = %self.topic, partition = self.index, leader = ?new.leader_id,
            previous_leader = ?old.leader_id, leader_epoch = new.leader_epoch,
            "partition leader changed");
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

    /// Sets the high watermark; wakes waiters if it moved.
    fn set_hw(&self, hw: Offset) {
        let moved = self.hw.send_if_modified(|v| {
            let changed = *v != hw;
            *v = hw;
            changed
        });
        if moved {
            self.signals.high_watermark.send_modify(|v| *v += 1);
        }
    }

    /// As the leader, recomputes the high watermark from the log ends of the ISR, counting
    /// a member being added as already in (Kafka's "maximal ISR": the high watermark never
    /// passes a replica the controller may be making a member).
    fn update_hw(&self) {
        let role = self.role();
        if !role.leader {
            return;
        }
        let Some(leo) = self.log_ref().as_ref().map(Log::log_end_offset) else {
            return;
        };
        let (members, leos) = {
            let st = self.leader_state();
            let mut members = role.isr.clone();
            if let Some((pending, _)) = &st.pending {
                members.extend(pending.iter().filter(|m| !role.isr.contains(m)));
            }
            let leos: BTreeMap<BrokerId, Offset> = st
                .followers
                .iter()
                .filter_map(|(id, f)| f.leo.map(|leo| (*id, leo)))
                .collect();
            (members, leos)
        };
        let current = self.high_watermark().min(leo);
        self.set_hw(compute_hw(self.me, leo, &members, &leos, current));
    }

    /// As the leader: its log end and, for each replica a reassignment is adding, the log end
    /// it fetched from at its last fetch. `None` when this broker does not lead.
    pub fn reassignment_progress(&self) -> Option<(Offset, Vec<CopyProgress>)> {
        let role = self.role();
        if !role.leader {
            return None;
        }
        let leo = self.log_ref().as_ref().map(Log::log_end_offset)?;
        let st = self.leader_state();
        let adding = role
            .adding
            .iter()
            .map(|b| (*b, st.followers.get(b).and_then(|f| f.leo)))
            .collect();
        Some((leo, adding))
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
    /// buffered write and index updates): call it on a blocking thread. The producer-state
    /// check of an idempotent batch and its append happen under the log's write lock, so
    /// concurrent produces of one producer cannot both pass the check.
    pub fn append(&self, batches: &[Bytes]) -> Result<Appended, PartitionError> {
        let role = self.role();
        if !role.leader {
            return Err(PartitionError::LeaderNotAvailable);
        }
        let appended = {
            let mut guard = self.log_mut();
            let log = guard.as_mut().ok_or(PartitionError::LeaderNotAvailable)?;
            let mut base = None;
            let mut duplicate = None;
            for batch in batches {
                let info = log
                    .append(batch, role.leader_epoch)
                    .map_err(|e| self.disk_noted(e.into()))?;
                base.get_or_insert(info.base_offset);
                // An idempotent batch is alone in its request (see `records::check_raw`).
                duplicate = info.duplicate.then_some(info.last_offset + 1);
            }
            Appended {
                base_offset: base.unwrap_or(log.log_end_offset()),
                next_offset: duplicate.unwrap_or(log.log_end_offset()),
                duplicate: duplicate.is_some(),
                log_start: log.log_start_offset(),
                leader_epoch: role.leader_epoch,
            }
        };
        self.signals.appended.send_modify(|v| *v += 1);
        self.update_hw();
        Ok(appended)
    }

    /// Reports `e` to the data directory's health (a disk failure marks it failing).
    fn disk_noted(&self, e: PartitionError) -> PartitionError {
        self.signals.disk.note(&e);
        e
    }

    /// Whether the log refuses all writes until a restart (see `keel_storage::Log`).
    pub fn is_poisoned(&self) -> bool {
        self.log_ref().as_ref().is_some_and(Log::is_poisoned)
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
        let (job, result) = crate::spawn_blocking(move || {
            let result = job.sync();
            (job, result)
        })
        .await
        .map_err(|_| PartitionError::LeaderNotAvailable)?;
        let mut guard = self.log_mut();
        let log = guard.as_mut().ok_or(PartitionError::LeaderNotAvailable)?;
        let durable = log
            .finish_flush(job, result)
            .map_err(|e| self.disk_noted(e.into()))?;
        self.last_flush_ms
            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        if durable < offset {
            // Truncated meanwhile (not possible on a leader today); report rather than lie.
            return Err(PartitionError::LeaderNotAvailable);
        }
        Ok(())
    }

    /// The log end, when a `flush.mode=interval` fsync is due: `flush.ms` since the last one
    /// passed and something is unflushed.
    pub fn interval_flush_due(&self) -> Option<Offset> {
        let interval = self.role().settings.flush_interval_ms?;
        let last = self
            .last_flush_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if now_ms() - last < interval {
            return None;
        }
        let guard = self.log_ref();
        let log = guard.as_ref()?;
        (log.unflushed_bytes() > 0).then(|| log.log_end_offset())
    }

    /// Bytes appended and not yet fsynced.
    pub fn unflushed_bytes(&self) -> u64 {
        self.log_ref().as_ref().map_or(0, Log::unflushed_bytes)
    }

    /// Deletes segments past the topic's retention, below the high watermark. Blocking.
    pub fn apply_retention(&self) {
        let hw = self.high_watermark();
        if let Some(log) = self.log_mut().as_mut() {
            match log.apply_retention(hw) {
                Ok(r) if r.segments_deleted > 0 => tracing::info!(topic = %self.topic,
                    partition = self.index, log = %log.name(),
                    segments = r.segments_deleted, bytes = r.bytes_deleted, log_start = r.log_start,
                    "retention deleted old segments"),
                Ok(_) => {}
                Err(e) => tracing::warn!(topic = %self.topic, partition = self.index,
                    log = %log.name(), error = %e, "retention failed"),
            }
        }
    }

    /// Fsyncs each partition up to its offset, all at once; failures are logged (the log is
    /// poisoned and refuses writes from then on).
    pub async fn flush_each(targets: &[(Arc<Partition>, Offset)], what: &str) {
        let flushes = targets.iter().map(|(p, end)| p.flush_to(*end));
        for (result, (p, _)) in futures_util::future::join_all(flushes)
            .await
            .iter()
            .zip(targets)
        {
            if let Err(e) = result {
                tracing::error!(topic = %p.topic, partition = p.index, topic_id = %p.topic_id,
                    error = %e, what,
                    "fsync failed");
            }
        }
    }

    /// Drops idle producers' state and saves a snapshot of what is left. Blocking.
    pub fn producer_upkeep(&self, expiration_ms: i64) {
        if let Some(log) = self.log_mut().as_mut() {
            let expired = log.expire_producers(expiration_ms);
            if expired > 0 {
                tracing::info!(topic = %self.topic, partition = self.index, log = %log.name(),
                    expired, "idle producers expired");
            }
            if let Err(e) = log.snapshot_producers() {
                tracing::warn!(topic = %self.topic, partition = self.index, log = %log.name(),
                    error = %e, "producer state not saved");
            }
        }
    }

    /// Waits until the high watermark reaches `offset` while this broker leads in
    /// `leader_epoch`; if it stops leading first, the records may or may not survive, and
    /// the caller hears `NOT_LEADER` (retriable).
    pub async fn wait_replicated(
        &self,
        offset: Offset,
        leader_epoch: LeaderEpoch,
    ) -> Result<(), PartitionError> {
        let mut hw = self.hw.subscribe();
        let mut leadership = self.leadership.subscribe();
        tokio::select! {
            _ = hw.wait_for(|hw| *hw >= offset) => Ok(()),
            _ = leadership.wait_for(|l| *l != (true, leader_epoch)) => Err(self.role().not_leader()),
        }
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

    /// Whole batches from `from` up to the log end, past the high watermark, and the log end:
    /// a group coordinator that takes over replays everything its log holds (as Kafka's
    /// does; what it holds beyond the high watermark is what it will make committed).
    /// Blocking.
    pub fn read_to_end(
        &self,
        from: Offset,
        max_bytes: usize,
    ) -> Result<(Bytes, Offset), PartitionError> {
        let guard = self.log_ref();
        let log = guard.as_ref().ok_or(PartitionError::LeaderNotAvailable)?;
        let end = log.log_end_offset();
        if from >= end {
            return Ok((Bytes::new(), end));
        }
        Ok((log.read(from, max_bytes, end)?, end))
    }

    /// Deletes the whole segments below `offset` ([`keel_storage::Log::delete_before`]);
    /// returns the new log start. Blocking.
    pub fn delete_before(&self, offset: Offset) -> Result<Offset, PartitionError> {
        let mut guard = self.log_mut();
        let log = guard.as_mut().ok_or(PartitionError::LeaderNotAvailable)?;
        Ok(log.delete_before(offset)?.log_start)
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
