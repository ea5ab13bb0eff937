//! The coordinator runtime: one shard per partition of `__consumer_offsets` this broker leads,
//! loaded from the partition when leadership arrives and dropped when it leaves.
//!
//! An operation on a group runs under its shard's lock on a copy of the group; the changes it
//! returns are appended to the shard's partition as one batch, and the copy replaces the group
//! once the append is in the log. The caller's answer waits, outside the lock, until the batch
//! is fsynced and replicated (the high watermark passed it), as an acks=all produce. If that
//! fails, leadership is gone or going: the shard is dropped and the next leader replays the
//! log, so memory never runs ahead of what a successor can rebuild for longer than the
//! failover.
//!
//! A ticker removes members whose session or rebalance timeout expired. After enough bytes
//! were appended since the last snapshot, the shard writes a snapshot batch and, once it is
//! replicated, deletes the segments wholly before it (followers follow the leader's log
//! start), which bounds the partition.
//!
//! Lag (`keel group describe`, `/metrics`): the high watermark of a partition this broker
//! leads is read here; the others are asked of their leaders (`ListOffsets`, latest), each
//! leader once per call with a short timeout. For `/metrics` the last high watermark learned
//! for a partition stands in while its leader does not answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_metadata::image::MetadataImage;
use keel_metadata::records::{BrokerId, TopicId};
use keel_proto::v1::consumer_client::ConsumerClient;
use keel_proto::v1::{self as pb, ErrorCode};
use keel_storage::batch::{self, BatchParams};
use keel_storage::Offset;
use tokio::sync::watch;

use super::group::{Change, Group, GroupConfig, State};
use super::stored;
use crate::partitions::{Partition, PartitionError, PartitionManager};
use crate::services::Shared;

/// The internal topic of committed offsets and group state.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How the internal topic is created (broker config).
#[derive(Clone, Debug)]
pub struct OffsetsTopicConfig {
    /// `offsets.topic.num.partitions`.
    pub partitions: i32,
    /// `offsets.topic.replication.factor` (capped at the live brokers when created).
    pub replication_factor: i32,
    /// Bytes appended to a shard after which it writes a snapshot and drops older segments.
    /// The topic's segments are twice that, so a partition keeps about three segments.
    pub snapshot_bytes: u64,
}

impl Default for OffsetsTopicConfig {
    fn default() -> Self {
        OffsetsTopicConfig {
            partitions: 16,
            replication_factor: 3,
            snapshot_bytes: 8 << 20,
        }
    }
}

/// Longest wait for a write to become durable before the caller hears a retriable error.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often sessions are checked.
const EXPIRY_TICK: Duration = Duration::from_millis(250);
/// Bytes read per step while loading a shard.
const LOAD_CHUNK: usize = 1 << 20;
/// How long a partition leader has to answer a high-watermark lookup.
const HW_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// A group's committed offset in one partition and the partition's high watermark (`None`
/// when neither its leader nor an earlier lookup told it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: Offset,
    pub high_watermark: Option<Offset>,
}

/// Partitions by topic, grouped by the client endpoint of their leader.
type ByLeader = BTreeMap<String, BTreeMap<String, Vec<i32>>>;

/// Kafka's `Utils.abs(groupId.hashCode()) % partitions`, so groups land where Kafka puts them.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = group_id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

/// The group state of one `__consumer_offsets` partition this broker leads.
pub struct Shard {
    pub index: i32,
    partition: Arc<Partition>,
    leader_epoch: i32,
    loaded: AtomicBool,
    groups: tokio::sync::Mutex<BTreeMap<String, Group>>,
    since_snapshot: AtomicU64,
}

/// The group coordinator of this broker.
pub struct Coordinator {
    me: BrokerId,
    shared: Arc<Shared>,
    partitions: Arc<PartitionManager>,
    pub cfg: GroupConfig,
    topic: OffsetsTopicConfig,
    shards: Mutex<BTreeMap<i32, Arc<Shard>>>,
    creating: AtomicBool,
    /// The last high watermark learned for each partition with committed offsets here.
    learned_hws: Mutex<BTreeMap<(String, i32), Offset>>,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> pb::Error {
    pb::Error::new(code, msg)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Coordinator {
    pub fn new(
        me: BrokerId,
        shared: Arc<Shared>,
        partitions: Arc<PartitionManager>,
        cfg: GroupConfig,
        topic: OffsetsTopicConfig,
    ) -> Coordinator {
        Coordinator {
            me,
            shared,
            partitions,
            cfg,
            topic,
            shards: Mutex::new(BTreeMap::new()),
            creating: AtomicBool::new(false),
            learned_hws: Mutex::new(BTreeMap::new()),
        }
    }

    fn shards(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Arc<Shard>>> {
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows leadership of the internal topic's partitions and expires sessions, until
    /// `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut reconciled = self.partitions.reconciled();
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        loop {
            self.sync_shards();
            tokio::select! {
                _ = reconciled.changed() => {}
                _ = tick.tick() => self.expire_all().await,
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    fn offsets_topic_id(&self, image: &MetadataImage) -> Option<TopicId> {
        image.topic_by_name(OFFSETS_TOPIC).map(|t| t.topic_id)
    }

    /// Starts loading shards this broker now leads and drops those it no longer leads.
    fn sync_shards(self: &Arc<Self>) {
        let image = self.shared.view.current();
        let Some(topic_id) = self.offsets_topic_id(&image) else {
            self.shards().clear();
            return;
        };
        let led: BTreeMap<i32, (Arc<Partition>, i32)> = self
            .partitions
            .led()
            .into_iter()
            .filter(|p| p.topic_id == topic_id)
            .map(|p| {
                let epoch = p.role().leader_epoch;
                (p.index, (p, epoch))
            })
            .collect();
        let mut shards = self.shards();
        shards.retain(|i, s| led.get(i).is_some_and(|(_, e)| *e == s.leader_epoch));
        for (index, (partition, leader_epoch)) in led {
            if shards.contains_key(&index) {
                continue;
            }
            let shard = Arc::new(Shard {
                index,
                partition,
                leader_epoch,
                loaded: AtomicBool::new(false),
                groups: tokio::sync::Mutex::new(BTreeMap::new()),
                since_snapshot: AtomicU64::new(0),
            });
            shards.insert(index, shard.clone());
            let cfg = self.cfg.clone();
            crate::spawn(async move {
                if let Err(e) = load(&shard, &cfg).await {
                    tracing::error!(topic = OFFSETS_TOPIC, partition = shard.index, error = %e,
                        "group state not loaded");
                }
            });
        }
    }

    async fn expire_all(&self) {
        let shards: Vec<Arc<Shard>> = self.shards().values().cloned().collect();
        let now = now_ms();
        for shard in shards.iter().filter(|s| s.loaded.load(Ordering::Acquire)) {
            // Only groups with a member to remove are copied and written.
            let ids: Vec<String> = shard
                .groups
                .lock()
                .await
                .values()
                .filter(|g| !g.expired(now).is_empty())
                .map(|g| g.id.clone())
                .collect();
            for id in ids {
                let outcome = self
                    .write(shard, &id, false, |g| {
                        let mut changes = vec![];
                        let gone = g.expire(now, &mut changes);
                        Ok((gone, changes))
                    })
                    .await;
                if let Ok(gone) = outcome {
                    for member in gone {
                        tracing::info!(group = %id, %member, "member removed: session or rebalance timeout");
                    }
                }
            }
        }
    }

    /// Where the group's coordinator is: (broker, "host:port"). Creates the internal topic
    /// on first use (and answers `COORDINATOR_NOT_AVAILABLE` meanwhile).
    pub async fn find(&self, group_id: &str) -> Result<(i32, String), pb::Error> {
        if group_id.is_empty() {
            return Err(err(ErrorCode::InvalidGroupId, "the group id is empty"));
        }
        let image = self.shared.view.current();
        let Some(topic) = image.topic_by_name(OFFSETS_TOPIC) else {
            self.create_offsets_topic(&image).await;
            return Err(err(
                ErrorCode::CoordinatorNotAvailable,
                format!("{OFFSETS_TOPIC} is being created; retry"),
            ));
        };
        let index = partition_for(group_id, topic.partitions.len() as i32);
        let leader = topic.partitions.get(&index).and_then(|p| p.leader);
        let endpoint = leader.and_then(|l| image.brokers.get(&l)).map(|b| {
            let e = &b.endpoints.client;
            (b.broker_id, format!("{}:{}", e.host, e.port))
        });
        endpoint.ok_or_else(|| {
            err(
                ErrorCode::CoordinatorNotAvailable,
                format!("{OFFSETS_TOPIC}-{index} has no leader"),
            )
        })
    }

    async fn create_offsets_topic(&self, image: &MetadataImage) {
        if self.creating.swap(true, Ordering::AcqRel) {
            return;
        }
        let live = image.unfenced_brokers().count().max(1) as i32;
        let rf = self.topic.replication_factor.min(live);
        if rf < self.topic.replication_factor {
            tracing::warn!(
                wanted = self.topic.replication_factor,
                live,
                "{OFFSETS_TOPIC} created with fewer replicas than offsets.topic.replication.factor"
            );
        }
        let configs = [
            ("segment.bytes", (2 * self.topic.snapshot_bytes).to_string()),
            ("retention.ms", "-1".to_string()),
            ("retention.bytes", "-1".to_string()),
            ("max.message.bytes", (64u64 << 20).to_string()),
        ];
        let req = pb::CreateTopicsRequest {
            topics: vec![pb::CreatableTopic {
                name: OFFSETS_TOPIC.into(),
                num_partitions: Some(self.topic.partitions),
                replication_factor: Some(rf),
                assignments: vec![],
                configs: configs.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            }],
            timeout_ms: 10_000,
            validate_only: false,
        };
        let outcome = crate::services::admin::create_topics_internal(&self.shared, req).await;
        tracing::info!(?outcome, "asked to create {OFFSETS_TOPIC}");
        self.creating.store(false, Ordering::Release);
    }

    /// The loaded shard that coordinates `group_id`, or why this broker cannot serve it.
    pub fn shard_of(&self, group_id: &str) -> Result<Arc<Shard>, pb::Error> {
        if group_id.is_empty() {
            return Err(err(ErrorCode::InvalidGroupId, "the group id is empty"));
        }
        let image = self.shared.view.current();
        let topic = image.topic_by_name(OFFSETS_TOPIC).ok_or_else(|| {
            err(
                ErrorCode::CoordinatorNotAvailable,
                format!("no {OFFSETS_TOPIC} yet"),
            )
        })?;
        let index = partition_for(group_id, topic.partitions.len() as i32);
        let shard = self.shards().get(&index).cloned();
        match shard {
            Some(s) if s.loaded.load(Ordering::Acquire) => Ok(s),
            Some(_) => Err(err(
                ErrorCode::CoordinatorLoadInProgress,
                format!("loading {OFFSETS_TOPIC}-{index}"),
            )),
            None => Err(self.not_coordinator(&image, topic.partitions.get(&index))),
        }
    }

    fn not_coordinator(
        &self,
        image: &MetadataImage,
        state: Option<&keel_metadata::image::PartitionState>,
    ) -> pb::Error {
        let mut e = err(
            ErrorCode::NotCoordinator,
            "this broker does not coordinate the group",
        );
        let leader = state.and_then(|s| s.leader).filter(|l| *l != self.me);
        if let Some(b) = leader.and_then(|l| image.brokers.get(&l)) {
            e.leader_id = Some(b.broker_id);
            e.leader_endpoint = Some(format!(
                "{}:{}",
                b.endpoints.client.host, b.endpoints.client.port
            ));
        }
        e
    }

    /// Runs `op` on a copy of the group (a new one when `create` and it does not exist),
    /// persists its changes, and answers once they are durable (see the module doc).
    pub async fn update<R>(
        &self,
        group_id: &str,
        create: bool,
        op: impl FnOnce(&mut Group) -> Result<(R, Vec<Change>), pb::Error>,
    ) -> Result<R, pb::Error> {
        let shard = self.shard_of(group_id)?;
        self.write(&shard, group_id, create, op).await
    }

    async fn write<R>(
        &self,
        shard: &Arc<Shard>,
        group_id: &str,
        create: bool,
        op: impl FnOnce(&mut Group) -> Result<(R, Vec<Change>), pb::Error>,
    ) -> Result<R, pb::Error> {
        let mut groups = shard.groups.lock().await;
        let mut g = match groups.get(group_id) {
            Some(g) => g.clone(),
            None if create => Group::new(group_id),
            None => {
                return Err(err(
                    ErrorCode::GroupIdNotFound,
                    format!("no group {group_id}"),
                ));
            }
        };
        let (answer, changes) = op(&mut g)?;
        if changes.is_empty() {
            groups.insert(group_id.to_owned(), g);
            return Ok(answer);
        }
        let entries = stored::entries(&g, &changes);
        let written = self.append(shard, &entries).await?;
        if changes.contains(&Change::GroupGone) {
            groups.remove(group_id);
        } else {
            groups.insert(group_id.to_owned(), g);
        }
        drop(groups);
        self.wait_durable(shard, written).await?;
        self.maybe_snapshot(shard).await;
        Ok(answer)
    }

    /// Appends entries as one batch at the shard's leader epoch; returns the offset after it.
    async fn append(&self, shard: &Shard, entries: &[stored::Entry]) -> Result<Offset, pb::Error> {
        let role = shard.partition.role();
        if !role.leader || role.leader_epoch != shard.leader_epoch {
            return Err(err(
                ErrorCode::NotCoordinator,
                "coordinator moved; find it again",
            ));
        }
        let records = stored::to_records(entries, now_ms());
        let built = batch::encode(&BatchParams::default(), &records).map_err(|e| {
            err(
                ErrorCode::UnknownServerError,
                format!("group record batch: {e}"),
            )
        })?;
        let len = built.len() as u64;
        let p = shard.partition.clone();
        let appended = crate::spawn_blocking(move || p.append(&[built]))
            .await
            .map_err(|_| err(ErrorCode::CoordinatorNotAvailable, "append task failed"))?
            .map_err(|e| write_error(&e))?;
        shard.since_snapshot.fetch_add(len, Ordering::Relaxed);
        Ok(appended.next_offset)
    }

    async fn wait_durable(&self, shard: &Shard, offset: Offset) -> Result<(), pb::Error> {
        let p = shard.partition.clone();
        let durable = async {
            p.flush_to(offset).await?;
            p.wait_replicated(offset, shard.leader_epoch).await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, durable).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_error(&e)),
            Err(_) => Err(err(
                ErrorCode::CoordinatorNotAvailable,
                "group state not replicated in time; retry",
            )),
        }
    }

    /// Writes a snapshot of the shard when enough was appended since the last one, and once
    /// it is durable deletes the segments before it.
    async fn maybe_snapshot(&self, shard: &Shard) {
        if shard.since_snapshot.load(Ordering::Relaxed) < self.topic.snapshot_bytes {
            return;
        }
        let groups = shard.groups.lock().await;
        if shard.since_snapshot.load(Ordering::Relaxed) < self.topic.snapshot_bytes {
            return; // another writer took the snapshot meanwhile
        }
        let entries = stored::snapshot(groups.values());
        let start = match shard.partition.offsets() {
            Ok(o) => o.log_end,
            Err(_) => return,
        };
        let end = match self.append(shard, &entries).await {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(topic = OFFSETS_TOPIC, partition = shard.index, error = %e.message,
                    "snapshot not written");
                return;
            }
        };
        shard.since_snapshot.store(0, Ordering::Relaxed);
        drop(groups);
        if self.wait_durable(shard, end).await.is_ok() {
            let p = shard.partition.clone();
            let deleted = crate::spawn_blocking(move || p.delete_before(start)).await;
            tracing::info!(
                topic = OFFSETS_TOPIC,
                partition = shard.index,
                snapshot_at = start,
                ?deleted,
                "group snapshot written"
            );
        }
    }

    /// Reads a group (`None` when it does not exist).
    pub async fn read<R>(
        &self,
        group_id: &str,
        f: impl FnOnce(Option<&Group>) -> R,
    ) -> Result<R, pb::Error> {
        let shard = self.shard_of(group_id)?;
        let groups = shard.groups.lock().await;
        Ok(f(groups.get(group_id)))
    }

    /// The groups this broker coordinates, with their states.
    pub async fn list(&self) -> Vec<(String, State)> {
        let shards: Vec<Arc<Shard>> = self.shards().values().cloned().collect();
        let mut out = Vec::new();
        for s in shards.iter().filter(|s| s.loaded.load(Ordering::Acquire)) {
            let groups = s.groups.lock().await;
            out.extend(groups.values().map(|g| (g.id.clone(), g.state())));
        }
        out
    }

    /// Committed offsets of every group this broker coordinates, with the high watermarks of
    /// their partitions (see the module doc).
    pub async fn lag(&self) -> Vec<GroupLag> {
        let shards: Vec<Arc<Shard>> = self.shards().values().cloned().collect();
        let mut out = Vec::new();
        for s in shards.iter().filter(|s| s.loaded.load(Ordering::Acquire)) {
            let groups = s.groups.lock().await;
            for g in groups.values() {
                out.extend(g.offsets.iter().map(|((topic, partition), c)| GroupLag {
                    group: g.id.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    committed: c.offset,
                    high_watermark: None,
                }));
            }
        }
        let keys: Vec<(String, i32)> = out.iter().map(|l| (l.topic.clone(), l.partition)).collect();
        let image = self.shared.view.current();
        let found = self.high_watermarks(&image, &keys).await;
        let mut learned = self.learned_hws.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = BTreeMap::new();
        for l in &mut out {
            let key = (l.topic.clone(), l.partition);
            l.high_watermark = found.get(&key).or(learned.get(&key)).copied();
            if let Some(hw) = l.high_watermark {
                kept.insert(key, hw);
            }
        }
        *learned = kept;
        out
    }

    /// High watermarks of partitions: from this broker for those it leads, from their
    /// leaders (`ListOffsets`, latest) for the others; a leader that does not answer within
    /// [`HW_LOOKUP_TIMEOUT`] leaves its partitions out.
    pub async fn high_watermarks(
        &self,
        image: &MetadataImage,
        keys: &[(String, i32)],
    ) -> BTreeMap<(String, i32), Offset> {
        let mut out = BTreeMap::new();
        let mut remote: ByLeader = BTreeMap::new();
        for (topic, p) in keys {
            match self.partitions.leader_of(image, topic, *p) {
                Ok(local) => {
                    out.insert((topic.clone(), *p), local.high_watermark());
                }
                Err(PartitionError::NotLeader {
                    endpoint: Some(addr),
                    ..
                }) => remote
                    .entry(addr)
                    .or_default()
                    .entry(topic.clone())
                    .or_default()
                    .push(*p),
                Err(_) => {}
            }
        }
        let asks = remote
            .into_iter()
            .map(|(addr, topics)| self.remote_high_watermarks(addr, topics));
        for found in futures_util::future::join_all(asks).await {
            out.extend(found);
        }
        out
    }

    async fn remote_high_watermarks(
        &self,
        addr: String,
        topics: BTreeMap<String, Vec<i32>>,
    ) -> Vec<((String, i32), Offset)> {
        let latest = |partition| pb::ListOffsetsPartition {
            partition,
            spec: pb::OffsetSpec::Latest as i32,
            ..Default::default()
        };
        let req = pb::ListOffsetsRequest {
            isolation_level: pb::IsolationLevel::ReadUncommitted as i32,
            topics: topics
                .into_iter()
                .map(|(topic, ps)| pb::ListOffsetsTopic {
                    topic,
                    partitions: ps.into_iter().map(latest).collect(),
                })
                .collect(),
        };
        let mut client = ConsumerClient::new(self.shared.channel(&addr));
        let answer = tokio::time::timeout(HW_LOOKUP_TIMEOUT, client.list_offsets(req)).await;
        let topics = match answer {
            Ok(Ok(r)) => r.into_inner().topics,
            _ => return Vec::new(),
        };
        let mut out = Vec::new();
        for t in topics {
            for p in t.partitions.iter().filter(|p| p.error.is_none()) {
                if let Some(o) = p.offset {
                    out.push(((t.topic.clone(), p.partition), o));
                }
            }
        }
        out
    }

    /// Whether any shard is still loading.
    pub fn loading(&self) -> bool {
        self.shards()
            .values()
            .any(|s| !s.loaded.load(Ordering::Acquire))
    }
}

fn write_error(e: &PartitionError) -> pb::Error {
    match e {
        PartitionError::NotLeader { .. } | PartitionError::LeaderNotAvailable => err(
            ErrorCode::NotCoordinator,
            "coordinator moved; find it again",
        ),
        other => err(
            ErrorCode::CoordinatorNotAvailable,
            format!("group state not written: {other}"),
        ),
    }
}

/// Replays the shard's partition from its start to its end into its groups.
async fn load(shard: &Arc<Shard>, cfg: &GroupConfig) -> Result<(), String> {
    let mut groups = shard.groups.lock().await;
    let started = std::time::Instant::now();
    let mut from = shard
        .partition
        .offsets()
        .map_err(|e| e.to_string())?
        .log_start;
    let mut records = 0usize;
    loop {
        let p = shard.partition.clone();
        let (bytes, end) = crate::spawn_blocking(move || p.read_to_end(from, LOAD_CHUNK))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if bytes.is_empty() {
            break;
        }
        for one in batch::split(&bytes) {
            let decoded =
                batch::decode(one.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            from = decoded.header.last_offset() + 1;
            for r in &decoded.records {
                match stored::decode(r.key.as_ref(), r.value.as_ref()) {
                    Ok(Some(e)) => stored::apply(&mut groups, e).map_err(|e| e.to_string())?,
                    Ok(None) => {}
                    Err(e) => return Err(format!("offset {}: {e}", r.offset)),
                }
                records += 1;
            }
        }
        if from >= end {
            break;
        }
    }
    let now = now_ms();
    for g in groups.values_mut() {
        g.restart_sessions(now, cfg);
    }
    shard.loaded.store(true, Ordering::Release);
    tracing::info!(
        topic = OFFSETS_TOPIC,
        partition = shard.index,
        groups = groups.len(),
        records,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "group coordinator loaded"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_land_where_kafka_puts_them() {
        // Java's String.hashCode of each name, worked out separately, and Kafka's Utils.abs.
        assert_eq!(partition_for("hello", 50), 22); // 99162322
        assert_eq!(partition_for("my-group", 50), 12); // -1906497762
        assert_eq!(partition_for("zzzzzzzzzz", 50), 36); // -1580979136
        assert_eq!(partition_for("", 50), 0);
        // "polygenelubricants".hashCode() is Integer.MIN_VALUE: Kafka maps it to 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }
}
