//! The plan of `keel partition reassign --generate`: where each partition's replicas should
//! go so that a set of brokers holds them evenly, with as few moves as possible.
//!
//! The plan file has Kafka's `kafka-reassign-partitions.sh` shape:
//! `{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2,3]}]}`.
//!
//! [`propose`] keeps every replica it can and moves only what balance needs:
//! 1. replicas on brokers outside the target set leave;
//! 2. a broker holding more than its share (`ceil(replicas / brokers)`) gives up replicas,
//!    never a partition's first (preferred leader) when another will do;
//! 3. the free places go to the brokers with the fewest replicas, preferring a rack the
//!    partition does not use yet;
//! 4. a broker still below `floor(replicas / brokers)` takes replicas from the fullest;
//! 5. preferred leaders are balanced by reordering replicas only (no data moves): each
//!    broker should be first in about `partitions / brokers` partitions.
//!
//! Worked example: brokers 1–3 hold 6 partitions × 3 replicas (6 each); with broker 4 added
//! each has a share of 4 or 5 (18 / 4): brokers 1, 2, 3 give up one or two replicas each, and
//! broker 4 gets 4 or 5, so 4–5 replicas move and 13–14 stay.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A plan: target replicas per partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignPlan {
    /// Format version (1).
    pub version: u32,
    /// Target replicas, preferred leader first.
    pub partitions: Vec<PlannedPartition>,
}

/// One partition of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Broker ids, preferred leader first.
    pub replicas: Vec<i32>,
}

/// A broker that may hold replicas, with its rack.
pub type Candidate = (i32, Option<String>);

/// The balanced placement of `current` over `brokers` (see the module doc). Partitions keep
/// their replication factor, capped at the number of brokers.
pub fn propose(current: &[PlannedPartition], brokers: &[Candidate]) -> Vec<PlannedPartition> {
    let ids: Vec<i32> = brokers.iter().map(|b| b.0).collect();
    if ids.is_empty() {
        return current.to_vec();
    }
    let racks: BTreeMap<i32, Option<String>> = brokers.iter().cloned().collect();
    let factor: Vec<usize> = current
        .iter()
        .map(|p| p.replicas.len().min(ids.len()))
        .collect();
    let mut plan: Vec<Vec<i32>> = current
        .iter()
        .map(|p| {
            let mut kept: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|b| ids.contains(b))
                .collect();
            kept.truncate(p.replicas.len().min(ids.len()));
            kept
        })
        .collect();
    let total: usize = factor.iter().sum();
    let (floor, ceil) = (total / ids.len(), total.div_ceil(ids.len()));
    shed_excess(&mut plan, &ids, ceil);
    fill(&mut plan, &factor, &ids, &racks);
    raise_the_lowest(&mut plan, &ids, floor);
    balance_leaders(&mut plan, &ids);
    current
        .iter()
        .zip(plan)
        .map(|(p, replicas)| PlannedPartition {
            topic: p.topic.clone(),
            partition: p.partition,
            replicas,
        })
        .collect()
}

fn counts(plan: &[Vec<i32>], ids: &[i32]) -> BTreeMap<i32, usize> {
    let mut c: BTreeMap<i32, usize> = ids.iter().map(|b| (*b, 0)).collect();
    for replicas in plan {
        for b in replicas {
            *c.entry(*b).or_default() += 1;
        }
    }
    c
}

/// Drops replicas of brokers above `ceil`, from the back of a partition's list first (so a
/// preferred leader stays when another replica can go).
fn shed_excess(plan: &mut [Vec<i32>], ids: &[i32], ceil: usize) {
    let mut count = counts(plan, ids);
    for position in (0..plan.iter().map(Vec::len).max().unwrap_or(0)).rev() {
        for replicas in plan.iter_mut() {
            let Some(b) = replicas.get(position).copied() else {
                continue;
            };
            if count[&b] > ceil {
                replicas.remove(position);
                *count.get_mut(&b).expect("counted") -= 1;
            }
        }
    }
}

/// Fills each partition up to its factor with the least-loaded brokers, preferring racks it
/// does not use yet.
fn fill(
    plan: &mut [Vec<i32>],
    factor: &[usize],
    ids: &[i32],
    racks: &BTreeMap<i32, Option<String>>,
) {
    let mut count = counts(plan, ids);
    for (replicas, want) in plan.iter_mut().zip(factor) {
        while replicas.len() < *want {
            let used: BTreeSet<&Option<String>> = replicas.iter().map(|b| &racks[b]).collect();
            let Some(pick) = ids
                .iter()
                .copied()
                .filter(|b| !replicas.contains(b))
                .min_by_key(|b| (used.contains(&racks[b]), count[b], *b))
            else {
                break;
            };
            replicas.push(pick);
            *count.get_mut(&pick).expect("counted") += 1;
        }
    }
}

/// Moves replicas from the fullest brokers to any broker below `floor`.
fn raise_the_lowest(plan: &mut [Vec<i32>], ids: &[i32], floor: usize) {
    // Each move raises one broker below the floor by one, so this many moves are enough.
    for _ in 0..ids.len() * floor.max(1) {
        let count = counts(plan, ids);
        let Some((&low, _)) = count
            .iter()
            .filter(|(_, c)| **c < floor)
            .min_by_key(|e| e.1)
        else {
            return;
        };
        let donors = |b: &i32| count[b] > floor;
        let spot = plan.iter().enumerate().find_map(|(i, replicas)| {
            if replicas.contains(&low) {
                return None;
            }
            // Prefer taking a non-leader place of the fullest donor.
            replicas
                .iter()
                .enumerate()
                .filter(|(_, b)| donors(b))
                .max_by_key(|(pos, b)| (count[b], *pos))
                .map(|(pos, _)| (i, pos))
        });
        let Some((i, pos)) = spot else {
            return;
        };
        plan[i][pos] = low;
    }
}

/// Reorders replicas so that each broker is first (preferred leader) in about as many
/// partitions as the others.
fn balance_leaders(plan: &mut [Vec<i32>], ids: &[i32]) {
    let ceil = plan.len().div_ceil(ids.len());
    let mut led: BTreeMap<i32, usize> = ids.iter().map(|b| (*b, 0)).collect();
    for replicas in plan.iter() {
        if let Some(first) = replicas.first() {
            *led.entry(*first).or_default() += 1;
        }
    }
    for _ in 0..plan.len() * 2 {
        let mut changed = false;
        for replicas in plan.iter_mut() {
            let Some(&first) = replicas.first() else {
                continue;
            };
            let lowest = replicas
                .iter()
                .enumerate()
                .skip(1)
                .min_by_key(|(_, b)| led[b])
                .map(|(pos, b)| (pos, *b));
            let Some((pos, other)) = lowest else {
                continue;
            };
            if led[&first] > ceil || led[&first] > led[&other] + 1 {
                replicas.swap(0, pos);
                *led.get_mut(&first).expect("counted") -= 1;
                *led.get_mut(&other).expect("counted") += 1;
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// Replicas that must be copied to carry out `plan` from `current` (a new broker for a
/// partition counts one).
pub fn moved_replicas(current: &[PlannedPartition], plan: &[PlannedPartition]) -> usize {
    let before: BTreeMap<(&str, i32), &Vec<i32>> = current
        .iter()
        .map(|p| ((p.topic.as_str(), p.partition), &p.replicas))
        .collect();
    plan.iter()
        .map(|p| {
            let old = before.get(&(p.topic.as_str(), p.partition));
            p.replicas
                .iter()
                .filter(|b| old.is_none_or(|o| !o.contains(b)))
                .count()
        })
        .sum()
}

#[cfg(test)]
#[path = "reassign_plan_test.rs"]
mod tests;
