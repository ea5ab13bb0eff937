//! The idempotent producer on real `keeld` processes: retries after lost answers (a proxy
//! that swallows answers) and across `kill -9` of partition leaders write every record exactly
//! once, in order; the sequence rules on the wire and across a restart; producer ids from any
//! broker; expiry of idle producers; the Rust client's default idempotence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_client::{Consumer, ConsumerOptions, Position, Producer, ProducerOptions};
use keel_proto::v1::partition_produce_data::Data;
use keel_proto::v1::producer_client::ProducerClient;
use keel_proto::v1::*;
use keel_tests::cluster::{Spec, TestCluster};
use keel_tests::proxy::Proxy;
use keel_tests::workload::{self, check_exactly_once, Workload};

use crate::t10_quorum::{channel, eventually, wait_unfenced, READY};
use crate::t12_client::{bootstrap, ready_topic};
use crate::t21_replication::{
    assert_replicas_identical, create_topic, leader_of, read_and_check, start_producers,
    stop_producers, wait_healthy, workload as replication_workload,
};

fn one_node(env: Vec<(String, String)>) -> TestCluster {
    TestCluster::start(Spec {
        voters: 1,
        env,
        ..Spec::default()
    })
}

/// Runs a retrying workload through a proxy that swallows answers now and then; returns the
/// histories and what the partitions hold.
async fn run_through_proxy(
    c: &TestCluster,
    topic: &str,
    idempotent: bool,
) -> (Vec<workload::History>, BTreeMap<i32, Vec<(i64, Bytes)>>) {
    let proxy = Proxy::start(c.node(1).client).await;
    let w = Arc::new(Workload {
        retry_failed: true,
        idempotent,
        via: Some(format!("http://{}", proxy.addr())),
        ..Workload::new(topic, 3, vec![c.client_url(1)], 5_000)
    });
    let (stop, tasks) = start_producers(&w, 2);
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        proxy.swallow_answers(true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.swallow_answers(false);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let histories = stop_producers(stop, tasks).await;
    let mut logs = BTreeMap::new();
    for p in 0..w.partitions {
        let (records, _) = eventually(READY, "partition readable", async || {
            workload::read_partition(&w, p).await
        })
        .await;
        logs.insert(p, records);
    }
    (histories, logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_lost_answers_write_every_record_exactly_once() {
    let c = one_node(vec![]);
    wait_unfenced(&c, 1, &[1]).await;
    ready_topic(&c, "lossy", 3).await;
    ready_topic(&c, "lossy-control", 3).await;

    let (histories, logs) = run_through_proxy(&c, "lossy", true).await;
    let failed: u64 = histories.iter().map(|h| h.failed).sum();
    let summary = check_exactly_once(&histories, &logs).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("idempotent: {summary:?}, {failed} failed attempts retried");
    assert!(failed > 0, "the proxy lost some answers");
    assert!(
        summary.acked > 50,
        "the workload made progress: {summary:?}"
    );

    // The same run without a producer id writes some retried records twice: the checker
    // can fail, and the run above passes because of deduplication.
    let (histories, logs) = run_through_proxy(&c, "lossy-control", false).await;
    let verdict = check_exactly_once(&histories, &logs);
    eprintln!("control without idempotence: {verdict:?}");
    assert!(
        verdict.as_ref().is_err_and(|e| e.contains("twice")),
        "expected duplicates without idempotence: {verdict:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_survive_leader_kills_exactly_once() {
    let mut c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_topic(&c).await;
    let w = Arc::new(Workload {
        retry_failed: true,
        idempotent: true,
        ..(*replication_workload(&c)).clone()
    });
    let (stop, tasks) = start_producers(&w, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for round in 0..3 {
        let t = wait_healthy(&c, Duration::from_secs(60)).await;
        let victim = leader_of(&t, round % w.partitions).expect("a leader");
        c.kill(victim);
        tokio::time::sleep(Duration::from_secs(3)).await;
        c.start_node(victim);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let histories = stop_producers(stop, tasks).await;
    let failed: u64 = histories.iter().map(|h| h.failed).sum();
    assert!(
        failed > 0,
        "the kills failed some attempts, which were retried"
    );
    wait_healthy(&c, Duration::from_secs(60)).await;
    let served = read_and_check(&w, &histories, check_exactly_once).await;
    let t = wait_healthy(&c, Duration::from_secs(60)).await;
    assert_replicas_identical(&mut c, &t, &served);
}

/// One structured record as producer `id`/`epoch` with `sequence`: the base offset or the
/// error code.
async fn produce_as(
    c: &TestCluster,
    topic: &str,
    id: i64,
    epoch: i32,
    sequence: i32,
) -> Result<i64, ErrorCode> {
    let req = ProduceRequest {
        acks: Acks::All as i32,
        timeout_ms: 10_000,
        topics: vec![TopicProduceData {
            topic: topic.into(),
            partitions: vec![PartitionProduceData {
                partition: 0,
                data: Some(Data::Records(ProducerRecords {
                    records: vec![ProducerRecord {
                        key: None,
                        value: Some(Bytes::from(format!("{id}/{epoch}/{sequence}"))),
                        headers: vec![],
                        timestamp: None,
                    }],
                    idempotent_producer: Some(IdempotentProducer {
                        producer_id: id,
                        producer_epoch: epoch,
                        base_sequence: sequence,
                    }),
                })),
            }],
        }],
    };
    let resp = ProducerClient::new(channel(c, 1).await)
        .produce(req)
        .await
        .expect("produce answered")
        .into_inner();
    let p = &resp.topics[0].partitions[0];
    match &p.error {
        None => Ok(p.base_offset.expect("acks=all gives an offset")),
        Some(e) => Err(ErrorCode::try_from(e.code).unwrap_or(ErrorCode::UnknownServerError)),
    }
}

async fn new_producer_id(c: &TestCluster, on: u32) -> i64 {
    let r = ProducerClient::new(channel(c, on).await)
        .init_producer_id(InitProducerIdRequest::default())
        .await
        .expect("InitProducerId answered")
        .into_inner();
    assert_eq!(r.error, None);
    assert_eq!(r.producer_epoch, 0);
    r.producer_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_rules_hold_on_the_wire_and_across_a_restart() {
    let mut c = one_node(vec![]);
    wait_unfenced(&c, 1, &[1]).await;
    ready_topic(&c, "seq", 1).await;
    let a = new_producer_id(&c, 1).await;
    let b = new_producer_id(&c, 1).await;
    assert_ne!(a, b, "every InitProducerId gives a new id");

    assert_eq!(produce_as(&c, "seq", a, 0, 0).await, Ok(0));
    assert_eq!(produce_as(&c, "seq", a, 0, 1).await, Ok(1));
    assert_eq!(produce_as(&c, "seq", a, 0, 0).await, Ok(0), "a retry");
    assert_eq!(
        produce_as(&c, "seq", a, 0, 5).await,
        Err(ErrorCode::OutOfOrderSequence)
    );
    assert_eq!(produce_as(&c, "seq", b, 0, 0).await, Ok(2));
    assert_eq!(produce_as(&c, "seq", b, 1, 0).await, Ok(3), "a new epoch");
    assert_eq!(
        produce_as(&c, "seq", b, 0, 1).await,
        Err(ErrorCode::ProducerFenced)
    );

    // A clean restart keeps the state (from the snapshot taken at close) ...
    assert!(c.terminate(1, Duration::from_secs(30)).success());
    let retried = restart_and_produce_as(&mut c, a, 1).await;
    assert_eq!(retried, 1, "deduplicated after a clean restart");
    // ... and so does a crash (rebuilt from the log after the last snapshot).
    assert_eq!(produce_as(&c, "seq", a, 0, 2).await, Ok(4));
    c.kill(1);
    let retried = restart_and_produce_as(&mut c, a, 2).await;
    assert_eq!(retried, 4, "deduplicated after kill -9");
    assert_eq!(produce_as(&c, "seq", a, 0, 3).await, Ok(5));
}

/// Starts the stopped node 1 again and sends producer `id`'s record `sequence` to "seq" once
/// the partition is led again; its base offset.
async fn restart_and_produce_as(c: &mut TestCluster, id: i64, sequence: i32) -> i64 {
    c.start_node(1);
    wait_unfenced(c, 1, &[1]).await;
    eventually(READY, "the partition led again", async || {
        produce_as(c, "seq", id, 0, sequence).await.ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_producers_expire() {
    let env = vec![(
        "KEEL_PRODUCER_ID_EXPIRATION_MS".to_owned(),
        "1000".to_owned(),
    )];
    let c = one_node(env);
    wait_unfenced(&c, 1, &[1]).await;
    ready_topic(&c, "expiry", 1).await;
    let id = new_producer_id(&c, 1).await;
    assert_eq!(produce_as(&c, "expiry", id, 0, 0).await, Ok(0));
    assert_eq!(produce_as(&c, "expiry", id, 0, 0).await, Ok(0), "a retry");
    // The upkeep pass drops the state once the producer has been idle for a second; the
    // same batch is then new to the partition and written again.
    let written_again = eventually(
        Duration::from_secs(40),
        "producer state expired",
        async || {
            tokio::time::sleep(Duration::from_millis(900)).await;
            let offset = produce_as(&c, "expiry", id, 0, 0).await.ok()?;
            (offset != 0).then_some(offset)
        },
    )
    .await;
    assert_eq!(written_again, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_is_idempotent_by_default() {
    let c = one_node(vec![]);
    wait_unfenced(&c, 1, &[1]).await;
    ready_topic(&c, "client-idem", 2).await;
    let producer = Producer::connect(&bootstrap(&c), ProducerOptions::default())
        .await
        .expect("producer connects (InitProducerId)");
    let mut deliveries = Vec::new();
    for i in 0..200 {
        let record =
            keel_client::ProducerRecord::new("client-idem", format!("v{i}")).partition(i % 2);
        deliveries.push(producer.send(record).await.expect("queued"));
    }
    for d in deliveries {
        d.await.expect("delivered");
    }
    producer.close().await;
    let mut consumer = Consumer::connect(&bootstrap(&c), ConsumerOptions::default())
        .await
        .expect("consumer");
    consumer.assign_topic("client-idem").await.expect("assign");
    consumer.seek_all(Position::Beginning);
    let mut values = std::collections::BTreeSet::new();
    let mut read = 0;
    eventually(READY, "200 records read", async || {
        for r in consumer.poll(Duration::from_millis(500)).await.ok()? {
            read += 1;
            values.insert(r.value.clone());
        }
        (read >= 200).then_some(())
    })
    .await;
    assert_eq!((read, values.len()), (200, 200), "each record once");
}
