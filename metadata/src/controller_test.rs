use std::collections::BTreeMap;

use super::*;
use crate::image::MetadataImage;

fn eps(id: BrokerId) -> BrokerEndpoints {
    BrokerEndpoints {
        client: Endpoint {
            host: format!("b{id}"),
            port: 9292,
        },
        internal: Endpoint {
            host: format!("b{id}"),
            port: 9293,
        },
    }
}

/// Applies records as one log entry at `index`, panicking on refusal (the controller must
/// only produce records the image accepts).
fn commit(img: &mut MetadataImage, index: u64, recs: &[Record]) {
    for r in recs {
        img.apply(index, r)
            .unwrap_or_else(|e| panic!("{r:?} refused: {e}"));
    }
    img.set_offset(index);
}

/// Brokers 1..=n registered at indexes 1..=n (rack from `racks`, if given) and unfenced.
fn cluster(n: i32, racks: &[&str]) -> MetadataImage {
    let mut img = MetadataImage::default();
    for id in 1..=n {
        let req = RegisterBrokerRequest {
            broker_id: id,
            incarnation_id: IncarnationId(id as u128),
            endpoints: eps(id),
            rack: racks.get(id as usize - 1).map(|r| r.to_string()),
        };
        let Registration::Records(recs) = register_broker(&img, &req, false, 0).unwrap() else {
            panic!()
        };
        commit(&mut img, id as u64, &recs);
        let recs = unfence_broker(&img, id, id as u64).unwrap();
        commit(&mut img, 100 + id as u64, &recs);
    }
    img
}

fn topic_req(name: &str, partitions: i32, rf: i32, configs: &[(&str, &str)]) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

const T: TopicId = TopicId(7);

/// Cluster of 3 with topic "t" of `partitions` partitions, rf 3.
fn with_topic(partitions: i32) -> MetadataImage {
    let mut img = cluster(3, &[]);
    let recs = create_topic(&img, &topic_req("t", partitions, 3, &[]), T, 0, 5).unwrap();
    commit(&mut img, 200, &recs);
    img
}

#[test]
fn topic_names_follow_kafka_rules() {
    let long = "a".repeat(249);
    let too_long = "a".repeat(250);
    let cases: &[(&str, Option<TopicNameRule>)] = &[
        ("orders", None),
        ("a.b_c-D9", None),
        (&long, None),
        ("", Some(TopicNameRule::Empty)),
        (&too_long, Some(TopicNameRule::TooLong)),
        (".", Some(TopicNameRule::Dots)),
        ("..", Some(TopicNameRule::Dots)),
        ("...", None),
        ("a b", Some(TopicNameRule::IllegalCharacter)),
        ("a/b", Some(TopicNameRule::IllegalCharacter)),
        ("é", Some(TopicNameRule::IllegalCharacter)),
    ];
    for (name, want) in cases {
        let got = validate_topic_name(name).err().map(|e| match e {
            ControllerError::InvalidTopicName { rule, .. } => rule,
            other => panic!("{other:?}"),
        });
        assert_eq!(got, *want, "{name:?}");
    }
}

#[test]
fn configs_are_known_keys_with_valid_values() {
    use ConfigRule::*;
    let cases: &[(&str, &str, Option<ConfigRule>)] = &[
        ("retention.ms", "-1", None),
        ("retention.ms", "604800000", None),
        ("retention.ms", "-2", Some(BelowMinimum(-1))),
        ("retention.ms", "week", Some(NotANumber)),
        ("retention.bytes", "1073741824", None),
        ("segment.bytes", "13", Some(BelowMinimum(14))),
        (
            "segment.bytes",
            "4294967296",
            Some(AboveMaximum(i32::MAX as i64)),
        ),
        ("segment.ms", "0", Some(BelowMinimum(1))),
        ("cleanup.policy", "compact,delete", None),
        ("cleanup.policy", "archive", Some(NotAllowed)),
        ("flush.mode", "per-record", None),
        ("flush.mode", "interval", None),
        ("flush.mode", "never", Some(NotAllowed)),
        ("flush.ms", "1000", None),
        ("message.timestamp.type", "LogAppendTime", None),
        ("message.timestamp.type", "logappendtime", Some(NotAllowed)),
        ("max.message.bytes", "1048588", None),
        ("index.interval.bytes", "4096", None),
        ("min.insync.replicas", "2", None),
        ("min.insync.replicas", "0", Some(BelowMinimum(1))),
        (
            "min.insync.replicas",
            "4",
            Some(MinIsrAboveReplicationFactor(3)),
        ),
        ("retention.hours", "1", Some(UnknownKey)),
    ];
    for (k, v, want) in cases {
        let cfg = BTreeMap::from([(k.to_string(), v.to_string())]);
        let got = validate_configs(&cfg, 3).err().map(|e| match e {
            ControllerError::InvalidConfig { rule, .. } => rule,
            other => panic!("{other:?}"),
        });
        assert_eq!(got, *want, "{k}={v}");
    }
}

#[test]
fn create_topic_refusals_leave_nothing_to_commit() {
    let img = with_topic(1);
    let cases: Vec<(CreateTopicRequest, ControllerError)> = vec![
        (
            topic_req("t", 1, 1, &[]),
            ControllerError::TopicAlreadyExists { name: "t".into() },
        ),
        (
            topic_req("bad name", 1, 1, &[]),
            ControllerError::InvalidTopicName {
                name: "bad name".into(),
                rule: TopicNameRule::IllegalCharacter,
            },
        ),
        (
            topic_req("u", 0, 1, &[]),
            ControllerError::InvalidPartitions {
                requested: 0,
                current: None,
            },
        ),
        (
            topic_req("u", 1, 0, &[]),
            ControllerError::InvalidReplicationFactor {
                requested: 0,
                available: 3,
            },
        ),
        (
            topic_req("u", 1, 4, &[]),
            ControllerError::InvalidReplicationFactor {
                requested: 4,
                available: 3,
            },
        ),
        (
            topic_req("u", 1, 2, &[("min.insync.replicas", "3")]),
            ControllerError::InvalidConfig {
                key: "min.insync.replicas".into(),
                value: Some("3".into()),
                rule: ConfigRule::MinIsrAboveReplicationFactor(2),
            },
        ),
        (
            topic_req("u", 1, 1, &[("colour", "blue")]),
            ControllerError::InvalidConfig {
                key: "colour".into(),
                value: Some("blue".into()),
                rule: ConfigRule::UnknownKey,
            },
        ),
    ];
    for (req, want) in cases {
        assert_eq!(
            create_topic(&img, &req, TopicId(9), 0, 0),
            Err(want),
            "{req:?}"
        );
    }
    // Fenced brokers do not count: fence 3, rf 3 is now too large.
    let mut img = img;
    let recs = fence_broker(&img, 3, 10).unwrap();
    commit(&mut img, 300, &recs);
    assert_eq!(
        create_topic(&img, &topic_req("u", 1, 3, &[]), TopicId(9), 0, 0),
        Err(ControllerError::InvalidReplicationFactor {
            requested: 3,
            available: 2
        })
    );
    assert_eq!(
        ControllerError::TopicAlreadyExists { name: "t".into() }.code(),
        ErrorCode::TopicAlreadyExists
    );
}

#[test]
fn create_topic_builds_partitions_with_full_isr() {
    let mut img = cluster(3, &[]);
    let recs = create_topic(
        &img,
        &topic_req("t", 3, 2, &[("retention.ms", "1000")]),
        T,
        0,
        77,
    )
    .unwrap();
    assert_eq!(recs.len(), 4);
    commit(&mut img, 200, &recs);
    let t = img.topic_by_name("t").unwrap();
    assert_eq!(
        t.configs.get("retention.ms").map(String::as_str),
        Some("1000")
    );
    assert_eq!(t.created_at_ms, 77);
    let got: Vec<(Vec<BrokerId>, Option<BrokerId>)> = t
        .partitions
        .values()
        .map(|p| (p.isr.clone(), p.leader))
        .collect();
    assert_eq!(
        got,
        vec![
            (vec![1, 2], Some(1)),
            (vec![2, 3], Some(2)),
            (vec![3, 1], Some(3))
        ]
    );
}

/// Counts (replicas, leaders) per broker.
fn spread(placement: &[Vec<BrokerId>]) -> BTreeMap<BrokerId, (usize, usize)> {
    let mut m: BTreeMap<BrokerId, (usize, usize)> = BTreeMap::new();
    for replicas in placement {
        for (i, b) in replicas.iter().enumerate() {
            let e = m.entry(*b).or_default();
            e.0 += 1;
            if i == 0 {
                e.1 += 1;
            }
        }
    }
    m
}

#[test]
fn placement_without_racks_spreads_replicas_and_leaders() {
    let brokers: Vec<(BrokerId, Option<String>)> = (1..=3).map(|b| (b, None)).collect();
    // Worked example from the doc comment.
    assert_eq!(
        place_replicas(&brokers, 0, 3, 2, 0),
        vec![vec![1, 2], vec![2, 3], vec![3, 1]]
    );
    // Reproducible: same input, same output; another start rotates the leaders.
    assert_eq!(
        place_replicas(&brokers, 0, 6, 3, 5),
        place_replicas(&brokers, 0, 6, 3, 5)
    );
    assert_ne!(
        place_replicas(&brokers, 0, 3, 2, 0),
        place_replicas(&brokers, 0, 3, 2, 1)
    );

    let brokers: Vec<(BrokerId, Option<String>)> = (1..=4).map(|b| (b, None)).collect();
    for start in 0..8 {
        let p = place_replicas(&brokers, 0, 8, 3, start);
        for replicas in &p {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "{p:?}");
        }
        // 8 partitions x 3 replicas over 4 brokers: 6 each, 2 leaderships each.
        for (b, (replicas, leaders)) in spread(&p) {
            assert_eq!(
                (replicas, leaders),
                (6, 2),
                "broker {b}, start {start}: {p:?}"
            );
        }
    }
}

#[test]
fn placement_with_racks_puts_replicas_in_distinct_racks() {
    // Racks: a = {1, 2}, b = {3, 4}, c = {5, 6}.
    let racks = ["a", "a", "b", "b", "c", "c"];
    let brokers: Vec<(BrokerId, Option<String>)> = (1..=6)
        .map(|b| (b, Some(racks[b as usize - 1].to_string())))
        .collect();
    let rack = |b: BrokerId| racks[b as usize - 1];
    for start in 0..6 {
        let p = place_replicas(&brokers, 0, 12, 3, start);
        for replicas in &p {
            let rs: BTreeSet<_> = replicas.iter().map(|b| rack(*b)).collect();
            assert_eq!(rs.len(), 3, "replicas {replicas:?} share a rack");
        }
        for (b, (replicas, leaders)) in spread(&p) {
            assert_eq!(
                (replicas, leaders),
                (6, 2),
                "broker {b}, start {start}: {p:?}"
            );
        }
    }
    // rf 2 with 3 racks: still never two replicas in one rack.
    for replicas in place_replicas(&brokers, 0, 12, 2, 3) {
        assert_ne!(rack(replicas[0]), rack(replicas[1]), "{replicas:?}");
    }
}

#[test]
fn fencing_moves_leadership_within_the_isr_and_shrinks_isrs() {
    let mut img = with_topic(3);
    // Partition 0: replicas [1,2,3], leader 1. Partition 1: [2,3,1] leader 2. Partition 2:
    // [3,1,2] leader 3.
    let recs = fence_broker(&img, 1, 50).unwrap();
    assert!(matches!(
        recs[0],
        Record::FenceBroker(FenceBroker {
            broker_id: 1,
            broker_epoch: 1,
            timestamp_ms: 50
        })
    ));
    commit(&mut img, 300, &recs);
    let p0 = img.partition(T, 0).unwrap();
    assert_eq!(
        (p0.leader, p0.leader_epoch, p0.partition_epoch),
        (Some(2), 1, 1)
    );
    assert_eq!(p0.isr, vec![2, 3]);
    let p1 = img.partition(T, 1).unwrap();
    assert_eq!(
        (p1.leader, p1.leader_epoch, p1.partition_epoch),
        (Some(2), 0, 1),
        "ISR-only change"
    );
    assert_eq!(p1.isr, vec![2, 3]);

    // Fence 2: partition 0 and 1 move to 3, the only one left.
    let recs = fence_broker(&img, 2, 60).unwrap();
    commit(&mut img, 301, &recs);
    for part in 0..3 {
        let p = img.partition(T, part).unwrap();
        assert_eq!(
            (p.leader, p.isr.clone()),
            (Some(3), vec![3]),
            "partition {part}"
        );
    }
    // Fence 3, the last ISR member: it stays in the ISR, nobody leads (no unclean election of
    // 1 or 2, which are replicas but not in the ISR).
    let recs = fence_broker(&img, 3, 70).unwrap();
    commit(&mut img, 302, &recs);
    for part in 0..3 {
        let p = img.partition(T, part).unwrap();
        assert_eq!(
            (p.leader, p.isr.clone()),
            (None, vec![3]),
            "partition {part}"
        );
    }
    // 1 comes back: it is not in any ISR, so it leads nothing.
    let recs = unfence_broker(&img, 1, 1).unwrap();
    assert_eq!(recs.len(), 1);
    commit(&mut img, 303, &recs);
    assert!(img.partitions().all(|(_, _, p)| p.leader.is_none()));
    // 3 comes back: it takes its partitions back.
    let recs = unfence_broker(&img, 3, 3).unwrap();
    assert_eq!(recs.len(), 4);
    commit(&mut img, 304, &recs);
    assert!(img.partitions().all(|(_, _, p)| p.leader == Some(3)));
}

#[test]
fn controlled_shutdown_moves_leadership_first() {
    let mut img = with_topic(3);
    assert!(!controlled_shutdown_done(&img, 2));
    let recs = begin_controlled_shutdown(&img, 2, 2).unwrap();
    commit(&mut img, 300, &recs);
    assert!(controlled_shutdown_done(&img, 2));
    let p1 = img.partition(T, 1).unwrap();
    assert_eq!(
        (p1.leader, p1.leader_epoch, p1.isr.clone()),
        (Some(3), 1, vec![3, 1])
    );
    assert_eq!(
        begin_controlled_shutdown(&img, 2, 1),
        Err(ControllerError::StaleBrokerEpoch {
            broker_id: 2,
            given: 1,
            current: 2
        })
    );

    // A sole ISR member keeps leading while it shuts down (nobody else can take over).
    let mut img = cluster(1, &[]);
    let recs = create_topic(&img, &topic_req("solo", 1, 1, &[]), T, 0, 0).unwrap();
    commit(&mut img, 200, &recs);
    let recs = begin_controlled_shutdown(&img, 1, 1).unwrap();
    assert_eq!(recs.len(), 1);
    commit(&mut img, 201, &recs);
    assert!(!controlled_shutdown_done(&img, 1));
}

#[test]
fn registration_rules() {
    let img = with_topic(1);
    let req = |inc| RegisterBrokerRequest {
        broker_id: 1,
        incarnation_id: IncarnationId(inc),
        endpoints: eps(1),
        rack: None,
    };
    assert_eq!(
        register_broker(&img, &req(1), false, 0),
        Ok(Registration::Existing(1)),
        "retry"
    );
    assert_eq!(
        register_broker(&img, &req(2), false, 0),
        Err(ControllerError::DuplicateBrokerRegistration { broker_id: 1 })
    );
    // Once the old session expired, the new incarnation replaces it and the old one loses its
    // leadership in the same entry.
    let Registration::Records(recs) = register_broker(&img, &req(2), true, 0).unwrap() else {
        panic!()
    };
    let mut img = img;
    commit(&mut img, 400, &recs);
    assert_eq!(img.brokers[&1].broker_epoch, 400);
    let p = img.partition(T, 0).unwrap();
    assert_eq!((p.leader, p.isr.clone()), (Some(2), vec![2, 3]));
}

#[test]
fn expired_sessions() {
    let img = cluster(3, &[]);
    let last = BTreeMap::from([(1, 1_000), (2, 9_500)]);
    // 3 never heartbeat: counts from registration (t=0).
    assert_eq!(expired_brokers(&img, &last, 10_000, 5_000), vec![1, 3]);
    assert_eq!(
        expired_brokers(&img, &last, 5_000, 5_000),
        Vec::<BrokerId>::new()
    );
}

#[test]
fn alter_partition_checks_leader_epochs_and_eligibility() {
    let mut img = with_topic(1);
    let member = |b: BrokerId| IsrMember {
        broker_id: b,
        broker_epoch: b as u64,
    };
    let base = AlterPartitionRequest {
        broker_id: 1,
        broker_epoch: 1,
        topic_id: T,
        partition: 0,
        leader_epoch: 0,
        partition_epoch: 0,
        new_isr: vec![member(1), member(2)],
    };
    let with = |f: &dyn Fn(&mut AlterPartitionRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let cases: Vec<(AlterPartitionRequest, ControllerError)> = vec![
        (
            with(&|r| r.broker_epoch = 9),
            ControllerError::StaleBrokerEpoch {
                broker_id: 1,
                given: 9,
                current: 1,
            },
        ),
        (
            with(&|r| {
                r.broker_id = 2;
                r.broker_epoch = 2
            }),
            ControllerError::NotLeader {
                broker_id: 2,
                topic_id: T,
                partition: 0,
                leader: Some(1),
                leader_epoch: 0,
            },
        ),
        (
            with(&|r| r.leader_epoch = 1),
            ControllerError::FencedLeaderEpoch {
                given: 1,
                current: 0,
            },
        ),
        (
            with(&|r| r.partition_epoch = 3),
            ControllerError::InvalidPartitionEpoch {
                given: 3,
                current: 0,
            },
        ),
        (
            with(&|r| r.new_isr = vec![member(2)]),
            ControllerError::InvalidIsr,
        ),
        (
            with(&|r| r.new_isr = vec![member(1), member(1)]),
            ControllerError::InvalidIsr,
        ),
        (
            with(&|r| {
                r.new_isr = vec![
                    member(1),
                    IsrMember {
                        broker_id: 2,
                        broker_epoch: 5,
                    },
                ]
            }),
            ControllerError::IneligibleReplica { broker_id: 2 },
        ),
        (
            with(&|r| r.topic_id = TopicId(99)),
            ControllerError::UnknownTopicId {
                topic_id: TopicId(99),
            },
        ),
    ];
    for (req, want) in cases {
        assert_eq!(alter_partition(&img, &req), Err(want), "{req:?}");
    }
    // Shrink to [1,2]: accepted, partition epoch 0 -> 1.
    let rec = alter_partition(&img, &base).unwrap();
    commit(&mut img, 300, &[rec]);
    assert_eq!(img.partition(T, 0).unwrap().isr, vec![1, 2]);
    assert_eq!(img.partition(T, 0).unwrap().partition_epoch, 1);
    // The same request again is stale now.
    assert_eq!(
        alter_partition(&img, &base),
        Err(ControllerError::InvalidPartitionEpoch {
            given: 0,
            current: 1
        })
    );
    // Growing back with a fenced broker 3 is refused.
    let recs = fence_broker(&img, 3, 0).unwrap();
    commit(&mut img, 301, &recs);
    let grow = with(&|r| {
        r.partition_epoch = 1;
        r.new_isr = vec![member(1), member(2), member(3)]
    });
    assert_eq!(
        alter_partition(&img, &grow),
        Err(ControllerError::IneligibleReplica { broker_id: 3 })
    );
}

#[test]
fn delete_alter_and_add_partitions() {
    let mut img = with_topic(2);
    assert_eq!(
        delete_topic(&img, "nope"),
        Err(ControllerError::UnknownTopic {
            name: "nope".into()
        })
    );

    let set = BTreeMap::from([("min.insync.replicas".to_string(), Some("2".to_string()))]);
    let rec = alter_configs(&img, "t", &set).unwrap();
    commit(&mut img, 300, &[rec]);
    assert_eq!(img.topics[&T].configs["min.insync.replicas"], "2");
    let bad = BTreeMap::from([("min.insync.replicas".to_string(), Some("4".to_string()))]);
    assert!(matches!(
        alter_configs(&img, "t", &bad),
        Err(ControllerError::InvalidConfig {
            rule: ConfigRule::MinIsrAboveReplicationFactor(3),
            ..
        })
    ));

    assert_eq!(
        create_partitions(&img, "t", 2, 0),
        Err(ControllerError::InvalidPartitions {
            requested: 2,
            current: Some(2)
        })
    );
    let recs = create_partitions(&img, "t", 5, 0).unwrap();
    assert_eq!(recs.len(), 3);
    commit(&mut img, 301, &recs);
    assert_eq!(img.topics[&T].partitions.len(), 5);
    assert!(img.topics[&T]
        .partitions
        .values()
        .all(|p| p.replicas.len() == 3));

    let rec = delete_topic(&img, "t").unwrap();
    commit(&mut img, 302, &[rec]);
    assert!(img.topics.is_empty() && img.topic_ids.is_empty());
}

#[test]
fn every_known_config_has_a_valid_default() {
    let defaults: Vec<&str> = TOPIC_CONFIG_DEFAULTS.iter().map(|(k, _)| *k).collect();
    for (key, value) in TOPIC_CONFIG_DEFAULTS {
        assert!(is_known_config(key), "{key}");
        let one = BTreeMap::from([(key.to_string(), value.to_string())]);
        assert_eq!(validate_configs(&one, 1), Ok(()), "{key}={value}");
    }
    assert_eq!(defaults.len(), TOPIC_CONFIGS.len());
}

#[test]
fn preferred_and_unclean_elections() {
    let mut img = with_topic(1); // replicas [1,2,3], leader 1
    let elect = |img: &MetadataImage, e| elect_leader(img, T, 0, e);
    assert!(matches!(
        elect(&img, Election::Preferred),
        Err(ControllerError::ElectionNotNeeded {
            leader: Some(1),
            ..
        })
    ));
    assert!(matches!(
        elect(&img, Election::Unclean),
        Err(ControllerError::ElectionNotNeeded { .. })
    ));
    assert!(matches!(
        elect_leader(&img, T, 9, Election::Preferred),
        Err(ControllerError::UnknownPartition { .. })
    ));

    // 1 fenced: 2 leads; the preferred 1 is out of the ISR, so no preferred election.
    let recs = fence_broker(&img, 1, 0).unwrap();
    commit(&mut img, 300, &recs);
    assert!(matches!(
        elect(&img, Election::Preferred),
        Err(ControllerError::PreferredLeaderNotAvailable { preferred: 1, .. })
    ));
    // 2 and 3 fenced: nobody leads, 3 is the last ISR member. 1 returns, out of the ISR.
    let recs = fence_broker(&img, 2, 0).unwrap();
    commit(&mut img, 301, &recs);
    let recs = fence_broker(&img, 3, 0).unwrap();
    commit(&mut img, 302, &recs);
    let before = img.partition(T, 0).unwrap().clone();
    assert_eq!((before.leader, before.isr.clone()), (None, vec![3]));
    assert!(matches!(
        elect(&img, Election::Unclean),
        Err(ControllerError::EligibleLeadersNotAvailable { .. })
    ));
    let recs = unfence_broker(&img, 1, 1).unwrap();
    commit(&mut img, 303, &recs);
    let rec = elect(&img, Election::Unclean).unwrap();
    commit(&mut img, 304, &[rec]);
    let p = img.partition(T, 0).unwrap();
    assert_eq!((p.leader, p.isr.clone()), (Some(1), vec![1]));
    assert_eq!(p.leader_epoch, before.leader_epoch + 1);

    // 3 back: preferred election gives 1 (already leader) nothing to do; an unclean one
    // neither, since 1 serves.
    let recs = unfence_broker(&img, 3, 3).unwrap();
    commit(&mut img, 305, &recs);
    assert!(matches!(
        elect(&img, Election::Unclean),
        Err(ControllerError::ElectionNotNeeded { .. })
    ));
}
