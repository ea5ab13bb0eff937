//! What clients may hold of a broker is bounded by its config, on a real `keeld`:
//! `request_memory_bytes` makes requests beyond it wait (never fail) and refuses a message
//! larger than all of it, writing nothing; `max_connections` closes a connection beyond it and
//! takes new ones again once others close.

use std::time::Duration;

use bytes::Bytes;
use keel_proto::v1::consumer_client::ConsumerClient;
use keel_proto::v1::producer_client::ProducerClient;
use keel_proto::v1::*;
use keel_tests::cluster::{Spec, TestCluster};
use keel_tests::workload;
use tonic::transport::Channel;

use crate::t10_quorum::{channel, create_until_ok, eventually, topic, wait_unfenced, READY};

fn one_node(env: &[(&str, &str)]) -> TestCluster {
    TestCluster::start(Spec {
        voters: 1,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Spec::default()
    })
}

/// One acks=all record of `size` bytes to `topic`/0.
async fn produce(ch: Channel, topic: &str, size: usize) -> Result<i64, tonic::Status> {
    let req = workload::one_record(topic, 0, Bytes::from(vec![b'x'; size]), 20_000, None);
    let resp = ProducerClient::new(ch).produce(req).await?.into_inner();
    let p = &resp.topics[0].partitions[0];
    match &p.error {
        None => Ok(p.base_offset.expect("an offset")),
        Some(e) => Err(tonic::Status::internal(format!("produce refused: {e:?}"))),
    }
}

fn latest_request(topic: &str) -> ListOffsetsRequest {
    ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            topic: topic.into(),
            partitions: vec![ListOffsetsPartition {
                partition: 0,
                spec: OffsetSpec::Latest as i32,
                ..Default::default()
            }],
        }],
        ..Default::default()
    }
}

/// The partition's high watermark. Retries retriable errors as a client does: the replica
/// may not lead yet right after creation, and a loaded one-node cluster may briefly fence
/// its broker and leave the partition without a leader.
async fn latest(ch: Channel, topic: &str) -> i64 {
    eventually(READY, "the latest offset", async || {
        let resp = ConsumerClient::new(ch.clone())
            .list_offsets(latest_request(topic))
            .await
            .expect("ListOffsets");
        let answer = resp.into_inner().topics.remove(0).partitions.remove(0);
        match (answer.offset, answer.error) {
            (Some(offset), _) => Some(offset),
            (None, Some(e)) if e.retriable => None,
            (None, e) => panic!("no offset: {e:?}"),
        }
    })
    .await
}

/// Whether a connection is served: a ListOffsets on it answers within 5 s.
async fn latest_ok(ch: Channel) -> bool {
    let mut client = ConsumerClient::new(ch);
    let call = client.list_offsets(latest_request("t"));
    matches!(
        tokio::time::timeout(Duration::from_secs(5), call).await,
        Ok(Ok(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_request_memory_wait_and_a_message_larger_than_it_is_refused() {
    let c = one_node(&[("KEEL_REQUEST_MEMORY_BYTES", "1048576")]);
    wait_unfenced(&c, 1, &[1]).await;
    create_until_ok(&c, 1, topic("bounded", 1, 1), READY).await;
    let ch = channel(&c, 1).await;

    let err = produce(ch.clone(), "bounded", 2 << 20)
        .await
        .expect_err("a 2 MiB message in a 1 MiB pool");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("request_memory_bytes"), "{err}");
    assert_eq!(latest(ch.clone(), "bounded").await, 0, "nothing written");

    // Eight 600 KB records at once on one connection: only one fits in the pool at a time,
    // so they go one after another, and every one is written once.
    let sends: Vec<_> = (0..8)
        .map(|_| tokio::spawn(produce(ch.clone(), "bounded", 600_000)))
        .collect();
    let mut offsets = Vec::new();
    for send in sends {
        offsets.push(
            send.await
                .expect("no panic")
                .expect("written after waiting"),
        );
    }
    offsets.sort();
    assert_eq!(offsets, (0..8).collect::<Vec<i64>>());
    assert_eq!(latest(ch, "bounded").await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_max_connections_is_closed_and_a_place_comes_back() {
    let c = one_node(&[("KEEL_MAX_CONNECTIONS", "2")]);
    wait_unfenced(&c, 1, &[1]).await;
    create_until_ok(&c, 1, topic("t", 1, 1), READY).await;
    // Earlier connections of the helpers above close on their own; wait until two fit.
    let (a, b) = eventually(READY, "two connections served", async || {
        let (a, b) = (channel(&c, 1).await, channel(&c, 1).await);
        let ok = latest_ok(a.clone()).await && latest_ok(b.clone()).await;
        ok.then_some((a, b))
    })
    .await;
    let third = channel(&c, 1).await;
    assert!(
        !latest_ok(third.clone()).await,
        "a third connection was served"
    );
    assert!(
        c.log(1).contains("max_connections reached"),
        "the refusal is logged"
    );
    drop((a, third));
    eventually(Duration::from_secs(20), "a place given back", async || {
        latest_ok(channel(&c, 1).await).await.then_some(())
    })
    .await;
    assert!(latest_ok(b).await, "the open connection still served");
}
