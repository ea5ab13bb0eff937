//! The follower side: one fetcher per leader broker, pulling every partition this broker
//! follows from that leader over one `ReplicaFetch` stream.
//!
//! A round: send each partition's log end and last epoch; apply the answer (append, or
//! truncate where the leader says the logs diverge); fsync what was appended (group commit,
//! all partitions at once); only then send the next round, whose fetch offsets therefore tell
//! the leader what is durable here (except for `flush.mode=interval` topics, fsynced by the
//! upkeep pass). A partition whose leader refuses it (not leader, epoch
//! mismatch) rests for a moment: the image will say what changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use keel_metadata::records::{BrokerId, LeaderEpoch, TopicId};
use keel_proto::v1 as pb;
use keel_proto::v1::replication_client::ReplicationClient;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Endpoint;

use super::Context;
use crate::partitions::partition::Fetched;
use crate::partitions::Partition;
use crate::services::convert::{parse_topic_id, topic_id_bytes};
use crate::services::replication::fetched_from_wire;

/// How long the leader may hold a round without data.
const MAX_WAIT_MS: i32 = 500;
/// Bytes per round and per partition.
const MAX_BYTES: i32 = 16 << 20;
const PARTITION_MAX_BYTES: i32 = 4 << 20;
/// How long a refused partition rests, and the pause after a broken stream.
const REST: Duration = Duration::from_millis(300);

type Key = (TopicId, i32);
/// The partitions a round names, with the leader epoch each was fetched in.
type Sent = BTreeMap<Key, (Arc<Partition>, LeaderEpoch)>;

/// Fetches from `leader` until this broker follows nothing there any more or stops.
pub async fn run(ctx: Arc<Context>, leader: BrokerId) {
    let mut stop = ctx.stop.clone();
    let mut resting: HashMap<Key, Instant> = HashMap::new();
    loop {
        if *stop.borrow() || followed(&ctx, leader).is_empty() {
            return;
        }
        if let Err(why) = stream_rounds(&ctx, leader, &mut resting).await {
            tracing::debug!(leader, %why, "replica fetch stream ended; reconnecting");
        }
        tokio::select! {
            _ = tokio::time::sleep(REST) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn followed(ctx: &Context, leader: BrokerId) -> Vec<Arc<Partition>> {
    ctx.partitions
        .followed()
        .remove(&leader)
        .unwrap_or_default()
}

/// Runs rounds over one stream until it breaks, the broker stops, or nothing is followed.
async fn stream_rounds(
    ctx: &Context,
    leader: BrokerId,
    resting: &mut HashMap<Key, Instant>,
) -> Result<(), String> {
    let image = ctx.shared.view.current();
    let b = image
        .brokers
        .get(&leader)
        .ok_or_else(|| format!("leader {leader} is not registered"))?;
    let addr = format!(
        "http://{}:{}",
        b.endpoints.internal.host, b.endpoints.internal.port
    );
    let channel = Endpoint::from_shared(addr)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy();
    let mut client =
        ReplicationClient::new(channel).max_decoding_message_size(MAX_BYTES as usize * 2);
    let (tx, rx) = mpsc::channel(1);
    // The first round goes out before the call, so the stream opens with it.
    let Some((req, sent)) = next_round(ctx, leader, resting) else {
        return Ok(());
    };
    tx.send(req).await.map_err(|e| e.to_string())?;
    let mut inbound = client
        .replica_fetch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let mut sent = sent;
    let mut stop = ctx.stop.clone();
    loop {
        let answer = tokio::select! {
            a = tokio::time::timeout(Duration::from_secs(15), inbound.message()) => a,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let resp = match answer {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) => return Err("closed by the leader".into()),
            Ok(Err(status)) => return Err(status.to_string()),
            Err(_) => return Err("no answer in 15 s".into()),
        };
        if let Some(e) = resp.error {
            // STALE_BROKER_EPOCH while the leader's image catches up with our registration.
            tracing::debug!(leader, error = %e.message, "replica fetch round refused");
            tokio::time::sleep(REST).await;
        } else {
            apply_round(resp, &sent, resting).await;
        }
        let Some((req, next)) = next_round(ctx, leader, resting) else {
            return Ok(());
        };
        sent = next;
        tx.send(req).await.map_err(|e| e.to_string())?;
    }
}

/// The next round's request, and the partitions it names with the leader epoch each was
/// fetched in; `None` when this broker follows nothing from `leader` (or is not registered).
fn next_round(
    ctx: &Context,
    leader: BrokerId,
    resting: &mut HashMap<Key, Instant>,
) -> Option<(pb::ReplicaFetchRequest, Sent)> {
    let epoch = ctx.status.borrow().broker_epoch?;
    let parts = followed(ctx, leader);
    if parts.is_empty() {
        return None;
    }
    let now = Instant::now();
    resting.retain(|_, until| *until > now);
    let mut topics: BTreeMap<TopicId, Vec<pb::ReplicaFetchPartition>> = BTreeMap::new();
    let mut sent = BTreeMap::new();
    for p in parts {
        let key = (p.topic_id, p.index);
        if resting.contains_key(&key) {
            continue;
        }
        let Some((log_end, last_epoch, log_start)) = p.follower_position() else {
            continue;
        };
        let leader_epoch = p.role().leader_epoch;
        topics
            .entry(p.topic_id)
            .or_default()
            .push(pb::ReplicaFetchPartition {
                partition: p.index,
                fetch_offset: log_end,
                last_fetched_epoch: last_epoch,
                current_leader_epoch: leader_epoch,
                log_start_offset: log_start,
                partition_max_bytes: PARTITION_MAX_BYTES,
            });
        sent.insert(key, (p, leader_epoch));
    }
    let req = pb::ReplicaFetchRequest {
        replica_id: ctx.me,
        replica_epoch: epoch,
        // With every partition resting the round is empty, and the leader's wait is a pause.
        max_wait_ms: MAX_WAIT_MS,
        min_bytes: 1,
        max_bytes: MAX_BYTES,
        topics: topics
            .into_iter()
            .map(|(id, partitions)| pb::ReplicaFetchTopic {
                topic_id: topic_id_bytes(id),
                partitions,
            })
            .collect(),
    };
    Some((req, sent))
}

/// Applies fetched records to each partition: returns those that appended, with their log
/// end, and those that failed. Blocking.
fn apply_each(
    work: Vec<(Arc<Partition>, LeaderEpoch, Fetched)>,
) -> (Vec<(Arc<Partition>, i64)>, Vec<Key>) {
    let mut applied = Vec::new();
    let mut failed = Vec::new();
    for (p, epoch, fetched) in work {
        match p.apply_fetched(epoch, fetched) {
            Ok(Some(end)) => applied.push((p, end)),
            Ok(None) => {}
            Err(e) => {
                // A disk failure was logged once by the disk health; do not repeat it per round.
                if crate::partitions::disk::is_disk_failure(&e) {
                    tracing::debug!(topic = %p.topic, partition = p.index, error = %e,
                        "could not apply fetched records");
                } else {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e,
                        "could not apply fetched records");
                }
                failed.push((p.topic_id, p.index));
            }
        }
    }
    (applied, failed)
}

/// Applies a round's answer on a blocking thread, then fsyncs every partition that appended.
async fn apply_round(
    resp: pb::ReplicaFetchResponse,
    sent: &Sent,
    resting: &mut HashMap<Key, Instant>,
) {
    let mut work = Vec::new();
    for t in resp.topics {
        let Some(topic_id) = parse_topic_id(&t.topic_id) else {
            continue;
        };
        for pr in t.partitions {
            let key = (topic_id, pr.partition);
            let Some((p, epoch)) = sent.get(&key) else {
                continue;
            };
            match fetched_from_wire(pr) {
                Ok(fetched) => work.push((p.clone(), *epoch, fetched)),
                Err(e) => {
                    tracing::debug!(topic = %p.topic, partition = key.1, error = %e.message,
                        "leader refused a partition fetch");
                    resting.insert(key, Instant::now() + REST);
                }
            }
        }
    }
    let (applied, failed) = crate::spawn_blocking(move || apply_each(work))
        .await
        .unwrap_or_default();
    // A partition that could not apply (a full disk) rests instead of fetching the same
    // records again at once.
    for key in failed {
        resting.insert(key, Instant::now() + REST);
    }
    // A topic with flush.mode=interval reports its offsets unflushed; the upkeep pass
    // fsyncs it later.
    let applied: Vec<_> = applied
        .into_iter()
        .filter(|(p, _)| p.role().settings.flush_interval_ms.is_none())
        .collect();
    Partition::flush_each(&applied, "follower").await;
}
