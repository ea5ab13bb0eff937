//! The leader's ISR upkeep: every tick, each partition this broker leads may propose an ISR
//! change (see [`crate::partitions::isr`]); the proposals go to the active controller in one
//! AlterPartition request. A refused or unanswered proposal is asked again at a later tick; an
//! accepted one shows up in the image, which gives the partition its new ISR and partition
//! epoch. The same pass checkpoints high watermarks now and then.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_metadata::image::MetadataImage;
use keel_metadata::records::TopicId;
use keel_proto::v1 as pb;
use keel_proto::v1::controller_client::ControllerClient;

use super::Context;
use crate::partitions::partition::IsrProposal;
use crate::partitions::Partition;
use crate::services::convert::{parse_topic_id, topic_id_bytes};
use crate::services::{forward, Remote};

/// A proposal without an answer in the image for this long is asked again.
const RETRY_MS: i64 = 5_000;
/// High watermarks are checkpointed every this many ticks.
const CHECKPOINT_EVERY: u32 = 8;

/// Runs the ISR pass every `tick` until the broker stops.
pub async fn run(ctx: Arc<Context>, lag_max: Duration, tick: Duration) {
    let mut stop = ctx.stop.clone();
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        ticks = ticks.wrapping_add(1);
        if ticks % CHECKPOINT_EVERY == 0 {
            let partitions = ctx.partitions.clone();
            let _ = crate::spawn_blocking(move || partitions.checkpoint_all()).await;
        }
        let Some(epoch) = ctx.status.borrow().broker_epoch else {
            continue;
        };
        let proposals: Vec<(Arc<Partition>, IsrProposal)> = ctx
            .partitions
            .led()
            .into_iter()
            .filter_map(|p| {
                let proposal = p.isr_proposal(lag_max.as_millis() as i64, RETRY_MS)?;
                Some((p, proposal))
            })
            .collect();
        if !proposals.is_empty() {
            propose(&ctx, epoch, proposals).await;
        }
    }
}

fn call_alter_partition(
    channel: tonic::transport::Channel,
    req: tonic::Request<pb::AlterPartitionRequest>,
) -> futures_util::future::BoxFuture<
    'static,
    Result<tonic::Response<pb::AlterPartitionResponse>, tonic::Status>,
> {
    Box::pin(async move { ControllerClient::new(channel).alter_partition(req).await })
}

/// Sends the proposals to the controller; the refused ones are marked for another try.
async fn propose(ctx: &Context, broker_epoch: u64, proposals: Vec<(Arc<Partition>, IsrProposal)>) {
    let image = ctx.shared.view.current();
    let req = request(&image, ctx.me, broker_epoch, &proposals);
    let call: Remote<pb::AlterPartitionRequest, pb::AlterPartitionResponse> = call_alter_partition;
    let addrs = ctx.shared.voters_controller_first();
    let answer = forward(&ctx.shared, &addrs, req, call).await;
    let by_key: BTreeMap<(TopicId, i32), &Arc<Partition>> = proposals
        .iter()
        .map(|(p, _)| ((p.topic_id, p.index), p))
        .collect();
    let before: BTreeMap<(TopicId, i32), usize> = proposals
        .iter()
        .map(|(p, _)| ((p.topic_id, p.index), p.role().isr.len()))
        .collect();
    let resp = match answer {
        Ok(resp) if resp.error.is_none() => resp,
        Ok(resp) => {
            let e = resp.error.unwrap_or_default();
            tracing::debug!(error = %e.message, "AlterPartition refused");
            by_key.values().for_each(|p| p.isr_proposal_failed());
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e.message, "AlterPartition not answered");
            by_key.values().for_each(|p| p.isr_proposal_failed());
            return;
        }
    };
    for t in resp.topics {
        let Some(topic_id) = parse_topic_id(&t.topic_id) else {
            continue;
        };
        for pr in t.partitions {
            let Some(p) = by_key.get(&(topic_id, pr.partition)) else {
                continue;
            };
            match pr.error {
                Some(e) => {
                    tracing::info!(topic = %p.topic, partition = pr.partition, error = %e.message,
                        "ISR change refused");
                    p.isr_proposal_failed();
                }
                None => {
                    tracing::info!(topic = %p.topic, partition = pr.partition, isr = ?pr.isr,
                        partition_epoch = pr.partition_epoch, "ISR changed");
                    let was = before.get(&(topic_id, pr.partition)).copied().unwrap_or(0);
                    match pr.isr.len().cmp(&was) {
                        std::cmp::Ordering::Less => ctx.metrics.isr_shrinks.inc(),
                        std::cmp::Ordering::Greater => ctx.metrics.isr_expands.inc(),
                        std::cmp::Ordering::Equal => {}
                    }
                }
            }
        }
    }
}

/// One AlterPartition request for every proposal; a member whose broker epoch this leader has
/// not seen in a fetch is named with its current registration.
fn request(
    image: &MetadataImage,
    me: i32,
    broker_epoch: u64,
    proposals: &[(Arc<Partition>, IsrProposal)],
) -> pb::AlterPartitionRequest {
    let mut topics: BTreeMap<TopicId, Vec<pb::AlterPartitionPartition>> = BTreeMap::new();
    for (p, proposal) in proposals {
        let new_isr = proposal
            .isr
            .iter()
            .map(|(id, epoch)| pb::IsrMember {
                broker_id: *id,
                broker_epoch: match *epoch {
                    0 => image.brokers.get(id).map_or(0, |b| b.broker_epoch),
                    e => e,
                },
            })
            .collect();
        topics
            .entry(p.topic_id)
            .or_default()
            .push(pb::AlterPartitionPartition {
                partition: p.index,
                leader_epoch: proposal.leader_epoch,
                partition_epoch: proposal.partition_epoch,
                new_isr,
            });
    }
    pb::AlterPartitionRequest {
        broker_id: me,
        broker_epoch,
        topics: topics
            .into_iter()
            .map(|(id, partitions)| pb::AlterPartitionTopic {
                topic_id: topic_id_bytes(id),
                partitions,
            })
            .collect(),
    }
}
