//! Consumer groups on three real `keeld` processes: members share a topic's partitions (each
//! owned by one member), a joining member moves only its share while the others keep
//! reading, a killed member's partitions move after the session timeout without skipping a
//! record, the group outlives its coordinator's broker with its commits intact, and offsets
//! reset through the `keel` binary restart reading where asked. Snapshots keep
//! `__consumer_offsets` bounded, and a new coordinator rebuilds from them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_client::{
    AdminClient, GroupConsumer, GroupOptions, NewTopic, OffsetReset, Producer, ProducerOptions,
    ProducerRecord, Subscription, TopicPartition,
};
use keel_tests::cluster::{keeld_path, Spec, TestCluster};
use tokio::sync::watch;

use crate::t10_quorum::{eventually, wait_unfenced, READY};
use crate::t12_client::bootstrap;

const TOPIC_PARTITIONS: i32 = 6;

/// Three brokers with quick group timings and a small internal topic.
pub(crate) fn cluster() -> TestCluster {
    let env = [
        ("KEEL_GROUP_HEARTBEAT_INTERVAL_MS", "300"),
        ("KEEL_GROUP_SESSION_TIMEOUT_MS", "3000"),
        ("KEEL_OFFSETS_TOPIC_NUM_PARTITIONS", "3"),
    ];
    TestCluster::start(Spec {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Spec::default()
    })
}

pub(crate) async fn ready(c: &TestCluster, topic: &str) -> AdminClient {
    wait_unfenced(c, 1, &[1, 2, 3]).await;
    let admin = AdminClient::connect(&bootstrap(c)).await.expect("admin");
    let t = NewTopic::new(topic)
        .partitions(TOPIC_PARTITIONS)
        .replication_factor(3);
    eventually(READY, "topic created", async || {
        let r = admin
            .create_topics(std::slice::from_ref(&t), false)
            .await
            .ok()?;
        match &r[0].error {
            None => Some(()),
            Some(e) if e.code_name() == "TOPIC_ALREADY_EXISTS" => Some(()),
            Some(e) if e.retriable => None,
            Some(e) => panic!("{e}"),
        }
    })
    .await;
    admin
}

/// Writes `values` with acks=all, keyed by value (so they spread over the partitions).
pub(crate) async fn produce(c: &TestCluster, topic: &str, values: impl Iterator<Item = String>) {
    let producer = Producer::connect(&bootstrap(c), ProducerOptions::default())
        .await
        .expect("producer");
    let mut pending = Vec::new();
    for v in values {
        let record = ProducerRecord::new(topic, v.clone()).key(v);
        pending.push(producer.send(record).await.expect("queued"));
    }
    for p in pending {
        p.await.expect("acknowledged");
    }
    producer.close().await;
}

pub(crate) fn options(group: &str) -> GroupOptions {
    let mut o = GroupOptions::new(group);
    o.consumer.auto_offset_reset = OffsetReset::Earliest;
    o.auto_commit_interval = Duration::from_millis(200);
    o
}

/// What one in-process member saw: records (partition, offset, value) and its assignment
/// after every poll.
#[derive(Default)]
pub(crate) struct Seen {
    records: Vec<(i32, i64, String)>,
    assignments: Vec<BTreeSet<i32>>,
}

/// Runs a member that records what it reads until `stop`, then closes it (commit, leave).
pub(crate) fn spawn_member(
    c: &TestCluster,
    group: &str,
    topic: &str,
    instance: Option<&str>,
    stop: watch::Receiver<bool>,
) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut o = options(group);
    o.instance_id = instance.map(str::to_owned);
    let (boot, topic, out) = (bootstrap(c), topic.to_owned(), seen.clone());
    let task = tokio::spawn(async move {
        let mut m = GroupConsumer::connect(&boot, o)
            .await
            .expect("member connects");
        m.subscribe(Subscription::Topics(vec![topic]));
        while !*stop.borrow() {
            let records = match m.poll(Duration::from_millis(200)).await {
                Ok(r) => r,
                Err(e) if e.is_retriable() => continue,
                Err(e) => panic!("member failed: {e}"),
            };
            let mut s = out.lock().unwrap();
            s.records
                .extend(records.iter().map(|r| (r.partition, r.offset, value(r))));
            s.assignments
                .push(m.assignment().iter().map(|tp| tp.partition).collect());
        }
        m.close().await.expect("member closes");
    });
    (seen, task)
}

fn value(r: &keel_client::ConsumerRecord) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

pub(crate) fn values(prefix: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| format!("{prefix}-{i:05}"))
}

/// Every record of `all` seen exactly once over `members`.
fn assert_each_once(members: &[Arc<Mutex<Seen>>], all: &BTreeSet<String>) {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for m in members {
        for (_, _, v) in &m.lock().unwrap().records {
            *count.entry(v.clone()).or_default() += 1;
        }
    }
    let missing: Vec<_> = all
        .iter()
        .filter(|v| !count.contains_key(*v))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "never processed: {missing:?}");
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
}

async fn wait_stable(admin: &AdminClient, group: &str, members: usize) {
    eventually(Duration::from_secs(30), "group stable", async || {
        let d = admin.describe_group(group, false).await.ok()?;
        (d.state == "STABLE" && d.members.len() == members).then_some(())
    })
    .await;
}

/// The members' latest assignments once each holds some and, between them, they hold every
/// partition once. The
/// coordinator counts a partition given when it answers; the members record what they have
/// taken up after each poll.
async fn taken_up(members: &[Arc<Mutex<Seen>>]) -> Vec<BTreeSet<i32>> {
    eventually(
        Duration::from_secs(20),
        "assignments taken up",
        async || {
            let last: Vec<BTreeSet<i32>> = members
                .iter()
                .map(|m| {
                    m.lock()
                        .unwrap()
                        .assignments
                        .last()
                        .cloned()
                        .unwrap_or_default()
                })
                .collect();
            let total: usize = last.iter().map(BTreeSet::len).sum();
            let union: BTreeSet<i32> = last.iter().flatten().copied().collect();
            let everyone = last.iter().all(|a| !a.is_empty());
            (everyone && total == TOPIC_PARTITIONS as usize && union.len() == total).then_some(last)
        },
    )
    .await
}

pub(crate) async fn wait_seen(members: &[Arc<Mutex<Seen>>], n: usize) {
    eventually(Duration::from_secs(60), "records consumed", async || {
        let total: usize = members
            .iter()
            .map(|m| m.lock().unwrap().records.len())
            .sum();
        (total >= n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_share_partitions_and_a_joiner_moves_only_its_share() {
    let c = cluster();
    let admin = ready(&c, "events").await;
    produce(&c, "events", values("a", 600)).await;
    let (stop_tx, stop) = watch::channel(false);
    let mut members = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (seen, task) = spawn_member(&c, "g", "events", None, stop.clone());
        members.push(seen);
        tasks.push(task);
    }
    wait_stable(&admin, "g", 3).await;
    wait_seen(&members, 600).await;
    let d = admin.describe_group("g", false).await.unwrap();
    let owned: Vec<i32> = d
        .members
        .iter()
        .flat_map(|m| m.assignment.iter().map(|tp| tp.partition))
        .collect();
    let distinct: BTreeSet<i32> = owned.iter().copied().collect();
    assert_eq!(owned.len(), 6, "each partition owned once: {owned:?}");
    assert_eq!(distinct.len(), 6);
    assert!(d.members.iter().all(|m| m.assignment.len() == 2), "{d:?}");

    // A fourth member joins while records keep coming.
    let before = taken_up(&members).await;
    let marks: Vec<usize> = members
        .iter()
        .map(|m| m.lock().unwrap().assignments.len())
        .collect();
    let (fourth, task) = spawn_member(&c, "g", "events", None, stop.clone());
    members.push(fourth.clone());
    tasks.push(task);
    produce(&c, "events", values("b", 300)).await;
    wait_stable(&admin, "g", 4).await;
    wait_seen(&members, 900).await;
    taken_up(&members).await;

    let mut moved = 0;
    for (i, m) in members.iter().take(3).enumerate() {
        let s = m.lock().unwrap();
        let after = s.assignments.last().unwrap();
        moved += before[i].difference(after).count();
        // A partition kept through the rebalance was never paused.
        for p in before[i].intersection(after) {
            assert!(
                s.assignments[marks[i]..].iter().all(|a| a.contains(p)),
                "member {i} paused partition {p} it kept"
            );
        }
    }
    let joined = fourth.lock().unwrap().assignments.last().unwrap().len();
    assert!(joined >= 1, "the fourth member got nothing");
    assert_eq!(moved, joined, "only the joiner's share moved");

    stop_tx.send_replace(true);
    for t in tasks {
        t.await.expect("member task");
    }
    let all: BTreeSet<String> = values("a", 600).chain(values("b", 300)).collect();
    assert_each_once(&members, &all);
    // Everything read was committed: no lag left.
    let d = admin.describe_group("g", true).await.unwrap();
    assert_eq!(d.state, "EMPTY");
    assert_eq!(d.offsets.len(), 6);
    assert!(
        d.offsets.iter().all(|o| o.lag == Some(0)),
        "{:?}",
        d.offsets
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_static_member_gets_its_partitions_back_without_a_rebalance() {
    let c = cluster();
    let admin = ready(&c, "static").await;
    let (stop_tx, stop) = watch::channel(false);
    let (_a, a_task) = spawn_member(&c, "s", "static", Some("host-a"), stop.clone());
    let (_b, b_task) = spawn_member(&c, "s", "static", Some("host-b"), stop.clone());
    wait_stable(&admin, "s", 2).await;
    let d = admin.describe_group("s", false).await.unwrap();
    let held = |d: &keel_client::GroupDescription, instance: &str| -> BTreeSet<TopicPartition> {
        d.members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.assignment.iter().cloned().collect())
            .unwrap_or_default()
    };
    let a_held = held(&d, "host-a");
    // host-a leaves temporarily (close sends epoch -2) and comes back under a new member id.
    let (restart_tx, restart) = watch::channel(false);
    let (_a2, a2_task) = {
        stop_tx.send_replace(true);
        a_task.await.unwrap();
        b_task.await.unwrap();
        spawn_member(&c, "s", "static", Some("host-a"), restart.clone())
    };
    let (_b2, b2_task) = spawn_member(&c, "s", "static", Some("host-b"), restart.clone());
    wait_stable(&admin, "s", 2).await;
    let d2 = admin.describe_group("s", false).await.unwrap();
    assert_eq!(held(&d2, "host-a"), a_held);
    assert_eq!(d2.group_epoch, d.group_epoch, "no rebalance");
    restart_tx.send_replace(true);
    a2_task.await.unwrap();
    b2_task.await.unwrap();
}

fn keel(c: &TestCluster, args: &[&str]) -> Command {
    let mut cmd = Command::new(keeld_path().with_file_name("keel"));
    cmd.arg("--bootstrap")
        .arg(bootstrap(c).join(","))
        .args(args);
    cmd
}

fn spawn_cli_consumer(c: &TestCluster, group: &str, topic: &str, out: &std::path::Path) -> Child {
    keel(
        c,
        &[
            "consume",
            topic,
            "--group",
            group,
            "--from-beginning",
            "--timeout-ms",
            "8000",
        ],
    )
    .stdout(std::fs::File::create(out).unwrap())
    .stderr(Stdio::null())
    .spawn()
    .expect("keel consume starts")
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_member_loses_its_partitions_after_the_session_timeout_and_nothing_is_skipped() {
    let c = cluster();
    let admin = ready(&c, "jobs").await;
    produce(&c, "jobs", values("j", 300)).await;
    let dir = tempfile::tempdir().unwrap();
    let (out_a, out_b) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = spawn_cli_consumer(&c, "workers", "jobs", &out_a);
    let mut b = spawn_cli_consumer(&c, "workers", "jobs", &out_b);
    wait_stable(&admin, "workers", 2).await;
    eventually(Duration::from_secs(30), "both consumed", async || {
        (lines(&out_a).len() + lines(&out_b).len() >= 300).then_some(())
    })
    .await;
    // kill -9 one member mid-stream, with more records on the way.
    b.kill().unwrap();
    b.wait().unwrap();
    let killed = Instant::now();
    produce(&c, "jobs", values("k", 300)).await;
    eventually(Duration::from_secs(15), "partitions moved", async || {
        let d = admin.describe_group("workers", false).await.ok()?;
        (d.members.len() == 1 && d.members[0].assignment.len() == 6).then_some(())
    })
    .await;
    let moved_after = killed.elapsed();
    assert!(
        moved_after >= Duration::from_millis(2500),
        "moved before the 3 s session timeout: {moved_after:?}"
    );
    eventually(
        Duration::from_secs(30),
        "survivor read the rest",
        async || {
            let seen: BTreeSet<String> = lines(&out_a).into_iter().chain(lines(&out_b)).collect();
            values("j", 300)
                .chain(values("k", 300))
                .all(|v| seen.contains(&v))
                .then_some(())
        },
    )
    .await;
    a.kill().unwrap();
    a.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_group_outlives_its_coordinators_broker_with_commits_intact() {
    let mut c = cluster();
    let admin = ready(&c, "ledger").await;
    produce(&c, "ledger", values("x", 300)).await;
    let (stop_tx, stop) = watch::channel(false);
    let (m1, t1) = spawn_member(&c, "books", "ledger", None, stop.clone());
    let (m2, t2) = spawn_member(&c, "books", "ledger", None, stop.clone());
    let members = vec![m1, m2];
    wait_seen(&members, 300).await;
    // Every partition's commit has reached its end before the kill.
    eventually(Duration::from_secs(20), "offsets committed", async || {
        let d = admin.describe_group("books", true).await.ok()?;
        (d.offsets.len() == 6 && d.offsets.iter().all(|o| o.lag == Some(0))).then_some(())
    })
    .await;
    let committed_before = admin.group_offsets("books").await.unwrap();
    let (coordinator, _) = admin.find_coordinator("books").await.unwrap();
    c.kill(coordinator as u32);
    produce(&c, "ledger", values("y", 300)).await;
    wait_seen(&members, 600).await;
    let (now, _) = admin.find_coordinator("books").await.unwrap();
    assert_ne!(now, coordinator, "a new coordinator took over");
    let after = admin.group_offsets("books").await.unwrap();
    let before: BTreeMap<_, _> = committed_before.into_iter().collect();
    for (tp, o) in &after {
        assert!(
            *o >= before[tp],
            "{tp:?} went back from {} to {o}",
            before[tp]
        );
    }
    stop_tx.send_replace(true);
    t1.await.unwrap();
    t2.await.unwrap();
    let all: BTreeSet<String> = values("x", 300).chain(values("y", 300)).collect();
    let seen: BTreeSet<String> = members
        .iter()
        .flat_map(|m| {
            m.lock()
                .unwrap()
                .records
                .iter()
                .map(|r| r.2.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(seen, all, "every record read");
    let d = admin.describe_group("books", true).await.unwrap();
    assert!(
        d.offsets.iter().all(|o| o.lag == Some(0)),
        "{:?}",
        d.offsets
    );
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("keel runs");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_offsets_through_the_cli_restarts_reading_where_asked() {
    let c = cluster();
    let admin = ready(&c, "audit").await;
    produce(&c, "audit", values("r", 120)).await;
    let read_all = |max: &str| {
        let out = run_ok(&mut keel(
            &c,
            &[
                "consume",
                "audit",
                "--group",
                "auditors",
                "--from-beginning",
                "-n",
                max,
                "--timeout-ms",
                "5000",
            ],
        ));
        out.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    let reset_command = |how: &[&str]| {
        let mut args = vec!["group", "reset-offsets", "auditors", "--topic", "audit"];
        args.extend_from_slice(how);
        keel(&c, &args)
    };
    let reset = |how: &[&str]| run_ok(&mut reset_command(how));
    assert_eq!(read_all("120").len(), 120);
    // Committed: a second run finds nothing new.
    assert!(read_all("120").is_empty());
    let listed = run_ok(&mut keel(&c, &["group", "list"]));
    assert!(listed.contains("auditors"), "{listed}");
    let described = run_ok(&mut keel(&c, &["group", "describe", "auditors"]));
    assert!(described.contains("HIGH WATERMARK"), "{described}");

    // A dry run changes nothing.
    let dry = reset(&["--to-earliest"]);
    assert!(dry.contains("dry run"), "{dry}");
    assert!(read_all("120").is_empty());
    reset(&["--to-earliest", "--execute"]);
    let again = read_all("120");
    assert_eq!(again.len(), 120, "read again from the start");

    // To an offset: every partition restarts there (or at its end when shorter).
    reset(&["--to-offset", "10", "--execute"]);
    let offsets = admin.group_offsets("auditors").await.unwrap();
    let ends = keel_client::Consumer::connect(&bootstrap(&c), Default::default())
        .await
        .unwrap()
        .list_offsets("audit")
        .await
        .unwrap();
    let expected: usize = ends
        .iter()
        .map(|p| (p.latest - p.latest.min(10)) as usize)
        .sum();
    assert_eq!(offsets.len(), TOPIC_PARTITIONS as usize);
    assert!(offsets.iter().all(|(_, o)| *o <= 10));
    assert_eq!(read_all("1000").len(), expected);

    // Refused while a member is active; deleting too.
    let mut member = spawn_cli_consumer(
        &c,
        "auditors",
        "audit",
        &std::env::temp_dir().join("keel-t24-member"),
    );
    wait_stable(&admin, "auditors", 1).await;
    let refused = reset_command(&["--to-latest", "--execute"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("active member"));
    let refused = keel(&c, &["group", "delete", "auditors"]).output().unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("GROUP_NOT_EMPTY"));
    member.kill().unwrap();
    member.wait().unwrap();
    eventually(Duration::from_secs(15), "member expired", async || {
        let d = admin.describe_group("auditors", false).await.ok()?;
        d.members.is_empty().then_some(())
    })
    .await;
    run_ok(&mut keel(&c, &["group", "delete", "auditors"]));
    let gone = admin.describe_group("auditors", false).await.unwrap_err();
    assert_eq!(gone.code_name(), "GROUP_ID_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_bound_the_offsets_topic_and_a_new_coordinator_reads_them() {
    let env = [
        ("KEEL_GROUP_HEARTBEAT_INTERVAL_MS", "300"),
        ("KEEL_GROUP_SESSION_TIMEOUT_MS", "3000"),
        ("KEEL_OFFSETS_TOPIC_NUM_PARTITIONS", "1"),
        ("KEEL_OFFSETS_SNAPSHOT_BYTES", "4096"),
    ];
    let mut c = TestCluster::start(Spec {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Spec::default()
    });
    let admin = ready(&c, "metrics").await;
    // Many commits of a few groups: far more bytes than a snapshot's worth.
    let zeros: Vec<(TopicPartition, i64)> = (0..TOPIC_PARTITIONS)
        .map(|p| (TopicPartition::new("metrics", p), 0))
        .collect();
    for _ in 0..150 {
        for g in ["m1", "m2", "m3"] {
            admin.alter_group_offsets(g, &zeros).await.expect("commit");
        }
    }
    // The commits name offset 0 (the topic is empty); the last round sets real values.
    produce(&c, "metrics", values("v", 60)).await;
    let ends = keel_client::Consumer::connect(&bootstrap(&c), Default::default())
        .await
        .unwrap()
        .list_offsets("metrics")
        .await
        .unwrap();
    let last: Vec<(TopicPartition, i64)> = ends
        .iter()
        .map(|p| (TopicPartition::new("metrics", p.partition), p.latest))
        .collect();
    for g in ["m1", "m2", "m3"] {
        admin.alter_group_offsets(g, &last).await.expect("commit");
    }
    // The internal partition's log start moved past the early commits, on every replica.
    let internal = keel_client::Consumer::connect(&bootstrap(&c), Default::default())
        .await
        .unwrap();
    let start = eventually(
        Duration::from_secs(20),
        "offsets topic trimmed",
        async || {
            let o = internal.list_offsets("__consumer_offsets").await.ok()?;
            (o[0].earliest > 0).then_some(o[0].earliest)
        },
    )
    .await;
    assert!(start > 100, "log start {start}");
    // A new coordinator (the old one's broker killed) rebuilds the same offsets.
    let (coordinator, _) = admin.find_coordinator("m1").await.unwrap();
    c.kill(coordinator as u32);
    let mut expected = last.clone();
    expected.sort();
    for g in ["m1", "m2", "m3"] {
        let mut got = eventually(
            Duration::from_secs(30),
            "offsets after failover",
            async || admin.group_offsets(g).await.ok(),
        )
        .await;
        got.sort();
        assert_eq!(got, expected, "{g}");
    }
    let (now, _) = admin.find_coordinator("m1").await.unwrap();
    assert_ne!(now, coordinator);
}
