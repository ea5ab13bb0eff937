//! Moving replicas between brokers, as pure functions of the image: partition reassignment
//! (Kafka's KIP-455), broker decommissioning, and the preferred-leader balance check.
//!
//! A reassignment of a partition with replicas `R` to a target `T`:
//! 1. **start** — one `PartitionChange` sets the replicas to `T` followed by the rest of `R`,
//!    `adding = T − R` and `removing = R − T`. The adding replicas start fetching from the
//!    leader outside the ISR (their copy traffic is throttled by the leader);
//! 2. they join the ISR by the leader's usual rule (caught up to the high watermark);
//! 3. **complete** — once every member of `T` is in the ISR, one `PartitionChange` sets the
//!    replicas to `T`, drops the removed replicas from the ISR, moves leadership to a member of
//!    `T` if the leader is being removed, and clears `adding` and `removing`. Brokers that lost
//!    their replica delete it.
//!
//! Every step is a metadata record, so a reassignment survives controller failover: the new
//! active controller finds `adding`/`removing` in the image and completes the move when the
//! ISR allows ([`completions`] runs on its timer and after every ISR change).
//!
//! **Cancel** returns to the original replicas (`R`), dropping the adding ones, provided an
//! original replica is in the ISR to lead. **Decommission** marks a broker, starts a
//! reassignment replacing it in each of its partitions (the least-loaded placeable broker,
//! preferring one of the same rack), and unregisters the broker for good once it holds no
//! replica ([`decommission_steps`], on the controller's timer).
//!
//! Worked example: replicas `[1, 2, 3]`, ISR `[1, 2, 3]`, leader 1, target `[2, 3, 4]` →
//! start: replicas `[2, 3, 4, 1]`, adding `[4]`, removing `[1]`; broker 4 catches up and the
//! leader adds it: ISR `[1, 2, 3, 4]`; complete: replicas `[2, 3, 4]`, ISR `[2, 3, 4]`,
//! leader 2 (the first target replica in the ISR), leader epoch + 1.

use std::collections::{BTreeMap, BTreeSet};

use crate::controller::{ControllerError, Result};
use crate::image::{MetadataImage, PartitionState};
use crate::records::*;

/// Starts moving a partition to `target` (preferred leader first). `None` when the partition
/// already has exactly these replicas in this order.
pub fn start_reassignment(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: PartitionIndex,
    target: &[BrokerId],
) -> Result<Option<Record>> {
    let p = partition_state(image, topic_id, partition)?;
    if p.is_reassigning() {
        return Err(ControllerError::ReassignmentInProgress { partition });
    }
    check_target(image, partition, p, target)?;
    if p.replicas == target {
        return Ok(None);
    }
    let adding: Vec<BrokerId> = target
        .iter()
        .copied()
        .filter(|b| !p.replicas.contains(b))
        .collect();
    let removing: Vec<BrokerId> = p
        .replicas
        .iter()
        .copied()
        .filter(|b| !target.contains(b))
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend(&removing);
    let mut next = p.clone();
    next.replicas = replicas;
    next.adding_replicas = adding;
    next.removing_replicas = removing;
    // A pure reordering, or a shrink whose remaining replicas are in sync, finishes at once.
    Ok(Some(
        finish(image, topic_id, partition, &next)
            .unwrap_or_else(|| change(topic_id, partition, p, &next)),
    ))
}

fn check_target(
    image: &MetadataImage,
    partition: PartitionIndex,
    p: &PartitionState,
    target: &[BrokerId],
) -> Result<()> {
    let invalid = |reason: String| ControllerError::InvalidReplicaAssignment { partition, reason };
    if target.is_empty() {
        return Err(invalid("the target replica list is empty".into()));
    }
    let distinct: BTreeSet<BrokerId> = target.iter().copied().collect();
    if distinct.len() != target.len() {
        return Err(invalid("a broker is listed twice".into()));
    }
    for b in target {
        if p.replicas.contains(b) {
            continue;
        }
        if !image.brokers.contains_key(b) {
            return Err(invalid(format!("broker {b} is not registered")));
        }
        if image.decommissioning.contains(b) {
            return Err(invalid(format!("broker {b} is being decommissioned")));
        }
    }
    Ok(())
}

/// Cancels the reassignment of a partition: back to its original replicas.
pub fn cancel_reassignment(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: PartitionIndex,
) -> Result<Record> {
    let p = partition_state(image, topic_id, partition)?;
    if !p.is_reassigning() {
        return Err(ControllerError::NoReassignmentInProgress { partition });
    }
    let mut next = p.clone();
    next.replicas = p.original_replicas();
    next.adding_replicas.clear();
    next.removing_replicas.clear();
    next.isr.retain(|b| next.replicas.contains(b));
    if !settle_leader(image, &mut next) {
        return Err(ControllerError::CancelWouldLoseIsr { partition });
    }
    Ok(change(topic_id, partition, p, &next))
}

/// The records that complete every reassignment whose target replicas are all in the ISR.
pub fn completions(image: &MetadataImage) -> Vec<Record> {
    image
        .partitions()
        .filter(|(_, _, p)| p.is_reassigning())
        .filter_map(|(t, i, p)| finish(image, t, i, p))
        .collect()
}

/// The record that completes the reassignment of one partition, if it is being reassigned
/// and its target replicas are all in the ISR.
pub fn completion(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: PartitionIndex,
) -> Option<Record> {
    let p = image.partition(topic_id, partition)?;
    p.is_reassigning()
        .then(|| finish(image, topic_id, partition, p))
        .flatten()
}

/// The completing change of one partition's reassignment, if every target replica is in the
/// ISR and one of them can lead.
fn finish(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: PartitionIndex,
    p: &PartitionState,
) -> Option<Record> {
    let target = p.target_replicas();
    if !target.iter().all(|b| p.isr.contains(b)) {
        return None;
    }
    let mut next = p.clone();
    next.replicas = target;
    next.adding_replicas.clear();
    next.removing_replicas.clear();
    next.isr.retain(|b| next.replicas.contains(b));
    settle_leader(image, &mut next).then(|| {
        let current = image.partition(topic_id, partition).unwrap_or(p);
        change(topic_id, partition, current, &next)
    })
}

/// Keeps the leader if it is still in the ISR of `next`, else picks the first replica that is
/// in the ISR and unfenced. False when nobody can lead.
fn settle_leader(image: &MetadataImage, next: &mut PartitionState) -> bool {
    if next.leader.is_some_and(|l| next.isr.contains(&l)) {
        return true;
    }
    let leader = next
        .replicas
        .iter()
        .copied()
        .find(|r| next.isr.contains(r) && image.is_unfenced(*r));
    next.leader = leader;
    leader.is_some()
}

/// The `PartitionChange` from `from` to `to`, naming only what differs.
fn change(
    topic_id: TopicId,
    partition: PartitionIndex,
    from: &PartitionState,
    to: &PartitionState,
) -> Record {
    let differs = |a: &Vec<BrokerId>, b: &Vec<BrokerId>| (a != b).then(|| b.clone());
    Record::PartitionChange(PartitionChange {
        topic_id,
        partition,
        isr: differs(&from.isr, &to.isr),
        leader: (from.leader != to.leader).then_some(to.leader),
        replicas: differs(&from.replicas, &to.replicas),
        adding_replicas: differs(&from.adding_replicas, &to.adding_replicas),
        removing_replicas: differs(&from.removing_replicas, &to.removing_replicas),
    })
}

fn partition_state(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: PartitionIndex,
) -> Result<&PartitionState> {
    image
        .partition(topic_id, partition)
        .ok_or(ControllerError::UnknownPartition {
            topic_id,
            partition,
        })
}

// ---------------------------------------------------------------------------------------------
// Decommissioning
// ---------------------------------------------------------------------------------------------

/// Starts (or, with `cancel`, stops) decommissioning `broker_id`. Starting checks that every
/// partition of the broker has somewhere else to go; the moves themselves start with the next
/// [`decommission_steps`].
pub fn decommission(image: &MetadataImage, broker_id: BrokerId, cancel: bool) -> Result<Record> {
    if !image.brokers.contains_key(&broker_id) {
        return Err(ControllerError::BrokerNotRegistered { broker_id });
    }
    if !cancel {
        let others = image
            .placeable_brokers()
            .filter(|b| b.broker_id != broker_id)
            .count();
        let widest = image
            .partitions()
            .filter(|(_, _, p)| p.replicas.contains(&broker_id))
            .map(|(_, _, p)| p.target_replicas().len())
            .max()
            .unwrap_or(0);
        if widest > others {
            return Err(ControllerError::CannotDecommission {
                broker_id,
                reason: format!(
                    "a partition has {widest} replicas but only {others} other brokers can take them"
                ),
            });
        }
    }
    Ok(Record::Decommission(DecommissionRecord {
        broker_id,
        cancel,
    }))
}

/// Replicas each broker holds (target replicas, counting moves in progress as done).
fn replica_counts(image: &MetadataImage) -> BTreeMap<BrokerId, usize> {
    let mut counts: BTreeMap<BrokerId, usize> = BTreeMap::new();
    for (_, _, p) in image.partitions() {
        for b in p.target_replicas() {
            *counts.entry(b).or_default() += 1;
        }
    }
    counts
}

/// The next steps of every decommission: a reassignment away from the broker for each of its
/// partitions that is not moving yet, and `UnregisterBroker` for a broker that holds no
/// replica any more.
pub fn decommission_steps(image: &MetadataImage) -> Vec<Record> {
    let mut out = Vec::new();
    if image.decommissioning.is_empty() {
        return out;
    }
    let mut counts = replica_counts(image);
    for broker in image.decommissioning.iter().copied() {
        let mut holds_any = false;
        for (topic_id, partition, p) in image.partitions() {
            if !p.replicas.contains(&broker) {
                continue;
            }
            holds_any = true;
            if p.is_reassigning() {
                continue;
            }
            let Some(with) = replacement(image, p, broker, &counts) else {
                continue;
            };
            let target: Vec<BrokerId> = p
                .replicas
                .iter()
                .map(|r| if *r == broker { with } else { *r })
                .collect();
            if let Ok(Some(r)) = start_reassignment(image, topic_id, partition, &target) {
                *counts.entry(with).or_default() += 1;
                out.push(r);
            }
        }
        if !holds_any {
            if let Some(b) = image.brokers.get(&broker) {
                out.push(Record::UnregisterBroker(UnregisterBroker {
                    broker_id: broker,
                    broker_epoch: b.broker_epoch,
                    decommissioned: true,
                }));
            }
        }
    }
    out
}

/// The placeable broker that takes `leaving`'s place in `p`: not a replica yet, in the same
/// rack as `leaving` if one is (to keep the rack spread), then the fewest replicas, then id.
fn replacement(
    image: &MetadataImage,
    p: &PartitionState,
    leaving: BrokerId,
    counts: &BTreeMap<BrokerId, usize>,
) -> Option<BrokerId> {
    let rack = image.brokers.get(&leaving).and_then(|b| b.rack.clone());
    image
        .placeable_brokers()
        .filter(|b| !p.replicas.contains(&b.broker_id))
        .min_by_key(|b| {
            (
                b.rack != rack,
                counts.get(&b.broker_id).copied().unwrap_or(0),
                b.broker_id,
            )
        })
        .map(|b| b.broker_id)
}

// ---------------------------------------------------------------------------------------------
// Preferred leaders
// ---------------------------------------------------------------------------------------------

/// Partitions to give back to their preferred leader, Kafka's auto leader rebalance: for each
/// broker, the share of the partitions it prefers to lead that another broker leads; when that
/// share exceeds `imbalance_percent`, every such partition whose preferred replica is an
/// unfenced ISR member is returned. Partitions being reassigned are left alone.
pub fn imbalanced_leaders(
    image: &MetadataImage,
    imbalance_percent: u32,
) -> Vec<(TopicId, PartitionIndex)> {
    #[derive(Default)]
    struct Share {
        total: usize,
        not_led: usize,
        electable: Vec<(TopicId, PartitionIndex)>,
    }
    let mut shares: BTreeMap<BrokerId, Share> = BTreeMap::new();
    for (t, i, p) in image.partitions() {
        let Some(first) = p.replicas.first().copied() else {
            continue;
        };
        let share = shares.entry(first).or_default();
        share.total += 1;
        if p.leader == Some(first) {
            continue;
        }
        share.not_led += 1;
        if p.isr.contains(&first) && !p.is_reassigning() {
            share.electable.push((t, i));
        }
    }
    shares
        .into_iter()
        .filter(|(broker, s)| {
            image.is_unfenced(*broker) && s.not_led * 100 > s.total * imbalance_percent as usize
        })
        .flat_map(|(_, s)| s.electable)
        .collect()
}

#[cfg(test)]
#[path = "reassign_test.rs"]
mod tests;
