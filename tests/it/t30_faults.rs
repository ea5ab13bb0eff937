//! Fault scenarios on three `keeld` processes, each in its own network namespace (the
//! harness cuts links silently, see `keel_tests::netns`): a partition leader cut off from
//! the other brokers (a minority that holds a leader), the active controller cut off, a
//! partition leader paused past the session timeout, the active controller and another
//! leader killed at once (no quorum until they return), a rolling restart, leaders killed
//! while 1 KiB segments roll constantly, and a seeded random sequence of kills, pauses and
//! cuts. Throughout, four acks=all producers write unique values and a consumer
//! reads along. When the faults stop the cluster must be healthy again (every partition led,
//! every ISR full) within [`HEALTHY_WITHIN`], every acknowledged record present once at its
//! offset in its producer's order, and nothing a consumer read may have disappeared.
//!
//! The random run adds the Rust client's idempotent producer (its records must be present
//! exactly once) and a consumer group with commits (given every acknowledged record at least
//! once, committed offsets never going back). It takes `KEEL_FAULT_SEED` (printed on failure)
//! and `KEEL_FAULT_SECONDS` (default 40); `tests/fault/soak.sh --minutes N` runs it long.
//!
//! Full disks, on a tmpfs (`keel_tests::disk`): a broker-only fourth node whose data
//! directory fills under load (refuses writes, steps aside, returns when space does, no
//! restart), and a log whose RocksDB index alone fills (RocksDB resumes on its own).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_tests::cluster::{Spec, TestCluster};
use keel_tests::workload::{self, check, check_reads, GroupHistory, History, Workload};
use tokio::sync::watch;

use keel_proto::v1::producer_client::ProducerClient;
use keel_proto::v1::*;

use crate::t10_quorum::{
    describe, http_status, metadata, topics_by_name, try_metadata, wait_unfenced,
};
use crate::t21_replication::{
    create_topic, leader_of, read_and_check, start_producers, stop_producers, wait_healthy,
    workload,
};

/// How long a healed cluster may take to have every partition led with a full ISR.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

/// Quick group timings and a small `__consumer_offsets`, for the random run's group.
fn group_env() -> Vec<(String, String)> {
    [
        ("KEEL_GROUP_HEARTBEAT_INTERVAL_MS", "300"),
        ("KEEL_GROUP_SESSION_TIMEOUT_MS", "3000"),
        ("KEEL_OFFSETS_TOPIC_NUM_PARTITIONS", "3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn cluster() -> TestCluster {
    TestCluster::start(Spec {
        netns: true,
        env: group_env(),
        ..Spec::default()
    })
}

/// Producers and a reader running against the cluster.
struct Traffic {
    w: Arc<Workload>,
    stop: watch::Sender<bool>,
    producers: Vec<tokio::task::JoinHandle<History>>,
    reader: tokio::task::JoinHandle<BTreeMap<i32, Vec<(i64, Bytes)>>>,
    reader_stop: watch::Sender<bool>,
}

async fn start(c: &TestCluster) -> Traffic {
    wait_unfenced(c, 1, &c.ids()).await;
    create_topic(c).await;
    let w = workload(c);
    let (stop, producers) = start_producers(&w, 4);
    let (reader_stop, stopped) = watch::channel(false);
    let reader = tokio::spawn(workload::read_along(w.clone(), stopped));
    tokio::time::sleep(Duration::from_secs(2)).await;
    Traffic {
        w,
        stop,
        producers,
        reader,
        reader_stop,
    }
}

/// The id in the values of the idempotent client producer (`p10-<seq>`).
const IDEMPOTENT_ID: u32 = 10;

/// The random run's other writer and readers: the Rust client's idempotent producer (acks=all,
/// five batches in flight) and a consumer group of two members reading along with commits.
struct Clients {
    stop: watch::Sender<bool>,
    producer: tokio::task::JoinHandle<History>,
    group: GroupRun,
}

/// A consumer group reading along ([`workload::consume_in_group`]).
struct GroupRun {
    stop: watch::Sender<bool>,
    history: Arc<std::sync::Mutex<GroupHistory>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_clients(w: &Arc<Workload>) -> Clients {
    let (stop, stopped) = watch::channel(false);
    let writer = w.clone();
    let producer = tokio::spawn(async move {
        let options = keel_client::ProducerOptions {
            // Retry until the delivery timeout, as Kafka's producer does by default.
            retries: u32::MAX,
            ..Default::default()
        };
        let producer = keel_client::Producer::connect(&workload::bootstrap(&writer), options)
            .await
            .expect("the idempotent producer connects");
        let h = workload::produce_with_client(&producer, &writer, IDEMPOTENT_ID, 5, stopped).await;
        producer.close().await;
        h
    });
    let (group_stop, group_stopped) = watch::channel(false);
    let (history, tasks) = workload::consume_in_group(w, "fault-readers", 2, group_stopped);
    Clients {
        stop,
        producer,
        group: GroupRun {
            stop: group_stop,
            history,
            tasks,
        },
    }
}

/// Heals, waits for health, lets traffic run on a little, stops it and runs every check.
/// Returns (acknowledged records, records the reader saw).
async fn finish(c: &TestCluster, t: Traffic) -> (usize, usize) {
    finish_with(c, t, None).await
}

/// [`finish`], with the checks of the idempotent producer and the group when there are some.
async fn finish_with(c: &TestCluster, t: Traffic, clients: Option<Clients>) -> (usize, usize) {
    let healing = Instant::now();
    wait_healthy(c, HEALTHY_WITHIN).await;
    let healed_in = healing.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut histories = stop_producers(t.stop, t.producers).await;
    let group = match clients {
        Some(clients) => {
            clients.stop.send_replace(true);
            let h = clients.producer.await.expect("idempotent producer");
            let sequence_errors: Vec<_> = h
                .client_errors
                .iter()
                .filter(|e| e.contains("SEQUENCE") || e.contains("FENCED"))
                .collect();
            assert!(sequence_errors.is_empty(), "{sequence_errors:?}");
            eprintln!(
                "idempotent producer: {} acknowledged, {} failed deliveries",
                h.acked.len(),
                h.failed
            );
            assert!(h.acked.len() > 100, "the idempotent producer made progress");
            histories.push(h);
            Some(clients.group)
        }
        None => None,
    };
    t.reader_stop.send_replace(true);
    let seen = t.reader.await.expect("reader");
    // `check` fails on any value present twice: for the idempotent producer, a retry written
    // twice (exactly once); for the others a value is never sent twice.
    let logs = read_and_check(&t.w, &histories, check).await;
    let read = check_reads(&seen, &logs).unwrap_or_else(|e| panic!("{e}"));
    let acked: usize = histories.iter().map(|h| h.acked.len()).sum();
    eprintln!("healthy {healed_in:?} after the faults; {acked} acknowledged, {read} read along");
    assert!(acked > 100, "the producers made progress: {acked}");
    if let Some(group) = group {
        check_group_run(group, &histories, &logs).await;
    }
    (acked, read)
}

/// Lets the group read to the end, stops it and checks it (see [`workload::check_group`]).
async fn check_group_run(
    group: GroupRun,
    histories: &[History],
    logs: &BTreeMap<i32, Vec<(i64, Bytes)>>,
) {
    let caught_up = crate::t10_quorum::eventually(
        HEALTHY_WITHIN,
        "the group given every acknowledged record",
        async || {
            let h = group.history.lock().expect("group history");
            (workload::undelivered(histories, &h).is_empty() || !h.member_errors.is_empty())
                .then_some(())
        },
    );
    caught_up.await;
    // A last commit sample once the members have committed what they read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    group.stop.send_replace(true);
    for task in group.tasks {
        task.await.expect("group member");
    }
    let h = group.history.lock().expect("group history").clone();
    let (delivered, samples) =
        workload::check_group(histories, &h, logs).unwrap_or_else(|e| panic!("group: {e}"));
    eprintln!(
        "group: {delivered} deliveries checked against the log, every acknowledged record \
         delivered; {samples} commit samples, no commit lost by the end; {} retriable poll errors",
        h.retried
    );
}

async fn leader_of_partition(c: &TestCluster, on: u32, partition: i32) -> Option<u32> {
    let m = metadata(c, on).await;
    let t = topics_by_name(&m).get("events")?.clone();
    leader_of(&t, partition)
}

async fn active_controller(c: &TestCluster, on: u32) -> Option<u32> {
    describe(c, on).await?.controller_id.map(|id| id as u32)
}

/// Waits until node `on` names a leader of partition 0 other than `old`.
async fn new_leader(c: &TestCluster, on: u32, old: u32, within: Duration) -> u32 {
    crate::t10_quorum::eventually(within, "a new leader", async || {
        leader_of_partition(c, on, 0).await.filter(|l| *l != old)
    })
    .await
}

fn others(of: u32) -> Vec<u32> {
    [1, 2, 3].into_iter().filter(|id| *id != of).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_the_other_brokers_is_replaced_and_nothing_acked_is_lost() {
    let c = cluster();
    let t = start(&c).await;
    let leader = leader_of_partition(&c, 1, 0)
        .await
        .expect("partition 0 led");
    c.net().partition(&[leader]);
    let elsewhere = others(leader)[0];
    let moved = new_leader(&c, elsewhere, leader, Duration::from_secs(20)).await;
    assert_ne!(moved, leader);
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.net().heal();
    finish(&c, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_active_controller_is_replaced_and_the_cluster_goes_on() {
    let c = cluster();
    let t = start(&c).await;
    let controller = active_controller(&c, 1)
        .await
        .expect("an active controller");
    c.net().partition(&[controller]);
    let elsewhere = others(controller)[0];
    let replaced = crate::t10_quorum::eventually(
        Duration::from_secs(20),
        "a new active controller",
        async || {
            active_controller(&c, elsewhere)
                .await
                .filter(|id| *id != controller)
        },
    )
    .await;
    assert_ne!(replaced, controller);
    // Metadata writes work on the majority side.
    let topic = crate::t10_quorum::topic("during-the-cut", 1, 2);
    crate::t10_quorum::create_until_ok(&c, elsewhere, topic, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.net().heal();
    finish(&c, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_paused_past_its_session_is_fenced_and_acks_nothing_stale() {
    let c = cluster();
    let t = start(&c).await;
    let leader = leader_of_partition(&c, 1, 0)
        .await
        .expect("partition 0 led");
    c.pause(leader);
    let elsewhere = others(leader)[0];
    new_leader(&c, elsewhere, leader, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // It resumes believing it leads; whatever it accepts now must not be acknowledged and
    // then lost (the checker sees every acknowledgement).
    c.resume(leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    finish(&c, t).await;
}

/// A small deterministic generator (xorshift), so a seed replays the same faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One fault of the random run; at most one node is faulty at a time, so a majority stays.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(u32),
    Pause(u32),
    Isolate(u32),
    CutOneWay(u32, u32),
}

fn pick(rng: &mut Rng) -> Fault {
    let node = 1 + rng.below(3) as u32;
    match rng.below(4) {
        0 => Fault::Kill(node),
        1 => Fault::Pause(node),
        2 => Fault::Isolate(node),
        _ => Fault::CutOneWay(node, others(node)[rng.below(2) as usize]),
    }
}

async fn inject(c: &mut TestCluster, fault: Fault, hold: Duration) {
    match fault {
        Fault::Kill(id) => {
            c.kill(id);
            tokio::time::sleep(hold).await;
            c.start_node(id);
        }
        Fault::Pause(id) => {
            c.pause(id);
            tokio::time::sleep(hold).await;
            c.resume(id);
        }
        Fault::Isolate(id) => {
            c.net().partition(&[id]);
            tokio::time::sleep(hold).await;
            c.net().heal();
        }
        Fault::CutOneWay(from, to) => {
            c.net().cut(from, to);
            tokio::time::sleep(hold).await;
            c.net().heal();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_faults_lose_nothing_acknowledged() {
    let seed: u64 = std::env::var("KEEL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let seconds: u64 = std::env::var("KEEL_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    eprintln!("random faults: KEEL_FAULT_SEED={seed} KEEL_FAULT_SECONDS={seconds}");
    // Printed again if the test panics, so a failure names its seed.
    let _reporter = SeedReporter(seed);
    let mut c = cluster();
    let t = start(&c).await;
    let clients = start_clients(&t.w);
    let mut rng = Rng(seed);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut faults = Vec::new();
    while Instant::now() < until {
        let fault = pick(&mut rng);
        let hold = Duration::from_millis(1000 + rng.below(5000));
        faults.push(format!("{fault:?} for {hold:?}"));
        inject(&mut c, fault, hold).await;
        tokio::time::sleep(Duration::from_millis(500 + rng.below(2000))).await;
    }
    eprintln!("faults: {faults:?}");
    finish_with(&c, t, Some(clients)).await;
}

struct SeedReporter(u64);

impl Drop for SeedReporter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("replay with KEEL_FAULT_SEED={}", self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_active_controller_and_another_leader_killed_at_once_come_back_with_nothing_lost() {
    let mut c = cluster();
    let t = start(&c).await;
    let controller = active_controller(&c, 1)
        .await
        .expect("an active controller");
    // A broker other than the controller that leads some partition (any other when none).
    let m = metadata(&c, controller).await;
    let topic = topics_by_name(&m).get("events").cloned().expect("topic");
    let other = (0..6)
        .filter_map(|p| leader_of(&topic, p))
        .find(|l| *l != controller)
        .unwrap_or(others(controller)[0]);
    // Two of three voters gone: no quorum until they return.
    c.kill(controller);
    c.kill(other);
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.start_node(controller);
    c.start_node(other);
    finish(&c, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_nothing() {
    let mut c = cluster();
    let t = start(&c).await;
    for id in [1, 2, 3] {
        let status = c.terminate(id, Duration::from_secs(30));
        assert!(status.success(), "node {id} stopped cleanly: {status}");
        c.start_node(id);
        wait_healthy(&c, HEALTHY_WITHIN).await;
    }
    finish(&c, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaders_killed_while_segments_roll_constantly_lose_nothing() {
    let mut c = cluster();
    let t = start(&c).await;
    // 1 KiB segments (the log's floor): a log rolls every dozen records, so kills land
    // during rolls.
    let admin = keel_client::AdminClient::connect(&crate::t12_client::bootstrap(&c))
        .await
        .expect("admin");
    let change = keel_client::ConfigChange::Set {
        name: "segment.bytes".into(),
        value: "1024".into(),
    };
    admin
        .alter_configs("events", &[change])
        .await
        .expect("segment.bytes changed");
    for round in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let on = 1 + (round % 3) as u32;
        let leader = leader_of_partition(&c, on, round).await.unwrap_or(on);
        c.kill(leader);
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.start_node(leader);
        wait_healthy(&c, HEALTHY_WITHIN).await;
    }
    let rolled = (1..=3).any(|id| {
        std::fs::read_dir(c.data_dir(id).join("logs"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()) > 3)
    });
    assert!(rolled, "segments rolled");
    finish(&c, t).await;
}

/// The broker-only node whose data directory is a small tmpfs in the disk-full test.
const FULL: u32 = 4;

/// One record with acks=all straight to node `on` for `partition`: its offset, or the
/// broker's error (a transport failure comes back as an error with code 0).
async fn produce_to(c: &TestCluster, on: u32, partition: i32, value: &str) -> Result<i64, Error> {
    use keel_proto::v1::partition_produce_data::Data;
    let req = ProduceRequest {
        acks: Acks::All as i32,
        timeout_ms: 10_000,
        topics: vec![TopicProduceData {
            topic: "events".into(),
            partitions: vec![PartitionProduceData {
                partition,
                data: Some(Data::Records(ProducerRecords {
                    records: vec![ProducerRecord {
                        key: None,
                        value: Some(Bytes::from(value.to_owned())),
                        headers: vec![],
                        timestamp: None,
                    }],
                    idempotent_producer: None,
                })),
            }],
        }],
    };
    let mut client = ProducerClient::new(crate::t10_quorum::channel(c, on).await);
    let answer = client.produce(req).await.map_err(|s| Error {
        message: s.to_string(),
        ..Error::default()
    })?;
    let p = answer
        .into_inner()
        .topics
        .pop()
        .and_then(|mut t| t.partitions.pop());
    match p {
        Some(p) if p.error.is_none() => Ok(p.base_offset.unwrap_or(-1)),
        Some(p) => Err(p.error.unwrap_or_default()),
        None => Err(Error::default()),
    }
}

/// Partitions of "events" led by `broker`, and those it only follows.
fn led_and_followed(t: &TopicMetadata, broker: u32) -> (Vec<i32>, Vec<i32>) {
    let id = broker as i32;
    let led = t.partitions.iter().filter(|p| p.leader_id == Some(id));
    let followed = t
        .partitions
        .iter()
        .filter(|p| p.leader_id != Some(id) && p.replicas.contains(&id));
    (
        led.map(|p| p.partition).collect(),
        followed.map(|p| p.partition).collect(),
    )
}

/// Writes one record to every partition through its current leader, retrying until each is
/// acknowledged (so every partition is writable) or `within` passes; the acknowledgements,
/// as a history the checker holds to (values `p99-<seq>`, a producer of their own).
async fn write_everywhere(c: &TestCluster, seq: &mut u64, within: Duration) -> History {
    let mut h = History::default();
    for partition in 0..6 {
        let value = format!("p99-{:08}", *seq);
        *seq += 1;
        let offset = crate::t10_quorum::eventually(within, "partition writable", async || {
            let leader = leader_of_partition(c, 1, partition).await?;
            produce_to(c, leader, partition, &value).await.ok()
        })
        .await;
        h.acked.push(workload::Acked {
            partition,
            offset,
            value: Bytes::from(value),
        });
    }
    h
}

/// Node 4 (a broker only, so the metadata quorum's own store is elsewhere) has its data
/// directory on a 256 MiB tmpfs, filled to the last byte under load. It must refuse writes
/// with a clear, retriable error that changes nothing, ask to be fenced (its leaderships
/// move, it leaves every ISR, and with `min.insync.replicas=2` of RF 3 every partition stays
/// writable), and once the filler is deleted come back on its own, without a restart: probe
/// the disk, be unfenced, catch up and rejoin every ISR. Then the checker, and every replica
/// identical on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_whose_disk_fills_refuses_writes_steps_aside_and_returns_when_space_does() {
    let mut c = TestCluster::start(Spec {
        brokers: 1,
        small_disk: Some((FULL, 256)),
        ..Spec::default()
    });
    let t = start(&c).await;
    let m = metadata(&c, 1).await;
    let events = topics_by_name(&m).get("events").cloned().expect("topic");
    let (led, followed) = led_and_followed(&events, FULL);
    assert!(
        !led.is_empty() && !followed.is_empty(),
        "node {FULL} leads {led:?} and follows {followed:?}: placement should give it both"
    );

    let filled = c.small_disk().fill();
    let full_at = Instant::now();
    // Straight to the full broker at once, before it has stepped aside; 64 KiB, more than
    // the unused end of a segment file's last page.
    let big = format!("refused-on-a-full-disk-{}", "x".repeat(64 << 10));
    let refused = produce_to(&c, FULL, led[0], &big)
        .await
        .expect_err("a full disk refuses the write");
    assert_eq!(refused.code, ErrorCode::StorageError as i32, "{refused:?}");
    assert!(refused.retriable, "{refused:?}");
    let data_dir = c.data_dir(FULL).display().to_string();
    assert!(
        refused.message.contains("No space left on device") && refused.message.contains(&data_dir),
        "the error names the cause and the disk: {}",
        refused.message
    );

    let stepped_aside = crate::t10_quorum::eventually(
        Duration::from_secs(20),
        "the full broker leads nothing and is in no ISR",
        async || {
            let t = topics_by_name(&try_metadata(&c, 1).await?)
                .get("events")?
                .clone();
            let id = FULL as i32;
            let gone = t
                .partitions
                .iter()
                .all(|p| p.leader_id.is_some() && p.leader_id != Some(id) && !p.isr.contains(&id));
            gone.then(|| full_at.elapsed())
        },
    )
    .await;
    let readiness = http_status(c.node(FULL).http, "/readyz").await;
    assert_eq!(
        readiness,
        Some(503),
        "a broker with a full disk is not ready"
    );
    // Every partition takes acks=all writes on the two healthy replicas while the disk is full.
    let mut seq = 0;
    let mut probes = vec![write_everywhere(&c, &mut seq, Duration::from_secs(20)).await];
    tokio::time::sleep(Duration::from_secs(3)).await;

    c.small_disk().free();
    let freed = Instant::now();
    wait_healthy(&c, HEALTHY_WITHIN).await;
    let recovered = freed.elapsed();
    assert!(c.is_running(FULL), "recovered without a restart");
    assert!(
        c.log(FULL)
            .contains("the data directory takes writes again"),
        "{}",
        c.log_tail(FULL)
    );
    probes.push(write_everywhere(&c, &mut seq, Duration::from_secs(20)).await);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut histories = stop_producers(t.stop, t.producers).await;
    t.reader_stop.send_replace(true);
    let seen = t.reader.await.expect("reader");
    let storage_errors: u64 = histories
        .iter()
        .filter_map(|h| h.errors.get("STORAGE_ERROR"))
        .sum();
    for h in &histories {
        assert!(h.non_retriable.is_empty(), "{:?}", h.non_retriable);
    }
    histories.extend(probes);
    let logs = read_and_check(&t.w, &histories, check).await;
    let read = check_reads(&seen, &logs).unwrap_or_else(|e| panic!("{e}"));
    let refused_kept = logs
        .values()
        .flatten()
        .any(|(_, v)| v.starts_with(b"refused-on-a-full-disk"));
    assert!(!refused_kept, "the refused write changed nothing");
    let acked: usize = histories.iter().map(|h| h.acked.len()).sum();
    eprintln!(
        "disk full: filler {} MiB; stepped aside {stepped_aside:?} after the disk filled; \
         healthy {recovered:?} after space returned; {storage_errors} STORAGE_ERROR answers to \
         the producers; {acked} acknowledged, {read} read along",
        filled >> 20
    );
    for line in c.log(FULL).lines().filter(|l| l.contains("data directory")) {
        eprintln!("node {FULL}: {line}");
    }
    let t = wait_healthy(&c, HEALTHY_WITHIN).await;
    crate::t21_replication::assert_replicas_identical(&mut c, &t, &logs);
}

/// A batch of one record with a 1 KiB value `v<n>…`.
fn numbered_batch(n: usize) -> Bytes {
    use keel_storage::batch::{encode, BatchParams, NewRecord};
    let mut value = format!("v{n:08}").into_bytes();
    value.resize(1024, b'.');
    let record = NewRecord {
        timestamp: 1_700_000_000_000 + n as i64,
        key: None,
        value: Some(Bytes::from(value)),
        headers: Vec::new(),
    };
    encode(&BatchParams::default(), &[record]).expect("batch")
}

/// The RocksDB index alone on a full disk (segments elsewhere): RocksDB stops taking writes
/// after the first that fails (its background error) and, once space returns, resumes on
/// its own (its SstFileManager polls the free space), with no reopen. The log refuses
/// appends meanwhile with nothing changed, and afterwards holds exactly what it accepted.
#[test]
fn an_index_on_a_full_disk_refuses_appends_and_resumes_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    // RocksDB resumes only once the free space reaches its memtable size (64 MiB). It also
    // preallocates about as much for its write-ahead log when there is room: open it with
    // little room, so that it runs out of space after a few appends.
    let disk = keel_tests::disk::SmallDisk::mount(&dir.path().join("index"), 128);
    disk.fill_leaving(4 << 20);
    let data = keel_storage::DataDir::open(dir.path()).expect("data dir");
    let config = keel_storage::LogConfig {
        index_interval_bytes: 1,
        ..Default::default()
    };
    let (mut log, _) = data.open_log("t-0", config.clone()).expect("log");
    disk.fill();
    let mut accepted = 0;
    let refused = loop {
        match log.append(&numbered_batch(accepted), 0) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100_000, "the index never ran out of space");
    };
    assert!(
        matches!(refused, keel_storage::LogError::Index(_)),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("No space left on device"),
        "{refused}"
    );
    assert_eq!(
        log.log_end_offset(),
        accepted as i64,
        "the refused append changed nothing"
    );
    assert!(!log.is_poisoned());
    assert!(
        log.append(&numbered_batch(accepted), 0).is_err(),
        "still full"
    );
    assert!(data.probe_writes().is_err(), "the probe sees the full disk");

    disk.free();
    let freed = Instant::now();
    while let Err(e) = log.append(&numbered_batch(accepted), 0) {
        assert!(
            freed.elapsed() < Duration::from_secs(30),
            "RocksDB did not resume within 30 s of space returning: {e}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let resumed = freed.elapsed();
    accepted += 1;
    data.probe_writes().expect("the probe passes");
    for n in accepted..accepted + 10 {
        log.append(&numbered_batch(n), 0).expect("appends go on");
    }
    accepted += 10;
    log.close().expect("close");
    drop(data);
    let data = keel_storage::DataDir::open(dir.path()).expect("reopen");
    let (log, _) = data.open_log("t-0", config).expect("log");
    assert_eq!(log.log_end_offset(), accepted as i64);
    let mut values = Vec::new();
    let mut at = 0;
    while at < log.log_end_offset() {
        let bytes = log.read(at, 1 << 20, i64::MAX).expect("read");
        for b in keel_storage::batch::split(&bytes) {
            let batch = keel_storage::batch::decode(b.expect("batch")).expect("decode");
            at = batch.header.last_offset() + 1;
            values.extend(
                batch
                    .records
                    .into_iter()
                    .map(|r| r.value.unwrap_or_default()),
            );
        }
    }
    assert_eq!(values.len(), accepted);
    for (n, v) in values.iter().enumerate() {
        assert!(v.starts_with(format!("v{n:08}").as_bytes()), "record {n}");
    }
    eprintln!(
        "index disk full: {accepted} appends accepted in all, the index resumed {resumed:?} \
         after space returned"
    );
    drop(log);
    drop(data);
    drop(disk);
}
