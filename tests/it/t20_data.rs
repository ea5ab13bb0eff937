//! The single-replica data path on real `keeld` processes: produce (structured and raw, acks
//! 0/1/all), fetch (structured and raw, long poll, offset ranges), list offsets, leader hints,
//! refused input that changes nothing, durability across SIGTERM and `kill -9` restarts, and
//! deletion of a deleted topic's logs (also of one deleted while its broker was down), and the
//! replication limits of a two-broker topic (NOT_ENOUGH_REPLICAS when one is gone; the ISR
//! grows back when it returns). Replication under faults is in `t21_replication`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use keel_proto::v1::admin_client::AdminClient;
use keel_proto::v1::consumer_client::ConsumerClient;
use keel_proto::v1::partition_produce_data::Data;
use keel_proto::v1::producer_client::ProducerClient;
use keel_proto::v1::*;
use keel_storage::batch::{self, BatchParams, NewRecord};
use keel_tests::cluster::{Spec, TestCluster};

use crate::t10_quorum::{
    channel, create_until_ok, eventually, metadata, topic, topics_by_name, wait_unfenced, READY,
};

fn one_node() -> TestCluster {
    TestCluster::start(Spec {
        voters: 1,
        ..Spec::default()
    })
}

/// A structured record with a key, a value, two headers (one null) and a timestamp.
fn record(p: i32, i: i64) -> ProducerRecord {
    ProducerRecord {
        key: Some(Bytes::from(format!("k{p}-{i}"))),
        value: Some(Bytes::from(format!("value {p}-{i}"))),
        headers: vec![
            RecordHeader {
                key: "seq".into(),
                value: Some(Bytes::from(i.to_string())),
            },
            RecordHeader {
                key: "null".into(),
                value: None,
            },
        ],
        timestamp: Some(1_000_000 + i),
    }
}

fn records(p: i32, range: std::ops::Range<i64>) -> Data {
    Data::Records(ProducerRecords {
        records: range.map(|i| record(p, i)).collect(),
        idempotent_producer: None,
    })
}

/// A raw v2 batch of `n` records, as a Kafka client would encode it.
fn raw_batch(n: usize, tag: &str) -> Bytes {
    let recs: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord {
            timestamp: 2_000_000 + i as i64,
            key: Some(Bytes::from(format!("{tag}-{i}"))),
            value: Some(Bytes::from(format!("raw {tag} {i}"))),
            headers: vec![],
        })
        .collect();
    batch::encode(&BatchParams::default(), &recs).expect("encode")
}

async fn produce(
    c: &TestCluster,
    on: u32,
    acks: Acks,
    timeout_ms: i32,
    topic: &str,
    parts: Vec<(i32, Data)>,
) -> Vec<PartitionProduceResponse> {
    let mut client = ProducerClient::new(channel(c, on).await);
    let req = ProduceRequest {
        acks: acks as i32,
        timeout_ms,
        topics: vec![TopicProduceData {
            topic: topic.into(),
            partitions: parts
                .into_iter()
                .map(|(partition, data)| PartitionProduceData {
                    partition,
                    data: Some(data),
                })
                .collect(),
        }],
    };
    let resp = client
        .produce(req)
        .await
        .expect("Produce answered")
        .into_inner();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    resp.topics
        .into_iter()
        .next()
        .expect("one topic")
        .partitions
}

/// Produces and expects success; returns the base offset.
async fn produce_ok(c: &TestCluster, on: u32, acks: Acks, topic: &str, p: i32, data: Data) -> i64 {
    let r = produce(c, on, acks, 0, topic, vec![(p, data)]).await;
    assert!(r[0].error.is_none(), "{topic}/{p}: {:?}", r[0].error);
    r[0].base_offset.expect("base offset")
}

fn code(e: &Option<Error>) -> ErrorCode {
    e.as_ref().map_or(ErrorCode::Ok, |e| {
        ErrorCode::try_from(e.code).expect("known code")
    })
}

async fn fetch_req(c: &TestCluster, on: u32, req: FetchRequest) -> FetchPartitionResponse {
    let mut client = ConsumerClient::new(channel(c, on).await);
    let resp = client
        .fetch(req)
        .await
        .expect("Fetch answered")
        .into_inner();
    resp.topics[0].partitions[0].clone()
}

fn fetch_one(topic: &str, p: i32, offset: i64, format: RecordFormat, wait_ms: i32) -> FetchRequest {
    FetchRequest {
        max_wait_ms: wait_ms,
        min_bytes: 1,
        max_bytes: 0,
        isolation_level: 0,
        format: format as i32,
        topics: vec![FetchTopic {
            topic: topic.into(),
            topic_id: Bytes::new(),
            partitions: vec![FetchPartition {
                partition: p,
                fetch_offset: offset,
                partition_max_bytes: 0,
                current_leader_epoch: None,
            }],
        }],
    }
}

/// Every structured record of a partition from `from` up to the high watermark.
async fn fetch_all(c: &TestCluster, on: u32, topic: &str, p: i32) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let r = fetch_req(c, on, fetch_one(topic, p, next, RecordFormat::Records, 0)).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        match r.data {
            Some(fetch_partition_response::Data::Records(recs)) => out.extend(recs.records),
            _ => return out,
        }
        next = r.next_fetch_offset;
        if next >= r.high_watermark {
            return out;
        }
    }
}

async fn list(
    c: &TestCluster,
    on: u32,
    topic: &str,
    p: i32,
    spec: OffsetSpec,
    ts: i64,
) -> ListOffsetsPartitionResponse {
    let mut client = ConsumerClient::new(channel(c, on).await);
    let req = ListOffsetsRequest {
        isolation_level: 0,
        topics: vec![ListOffsetsTopic {
            topic: topic.into(),
            partitions: vec![ListOffsetsPartition {
                partition: p,
                spec: spec as i32,
                timestamp: ts,
                current_leader_epoch: None,
            }],
        }],
    };
    let resp = client
        .list_offsets(req)
        .await
        .expect("ListOffsets answered");
    resp.into_inner().topics[0].partitions[0].clone()
}

/// The high watermark of a partition, asked of its leader `on`.
async fn latest(c: &TestCluster, on: u32, topic: &str, p: i32) -> i64 {
    let r = list(c, on, topic, p, OffsetSpec::Latest, 0).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    r.offset.expect("latest offset")
}

/// Waits until node `on` leads every partition of `topic` and serves it.
async fn wait_serving(c: &TestCluster, on: u32, topic: &str, partitions: i32) {
    for p in 0..partitions {
        wait_serving_partition(c, on, topic, p).await;
    }
}

fn assert_records(got: &[ConsumerRecord], p: i32, n: i64) {
    assert_eq!(got.len() as i64, n, "partition {p}");
    for (i, r) in got.iter().enumerate() {
        let want = record(p, i as i64);
        assert_eq!(r.offset, i as i64, "offsets are dense from 0");
        assert_eq!(r.key, want.key);
        assert_eq!(r.value, want.value);
        assert_eq!(r.headers, want.headers);
        assert_eq!(r.timestamp, want.timestamp.unwrap());
        assert_eq!(r.timestamp_type, TimestampType::CreateTime as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_round_trip_on_a_single_replica_topic() {
    let c = one_node();
    wait_unfenced(&c, 1, &[1]).await;
    create_until_ok(&c, 1, topic("orders", 3, 1), READY).await;
    wait_serving(&c, 1, "orders", 3).await;

    // acks=1 to one partition, acks=all to two partitions in one request.
    assert_eq!(
        produce_ok(&c, 1, Acks::Leader, "orders", 0, records(0, 0..5)).await,
        0
    );
    let both = produce(
        &c,
        1,
        Acks::All,
        0,
        "orders",
        vec![(1, records(1, 0..3)), (2, records(2, 0..4))],
    )
    .await;
    assert_eq!(both.len(), 2);
    for r in &both {
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.base_offset, Some(0));
        assert_eq!(r.log_append_time, None, "CreateTime topic");
    }
    assert_eq!(
        produce_ok(&c, 1, Acks::All, "orders", 0, records(0, 5..8)).await,
        5
    );
    // Unset acks mean all.
    assert_eq!(
        produce_ok(&c, 1, Acks::Unspecified, "orders", 1, records(1, 3..4)).await,
        3
    );

    assert_records(&fetch_all(&c, 1, "orders", 0).await, 0, 8);
    assert_records(&fetch_all(&c, 1, "orders", 1).await, 1, 4);
    assert_records(&fetch_all(&c, 1, "orders", 2).await, 2, 4);

    // acks=0 answers without offsets; the records still land.
    let r = produce(&c, 1, Acks::None, 0, "orders", vec![(2, records(2, 4..5))]).await;
    assert!(
        r[0].error.is_none() && r[0].base_offset.is_none(),
        "{:?}",
        r[0]
    );
    eventually(READY, "the acks=0 record", async || {
        (latest(&c, 1, "orders", 2).await == 5).then_some(())
    })
    .await;

    // Offsets: earliest, latest (the high watermark), by timestamp, max timestamp.
    let e = list(&c, 1, "orders", 0, OffsetSpec::Earliest, 0).await;
    assert_eq!(e.offset, Some(0));
    assert_eq!(latest(&c, 1, "orders", 0).await, 8);
    let t = list(&c, 1, "orders", 0, OffsetSpec::Timestamp, 1_000_006).await;
    assert_eq!((t.offset, t.timestamp), (Some(6), Some(1_000_006)));
    let none = list(&c, 1, "orders", 0, OffsetSpec::Timestamp, 9_000_000).await;
    assert!(none.error.is_none() && none.offset.is_none(), "{none:?}");
    let max = list(&c, 1, "orders", 0, OffsetSpec::MaxTimestamp, 0).await;
    assert_eq!((max.offset, max.timestamp), (Some(7), Some(1_000_007)));
    assert!(max.leader_epoch.is_some());

    // Out of range: past the end and negative; the error tells the valid range.
    for bad in [100, -1] {
        let r = fetch_req(&c, 1, fetch_one("orders", 0, bad, RecordFormat::Records, 0)).await;
        assert_eq!(code(&r.error), ErrorCode::OffsetOutOfRange);
        assert_eq!((r.log_start_offset, r.high_watermark), (0, 8));
    }
    // At the high watermark: nothing yet, no error.
    let r = fetch_req(&c, 1, fetch_one("orders", 0, 8, RecordFormat::Records, 200)).await;
    assert!(r.error.is_none() && r.data.is_none(), "{r:?}");
    assert_eq!(r.next_fetch_offset, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_batches_long_poll_and_refused_input() {
    let c = one_node();
    wait_unfenced(&c, 1, &[1]).await;
    create_until_ok(&c, 1, topic("raw", 1, 1), READY).await;
    let mut small = topic("small", 1, 1);
    small
        .configs
        .insert("max.message.bytes".into(), "1000".into());
    create_until_ok(&c, 1, small, READY).await;
    wait_serving(&c, 1, "raw", 1).await;
    wait_serving(&c, 1, "small", 1).await;

    // Two raw batches in one partition's data: stored byte for byte, offsets assigned.
    let (a, b) = (raw_batch(3, "a"), raw_batch(2, "b"));
    let both = Bytes::from([a.clone(), b.clone()].concat());
    assert_eq!(
        produce_ok(&c, 1, Acks::All, "raw", 0, Data::RecordBatches(both)).await,
        0
    );
    let r = fetch_req(
        &c,
        1,
        fetch_one("raw", 0, 0, RecordFormat::RecordBatches, 0),
    )
    .await;
    let Some(fetch_partition_response::Data::RecordBatches(stored)) = r.data else {
        panic!("raw batches expected: {r:?}");
    };
    let stored: Vec<&[u8]> = batch::split(&stored).map(|b| b.unwrap()).collect();
    assert_eq!(stored.len(), 2);
    // Bytes from the magic byte on (CRC included) are the producer's.
    assert_eq!(&stored[0][16..], &a[16..]);
    assert_eq!(&stored[1][16..], &b[16..]);
    assert_eq!(batch::decode(stored[1]).unwrap().header.base_offset, 3);
    assert_eq!(r.next_fetch_offset, 5);
    // Structured reads of raw-produced data decode it.
    let recs = fetch_req(&c, 1, fetch_one("raw", 0, 4, RecordFormat::Records, 0)).await;
    let Some(fetch_partition_response::Data::Records(recs)) = recs.data else {
        panic!("records expected");
    };
    assert_eq!(
        recs.records.len(),
        1,
        "records before the fetch offset are skipped"
    );
    assert_eq!(recs.records[0].key.as_deref(), Some(&b"b-1"[..]));

    // A corrupt batch is refused and nothing is appended.
    let mut corrupt = raw_batch(2, "c").to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let with_good = Bytes::from([raw_batch(1, "ok").to_vec(), corrupt].concat());
    let r = produce(
        &c,
        1,
        Acks::All,
        0,
        "raw",
        vec![(0, Data::RecordBatches(with_good))],
    )
    .await;
    assert_eq!(
        code(&r[0].error),
        ErrorCode::CorruptRecord,
        "{:?}",
        r[0].error
    );
    assert_eq!(latest(&c, 1, "raw", 0).await, 5, "log end unchanged");

    // Oversized: structured and raw, refused with MESSAGE_TOO_LARGE.
    let big = ProducerRecord {
        value: Some(Bytes::from(vec![b'x'; 5000])),
        ..record(0, 0)
    };
    let data = Data::Records(ProducerRecords {
        records: vec![big],
        idempotent_producer: None,
    });
    let r = produce(&c, 1, Acks::Leader, 0, "small", vec![(0, data)]).await;
    assert_eq!(code(&r[0].error), ErrorCode::MessageTooLarge);
    let big_raw = batch::encode(
        &BatchParams::default(),
        &[NewRecord {
            timestamp: 1,
            key: None,
            value: Some(Bytes::from(vec![0u8; 5000])),
            headers: vec![],
        }],
    )
    .unwrap();
    let r = produce(
        &c,
        1,
        Acks::Leader,
        0,
        "small",
        vec![(0, Data::RecordBatches(big_raw))],
    )
    .await;
    assert_eq!(code(&r[0].error), ErrorCode::MessageTooLarge);
    assert_eq!(latest(&c, 1, "small", 0).await, 0);

    // Unknown topic, unknown partition; a partition without data.
    let r = produce(&c, 1, Acks::All, 0, "nope", vec![(0, records(0, 0..1))]).await;
    assert_eq!(code(&r[0].error), ErrorCode::UnknownTopicOrPartition);
    let r = produce(&c, 1, Acks::All, 0, "raw", vec![(7, records(0, 0..1))]).await;
    assert_eq!(code(&r[0].error), ErrorCode::UnknownTopicOrPartition);
    let f = fetch_req(&c, 1, fetch_one("nope", 0, 0, RecordFormat::Records, 0)).await;
    assert_eq!(code(&f.error), ErrorCode::UnknownTopicOrPartition);
    let mut client = ProducerClient::new(channel(&c, 1).await);
    let empty = ProduceRequest {
        acks: Acks::All as i32,
        timeout_ms: 0,
        topics: vec![TopicProduceData {
            topic: "raw".into(),
            partitions: vec![PartitionProduceData {
                partition: 0,
                data: None,
            }],
        }],
    };
    let r = client.produce(empty).await.unwrap().into_inner();
    assert_eq!(
        code(&r.topics[0].partitions[0].error),
        ErrorCode::InvalidRequest
    );
    let bad_acks = ProduceRequest {
        acks: 42,
        ..Default::default()
    };
    let r = client.produce(bad_acks).await.unwrap().into_inner();
    assert_eq!(code(&r.error), ErrorCode::InvalidRequiredAcks);
    assert_eq!(latest(&c, 1, "raw", 0).await, 5, "still nothing appended");

    // Long poll: a fetch parked at the end returns once a record arrives.
    let url_fetch = {
        let ch = channel(&c, 1).await;
        tokio::spawn(async move {
            let mut client = ConsumerClient::new(ch);
            let req = fetch_one("raw", 0, 5, RecordFormat::Records, 15_000);
            client
                .fetch(req)
                .await
                .expect("Fetch answered")
                .into_inner()
        })
    };
    // Not a wait for a condition: gives the fetch time to park first, so that the test covers
    // the wake-up (it also passes if the produce lands first).
    tokio::time::sleep(Duration::from_millis(300)).await;
    produce_ok(&c, 1, Acks::Leader, "raw", 0, records(0, 0..1)).await;
    let got = url_fetch.await.unwrap();
    let p = &got.topics[0].partitions[0];
    let Some(fetch_partition_response::Data::Records(recs)) = &p.data else {
        panic!("the long poll returned no records: {p:?}");
    };
    assert_eq!(recs.records[0].offset, 5);

    // Subscribe: the first message has the data from offset 4 and the error of an unknown
    // partition (then dropped); the next one brings a record produced later.
    let mut consumer = ConsumerClient::new(channel(&c, 1).await);
    let sub = SubscribeRequest {
        max_wait_ms: 200,
        min_bytes: 1,
        max_bytes: 0,
        isolation_level: 0,
        format: RecordFormat::Records as i32,
        topics: vec![FetchTopic {
            topic: "raw".into(),
            topic_id: Bytes::new(),
            partitions: [(0, 4), (9, 0)]
                .into_iter()
                .map(|(partition, fetch_offset)| FetchPartition {
                    partition,
                    fetch_offset,
                    partition_max_bytes: 0,
                    current_leader_epoch: None,
                })
                .collect(),
        }],
    };
    let mut stream = consumer
        .subscribe(sub)
        .await
        .expect("Subscribe")
        .into_inner();
    let mut seen = Vec::new();
    let mut unknown_reported = false;
    while seen.len() < 3 {
        let msg = stream
            .message()
            .await
            .expect("stream ok")
            .expect("stream open");
        for p in &msg.topics[0].partitions {
            if p.partition == 9 {
                assert_eq!(code(&p.error), ErrorCode::UnknownTopicOrPartition);
                unknown_reported = true;
            } else if let Some(fetch_partition_response::Data::Records(r)) = &p.data {
                seen.extend(r.records.iter().map(|r| r.offset));
            }
        }
        if seen.len() == 2 {
            produce_ok(&c, 1, Acks::Leader, "raw", 0, records(0, 1..2)).await;
        }
    }
    assert!(unknown_reported);
    assert_eq!(seen, vec![4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_broker_gets_the_leader_hint_and_replication_limits_hold() {
    let mut c = TestCluster::start(Spec {
        voters: 1,
        brokers: 1,
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1, 2]).await;
    create_until_ok(&c, 1, topic("spread", 4, 1), READY).await;
    let m = eventually(READY, "leaders for all partitions", async || {
        let m = metadata(&c, 1).await;
        let t = topics_by_name(&m).get("spread")?.clone();
        t.partitions
            .iter()
            .all(|p| p.leader_id.is_some())
            .then_some(t)
    })
    .await;
    for p in &m.partitions {
        let leader = p.leader_id.unwrap() as u32;
        let other = if leader == 1 { 2 } else { 1 };
        wait_serving_partition(&c, leader, "spread", p.partition).await;
        let r = produce(
            &c,
            other,
            Acks::All,
            0,
            "spread",
            vec![(p.partition, records(0, 0..1))],
        )
        .await;
        let e = r[0].error.as_ref().expect("NOT_LEADER");
        assert_eq!(code(&r[0].error), ErrorCode::NotLeader);
        assert!(e.retriable);
        assert_eq!(e.leader_id, Some(leader as i32));
        assert_eq!(e.leader_endpoint, Some(c.node(leader).client.to_string()));
        assert_eq!(e.leader_epoch, Some(p.leader_epoch));
        let f = fetch_req(
            &c,
            other,
            fetch_one("spread", p.partition, 0, RecordFormat::Records, 0),
        )
        .await;
        assert_eq!(code(&f.error), ErrorCode::NotLeader);
        produce_ok(
            &c,
            leader,
            Acks::All,
            "spread",
            p.partition,
            records(0, 0..1),
        )
        .await;
    }

    // RF 2 with min.insync.replicas=2: acks=all is answered once the follower has the records.
    let mut pair = topic("pair", 1, 2);
    pair.configs
        .insert("min.insync.replicas".into(), "2".into());
    create_until_ok(&c, 1, pair, READY).await;
    let leader = eventually(READY, "a leader for pair", async || {
        let m = metadata(&c, 1).await;
        topics_by_name(&m).get("pair")?.partitions[0].leader_id
    })
    .await as u32;
    wait_serving_partition(&c, leader, "pair", 0).await;
    assert_eq!(
        produce_ok(&c, leader, Acks::Leader, "pair", 0, records(0, 0..2)).await,
        0
    );
    assert_eq!(
        produce_ok(&c, leader, Acks::All, "pair", 0, records(0, 2..3)).await,
        2
    );
    if leader != 1 {
        // Make broker 1 the leader for what follows: stop 2 and let its leadership move.
        c.terminate(2, Duration::from_secs(60));
        c.start_node(2);
    }

    // With broker 2 gone the ISR shrinks below min.insync.replicas: refused, nothing appended.
    c.kill(2);
    eventually(READY, "ISR [1] led by 1", async || {
        let m = metadata(&c, 1).await;
        let p = topics_by_name(&m).get("pair")?.partitions[0].clone();
        (p.isr == vec![1] && p.leader_id == Some(1)).then_some(())
    })
    .await;
    wait_serving_partition(&c, 1, "pair", 0).await;
    let before = latest(&c, 1, "pair", 0).await;
    let r = produce(&c, 1, Acks::All, 0, "pair", vec![(0, records(0, 3..4))]).await;
    assert_eq!(
        code(&r[0].error),
        ErrorCode::NotEnoughReplicas,
        "{:?}",
        r[0].error
    );
    assert_eq!(latest(&c, 1, "pair", 0).await, before, "nothing appended");
    assert_eq!(
        produce_ok(&c, 1, Acks::Leader, "pair", 0, records(0, 3..4)).await,
        before
    );

    // A topic deleted while broker 2 is down: its logs there are swept when it returns, and
    // the logs of live topics stay.
    let on_2: Vec<i32> = m
        .partitions
        .iter()
        .filter(|p| p.leader_id == Some(2))
        .map(|p| p.partition)
        .collect();
    assert!(
        !on_2.is_empty(),
        "placement spreads 4 partitions over 2 brokers"
    );
    let spread = topic_id_hex(&c, "spread").await;
    let pair_log = c
        .data_dir(2)
        .join("logs")
        .join(format!("{}-0", topic_id_hex(&c, "pair").await));
    let orphans: Vec<_> = on_2
        .iter()
        .map(|p| c.data_dir(2).join("logs").join(format!("{spread}-{p}")))
        .collect();
    assert!(orphans.iter().all(|d| d.is_dir()) && pair_log.is_dir());
    delete_topic(&c, 1, "spread").await;
    c.start_node(2);
    eventually(READY, "orphaned logs swept", async || {
        orphans.iter().all(|d| !d.exists()).then_some(())
    })
    .await;
    assert!(pair_log.is_dir(), "a live topic's log stays");

    // Broker 2 catches up, rejoins the ISR, and acks=all is accepted again.
    eventually(READY, "ISR [1, 2] again", async || {
        let m = metadata(&c, 1).await;
        let p = topics_by_name(&m).get("pair")?.partitions[0].clone();
        (p.isr.len() == 2).then_some(())
    })
    .await;
    let next = latest(&c, 1, "pair", 0).await;
    assert_eq!(
        produce_ok(&c, 1, Acks::All, "pair", 0, records(0, 4..5)).await,
        next
    );
}

async fn delete_topic(c: &TestCluster, on: u32, name: &str) {
    let mut admin = AdminClient::new(channel(c, on).await);
    let resp = admin
        .delete_topics(DeleteTopicsRequest {
            topics: vec![DeletableTopic {
                name: name.into(),
                topic_id: Bytes::new(),
            }],
            timeout_ms: 0,
        })
        .await
        .expect("DeleteTopics answered")
        .into_inner();
    assert!(resp.topics[0].error.is_none(), "{:?}", resp.topics[0].error);
}

/// Waits until node `on` serves one partition.
async fn wait_serving_partition(c: &TestCluster, on: u32, topic: &str, p: i32) {
    eventually(READY, "partition served", async || {
        let mut client = ConsumerClient::new(channel(c, on).await);
        let req = ListOffsetsRequest {
            isolation_level: 0,
            topics: vec![ListOffsetsTopic {
                topic: topic.into(),
                partitions: vec![ListOffsetsPartition {
                    partition: p,
                    spec: OffsetSpec::Earliest as i32,
                    timestamp: 0,
                    current_leader_epoch: None,
                }],
            }],
        };
        let r = client.list_offsets(req).await.ok()?.into_inner();
        r.topics[0].partitions[0].error.is_none().then_some(())
    })
    .await;
}

/// Produces `batches` acks=all batches of 3 records round robin over `partitions`; returns
/// what was acknowledged: (partition, offset) → value.
async fn produce_acked(
    c: &TestCluster,
    topic: &str,
    partitions: i32,
    batches: i64,
    tag: &str,
    acked: &mut BTreeMap<(i32, i64), Bytes>,
) {
    for i in 0..batches {
        let p = (i % partitions as i64) as i32;
        let recs: Vec<ProducerRecord> = (0..3)
            .map(|j| ProducerRecord {
                value: Some(Bytes::from(format!("{tag}-{i}-{j}"))),
                ..record(p, j)
            })
            .collect();
        let data = Data::Records(ProducerRecords {
            records: recs.clone(),
            idempotent_producer: None,
        });
        let base = produce_ok(c, 1, Acks::All, topic, p, data).await;
        for (j, r) in recs.into_iter().enumerate() {
            acked.insert((p, base + j as i64), r.value.unwrap());
        }
    }
}

async fn assert_acked_present(
    c: &TestCluster,
    topic: &str,
    partitions: i32,
    acked: &BTreeMap<(i32, i64), Bytes>,
) {
    // Ready means registered in this run with the image past the registration: before that
    // a restarted node may still serve from the image it had (leader, then no leader while
    // it replays its own fencing).
    eventually(READY, "node 1 ready", async || {
        (crate::t10_quorum::http_status(c.node(1).http, "/readyz").await == Some(200)).then_some(())
    })
    .await;
    wait_serving(c, 1, topic, partitions).await;
    for p in 0..partitions {
        let got: BTreeMap<i64, Bytes> = fetch_all(c, 1, topic, p)
            .await
            .into_iter()
            .map(|r| (r.offset, r.value.unwrap()))
            .collect();
        for ((ap, offset), value) in acked.iter().filter(|((ap, _), _)| *ap == p) {
            assert_eq!(
                got.get(offset),
                Some(value),
                "acked record {ap}/{offset} missing"
            );
        }
    }
}

/// A topic's id as its log names spell it (32 hex digits).
async fn topic_id_hex(c: &TestCluster, topic: &str) -> String {
    let m = metadata(c, 1).await;
    let id = topics_by_name(&m)[topic].topic_id.clone();
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` without ANSI colour sequences (keeld's log lines are coloured).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // Skip to the end of the sequence (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_sigterm_and_kill_9() {
    let mut c = one_node();
    wait_unfenced(&c, 1, &[1]).await;
    create_until_ok(&c, 1, topic("durable", 2, 1), READY).await;
    wait_serving(&c, 1, "durable", 2).await;
    let mut acked = BTreeMap::new();
    produce_acked(&c, "durable", 2, 10, "before-term", &mut acked).await;
    let hex = topic_id_hex(&c, "durable").await;

    let status = c.terminate(1, Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", c.log_tail(1));
    c.start_node(1);
    assert_acked_present(&c, "durable", 2, &acked).await;
    assert!(
        plain(&c.log(1)).contains(&format!(
            "log recovered log={hex}-0 clean=true bytes_scanned=0"
        )),
        "a SIGTERM closes the logs cleanly\n{}",
        c.log_tail(1)
    );

    produce_acked(&c, "durable", 2, 10, "before-kill", &mut acked).await;
    // Concurrent acks=all producers to one partition (they share fsyncs through group
    // commit): each batch gets its own dense range of offsets.
    let concurrent = (0..8).map(|w| {
        let url = c.client_url(1);
        tokio::spawn(async move {
            let ch = tonic::transport::Channel::from_shared(url)
                .unwrap()
                .connect_lazy();
            let mut client = ProducerClient::new(ch);
            let mut acked = Vec::new();
            for i in 0..5 {
                let value = Bytes::from(format!("w{w}-{i}"));
                let rec = ProducerRecord {
                    value: Some(value.clone()),
                    ..record(1, 0)
                };
                let req = ProduceRequest {
                    acks: Acks::All as i32,
                    timeout_ms: 0,
                    topics: vec![TopicProduceData {
                        topic: "durable".into(),
                        partitions: vec![PartitionProduceData {
                            partition: 1,
                            data: Some(Data::Records(ProducerRecords {
                                records: vec![rec],
                                idempotent_producer: None,
                            })),
                        }],
                    }],
                };
                let resp = client.produce(req).await.expect("Produce").into_inner();
                let p = &resp.topics[0].partitions[0];
                assert!(p.error.is_none(), "{:?}", p.error);
                acked.push((p.base_offset.expect("offset"), value));
            }
            acked
        })
    });
    let mut offsets = Vec::new();
    for task in concurrent.collect::<Vec<_>>() {
        for (offset, value) in task.await.unwrap() {
            offsets.push(offset);
            acked.insert((1, offset), value);
        }
    }
    offsets.sort();
    offsets.dedup();
    assert_eq!(
        offsets.len(),
        40,
        "every acknowledged batch has its own offset"
    );
    c.kill(1);
    c.start_node(1);
    assert_acked_present(&c, "durable", 2, &acked).await;
    // And the log goes on where it ended.
    let next = latest(&c, 1, "durable", 0).await;
    assert_eq!(
        produce_ok(&c, 1, Acks::All, "durable", 0, records(0, 0..1)).await,
        next
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topics_logs_disappear_and_a_new_topic_starts_empty() {
    let c = one_node();
    wait_unfenced(&c, 1, &[1]).await;
    create_until_ok(&c, 1, topic("gone", 2, 1), READY).await;
    wait_serving(&c, 1, "gone", 2).await;
    produce_ok(&c, 1, Acks::All, "gone", 0, records(0, 0..3)).await;
    let hex = topic_id_hex(&c, "gone").await;
    let dirs: Vec<_> = (0..2)
        .map(|p| c.data_dir(1).join("logs").join(format!("{hex}-{p}")))
        .collect();
    assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");

    delete_topic(&c, 1, "gone").await;
    eventually(READY, "the log directories to disappear", async || {
        dirs.iter().all(|d| !d.exists()).then_some(())
    })
    .await;

    // The same name again is a new topic with new, empty logs.
    create_until_ok(&c, 1, topic("gone", 2, 1), READY).await;
    wait_serving(&c, 1, "gone", 2).await;
    assert_eq!(latest(&c, 1, "gone", 0).await, 0);
    // A consumer still holding the old topic id is told the topic changed.
    let mut old = fetch_one("gone", 0, 0, RecordFormat::Records, 0);
    old.topics[0].topic_id = Bytes::from(
        (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
    );
    let r = fetch_req(&c, 1, old).await;
    assert_eq!(code(&r.error), ErrorCode::InconsistentTopicId);
    assert_eq!(
        produce_ok(&c, 1, Acks::All, "gone", 0, records(0, 0..1)).await,
        0
    );
}
