//! Elastic cluster on real `keeld` processes, driven through the `keel` binary: a fourth
//! broker joins and a topic is reassigned onto it under acks=all load; a broker is
//! decommissioned under load; the active controller is killed in the middle of a throttled
//! reassignment; a throttled reassignment is cancelled; a controller voter is replaced while
//! metadata writes go on; leaders return to their preferred replicas on their own. Every run under load ends with the workload
//! checker (every acknowledged record once, at its offset, in producer order).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_tests::cluster::{Spec, TestCluster};
use keel_tests::workload::check;
use serde_json::Value;

use crate::t10_quorum::{
    create_until_ok, describe, eventually, metadata, topic, topics_by_name, wait_unfenced, READY,
};
use crate::t11_cli::Cli;
use crate::t21_replication::{
    create_topic, read_and_check, start_producers, stop_producers, wait_healthy, workload,
};

const MOVE_WITHIN: Duration = Duration::from_secs(120);

fn cli(c: &TestCluster, ids: &[u32]) -> Cli {
    Cli {
        bootstrap: ids
            .iter()
            .map(|id| c.node(*id).client.to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Each partition's replicas of `topic` as node `on` sees them.
async fn layout(c: &TestCluster, on: u32, name: &str) -> BTreeMap<i32, Vec<i32>> {
    let m = metadata(c, on).await;
    topics_by_name(&m)
        .get(name)
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition, p.replicas.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The plan's target replicas by partition.
fn plan_layout(plan: &Value) -> BTreeMap<i32, Vec<i32>> {
    plan["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            let replicas = p["replicas"]
                .as_array()
                .expect("replicas")
                .iter()
                .map(|b| b.as_i64().expect("id") as i32)
                .collect();
            (p["partition"].as_i64().expect("partition") as i32, replicas)
        })
        .collect()
}

/// Polls `keel partition reassign --status PLAN` until nothing moves and every planned
/// partition is done.
async fn wait_plan_done(k: &Cli, plan_file: &str) -> Value {
    eventually(MOVE_WITHIN, "the plan to finish", async || {
        let (ok, out, _) = k.run(&[
            "partition",
            "reassign",
            "--status",
            plan_file,
            "--output",
            "json",
        ]);
        let status: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
        let empty = |k: &str| status[k].as_array().is_some_and(|a| a.is_empty());
        (empty("in_progress") && empty("not_started")).then_some(status)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_broker_joins_and_a_topic_moves_onto_it_under_acks_all_load() {
    let mut c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_topic(&c).await;
    let w = workload(&c);
    let (stop, producers) = start_producers(&w, 4);

    c.add_node(4, false);
    wait_unfenced(&c, 1, &[1, 2, 3, 4]).await;
    let k = cli(&c, &[1, 2]);
    let listed = k.json(&["broker", "list"]);
    assert_eq!(listed.as_array().expect("brokers").len(), 4, "{listed}");
    // New topics use the new broker.
    create_until_ok(&c, 1, topic("fresh", 8, 3), READY).await;
    let fresh = layout(&c, 1, "fresh").await;
    assert!(fresh.values().any(|r| r.contains(&4)), "{fresh:?}");

    // A plan naming an unknown broker changes nothing.
    let dir = c.dir().to_path_buf();
    let bad = dir.join("bad-plan.json");
    std::fs::write(
        &bad,
        r#"{"version":1,"partitions":[{"topic":"events","partition":0,"replicas":[1,2,9]}]}"#,
    )
    .expect("write plan");
    let before = layout(&c, 1, "events").await;
    let refused = k.json(&[
        "partition",
        "reassign",
        "--execute",
        bad.to_str().expect("path"),
    ]);
    assert_eq!(
        refused[0]["error"]["code"], "INVALID_REPLICA_ASSIGNMENT",
        "{refused}"
    );
    assert_eq!(layout(&c, 1, "events").await, before);

    let plan_text = k.ok(&[
        "partition",
        "reassign",
        "--generate",
        "--brokers",
        "1,2,3,4",
        "--topics",
        "events",
    ]);
    let plan: Value = serde_json::from_str(&plan_text).expect("plan JSON");
    let target = plan_layout(&plan);
    assert!(!target.is_empty(), "the plan moves something: {plan}");
    let held_by_4 = target.values().filter(|r| r.contains(&4)).count();
    assert!(held_by_4 >= 4, "broker 4 gets its share (18 / 4): {plan}");
    let plan_file = dir.join("plan.json");
    std::fs::write(&plan_file, &plan_text).expect("write plan");
    let plan_file = plan_file.to_str().expect("path").to_owned();
    let started = k.json(&["partition", "reassign", "--execute", &plan_file]);
    assert!(
        started
            .as_array()
            .expect("results")
            .iter()
            .all(|r| r["error"].is_null()),
        "{started}"
    );
    wait_plan_done(&k, &plan_file).await;
    let after = layout(&c, 1, "events").await;
    for (partition, replicas) in &target {
        assert_eq!(&after[partition], replicas, "partition {partition}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let histories = stop_producers(stop, producers).await;
    let logs = read_and_check(&w, &histories, check).await;
    let acked: usize = histories.iter().map(|h| h.acked.len()).sum();
    let present: usize = logs.values().map(Vec::len).sum();
    eprintln!("moved {held_by_4} replicas onto broker 4; {acked} acknowledged, {present} present");
    assert!(acked > 100, "the producers made progress: {acked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decommissioned_broker_hands_over_every_replica_under_load_then_is_gone() {
    let c = TestCluster::start(Spec {
        brokers: 1,
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1, 2, 3, 4]).await;
    create_topic(&c).await;
    let on_4 = layout(&c, 1, "events")
        .await
        .values()
        .filter(|r| r.contains(&4))
        .count();
    assert!(on_4 > 0, "broker 4 holds replicas to move");
    let w = workload(&c);
    let (stop, producers) = start_producers(&w, 4);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let k = cli(&c, &[1, 2]);
    let (ok, _, err) = k.run(&["broker", "decommission", "9"]);
    assert!(!ok && err.contains("BROKER_ID_NOT_REGISTERED"), "{err}");
    let done = k.json(&["broker", "decommission", "4", "--wait"]);
    assert_eq!(done["gone"], true, "{done}");
    let d = describe(&c, 1).await.expect("described");
    assert!(d.brokers.iter().all(|b| b.broker_id != 4), "{d:?}");
    let left: Vec<_> = layout(&c, 1, "events")
        .await
        .into_iter()
        .filter(|(_, r)| r.contains(&4) || r.len() != 3)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // New topics no longer use it, and it may not come back under its id.
    create_until_ok(&c, 2, topic("after", 6, 3), READY).await;
    assert!(layout(&c, 1, "after")
        .await
        .values()
        .all(|r| !r.contains(&4)));
    eventually(READY, "broker 4 says it was decommissioned", async || {
        c.log(4).contains("decommissioned").then_some(())
    })
    .await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let histories = stop_producers(stop, producers).await;
    read_and_check(&w, &histories, check).await;
    let acked: usize = histories.iter().map(|h| h.acked.len()).sum();
    eprintln!("{on_4} partitions left broker 4; {acked} acknowledged");
    assert!(acked > 100, "the producers made progress: {acked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_reassignment_finishes_after_the_active_controller_is_killed() {
    let mut c = TestCluster::start(Spec {
        brokers: 1,
        env: vec![(
            "KEEL_REASSIGNMENT_THROTTLE_BYTES_PER_SEC".into(),
            "65536".into(),
        )],
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1, 2, 3, 4]).await;
    let k = cli(&c, &[1, 2, 3]);
    k.ok(&["topic", "create", "big", "-p", "1", "-r", "3"]);
    let replicas = eventually(READY, "partition 0 of big", async || {
        layout(&c, 1, "big").await.remove(&0)
    })
    .await;
    let records = 1500;
    k.ok(&[
        "bench",
        "produce",
        "--topic",
        "big",
        "--records",
        &records.to_string(),
        "--record-size",
        "1024",
    ]);
    // Replace one replica by the broker that has none (4 if free, else whichever is).
    let newcomer = (1..=4)
        .find(|b| !replicas.contains(b))
        .expect("a free broker");
    let mut target = replicas.clone();
    target[2] = newcomer;
    let plan = serde_json::json!({"version": 1, "partitions": [
        {"topic": "big", "partition": 0, "replicas": target}]});
    let plan_file = c.dir().join("big-plan.json");
    std::fs::write(&plan_file, plan.to_string()).expect("write plan");
    let plan_file = plan_file.to_str().expect("path").to_owned();
    let started_at = Instant::now();
    k.ok(&["partition", "reassign", "--execute", &plan_file]);

    // About 1.5 MB at 64 KiB/s takes over 20 s: the copy is visibly partial for a while.
    let status = k.json(&["partition", "reassign", "--status"]);
    let moving = status["in_progress"]
        .as_array()
        .expect("in progress")
        .clone();
    assert_eq!(moving.len(), 1, "{status}");
    assert_eq!(
        moving[0]["adding"],
        serde_json::json!([newcomer]),
        "{status}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = k.json(&["partition", "reassign", "--status"]);
    let r = &status["in_progress"][0];
    let copied = r["progress"][0][1].as_i64().unwrap_or(0);
    let end = r["leader_log_end"].as_i64().unwrap_or(i64::MAX);
    assert!(
        copied * 2 < end,
        "the throttle holds the copy back: {copied} of {end} after {:?}",
        started_at.elapsed()
    );

    let controller = describe(&c, 1)
        .await
        .and_then(|d| d.controller_id)
        .expect("a controller") as u32;
    c.kill(controller);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.start_node(controller);
    let survivors: Vec<u32> = (1..=4).filter(|b| *b != controller).collect();
    let k = cli(&c, &survivors);
    wait_plan_done(&k, &plan_file).await;
    assert_eq!(layout(&c, survivors[0], "big").await[&0], target);
    eprintln!(
        "the move of {records} KiB finished {:?} after it started, across a controller kill",
        started_at.elapsed()
    );
    // Every record is on the new replica set: read it all back from whoever leads now.
    let read = k.json(&[
        "bench",
        "consume",
        "--topic",
        "big",
        "--records",
        &records.to_string(),
    ]);
    assert_eq!(read["records"], records, "{read}");
    let offsets = k.json(&["offsets", "big"]);
    assert_eq!(offsets["partitions"][0]["latest"], records, "{offsets}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_reassignment_returns_to_the_original_replicas() {
    let c = TestCluster::start(Spec {
        brokers: 1,
        env: vec![(
            "KEEL_REASSIGNMENT_THROTTLE_BYTES_PER_SEC".into(),
            "32768".into(),
        )],
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1, 2, 3, 4]).await;
    let k = cli(&c, &[1, 2, 3]);
    k.ok(&["topic", "create", "slow", "-p", "1", "-r", "2"]);
    let original = eventually(READY, "partition 0 of slow", async || {
        layout(&c, 1, "slow").await.remove(&0)
    })
    .await;
    k.ok(&[
        "bench",
        "produce",
        "--topic",
        "slow",
        "--records",
        "1000",
        "--record-size",
        "1024",
    ]);
    let free: Vec<i32> = (1..=4).filter(|b| !original.contains(b)).collect();
    let plan = serde_json::json!({"version": 1, "partitions": [
        {"topic": "slow", "partition": 0, "replicas": free}]});
    let plan_file = c.dir().join("slow-plan.json");
    std::fs::write(&plan_file, plan.to_string()).expect("write plan");
    let plan_file = plan_file.to_str().expect("path").to_owned();
    k.ok(&["partition", "reassign", "--execute", &plan_file]);
    let moving = layout(&c, 1, "slow").await[&0].clone();
    assert_eq!(
        moving.len(),
        4,
        "target and original replicas together: {moving:?}"
    );

    let again = k.json(&["partition", "reassign", "--execute", &plan_file]);
    assert_eq!(
        again[0]["error"]["code"], "REASSIGNMENT_IN_PROGRESS",
        "{again}"
    );
    let cancelled = k.json(&["partition", "reassign", "--cancel", &plan_file]);
    assert!(cancelled[0]["error"].is_null(), "{cancelled}");
    let mut back = layout(&c, 1, "slow").await[&0].clone();
    back.sort();
    let mut want = original.clone();
    want.sort();
    assert_eq!(back, want, "the original replicas, and only them");
    let status = k.json(&["partition", "reassign", "--status"]);
    assert_eq!(status["in_progress"], serde_json::json!([]), "{status}");
    let read = k.json(&["bench", "consume", "--topic", "slow", "--records", "1000"]);
    assert_eq!(read["records"], 1000, "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_controller_voter_is_replaced_while_metadata_writes_go_on() {
    let mut c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    c.add_node(4, true);
    let k = cli(&c, &[1, 2, 3]);

    // A writer creates a topic every 100 ms through the Rust admin client (with its retries).
    // Retries for up to about 20 s, as a client that rides out controller failovers would.
    let options = keel_client::AdminOptions {
        retries: 20,
        ..Default::default()
    };
    let admin = Arc::new(
        keel_client::AdminClient::connect_with(
            &[1, 2, 3].map(|id| c.node(id).client.to_string()),
            options,
        )
        .await
        .expect("admin"),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = tokio::spawn({
        let admin = admin.clone();
        let written = written.clone();
        async move {
            let (mut ok, mut failed, mut longest) = (0, Vec::new(), Duration::ZERO);
            let mut n = 0;
            while !*stopped.borrow() {
                let started = Instant::now();
                let t = keel_client::NewTopic::new(format!("w-{n}"))
                    .partitions(1)
                    .replication_factor(1);
                // A retry after a lost answer may find the topic made by the first attempt.
                let exists = |e: &keel_client::ApiError| {
                    e.code == keel_client::ErrorCode::TopicAlreadyExists
                };
                match admin.create_topics(&[t], false).await {
                    Ok(r) if r[0].error.as_ref().is_none_or(exists) => {
                        ok += 1;
                        written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(r) => failed.push(format!("{:?}", r[0].error)),
                    Err(e) => failed.push(e.to_string()),
                }
                longest = longest.max(started.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok, failed, longest)
        }
    });

    let (ok, _, err) = k.run(&["quorum", "add-voter", "2@127.0.0.1:1"]);
    assert!(!ok && err.contains("DUPLICATE_VOTER"), "{err}");
    let addr = c.node(4).internal.to_string();
    let added = k.json(&["quorum", "add-voter", &format!("4@{addr}")]);
    assert_eq!(added["voters"], serde_json::json!([1, 2, 3, 4]), "{added}");
    let q = k.json(&["quorum", "describe"]);
    assert_eq!(q["voters"].as_array().map(Vec::len), Some(4), "{q}");

    // Remove the active controller itself: it steps down and the others go on.
    let leader = q["leader_id"].as_i64().expect("leader") as i32;
    let removed = k.json(&["quorum", "remove-voter", &leader.to_string()]);
    let left = removed["voters"].as_array().expect("voters").clone();
    assert_eq!(left.len(), 3, "{removed}");
    assert!(!left.contains(&serde_json::json!(leader)), "{removed}");
    let rest: Vec<u32> = (1..=4).filter(|n| *n != leader as u32).collect();
    let k = cli(&c, &rest);
    let q = eventually(
        READY,
        "a new leader among the remaining voters",
        async || {
            let (ok, out, _) = k.run(&["quorum", "describe", "--output", "json"]);
            let q: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
            let l = q["leader_id"].as_i64()? as i32;
            (l != leader && q["voters"].as_array()?.len() == 3).then_some(q)
        },
    )
    .await;
    // The removed node is a broker too: it stays a learner and keeps following the metadata.
    let learners = q["learners"].as_array().expect("learners");
    assert!(learners.iter().any(|l| l["node_id"] == leader), "{q}");
    k.ok(&["topic", "create", "after-removal", "-p", "1", "-r", "1"]);
    let removed_node = cli(&c, &[leader as u32]);
    eventually(
        READY,
        "the removed node sees a topic made after",
        async || {
            let (ok, _, _) = removed_node.run(&["topic", "describe", "after-removal"]);
            ok.then_some(())
        },
    )
    .await;
    c.kill(leader as u32);
    let before = written.load(std::sync::atomic::Ordering::Relaxed);
    eventually(READY, "writes after the old leader is gone", async || {
        (written.load(std::sync::atomic::Ordering::Relaxed) >= before + 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.send_replace(true);
    let (written, failed, longest) = writer.await.expect("writer");
    eprintln!(
        "voters now {}; {written} topics created meanwhile, longest write {longest:?}",
        q["voters"]
    );
    assert!(failed.is_empty(), "writes failed: {failed:?}");
    assert!(written > before, "writes went on: {written}");
    let (ok, _, err) = k.run(&["quorum", "remove-voter", &leader.to_string()]);
    assert!(!ok && err.contains("VOTER_NOT_FOUND"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaders_return_to_their_preferred_replicas_on_their_own() {
    let mut c = TestCluster::start(Spec {
        env: vec![(
            "KEEL_LEADER_IMBALANCE_CHECK_INTERVAL_MS".into(),
            "2000".into(),
        )],
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_topic(&c).await;
    let preferred = |t: &keel_proto::v1::TopicMetadata| {
        t.partitions
            .iter()
            .all(|p| p.leader_id == p.replicas.first().copied())
    };
    c.kill(3);
    eventually(READY, "broker 3 leads nothing", async || {
        let m = metadata(&c, 1).await;
        let t = topics_by_name(&m).get("events")?.clone();
        t.partitions
            .iter()
            .all(|p| p.leader_id != Some(3))
            .then_some(())
    })
    .await;
    c.start_node(3);
    wait_healthy(&c, READY).await;
    eventually(
        READY,
        "every partition led by its preferred replica",
        async || {
            let m = metadata(&c, 1).await;
            preferred(topics_by_name(&m).get("events")?).then_some(())
        },
    )
    .await;
}
