//! Cluster defaults for topic configs, from the broker config, on real `keeld` processes:
//! a topic created without a partition count, a replication factor or configs gets the
//! cluster's; explicit values win; `min_insync_replicas` is capped at a topic's factor. With
//! `auto_create_topics_enable` (on here) a Metadata or Produce request naming an unknown topic
//! creates it with those defaults; off (the default), both answer UNKNOWN_TOPIC_OR_PARTITION
//! and nothing is created.

use bytes::Bytes;
use keel_proto::v1::cluster_client::ClusterClient;
use keel_proto::v1::producer_client::ProducerClient;
use keel_proto::v1::*;
use keel_tests::cluster::{Spec, TestCluster};
use keel_tests::workload;

use crate::t10_quorum::{
    channel, create_until_ok, eventually, metadata, topic, topics_by_name, wait_unfenced, READY,
};

/// Metadata of `names` from node `on` (configs included).
async fn metadata_of(c: &TestCluster, on: u32, names: &[&str]) -> MetadataResponse {
    let mut client = ClusterClient::new(channel(c, on).await);
    let req = MetadataRequest {
        topics: names.iter().map(|n| (*n).to_owned()).collect(),
        include_configs: true,
    };
    client.metadata(req).await.expect("Metadata").into_inner()
}

/// One acks=all record to `topic`/0 sent to node `on`: its offset, or the error code.
async fn produce_on(c: &TestCluster, on: u32, topic: &str) -> Result<i64, ErrorCode> {
    let mut client = ProducerClient::new(channel(c, on).await);
    let req = workload::one_record(topic, 0, Bytes::from_static(b"v"), 10_000, None);
    let resp = client.produce(req).await.expect("Produce answered");
    let p = resp.into_inner().topics.remove(0).partitions.remove(0);
    match p.error {
        None => Ok(p.base_offset.expect("offset")),
        Some(e) => Err(ErrorCode::try_from(e.code).unwrap_or(ErrorCode::UnknownServerError)),
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The partition count, replication factor and config overrides of `name` once node `on`
/// knows the topic.
async fn shape(c: &TestCluster, on: u32, name: &str) -> (usize, usize, Vec<(String, String)>) {
    let t = eventually(READY, "the topic known", async || {
        topics_by_name(&metadata(c, on).await).remove(name)
    })
    .await;
    let mut configs: Vec<(String, String)> = t.configs.into_iter().collect();
    configs.sort();
    (t.partitions.len(), t.partitions[0].replicas.len(), configs)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    env(list)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_defaults_apply_to_new_topics_and_unknown_topics_are_auto_created() {
    let c = TestCluster::start(Spec {
        env: env(&[
            ("KEEL_NUM_PARTITIONS", "4"),
            ("KEEL_DEFAULT_REPLICATION_FACTOR", "3"),
            ("KEEL_MIN_INSYNC_REPLICAS", "2"),
            ("KEEL_LOG_RETENTION_MS", "3600000"),
            ("KEEL_LOG_SEGMENT_BYTES", "1048576"),
            ("KEEL_AUTO_CREATE_TOPICS_ENABLE", "true"),
        ]),
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    let defaults = pairs(&[
        ("min.insync.replicas", "2"),
        ("retention.ms", "3600000"),
        ("segment.bytes", "1048576"),
    ]);

    // Nothing given: everything from the defaults.
    let bare = CreatableTopic {
        name: "bare".into(),
        ..Default::default()
    };
    create_until_ok(&c, 2, bare, READY).await;
    assert_eq!(shape(&c, 1, "bare").await, (4, 3, defaults.clone()));

    // Given values win; the default min ISR is capped at a factor of one.
    let mut given = topic("given", 2, 1);
    given.configs.insert("retention.ms".into(), "-1".into());
    create_until_ok(&c, 3, given, READY).await;
    assert_eq!(
        shape(&c, 1, "given").await,
        (
            2,
            1,
            pairs(&[("retention.ms", "-1"), ("segment.bytes", "1048576")])
        )
    );

    // Metadata for an unknown topic creates it, with the defaults.
    let m = metadata_of(&c, 2, &["asked"]).await;
    let asked = &m.topics[0];
    assert!(asked.error.is_none(), "{:?}", asked.error);
    assert_eq!(asked.partitions.len(), 4);
    assert_eq!(shape(&c, 1, "asked").await, (4, 3, defaults.clone()));

    // So does a produce: the first one creates the topic and is answered as any produce to
    // a new partition (appended, or a retriable error until its leader serves it); records
    // then land at the leader.
    match produce_on(&c, 1, "written").await {
        Ok(_) | Err(ErrorCode::NotLeader | ErrorCode::LeaderNotAvailable) => {}
        Err(other) => panic!("first produce: {other:?}"),
    }
    assert_eq!(shape(&c, 1, "written").await, (4, 3, defaults));
    eventually(READY, "a produce at the new topic's leader", async || {
        let m = metadata(&c, 1).await;
        let leader = topics_by_name(&m)["written"].partitions[0].leader_id?;
        produce_on(&c, leader as u32, "written").await.ok()
    })
    .await;

    // A name that cannot be a topic is refused with the creation's error.
    let m = metadata_of(&c, 1, &["no spaces allowed"]).await;
    let code = m.topics[0].error.as_ref().map(|e| e.code);
    assert_eq!(code, Some(ErrorCode::InvalidTopic as i32), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_create_unknown_topics_are_refused_and_not_created() {
    let c = TestCluster::start(Spec {
        voters: 1,
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1]).await;
    let m = metadata_of(&c, 1, &["ghost"]).await;
    let code = m.topics[0].error.as_ref().map(|e| e.code);
    assert_eq!(code, Some(ErrorCode::UnknownTopicOrPartition as i32));
    assert_eq!(
        produce_on(&c, 1, "ghost").await,
        Err(ErrorCode::UnknownTopicOrPartition)
    );
    // A topic made meanwhile would show here; the metadata image has none.
    create_until_ok(&c, 1, topic("real", 1, 1), READY).await;
    let names: Vec<String> = topics_by_name(&metadata(&c, 1).await).into_keys().collect();
    assert_eq!(names, vec!["real".to_owned()]);
}
