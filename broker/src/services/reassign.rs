//! Partition reassignments between the wire and the controller: the moves an
//! AlterPartitionReassignments request asks for, and the answer to
//! ListPartitionReassignments from this node's image, with the copy progress of the
//! partitions this broker leads.

use keel_metadata::image::MetadataImage;
use keel_metadata::records::{BrokerId, PartitionIndex, TopicId};
use keel_proto::v1::*;

use crate::partitions::PartitionManager;

/// A move for the controller: start (`Some(target)`) or cancel (`None`).
pub type Move = (TopicId, PartitionIndex, Option<Vec<BrokerId>>);

/// The moves of a request, the (topic, partition) each stands for, and the results of the
/// partitions refused before reaching the controller (unknown topics).
pub fn moves(
    image: &MetadataImage,
    req: &AlterPartitionReassignmentsRequest,
) -> (Vec<Move>, Vec<(String, i32)>, Vec<PartitionResult>) {
    let mut moves = Vec::new();
    let mut named = Vec::new();
    let mut refused = Vec::new();
    for t in &req.topics {
        let topic = image.topic_by_name(&t.name);
        for p in &t.partitions {
            let Some(topic) = topic else {
                refused.push(PartitionResult {
                    topic: t.name.clone(),
                    partition: p.partition,
                    error: Some(Error::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("unknown topic {}", t.name),
                    )),
                });
                continue;
            };
            let target = p.target.as_ref().map(|r| r.broker_ids.clone());
            moves.push((topic.topic_id, p.partition, target));
            named.push((t.name.clone(), p.partition));
        }
    }
    (moves, named, refused)
}

/// The reassignments in progress among the requested partitions (all when none is named).
pub fn list(
    image: &MetadataImage,
    partitions: Option<&PartitionManager>,
    req: &ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let wanted = |topic: &str, partition: i32| {
        req.partitions.is_empty()
            || req
                .partitions
                .iter()
                .any(|tp| tp.topic == topic && tp.partitions.contains(&partition))
    };
    let mut reassignments = Vec::new();
    for t in image.topics.values() {
        for (index, p) in &t.partitions {
            if !p.is_reassigning() || !wanted(&t.name, *index) {
                continue;
            }
            let mut out = OngoingReassignment {
                topic: t.name.clone(),
                partition: *index,
                replicas: p.replicas.clone(),
                adding_replicas: p.adding_replicas.clone(),
                removing_replicas: p.removing_replicas.clone(),
                isr: p.isr.clone(),
                ..Default::default()
            };
            let led = partitions.and_then(|m| m.get(t.topic_id, *index));
            if let Some((leo, adding)) = led.and_then(|p| p.reassignment_progress()) {
                out.leader_log_end_offset = Some(leo);
                out.progress = adding
                    .into_iter()
                    .map(|(broker_id, log_end_offset)| ReplicaProgress {
                        broker_id,
                        log_end_offset,
                    })
                    .collect();
            }
            reassignments.push(out);
        }
    }
    ListPartitionReassignmentsResponse {
        error: None,
        reassignments,
    }
}
