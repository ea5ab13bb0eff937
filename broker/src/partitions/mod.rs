//! The partition manager: which partition replicas this broker hosts, their logs, and whether
//! it leads them.
//!
//! It follows the metadata image (a watch channel). For every partition whose replicas
//! include this broker it opens the partition's log (see [`log_name`]: a re-created topic gets
//! a new log) with the topic's settings ([`TopicSettings`]), and records whether this broker
//! leads it, at which leader epoch, with which ISR. A partition that leaves this broker (its
//! topic deleted, or the replica moved) has its log closed and deleted. Brokers without a
//! replica of a partition hold nothing for it.
//!
//! Logs left by partitions that left while the broker was down (a topic deleted meanwhile)
//! are swept once per run, and only once the image has reached this broker's registration in
//! this run (its broker epoch is the registration's metadata offset): from then on the image
//! holds every change made while the broker was away, so a log it does not name is an orphan.
//! An earlier image (a stale snapshot, a follower's first image) could miss a live topic.
//!
//! The produce and fetch services find partitions here ([`PartitionManager::leader_of`]),
//! which also answers, from the image, who leads a partition this broker does not lead.
//!
//! # Layout
//! - this file: [`PartitionManager`], [`TopicSettings`], log naming;
//! - [`partition`]: one replica: log, role, high watermark, group commit, and (in its child
//!   module) replication: serving follower fetches, applying them, ISR proposals;
//! - [`hw`]: the high watermark as a pure function;
//! - [`isr`]: follower tracking and ISR proposals as pure functions;
//! - [`upkeep`]: the periodic pass: fsyncs of `flush.mode=interval` topics, retention;
//! - [`disk`]: whether the data directory takes writes; the broker asks to be fenced while
//!   it does not;
//! - [`error`]: per-partition errors and their wire mapping.

pub mod disk;
pub mod error;
pub mod hw;
pub mod isr;
pub mod partition;
pub mod upkeep;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use keel_metadata::image::{MetadataImage, PartitionState, TopicImage};
use keel_metadata::records::{BrokerId, TopicId};
use keel_metadata::store::MetadataView;
use keel_storage::config::MIN_SEGMENT_BYTES;
use keel_storage::{DataDir, LogConfig};
use tokio::sync::watch;

pub use error::PartitionError;

use crate::lifecycle::Status;
pub use partition::{Partition, Role, Signals};

/// The name of a partition's log: `<topic id, 32 hex digits>-<partition>`. The id, not the
/// topic name, so that a topic deleted and created again under the same name never meets the
/// old one's files, and the name stays short whatever the topic's name length.
pub fn log_name(topic_id: TopicId, partition: i32) -> String {
    format!("{topic_id}-{partition}")
}

/// The topic id and partition a [`log_name`] stands for; `None` for any other name.
pub fn parse_log_name(name: &str) -> Option<(TopicId, i32)> {
    let (id, partition) = name.split_once('-')?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = u128::from_str_radix(id, 16).ok()?;
    let partition = partition.parse::<i32>().ok().filter(|p| *p >= 0)?;
    Some((TopicId(id), partition))
}

/// A topic's settings that the data path applies, from its config overrides over Kafka's
/// defaults. Values were validated by the controller when they were set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSettings {
    /// The log's settings (`segment.bytes`, `retention.ms`, `max.message.bytes`, ...).
    pub log: LogConfig,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// `message.timestamp.type=LogAppendTime`.
    pub log_append_time: bool,
    /// `flush.mode=interval`: fsync every `flush.ms` instead of before acknowledging; `None`
    /// for the default `per-record` (acks=all waits for the fsync on every ISR member).
    pub flush_interval_ms: Option<i64>,
}

impl TopicSettings {
    /// Settings from a topic's config overrides.
    pub fn from_configs(configs: &BTreeMap<String, String>) -> TopicSettings {
        let int = |key: &str| configs.get(key).and_then(|v| v.parse::<i64>().ok());
        let mut log = LogConfig::default();
        if let Some(v) = int("segment.bytes") {
            // The controller accepts Kafka's floor (14); the log needs room for a batch.
            log.segment_bytes = (v.max(0) as u64).max(MIN_SEGMENT_BYTES);
        }
        if let Some(v) = int("segment.ms") {
            log.segment_ms = v.max(1);
        }
        if let Some(v) = int("retention.ms") {
            log.retention_ms = (v >= 0).then_some(v);
        }
        if let Some(v) = int("retention.bytes") {
            log.retention_bytes = (v >= 0).then_some(v as u64);
        }
        if let Some(v) = int("max.message.bytes") {
            log.max_message_bytes = (v.max(0) as usize).max(keel_storage::batch::HEADER_LEN);
        }
        if let Some(v) = int("index.interval.bytes") {
            log.index_interval_bytes = v.max(1) as u64;
        }
        TopicSettings {
            log,
            min_insync_replicas: int("min.insync.replicas").map_or(1, |v| v.max(1) as usize),
            log_append_time: configs.get("message.timestamp.type").map(String::as_str)
                == Some("LogAppendTime"),
            flush_interval_ms: (configs.get("flush.mode").map(String::as_str) == Some("interval"))
                .then(|| int("flush.ms").unwrap_or(1000).max(0)),
        }
    }
}

/// The partition replicas of this broker.
pub struct PartitionManager {
    me: BrokerId,
    data: Arc<DataDir>,
    partitions: Mutex<BTreeMap<(TopicId, i32), Arc<Partition>>>,
    signals: Signals,
    /// Bumped after every reconcile: roles may have changed.
    reconciled: watch::Sender<u64>,
    /// Whether orphaned logs have been swept in this run.
    swept: AtomicBool,
}

impl PartitionManager {
    /// A manager for broker `me` over its data directory; it holds nothing until the first
    /// [`reconcile`](Self::reconcile).
    pub fn new(me: BrokerId, data: Arc<DataDir>) -> PartitionManager {
        PartitionManager {
            me,
            data,
            partitions: Mutex::new(BTreeMap::new()),
            signals: Signals::default(),
            reconciled: watch::channel(0).0,
            swept: AtomicBool::new(false),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(TopicId, i32), Arc<Partition>>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The replica of a partition, if this broker hosts it.
    pub fn get(&self, topic_id: TopicId, partition: i32) -> Option<Arc<Partition>> {
        self.map().get(&(topic_id, partition)).cloned()
    }

    /// The partitions hosted here, in (topic id, index) order.
    pub fn hosted(&self) -> Vec<(TopicId, i32)> {
        self.map().keys().copied().collect()
    }

    /// A receiver woken whenever the high watermark of any partition moves.
    pub fn data_changed(&self) -> watch::Receiver<u64> {
        self.signals.high_watermark.subscribe()
    }

    /// A receiver woken whenever a leader here appends.
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.signals.appended.subscribe()
    }

    /// Leader changes seen so far: times a hosted partition got a new leader epoch with a
    /// leader (see `keel_leader_elections_total`).
    pub fn leader_changes(&self) -> u64 {
        self.signals
            .leader_changes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the data directory takes writes (see [`disk`]).
    pub fn disk(&self) -> &Arc<disk::DiskHealth> {
        &self.signals.disk
    }

    /// A receiver woken after every reconcile (roles may have changed).
    pub fn reconciled(&self) -> watch::Receiver<u64> {
        self.reconciled.subscribe()
    }

    /// Checkpoints every hosted partition's high watermark. Blocking.
    pub fn checkpoint_all(&self) {
        let all: Vec<_> = self.map().values().cloned().collect();
        for p in all {
            p.checkpoint_hw();
        }
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.map().values().cloned().collect()
    }

    /// The partitions this broker leads.
    pub fn led(&self) -> Vec<Arc<Partition>> {
        self.map()
            .values()
            .filter(|p| p.role().leader)
            .cloned()
            .collect()
    }

    /// The partitions this broker follows, by their leader.
    pub fn followed(&self) -> BTreeMap<BrokerId, Vec<Arc<Partition>>> {
        let mut by_leader: BTreeMap<BrokerId, Vec<Arc<Partition>>> = BTreeMap::new();
        for p in self.map().values() {
            let role = p.role();
            if let (false, Some(leader)) = (role.leader, role.leader_id) {
                by_leader.entry(leader).or_default().push(p.clone());
            }
        }
        by_leader
    }

    /// The partition `topic`/`partition` if this broker leads it, per `image`; otherwise why
    /// not, with the leader hint from the image.
    pub fn leader_of(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        let t = image
            .topic_by_name(topic)
            .ok_or(PartitionError::UnknownTopicOrPartition)?;
        let state = t
            .partitions
            .get(&partition)
            .ok_or(PartitionError::UnknownTopicOrPartition)?;
        if state.leader != Some(self.me) {
            return Err(not_leader(image, state));
        }
        let p = self
            .get(t.topic_id, partition)
            .ok_or(PartitionError::LeaderNotAvailable)?;
        let role = p.role();
        // The manager applies images after the services see them; until it has applied this
        // one, the replica is not ready to lead at this epoch.
        if !role.leader || role.leader_epoch != state.leader_epoch {
            return Err(PartitionError::LeaderNotAvailable);
        }
        Ok(p)
    }

    /// Brings the hosted replicas in line with `image`: opens logs of new replicas, updates
    /// roles, closes and deletes logs of replicas that left, and, when `complete` (the image
    /// has reached this broker's registration in this run), deletes orphaned logs once.
    /// Blocking (opens may recover a log): run it on a blocking thread. Failures are logged
    /// and retried at the next image.
    pub fn reconcile(&self, image: &MetadataImage, complete: bool) {
        let mut wanted = BTreeSet::new();
        for (topic_id, t) in &image.topics {
            for (index, state) in &t.partitions {
                if state.replicas.contains(&self.me) {
                    wanted.insert((*topic_id, *index));
                    self.host(t, *index, state);
                }
            }
        }
        let gone: Vec<_> = {
            let mut map = self.map();
            let keys: Vec<_> = map
                .keys()
                .filter(|k| !wanted.contains(*k))
                .copied()
                .collect();
            keys.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        for p in gone {
            self.delete(&p);
        }
        if complete && !self.swept.swap(true, Ordering::Relaxed) {
            self.sweep_orphans(&wanted);
        }
        self.reconciled.send_modify(|v| *v += 1);
    }

    /// Deletes the partition logs on disk that `wanted` does not name.
    fn sweep_orphans(&self, wanted: &BTreeSet<(TopicId, i32)>) {
        let names = match self.data.log_names() {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "could not list logs to sweep");
                return;
            }
        };
        let orphans = names
            .iter()
            .filter(|n| parse_log_name(n).is_some_and(|k| !wanted.contains(&k)));
        for name in orphans {
            let deleted = self
                .data
                .open_log(name, LogConfig::default())
                .and_then(|(log, _)| self.data.delete_log(log));
            match deleted {
                Ok(()) => tracing::info!(log = %name, "orphaned partition log deleted"),
                Err(e) => tracing::warn!(log = %name, error = %e, "could not delete orphaned log"),
            }
        }
    }

    fn role_in(&self, t: &TopicImage, state: &PartitionState) -> Role {
        Role {
            leader_id: state.leader,
            leader: state.leader == Some(self.me),
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            replicas: state.replicas.clone(),
            isr: state.isr.clone(),
            adding: state.adding_replicas.clone(),
            settings: TopicSettings::from_configs(&t.configs),
        }
    }

    fn host(&self, t: &TopicImage, index: i32, state: &PartitionState) {
        let role = self.role_in(t, state);
        if let Some(p) = self.get(t.topic_id, index) {
            if p.role() != role {
                p.set_role(role);
            }
            return;
        }
        let name = log_name(t.topic_id, index);
        match self.data.open_log(&name, role.settings.log.clone()) {
            Ok((log, stats)) => {
                tracing::info!(log = %name, topic = %t.name, partition = index,
                    leader = role.leader, leader_epoch = role.leader_epoch, clean = stats.clean,
                    "partition replica opened");
                let p = Partition::new(
                    t.topic_id,
                    t.name.clone(),
                    index,
                    self.me,
                    log,
                    role,
                    self.signals.clone(),
                );
                self.map().insert((t.topic_id, index), Arc::new(p));
            }
            Err(e) => {
                tracing::error!(topic = %t.name, partition = index, log = %name, error = %e,
                    "could not open partition log");
            }
        }
    }

    fn delete(&self, p: &Partition) {
        let Some(log) = p.take_log() else {
            return;
        };
        let name = log.name().to_owned();
        let (topic, partition) = (&p.topic, p.index);
        match self.data.delete_log(log) {
            Ok(()) => tracing::info!(%topic, partition, log = %name, "partition replica deleted"),
            Err(e) => tracing::error!(%topic, partition, log = %name, error = %e,
                "could not delete partition log"),
        }
    }

    /// Follows `view` until `stop` turns true, reconciling at every new image; `status` tells
    /// when the image has reached this run's registration (see the module doc).
    pub async fn run(
        self: Arc<Self>,
        view: MetadataView,
        mut status: watch::Receiver<Status>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut images = view.subscribe();
        loop {
            let image = images.borrow_and_update().clone();
            let complete = status
                .borrow()
                .broker_epoch
                .is_some_and(|epoch| image.offset >= epoch);
            let me = self.clone();
            if crate::spawn_blocking(move || me.reconcile(&image, complete))
                .await
                .is_err()
            {
                tracing::error!("partition reconcile panicked");
            }
            // A new registration status can complete an image already applied.
            let status_changed = async {
                if status.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                changed = images.changed() => if changed.is_err() { return },
                _ = status_changed => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Closes every log (flush, then the clean-shutdown checkpoint, so the next start reads
    /// no segment data). Blocking. Requests still arriving are told to retry.
    pub fn close_all(&self) {
        let all: Vec<_> = std::mem::take(&mut *self.map()).into_values().collect();
        for p in all {
            p.checkpoint_hw();
            if let Some(log) = p.take_log() {
                let name = log.name().to_owned();
                if let Err(e) = log.close() {
                    tracing::error!(topic = %p.topic, partition = p.index, log = %name,
                        error = %e, "could not close partition log");
                }
            }
        }
    }
}

/// `NOT_LEADER` with the leader's id, client endpoint and epoch from the image.
fn not_leader(image: &MetadataImage, state: &PartitionState) -> PartitionError {
    let endpoint = state
        .leader
        .and_then(|l| image.brokers.get(&l))
        .map(|b| format!("{}:{}", b.endpoints.client.host, b.endpoints.client.port));
    PartitionError::NotLeader {
        leader: state.leader,
        endpoint,
        leader_epoch: state.leader_epoch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_overrides_over_kafka_defaults() {
        let defaults = TopicSettings::from_configs(&BTreeMap::new());
        assert_eq!(defaults.log, LogConfig::default());
        assert_eq!(defaults.min_insync_replicas, 1);
        assert!(!defaults.log_append_time);
        assert_eq!(defaults.flush_interval_ms, None);

        let configs: BTreeMap<String, String> = [
            ("max.message.bytes", "2000"),
            ("min.insync.replicas", "2"),
            ("retention.ms", "-1"),
            ("retention.bytes", "5000"),
            ("segment.bytes", "14"),
            ("index.interval.bytes", "0"),
            ("message.timestamp.type", "LogAppendTime"),
            ("flush.mode", "interval"),
            ("flush.ms", "250"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s = TopicSettings::from_configs(&configs);
        assert_eq!(s.log.max_message_bytes, 2000);
        assert_eq!(s.min_insync_replicas, 2);
        assert_eq!(s.log.retention_ms, None);
        assert_eq!(s.log.retention_bytes, Some(5000));
        assert_eq!(s.log.segment_bytes, MIN_SEGMENT_BYTES);
        assert_eq!(s.log.index_interval_bytes, 1);
        assert!(s.log_append_time);
        assert_eq!(s.flush_interval_ms, Some(250));
        assert_eq!(s.log.validate(), Ok(()));
    }

    #[test]
    fn log_names_carry_the_topic_id_and_partition_and_parse_back() {
        let id = TopicId(0xab);
        assert_eq!(log_name(id, 3), format!("{:032x}-3", 0xab));
        assert_eq!(parse_log_name(&log_name(id, 3)), Some((id, 3)));
        for other in [
            "t-0",
            "abc-1",
            &format!("{:032x}-x", 1),
            &format!("{:032x}--1", 1),
        ] {
            assert_eq!(parse_log_name(other), None, "{other}");
        }
    }
}
