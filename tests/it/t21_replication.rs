//! Replication on real `keeld` processes: acks=all producers while partition leaders are
//! killed with `kill -9` and restarted; the whole cluster killed and restarted; the
//! `min.insync.replicas` rule with one and two brokers down; an unclean leader election by
//! `keel leader elect --unclean`, and the old leader cutting its divergent tail when it returns. Each run ends with the workload
//! checker (every acknowledged record once, at its offset, in its producer's order) and, once
//! the cluster is stopped, a comparison of every replica's log files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_proto::v1::*;
use keel_tests::cluster::{Spec, TestCluster};
use keel_tests::workload::{self, check, History, Workload};
use tokio::sync::watch;

use crate::t10_quorum::{
    create_until_ok, eventually, http_status, metadata, topic, topics_by_name, try_metadata,
    wait_unfenced, READY,
};
use crate::t11_cli::Cli;

const TOPIC: &str = "events";
const PARTITIONS: i32 = 6;

pub(crate) fn workload(c: &TestCluster) -> Arc<Workload> {
    Arc::new(Workload::new(
        TOPIC,
        PARTITIONS,
        c.ids().iter().map(|id| c.client_url(*id)).collect(),
        10_000,
    ))
}

/// Creates the topic with RF 3 and `min.insync.replicas=2`, and waits until every partition
/// has a leader and a full ISR.
pub(crate) async fn create_topic(c: &TestCluster) {
    let mut t = topic(TOPIC, PARTITIONS, 3);
    t.configs.insert("min.insync.replicas".into(), "2".into());
    create_until_ok(c, 1, t, READY).await;
    wait_healthy(c, Duration::from_secs(60)).await;
}

/// Waits until every running node is ready (registered in this run and unfenced: an image
/// from before a restart does not count) and every partition has a leader and all three
/// replicas in its ISR.
pub(crate) async fn wait_healthy(c: &TestCluster, within: Duration) -> TopicMetadata {
    eventually(within, "every node ready", async || {
        for id in c.ids() {
            let ready = http_status(c.node(id).http, "/readyz").await == Some(200);
            if c.is_running(id) && !ready {
                return None;
            }
        }
        Some(())
    })
    .await;
    eventually(within, "every partition led with a full ISR", async || {
        for id in c.ids() {
            if !c.is_running(id) {
                continue;
            }
            let Some(m) = try_metadata(c, id).await else {
                continue;
            };
            let t = topics_by_name(&m).get(TOPIC)?.clone();
            let healthy = t
                .partitions
                .iter()
                .all(|p| p.leader_id.is_some() && p.isr.len() == 3);
            return healthy.then_some(t);
        }
        None
    })
    .await
}

/// Starts `n` producers; stop them with the returned sender.
pub(crate) fn start_producers(
    w: &Arc<Workload>,
    n: u32,
) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<History>>) {
    let (stop, stopped) = watch::channel(false);
    let tasks = (0..n)
        .map(|i| tokio::spawn(workload::produce(w.clone(), i, stopped.clone())))
        .collect();
    (stop, tasks)
}

pub(crate) async fn stop_producers(
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<History>>,
) -> Vec<History> {
    stop.send_replace(true);
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("producer"));
    }
    out
}

/// Reads every partition from its leader and runs the checker; returns the partitions' records.
async fn check_readable(
    c: &TestCluster,
    histories: &[History],
) -> BTreeMap<i32, Vec<(i64, Bytes)>> {
    read_and_check(&workload(c), histories, check).await
}

/// What a checker of [`keel_tests::workload`] looks like.
pub(crate) type Checker =
    fn(&[History], &BTreeMap<i32, Vec<(i64, Bytes)>>) -> Result<workload::Summary, String>;

/// Reads every partition of `w` from its leader and runs `checker`; returns the records.
pub(crate) async fn read_and_check(
    w: &Workload,
    histories: &[History],
    checker: Checker,
) -> BTreeMap<i32, Vec<(i64, Bytes)>> {
    let w = w.clone();
    let mut logs = BTreeMap::new();
    for p in 0..w.partitions {
        // After restarts the high watermark moves up again as followers fetch: wait until it
        // covers every acknowledged offset (a lost record shows as a checker failure after).
        let last_acked = histories
            .iter()
            .flat_map(|h| &h.acked)
            .filter(|a| a.partition == p)
            .map(|a| a.offset)
            .max()
            .unwrap_or(-1);
        let deadline = tokio::time::Instant::now() + READY;
        let records = loop {
            let read = eventually(
                READY,
                "the partition readable from its leader",
                async || workload::read_partition(&w, p).await,
            )
            .await;
            if read.1 > last_acked || tokio::time::Instant::now() > deadline {
                break read.0;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        logs.insert(p, records);
    }
    let summary = checker(histories, &logs).unwrap_or_else(|e| panic!("checker: {e}"));
    let acked: usize = histories.iter().map(|h| h.acked.len()).sum();
    assert!(acked > 0, "the workload acknowledged something");
    eprintln!(
        "checked: {} acknowledged, {} present ({} not acknowledged), {} failed attempts",
        summary.acked,
        summary.present,
        summary.unacked_present,
        histories.iter().map(|h| h.failed).sum::<u64>()
    );
    logs
}

/// Stops every node, then checks that each replica's log holds exactly what its leader
/// served: all replicas are in the ISR and caught up, so their logs must be identical. Only
/// the nodes `t` names as a partition's replicas hold it.
pub(crate) fn assert_replicas_identical(
    c: &mut TestCluster,
    t: &TopicMetadata,
    served: &BTreeMap<i32, Vec<(i64, Bytes)>>,
) {
    for id in c.ids() {
        if c.is_running(id) {
            let status = c.terminate(id, Duration::from_secs(60));
            assert!(
                status.success(),
                "node {id}: {status:?}\n{}",
                c.log_tail(id)
            );
        }
    }
    let hex: String = t.topic_id.iter().map(|b| format!("{b:02x}")).collect();
    for (p, records) in served {
        let replicas = t
            .partitions
            .iter()
            .find(|m| m.partition == *p)
            .map(|m| m.replicas.clone())
            .unwrap_or_default();
        for id in c
            .ids()
            .into_iter()
            .filter(|id| replicas.contains(&(*id as i32)))
        {
            let on_disk = workload::read_log_on_disk(c.data_dir(id), &format!("{hex}-{p}"));
            if on_disk != *records {
                let same = on_disk
                    .iter()
                    .zip(records.iter())
                    .take_while(|(a, b)| a == b)
                    .count();
                panic!(
                    "partition {p} on node {id}: {} records on disk, {} served; equal up to \
                     record {same}; on disk then {:?}, served then {:?}",
                    on_disk.len(),
                    records.len(),
                    on_disk.get(same..(same + 3).min(on_disk.len())),
                    records.get(same..(same + 3).min(records.len())),
                );
            }
        }
    }
}

pub(crate) fn leader_of(t: &TopicMetadata, partition: i32) -> Option<u32> {
    t.partitions
        .iter()
        .find(|p| p.partition == partition)?
        .leader_id
        .map(|l| l as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_repeated_leader_kills() {
    let mut c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_topic(&c).await;
    let w = workload(&c);
    let (stop, tasks) = start_producers(&w, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for round in 0..3 {
        let t = wait_healthy(&c, Duration::from_secs(60)).await;
        let victim = leader_of(&t, round % PARTITIONS).expect("a leader");
        c.kill(victim);
        tokio::time::sleep(Duration::from_secs(3)).await;
        c.start_node(victim);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let histories = stop_producers(stop, tasks).await;
    wait_healthy(&c, Duration::from_secs(60)).await;
    let served = check_readable(&c, &histories).await;
    // Every replica back in the ISR after the read holds everything the read saw.
    let t = wait_healthy(&c, Duration::from_secs(60)).await;
    assert_replicas_identical(&mut c, &t, &served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_a_whole_cluster_kill() {
    let mut c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_topic(&c).await;
    let w = workload(&c);
    let (stop, tasks) = start_producers(&w, 4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in c.ids() {
        c.kill(id);
    }
    let histories = stop_producers(stop, tasks).await;
    for id in c.ids() {
        c.start_node(id);
    }
    wait_healthy(&c, Duration::from_secs(90)).await;
    let served = check_readable(&c, &histories).await;
    let t = wait_healthy(&c, Duration::from_secs(60)).await;
    assert_replicas_identical(&mut c, &t, &served);
}

/// One acks=all record to partition 0 of the workload topic: the base offset or the error code.
async fn produce_one(c: &TestCluster, value: &str) -> Result<i64, ErrorCode> {
    produce_to(c, 1, TOPIC, value).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_insync_replicas_holds_with_one_and_two_brokers_down() {
    // One voter and two broker-only nodes: brokers 2 and 3 can die without the quorum.
    let mut c = TestCluster::start(Spec {
        voters: 1,
        brokers: 2,
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_topic(&c).await;
    let first = eventually(READY, "an acks=all produce", async || {
        produce_one(&c, "all up").await.ok()
    })
    .await;

    c.kill(3);
    // Broker 3 leaves the ISR when it is fenced; until then acks=all waits for it.
    let second = eventually(READY, "acks=all with one broker down", async || {
        produce_one(&c, "one down").await.ok()
    })
    .await;
    assert!(second > first);

    c.kill(2);
    eventually(READY, "ISR of partition 0 down to one", async || {
        let m = metadata(&c, 1).await;
        let t = topics_by_name(&m).get(TOPIC)?.clone();
        (t.partitions.iter().find(|p| p.partition == 0)?.isr.len() == 1).then_some(())
    })
    .await;
    // Let broker 1 apply the ISR change to its replica (it is the image's, already).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        produce_one(&c, "two down").await,
        Err(ErrorCode::NotEnoughReplicas)
    );

    c.start_node(2);
    let third = eventually(READY, "acks=all once broker 2 is back", async || {
        produce_one(&c, "one back").await.ok()
    })
    .await;
    assert_eq!(third, second + 1, "the refused record was not appended");
}

/// One acks=all record to `topic`/0 through the leader named by node `on`: its offset or the
/// error code.
async fn produce_to(c: &TestCluster, on: u32, topic: &str, value: &str) -> Result<i64, ErrorCode> {
    let m = metadata(c, on).await;
    let t = topics_by_name(&m)[topic].clone();
    let leader = leader_of(&t, 0).ok_or(ErrorCode::LeaderNotAvailable)?;
    let mut client = keel_proto::v1::producer_client::ProducerClient::new(
        tonic::transport::Channel::from_shared(c.client_url(leader))
            .expect("url")
            .connect_lazy(),
    );
    let req = workload::one_record(topic, 0, Bytes::from(value.to_owned()), 15_000, None);
    let resp = client
        .produce(req)
        .await
        .map_err(|_| ErrorCode::RequestTimedOut)?;
    let p = resp.into_inner().topics.remove(0).partitions.remove(0);
    match p.error {
        None => Ok(p.base_offset.expect("offset")),
        Some(e) => Err(ErrorCode::try_from(e.code).unwrap_or(ErrorCode::UnknownServerError)),
    }
}

async fn partition_state(c: &TestCluster, topic: &str) -> Option<(Option<u32>, Vec<i32>)> {
    let m = try_metadata(c, 1).await?;
    let t = topics_by_name(&m).get(topic)?.clone();
    let p = t.partitions.iter().find(|p| p.partition == 0)?;
    Some((p.leader_id.map(|l| l as u32), p.isr.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclean_election_brings_an_offline_partition_back_and_the_old_leader_follows() {
    // A controller-only voter and two brokers: the partition's replicas are exactly 2 and 3.
    let mut c = TestCluster::start(Spec {
        voters: 1,
        brokers: 2,
        controller_only: true,
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[2, 3]).await;
    create_until_ok(&c, 1, topic("u", 1, 2), READY).await;
    let (leader, follower) = eventually(READY, "a leader with a full ISR", async || {
        let (leader, isr) = partition_state(&c, "u").await?;
        let leader = leader?;
        (isr.len() == 2).then_some((leader, if leader == 2 { 3 } else { 2 }))
    })
    .await;
    let a = eventually(READY, "record A", async || {
        produce_to(&c, 1, "u", "A").await.ok()
    })
    .await;

    // The follower dies; the ISR shrinks to the leader, which alone takes record B.
    c.kill(follower);
    eventually(READY, "ISR down to the leader", async || {
        let (_, isr) = partition_state(&c, "u").await?;
        (isr == vec![leader as i32]).then_some(())
    })
    .await;
    let b = eventually(READY, "record B", async || {
        produce_to(&c, 1, "u", "B").await.ok()
    })
    .await;
    assert_eq!(b, a + 1);

    // The leader dies too; the follower returns, but outside the ISR it may not lead.
    c.kill(leader);
    c.start_node(follower);
    wait_unfenced(&c, 1, &[follower]).await;
    eventually(READY, "the partition offline", async || {
        let (l, isr) = partition_state(&c, "u").await?;
        (l.is_none() && isr == vec![leader as i32]).then_some(())
    })
    .await;
    assert!(produce_to(&c, 1, "u", "refused").await.is_err());

    // The operator accepts the loss of B.
    let cli = Cli {
        bootstrap: c.node(1).client.to_string(),
    };
    let out = cli.ok(&[
        "leader",
        "elect",
        "--unclean",
        "--topic",
        "u",
        "--partition",
        "0",
    ]);
    assert!(out.contains("elected"), "{out}");
    eventually(READY, "the follower leads alone", async || {
        let (l, isr) = partition_state(&c, "u").await?;
        (l == Some(follower) && isr == vec![follower as i32]).then_some(())
    })
    .await;
    let c_offset = eventually(READY, "record C", async || {
        produce_to(&c, 1, "u", "C").await.ok()
    })
    .await;
    assert_eq!(c_offset, a + 1, "B was never on the new leader");

    // The old leader returns as a follower, cuts B and takes C; the ISR grows back.
    c.start_node(leader);
    eventually(READY, "ISR of both again", async || {
        let (_, isr) = partition_state(&c, "u").await?;
        (isr.len() == 2).then_some(())
    })
    .await;
    let again = cli.json(&["leader", "elect", "--unclean", "--topic", "u"]);
    assert_eq!(again[0]["error"]["code"], "ELECTION_NOT_NEEDED", "{again}");
    let m = metadata(&c, 1).await;
    let topic_id = topics_by_name(&m)["u"].topic_id.clone();
    for id in [2, 3] {
        c.terminate(id, Duration::from_secs(60));
    }
    let hex: String = topic_id.iter().map(|b| format!("{b:02x}")).collect();
    for id in [2, 3] {
        let values: Vec<Bytes> = workload::read_log_on_disk(c.data_dir(id), &format!("{hex}-0"))
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            values,
            vec![Bytes::from("A"), Bytes::from("C")],
            "node {id}"
        );
    }
}

/// The body of `GET path` on `addr`, or `None` when nothing answers.
pub(crate) async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.ok()?;
    Some(answer.split_once("\r\n\r\n")?.1.to_owned())
}

/// The value of the metric line starting with `prefix` (name and labels) in `text`.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_partitions_and_interval_flushes_reach_the_disk() {
    let c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_topic(&c).await;
    let mut t = topic("lazy", 1, 3);
    t.configs.insert("flush.mode".into(), "interval".into());
    t.configs.insert("flush.ms".into(), "200".into());
    create_until_ok(&c, 1, t, READY).await;
    let leader = eventually(READY, "partition 0 led", async || {
        let m = try_metadata(&c, 1).await?;
        leader_of(topics_by_name(&m).get(TOPIC)?, 0)
    })
    .await;
    let offset = eventually(READY, "a record", async || {
        produce_one(&c, "one").await.ok()
    })
    .await;
    let http = c.node(leader).http;
    eventually(READY, "the leader's metrics", async || {
        let text = http_get(http, "/metrics").await?;
        let p0 = |name: &str| {
            metric(
                &text,
                &format!("{name}{{partition=\"0\",topic=\"events\"}}"),
            )
        };
        let ok = p0("keel_partition_leader")? == 1.0
            && p0("keel_partition_isr_size")? == 3.0
            && p0("keel_partition_high_watermark")? == (offset + 1) as f64
            && p0("keel_partition_log_end_offset")? == (offset + 1) as f64
            && metric(&text, "keel_under_replicated_partitions")? == 0.0
            && metric(&text, "keel_offline_partitions")? == 0.0
            && metric(&text, "keel_isr_shrinks_total").is_some()
            && metric(&text, "keel_process_resident_memory_bytes")? > 0.0;
        ok.then_some(())
    })
    .await;

    // flush.mode=interval: acks=all answers without the fsync; the upkeep pass fsyncs within
    // flush.ms on every replica, so the unflushed bytes drop back to zero.
    eventually(READY, "acks=all on the interval topic", async || {
        produce_to(&c, 1, "lazy", "soon on disk").await.ok()
    })
    .await;
    eventually(READY, "unflushed bytes back to zero", async || {
        for id in [1, 2, 3] {
            let text = http_get(c.node(id).http, "/metrics").await?;
            let leo = metric(
                &text,
                "keel_partition_log_end_offset{partition=\"0\",topic=\"lazy\"}",
            )?;
            let v = metric(
                &text,
                "keel_partition_unflushed_bytes{partition=\"0\",topic=\"lazy\"}",
            )?;
            if leo != 1.0 || v != 0.0 {
                return None;
            }
        }
        Some(())
    })
    .await;
}
