use proptest::prelude::*;

use super::*;

fn partitions(layout: &[&[i32]]) -> Vec<PlannedPartition> {
    layout
        .iter()
        .enumerate()
        .map(|(i, r)| PlannedPartition {
            topic: "t".into(),
            partition: i as i32,
            replicas: r.to_vec(),
        })
        .collect()
}

fn brokers(ids: &[i32]) -> Vec<Candidate> {
    ids.iter().map(|b| (*b, None)).collect()
}

/// Replicas per broker and first places per broker.
fn loads(plan: &[PlannedPartition]) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
    let mut held = BTreeMap::new();
    let mut led = BTreeMap::new();
    for p in plan {
        for b in &p.replicas {
            *held.entry(*b).or_default() += 1;
        }
        *led.entry(p.replicas[0]).or_default() += 1;
    }
    (held, led)
}

#[test]
fn growing_from_three_to_four_brokers_moves_only_the_new_brokers_share() {
    let current = partitions(&[
        &[1, 2, 3],
        &[2, 3, 1],
        &[3, 1, 2],
        &[1, 3, 2],
        &[2, 1, 3],
        &[3, 2, 1],
    ]);
    let plan = propose(&current, &brokers(&[1, 2, 3, 4]));
    let (held, led) = loads(&plan);
    assert_eq!(held.len(), 4);
    assert!(held.values().all(|c| (4..=5).contains(c)), "{held:?}");
    assert!(led.values().all(|c| (1..=2).contains(c)), "{led:?}");
    let moved = moved_replicas(&current, &plan);
    assert_eq!(moved, held[&4], "only broker 4's new replicas are copied");
    for p in &plan {
        let distinct: BTreeSet<_> = p.replicas.iter().collect();
        assert_eq!(distinct.len(), 3);
    }
}

#[test]
fn a_balanced_layout_stays_and_a_removed_broker_is_emptied() {
    let current = partitions(&[&[1, 2], &[2, 3], &[3, 1]]);
    assert_eq!(propose(&current, &brokers(&[1, 2, 3])), current);
    let plan = propose(&current, &brokers(&[1, 2]));
    for p in &plan {
        assert!(!p.replicas.contains(&3), "{p:?}");
        assert_eq!(p.replicas.len(), 2);
    }
}

#[test]
fn new_replicas_go_to_racks_the_partition_does_not_use() {
    let current = partitions(&[&[1, 2]]);
    let racks = vec![
        (1, Some("a".to_string())),
        (3, Some("a".to_string())),
        (4, Some("b".to_string())),
    ];
    let plan = propose(&current, &racks);
    assert_eq!(plan[0].replicas.len(), 2);
    assert!(plan[0].replicas.contains(&4), "{:?}", plan[0].replicas);
}

proptest! {
    #[test]
    fn plans_are_balanced_distinct_and_keep_the_factor(
        old_brokers in 1usize..6,
        new_brokers in 1usize..7,
        partition_count in 1usize..24,
        rf in 1usize..4,
        seed in any::<u64>(),
    ) {
        let rf = rf.min(old_brokers);
        let layout: Vec<Vec<i32>> = (0..partition_count)
            .map(|p| (0..rf).map(|k| ((p as u64 + seed + k as u64) % old_brokers as u64) as i32 + 1).collect())
            .collect();
        let current: Vec<PlannedPartition> = layout
            .iter()
            .enumerate()
            .map(|(i, r)| PlannedPartition { topic: "t".into(), partition: i as i32, replicas: r.clone() })
            .collect();
        let ids: Vec<i32> = (1..=new_brokers as i32).collect();
        let plan = propose(&current, &brokers(&ids));
        let want = rf.min(new_brokers);
        let total = want * partition_count;
        let (floor, ceil) = (total / new_brokers, total.div_ceil(new_brokers));
        let (held, _) = loads(&plan);
        for p in &plan {
            let distinct: BTreeSet<_> = p.replicas.iter().collect();
            prop_assert_eq!(distinct.len(), want);
            prop_assert!(p.replicas.iter().all(|b| ids.contains(b)));
        }
        for b in &ids {
            let c = held.get(b).copied().unwrap_or(0);
            prop_assert!(c >= floor && c <= ceil, "broker {} holds {} ({}..={})", b, c, floor, ceil);
        }
        // Balanced already: nothing moves.
        let again = propose(&plan, &brokers(&ids));
        prop_assert_eq!(moved_replicas(&plan, &again), 0);
    }
}
