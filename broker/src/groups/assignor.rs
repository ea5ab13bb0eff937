//! Server-side assignors: from the members' subscriptions and the subscribed topics' partition
//! counts to a target assignment. Pure functions, no I/O.
//!
//! - `uniform` (the default, Kafka's KIP-848 uniform assignor in spirit): spreads all
//!   subscribed partitions evenly over the members that subscribe to their topic, and is
//!   sticky: a partition stays with its previous target owner unless that owner holds more
//!   than its share, so a member joining or leaving moves as few partitions as possible.
//! - `range` (Kafka's range assignor): per topic, the members subscribed to it (sorted by
//!   instance id if static, else member id) each get a contiguous range of partitions, the
//!   first `partitions % members` one more.

use std::collections::{BTreeMap, BTreeSet};

use keel_metadata::records::TopicId;

/// A partition in an assignment: topic id and index.
pub type TopicPartition = (TopicId, i32);

/// Member id → the partitions given to it.
pub type Assignment = BTreeMap<String, BTreeSet<TopicPartition>>;

/// The assignors a coordinator knows, the default first.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// What an assignor sees of one member.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// The name ranges are ordered by: the instance id of a static member, else its member id.
    pub sort_key: String,
    /// The topics it subscribes to (those that exist).
    pub topics: BTreeSet<TopicId>,
}

/// Computes a target assignment with the assignor `name` (one of [`ASSIGNORS`]); `None` for
/// an unknown name. `topics` gives each subscribed topic's partition count; `previous` is the
/// last target, for stickiness.
pub fn assign(
    name: &str,
    members: &BTreeMap<String, MemberSpec>,
    topics: &BTreeMap<TopicId, i32>,
    previous: &Assignment,
) -> Option<Assignment> {
    match name {
        "uniform" => Some(uniform(members, topics, previous)),
        "range" => Some(range(members, topics)),
        _ => None,
    }
}

fn empty_assignment(members: &BTreeMap<String, MemberSpec>) -> Assignment {
    members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect()
}

/// Every partition of the topics that `members` subscribe to.
fn subscribed_partitions(
    members: &BTreeMap<String, MemberSpec>,
    topics: &BTreeMap<TopicId, i32>,
) -> Vec<TopicPartition> {
    let wanted: BTreeSet<TopicId> = members.values().flat_map(|m| m.topics.clone()).collect();
    wanted
        .into_iter()
        .filter_map(|t| topics.get(&t).map(|n| (t, *n)))
        .flat_map(|(t, n)| (0..n).map(move |p| (t, p)))
        .collect()
}

fn range(members: &BTreeMap<String, MemberSpec>, topics: &BTreeMap<TopicId, i32>) -> Assignment {
    let mut out = empty_assignment(members);
    for (&topic, &count) in topics {
        let mut subscribers: Vec<(&String, &String)> = members
            .iter()
            .filter(|(_, m)| m.topics.contains(&topic))
            .map(|(id, m)| (&m.sort_key, id))
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort();
        let n = subscribers.len() as i32;
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, (_, id)) in subscribers.into_iter().enumerate() {
            let take = each + i32::from((i as i32) < extra);
            let set = out.get_mut(id).expect("every member has an entry");
            set.extend((next..next + take).map(|p| (topic, p)));
            next += take;
        }
    }
    out
}

fn uniform(
    members: &BTreeMap<String, MemberSpec>,
    topics: &BTreeMap<TopicId, i32>,
    previous: &Assignment,
) -> Assignment {
    let partitions = subscribed_partitions(members, topics);
    let eligible = |m: &str, tp: &TopicPartition| members[m].topics.contains(&tp.0);
    let mut out = empty_assignment(members);
    // Keep what each member had and may still have.
    let mut free: BTreeSet<TopicPartition> = partitions.iter().copied().collect();
    for (m, had) in previous {
        if let Some(set) = out.get_mut(m) {
            for tp in had {
                if eligible(m, tp) && free.remove(tp) {
                    set.insert(*tp);
                }
            }
        }
    }
    // Give back what exceeds a fair share, from the most loaded first.
    let share = fair_share(members.len(), partitions.len());
    for set in out.values_mut() {
        while set.len() > share {
            let tp = *set.iter().next_back().expect("non-empty");
            set.remove(&tp);
            free.insert(tp);
        }
    }
    // Hand out free partitions to the least loaded eligible member.
    for tp in free {
        let least = out
            .iter()
            .filter(|(m, _)| eligible(m, &tp))
            .min_by_key(|(m, set)| (set.len(), (*m).clone()))
            .map(|(m, _)| m.clone());
        if let Some(m) = least {
            out.get_mut(&m).expect("listed").insert(tp);
        }
    }
    rebalance(&mut out, eligible);
    out
}

/// The most partitions one member should hold: the ceiling of partitions over members.
fn fair_share(members: usize, partitions: usize) -> usize {
    match members {
        0 => 0,
        n => partitions.div_ceil(n),
    }
}

/// Moves single partitions from the most to the least loaded member while they differ by two
/// or more and a move is allowed by subscriptions (only matters for mixed subscriptions).
fn rebalance(out: &mut Assignment, eligible: impl Fn(&str, &TopicPartition) -> bool) {
    loop {
        let mut by_load: Vec<(usize, String)> =
            out.iter().map(|(m, s)| (s.len(), m.clone())).collect();
        by_load.sort();
        let mut moved = false;
        'search: for (big_len, big) in by_load.iter().rev() {
            for (small_len, small) in by_load.iter() {
                if small_len + 1 >= *big_len {
                    break;
                }
                let candidate = out[big]
                    .iter()
                    .rev()
                    .find(|tp| eligible(small, tp))
                    .copied();
                if let Some(tp) = candidate {
                    out.get_mut(big).expect("listed").remove(&tp);
                    out.get_mut(small).expect("listed").insert(tp);
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(n: u128) -> TopicId {
        TopicId(n)
    }

    fn members(specs: &[(&str, &[u128])]) -> BTreeMap<String, MemberSpec> {
        specs
            .iter()
            .map(|(id, topics)| {
                let spec = MemberSpec {
                    sort_key: id.to_string(),
                    topics: topics.iter().map(|n| t(*n)).collect(),
                };
                (id.to_string(), spec)
            })
            .collect()
    }

    fn loads(a: &Assignment) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    fn owners(a: &Assignment) -> BTreeMap<TopicPartition, Vec<String>> {
        let mut out: BTreeMap<TopicPartition, Vec<String>> = BTreeMap::new();
        for (m, set) in a {
            for tp in set {
                out.entry(*tp).or_default().push(m.clone());
            }
        }
        out
    }

    #[test]
    fn range_gives_contiguous_ranges_with_the_remainder_first() {
        let m = members(&[("a", &[1]), ("b", &[1]), ("c", &[1])]);
        let topics = BTreeMap::from([(t(1), 7)]);
        let a = assign("range", &m, &topics, &Assignment::new()).unwrap();
        let parts = |id: &str| a[id].iter().map(|tp| tp.1).collect::<Vec<_>>();
        assert_eq!(parts("a"), vec![0, 1, 2]);
        assert_eq!(parts("b"), vec![3, 4]);
        assert_eq!(parts("c"), vec![5, 6]);
    }

    #[test]
    fn uniform_balances_six_partitions_over_three_members() {
        let m = members(&[("a", &[1]), ("b", &[1]), ("c", &[1])]);
        let topics = BTreeMap::from([(t(1), 6)]);
        let a = assign("uniform", &m, &topics, &Assignment::new()).unwrap();
        assert_eq!(loads(&a), vec![2, 2, 2]);
    }

    #[test]
    fn a_fourth_member_takes_partitions_from_others_and_moves_nothing_else() {
        let topics = BTreeMap::from([(t(1), 6)]);
        let three = members(&[("a", &[1]), ("b", &[1]), ("c", &[1])]);
        let before = assign("uniform", &three, &topics, &Assignment::new()).unwrap();
        let four = members(&[("a", &[1]), ("b", &[1]), ("c", &[1]), ("d", &[1])]);
        let after = assign("uniform", &four, &topics, &before).unwrap();
        let mut l = loads(&after);
        l.sort();
        assert_eq!(l, vec![1, 1, 2, 2]);
        // Every partition d did not get stayed where it was.
        for (m, set) in &before {
            for tp in set {
                assert!(
                    after[m].contains(tp) || after["d"].contains(tp),
                    "{tp:?} moved"
                );
            }
        }
        assert_eq!(after["d"].len(), 1, "only the new member's share moves");
    }

    #[test]
    fn a_leaving_member_only_moves_its_own_partitions() {
        let topics = BTreeMap::from([(t(1), 6)]);
        let three = members(&[("a", &[1]), ("b", &[1]), ("c", &[1])]);
        let before = assign("uniform", &three, &topics, &Assignment::new()).unwrap();
        let two = members(&[("a", &[1]), ("b", &[1])]);
        let after = assign("uniform", &two, &topics, &before).unwrap();
        assert!(before["a"].is_subset(&after["a"]));
        assert!(before["b"].is_subset(&after["b"]));
        assert_eq!(loads(&after), vec![3, 3]);
    }

    #[test]
    fn mixed_subscriptions_only_get_their_topics() {
        let m = members(&[("a", &[1]), ("b", &[1, 2]), ("c", &[2])]);
        let topics = BTreeMap::from([(t(1), 4), (t(2), 2)]);
        let a = assign("uniform", &m, &topics, &Assignment::new()).unwrap();
        assert!(a["a"].iter().all(|tp| tp.0 == t(1)));
        assert!(a["c"].iter().all(|tp| tp.0 == t(2)));
        assert_eq!(loads(&a), vec![2, 2, 2]);
    }

    #[test]
    fn an_unknown_assignor_is_refused() {
        assert!(assign(
            "sticky",
            &members(&[]),
            &BTreeMap::new(),
            &Assignment::new()
        )
        .is_none());
    }

    proptest! {
        #[test]
        fn every_partition_has_exactly_one_subscribed_owner(
            subs in proptest::collection::vec(proptest::collection::btree_set(0u128..3, 1..3), 1..6),
            counts in proptest::collection::vec(1i32..9, 3),
            name in proptest::sample::select(ASSIGNORS.to_vec()),
            previous_seed in 0usize..4,
        ) {
            let specs: Vec<(String, Vec<u128>)> = subs
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("m{i}"), s.iter().copied().collect()))
                .collect();
            let m: BTreeMap<String, MemberSpec> = specs
                .iter()
                .map(|(id, ts)| (id.clone(), MemberSpec {
                    sort_key: id.clone(),
                    topics: ts.iter().map(|n| t(*n)).collect(),
                }))
                .collect();
            let topics: BTreeMap<TopicId, i32> =
                counts.iter().enumerate().map(|(i, c)| (t(i as u128), *c)).collect();
            // A previous target from a different member set, to exercise stickiness.
            let fewer: BTreeMap<String, MemberSpec> =
                m.clone().into_iter().skip(previous_seed.min(m.len() - 1)).collect();
            let previous = assign(name, &fewer, &topics, &Assignment::new()).unwrap();
            let a = assign(name, &m, &topics, &previous).unwrap();
            let own = owners(&a);
            for tp in subscribed_partitions(&m, &topics) {
                let o = own.get(&tp).cloned().unwrap_or_default();
                prop_assert_eq!(o.len(), 1, "{:?} owned by {:?}", tp, o);
                prop_assert!(m[&o[0]].topics.contains(&tp.0));
            }
            prop_assert_eq!(own.len(), subscribed_partitions(&m, &topics).len());
            let same_subscription = m.values().all(|s| s.topics == m.values().next().unwrap().topics);
            if name == "uniform" && same_subscription {
                let l = loads(&a);
                prop_assert!(l.iter().max().unwrap() - l.iter().min().unwrap() <= 1, "{:?}", l);
            }
        }
    }
}
