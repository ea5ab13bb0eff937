//! What a node tells its operators, on three real `keeld` processes: `/metrics` is valid
//! Prometheus text on every node, its per-topic produce and fetch counters, bytes and latency
//! histograms move with traffic, a group's lag shows on its coordinator and falls to zero once
//! the group has read everything; the Raft commit index and the active controller are
//! reported. Log lines name their node (JSON and text) and, where they are about a
//! partition, its topic and partition.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_client::TopicPartition;
use keel_tests::cluster::{Spec, TestCluster};
use keel_tests::prom::{self, Exposition};
use tokio::sync::watch;

use crate::t10_quorum::{
    create_until_ok, eventually, metadata, topic, topics_by_name, wait_unfenced, READY,
};
use crate::t21_replication::{http_get, leader_of};
use crate::t24_groups::{cluster, produce, ready, spawn_member, values, wait_seen};

const TOPIC: &str = "observed";
const GROUP: &str = "watchers";

/// Node `id`'s `/metrics`, parsed; panics if the text is not valid exposition format.
async fn scrape(c: &TestCluster, id: u32) -> Option<Exposition> {
    let text = http_get(c.node(id).http, "/metrics").await?;
    Some(prom::parse(&text).unwrap_or_else(|e| panic!("node {id}: {e}\n{text}")))
}

/// The sum over every node of the samples `name` with labels `want` (0 where absent).
async fn cluster_sum(c: &TestCluster, name: &str, want: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for id in c.ids() {
        if let Some(e) = scrape(c, id).await {
            total += e.sum(name, want).unwrap_or(0.0);
        }
    }
    total
}

/// Lag per partition of `GROUP` on `TOPIC`, from node `id`'s metrics.
async fn lag_on(c: &TestCluster, id: u32) -> Option<BTreeMap<String, f64>> {
    let e = scrape(c, id).await?;
    let lags = e.all(
        "keel_consumer_group_lag",
        &[("group", GROUP), ("topic", TOPIC)],
    );
    (!lags.is_empty()).then(|| {
        lags.iter()
            .map(|s| (s.labels["partition"].clone(), s.value))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_prometheus_text_and_move_with_produce_fetch_and_group_lag() {
    let c = cluster();
    let admin = ready(&c, TOPIC).await;
    for id in c.ids() {
        let e = eventually(READY, "metrics answer", async || scrape(&c, id).await).await;
        for name in [
            "keel_active_controller",
            "keel_offline_partitions",
            "keel_leader_elections_total",
            "keel_raft_commit_index",
        ] {
            assert!(e.sum(name, &[]).is_some(), "node {id} lacks {name}");
        }
    }
    eventually(READY, "exactly one active controller", async || {
        let controllers = cluster_sum(&c, "keel_active_controller", &[]).await;
        (controllers == 1.0).then_some(())
    })
    .await;

    // Produce: requests, bytes in and the latency histogram of the topic move.
    let topic = [("topic", TOPIC)];
    let n = 60;
    let sent: usize = values("o", n).map(|v| v.len()).sum();
    produce(&c, TOPIC, values("o", n)).await;
    let requests = cluster_sum(&c, "keel_produce_requests_total", &topic).await;
    let bytes_in = cluster_sum(&c, "keel_bytes_in_total", &topic).await;
    let observed = cluster_sum(&c, "keel_produce_request_duration_seconds_count", &topic).await;
    assert!(requests >= 1.0, "produce requests {requests}");
    assert!(bytes_in >= sent as f64, "bytes in {bytes_in} < {sent}");
    assert_eq!(observed, requests, "one latency sample per request");

    // A group that committed offset 0 everywhere lags by the whole topic, on its coordinator.
    let zeros: Vec<(TopicPartition, i64)> =
        (0..6).map(|p| (TopicPartition::new(TOPIC, p), 0)).collect();
    admin
        .alter_group_offsets(GROUP, &zeros)
        .await
        .expect("commit");
    let (coordinator, _) = admin.find_coordinator(GROUP).await.expect("coordinator");
    let coordinator = coordinator as u32;
    eventually(READY, "lag of the whole topic", async || {
        let lag = lag_on(&c, coordinator).await?;
        (lag.len() == 6 && lag.values().sum::<f64>() == n as f64).then_some(())
    })
    .await;

    // The group reads everything and commits: lag 0 everywhere; fetch counters moved.
    let fetched_before = cluster_sum(&c, "keel_bytes_out_total", &topic).await;
    let (stop, stopped) = watch::channel(false);
    let (seen, member) = spawn_member(&c, GROUP, TOPIC, None, stopped);
    wait_seen(&[seen], n).await;
    stop.send_replace(true);
    member.await.expect("member");
    eventually(READY, "lag back to zero", async || {
        let lag = lag_on(&c, coordinator).await?;
        (lag.len() == 6 && lag.values().all(|l| *l == 0.0)).then_some(())
    })
    .await;
    let fetches = cluster_sum(&c, "keel_fetch_requests_total", &topic).await;
    let bytes_out = cluster_sum(&c, "keel_bytes_out_total", &topic).await;
    assert!(fetches >= 1.0, "fetch requests {fetches}");
    assert!(
        bytes_out - fetched_before >= sent as f64,
        "bytes out {bytes_out} (before {fetched_before}) < {sent}"
    );
    let committed = cluster_sum(
        &c,
        "keel_consumer_group_committed_offset",
        &[("group", GROUP)],
    )
    .await;
    assert_eq!(
        committed, n as f64,
        "committed offsets add up to the records"
    );

    // Text logs name the node on every line of its tasks.
    for id in c.ids() {
        let log = c.log(id);
        let tag = format!("node{{node_id={id}}}");
        assert!(log.contains(&tag), "node {id}'s log lacks {tag}");
    }
}

/// The JSON log lines of node `id`: each line parsed (panics on a line that is not JSON).
fn json_lines(c: &TestCluster, id: u32) -> Vec<serde_json::Value> {
    c.log(id)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("node {id}: {e}: {l}")))
        .collect()
}

/// The `node_id` a JSON line carries at its top level.
fn node_id_of(line: &serde_json::Value) -> Option<u64> {
    line["node_id"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_node_on_every_line_and_the_partition_where_it_applies() {
    let mut c = TestCluster::start(Spec {
        args: vec!["--log-format".into(), "json".into()],
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_until_ok(&c, 1, topic("logged", 2, 3), READY).await;
    // A clean stop of a leader moves its leaderships: the others log the new leaders.
    let leader = eventually(READY, "partition 0 led", async || {
        let m = metadata(&c, 1).await;
        leader_of(topics_by_name(&m).get("logged")?, 0)
    })
    .await;
    let status = c.terminate(leader, Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    let others: Vec<u32> = c.ids().into_iter().filter(|id| *id != leader).collect();
    eventually(READY, "a leader change logged", async || {
        let changed = others
            .iter()
            .flat_map(|id| json_lines(&c, *id))
            .any(|l| l["fields"]["message"] == "partition leader changed");
        changed.then_some(())
    })
    .await;
    for id in c.ids() {
        let lines = json_lines(&c, id);
        assert!(lines.len() > 5, "node {id} logged {} lines", lines.len());
        for l in &lines {
            assert_eq!(node_id_of(l), Some(u64::from(id)), "node {id}: {l}");
        }
        // Lines about one partition say which.
        let about_partitions = lines.iter().filter(|l| {
            let m = l["fields"]["message"].as_str().unwrap_or_default();
            m == "partition replica opened" || m == "partition leader changed"
        });
        let mut n = 0;
        for l in about_partitions {
            assert_eq!(l["fields"]["topic"], "logged", "{l}");
            assert!(l["fields"]["partition"].is_u64(), "{l}");
            n += 1;
        }
        assert!(n >= 2, "node {id}: {n} partition lines");
    }
}
