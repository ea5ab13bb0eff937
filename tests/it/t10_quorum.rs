//! The metadata quorum on real `keeld` processes: election, `kill -9` of the active
//! controller, full restart, fencing of a silent broker, controlled shutdown on SIGTERM, a
//! broker-only node following the metadata, and refused requests that change nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keel_proto::v1::admin_client::AdminClient;
use keel_proto::v1::cluster_client::ClusterClient;
use keel_proto::v1::*;
use keel_tests::cluster::{Spec, TestCluster};
use tonic::transport::Channel;

pub(crate) const READY: Duration = Duration::from_secs(60);

pub(crate) async fn channel(c: &TestCluster, id: u32) -> Channel {
    Channel::from_shared(c.client_url(id))
        .expect("url")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .connect_lazy()
}

pub(crate) async fn describe(c: &TestCluster, id: u32) -> Option<DescribeClusterResponse> {
    let mut client = ClusterClient::new(channel(c, id).await);
    client
        .describe_cluster(DescribeClusterRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn quorum(c: &TestCluster, id: u32) -> Option<DescribeQuorumResponse> {
    let mut client = ClusterClient::new(channel(c, id).await);
    let r = client
        .describe_quorum(DescribeQuorumRequest {})
        .await
        .ok()?
        .into_inner();
    r.error.is_none().then_some(r)
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `within` with `what`.
pub(crate) async fn eventually<T, F>(within: Duration, what: &str, mut check: F) -> T
where
    F: AsyncFnMut() -> Option<T>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_of(d: &DescribeClusterResponse, id: u32) -> Option<BrokerState> {
    d.brokers
        .iter()
        .find(|b| b.broker_id == id as i32)
        .and_then(|b| BrokerState::try_from(b.state).ok())
}

/// Waits until node `on` sees every one of `ids` registered and unfenced, and a controller.
pub(crate) async fn wait_unfenced(
    c: &TestCluster,
    on: u32,
    ids: &[u32],
) -> DescribeClusterResponse {
    eventually(READY, "all brokers unfenced", async || {
        let d = describe(c, on).await?;
        let all = ids
            .iter()
            .all(|id| state_of(&d, *id) == Some(BrokerState::Unfenced));
        (all && d.controller_id.is_some() && !d.cluster_id.is_empty()).then_some(d)
    })
    .await
}

pub(crate) async fn create(c: &TestCluster, on: u32, topic: CreatableTopic) -> CreatedTopic {
    let mut admin = AdminClient::new(channel(c, on).await);
    let resp = admin
        .create_topics(CreateTopicsRequest {
            topics: vec![topic],
            timeout_ms: 0,
            validate_only: false,
        })
        .await
        .expect("CreateTopics answered")
        .into_inner();
    resp.topics.into_iter().next().expect("one result")
}

pub(crate) fn topic(name: &str, partitions: i32, rf: i32) -> CreatableTopic {
    CreatableTopic {
        name: name.into(),
        num_partitions: Some(partitions),
        replication_factor: Some(rf),
        ..Default::default()
    }
}

/// Creates a topic through node `on`, retrying retriable errors, and returns how long it took.
pub(crate) async fn create_until_ok(
    c: &TestCluster,
    on: u32,
    t: CreatableTopic,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    eventually(within, "a successful topic creation", async || {
        let r = create(c, on, t.clone()).await;
        match r.error {
            None => Some(()),
            Some(e) if e.retriable => {
                eprintln!("{}: retriable: {}", t.name, e.message);
                None
            }
            Some(e) => panic!("{} refused: {:?}", t.name, e),
        }
    })
    .await;
    start.elapsed()
}

pub(crate) async fn metadata(c: &TestCluster, on: u32) -> MetadataResponse {
    try_metadata(c, on).await.expect("Metadata answered")
}

/// Metadata from node `on`, or `None` while it does not answer (starting up).
pub(crate) async fn try_metadata(c: &TestCluster, on: u32) -> Option<MetadataResponse> {
    let mut client = ClusterClient::new(channel(c, on).await);
    let req = MetadataRequest {
        topics: vec![],
        include_configs: true,
    };
    client.metadata(req).await.ok().map(|r| r.into_inner())
}

pub(crate) fn topics_by_name(m: &MetadataResponse) -> BTreeMap<String, TopicMetadata> {
    m.topics
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_active_controller_elects_another_and_loses_nothing() {
    let mut c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    let q = eventually(READY, "a quorum leader", async || quorum(&c, 2).await).await;
    let leader = q.leader_id.expect("leader") as u32;
    assert_eq!(q.voters.len(), 3);

    // A write sent to a node that does not lead is forwarded.
    let follower = c
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let created = create(&c, follower, topic("before", 3, 3)).await;
    assert!(created.error.is_none(), "{:?}", created.error);

    c.kill(leader);
    let survivor = follower;
    // "Within a few election timeouts" (0.5–1 s each), with room for a loaded test machine.
    let took = create_until_ok(&c, survivor, topic("after", 1, 2), Duration::from_secs(10)).await;
    let q = eventually(READY, "a new leader", async || quorum(&c, survivor).await).await;
    assert_ne!(q.leader_id, Some(leader as i32));
    println!("metadata write available again {took:?} after kill -9 of the active controller");

    let m = metadata(&c, survivor).await;
    let topics = topics_by_name(&m);
    assert_eq!(
        topics["before"].partitions.len(),
        3,
        "committed topic survived"
    );

    // The killed node comes back, catches up and serves again.
    c.start_node(leader);
    eventually(READY, "the restarted node catches up", async || {
        let m = try_metadata(&c, leader).await?;
        topics_by_name(&m).contains_key("after").then_some(())
    })
    .await;
    wait_unfenced(&c, leader, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stop_and_start_keeps_topics_configs_and_registrations() {
    let mut c = TestCluster::start(Spec::default());
    let before_cluster = wait_unfenced(&c, 1, &[1, 2, 3]).await;
    let mut t = topic("kept", 4, 2);
    t.configs.insert("retention.ms".into(), "60000".into());
    create_until_ok(&c, 1, t, READY).await;
    let mut admin = AdminClient::new(channel(&c, 2).await);
    let alter = AlterConfigsRequest {
        resources: vec![AlterConfigsResource {
            resource: Some(ConfigResource {
                r#type: ConfigResourceType::Topic as i32,
                name: "kept".into(),
            }),
            configs: vec![AlterableConfig {
                name: "cleanup.policy".into(),
                op: AlterConfigOp::Set as i32,
                value: "compact".into(),
            }],
        }],
        validate_only: false,
    };
    let r = admin
        .alter_configs(alter)
        .await
        .expect("AlterConfigs")
        .into_inner();
    assert!(r.results[0].error.is_none(), "{:?}", r.results[0].error);
    let before = eventually(READY, "node 3 sees the config change", async || {
        let m = metadata(&c, 3).await;
        (topics_by_name(&m)["kept"]
            .configs
            .get("cleanup.policy")
            .map(String::as_str)
            == Some("compact"))
        .then_some(m)
    })
    .await;

    for id in c.ids() {
        let status = c.terminate(id, Duration::from_secs(30));
        assert!(
            status.success(),
            "node {id} exited with {status}\n{}",
            c.log_tail(id)
        );
    }
    for id in c.ids() {
        c.start_node(id);
    }
    let after_cluster = wait_unfenced(&c, 3, &[1, 2, 3]).await;
    assert_eq!(after_cluster.cluster_id, before_cluster.cluster_id);
    let after = metadata(&c, 3).await;
    let (b, a) = (topics_by_name(&before), topics_by_name(&after));
    assert_eq!(a["kept"].topic_id, b["kept"].topic_id);
    assert_eq!(a["kept"].configs, b["kept"].configs);
    assert_eq!(a["kept"].partitions.len(), 4);
    for p in &a["kept"].partitions {
        assert_eq!(p.replicas.len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_is_fenced_then_unfenced_when_it_returns() {
    let c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    let q = eventually(READY, "a quorum leader", async || quorum(&c, 1).await).await;
    let leader = q.leader_id.expect("leader") as u32;
    let silent = c
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let watcher = c
        .ids()
        .into_iter()
        .find(|id| *id != silent)
        .expect("another node");
    create_until_ok(&c, watcher, topic("t", 6, 3), READY).await;

    c.pause(silent);
    let fenced_at = Instant::now();
    eventually(
        Duration::from_secs(30),
        "the paused broker fenced",
        async || {
            let d = describe(&c, watcher).await?;
            (state_of(&d, silent) == Some(BrokerState::Fenced)).then_some(())
        },
    )
    .await;
    let waited = fenced_at.elapsed();
    assert!(
        waited >= Duration::from_millis(2000),
        "fenced after {waited:?}, before the session timeout"
    );
    let m = metadata(&c, watcher).await;
    for p in &topics_by_name(&m)["t"].partitions {
        assert_ne!(
            p.leader_id,
            Some(silent as i32),
            "a fenced broker leads nothing"
        );
        assert!(
            !p.isr.contains(&(silent as i32)),
            "a fenced broker is in no ISR"
        );
        assert!(p.offline_replicas.contains(&(silent as i32)));
    }

    c.resume(silent);
    wait_unfenced(&c, watcher, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_moves_leadership_away_before_the_broker_exits() {
    let mut c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_until_ok(&c, 1, topic("moving", 6, 3), READY).await;
    let leads = |m: &MetadataResponse, id: u32| {
        topics_by_name(m)["moving"]
            .partitions
            .iter()
            .filter(|p| p.leader_id == Some(id as i32))
            .count()
    };
    let m = eventually(READY, "node 2 leading some partitions", async || {
        let m = metadata(&c, 1).await;
        (leads(&m, 2) > 0).then_some(m)
    })
    .await;
    assert!(leads(&m, 2) > 0);

    let status = c.terminate(2, Duration::from_secs(30));
    assert!(status.success(), "exit status {status}\n{}", c.log_tail(2));
    // Node 1 applies what the controller committed before node 2 exited.
    let m = eventually(
        Duration::from_secs(10),
        "node 1 applies the shutdown",
        async || {
            let d = describe(&c, 1).await?;
            let m = metadata(&c, 1).await;
            (state_of(&d, 2) == Some(BrokerState::Fenced)).then_some(m)
        },
    )
    .await;
    assert_eq!(
        leads(&m, 2),
        0,
        "controlled shutdown moved every leadership away"
    );
    for p in &topics_by_name(&m)["moving"].partitions {
        assert!(p.leader_id.is_some(), "every partition still has a leader");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_registers_and_follows_the_metadata() {
    let c = TestCluster::start(Spec {
        brokers: 1,
        ..Spec::default()
    });
    wait_unfenced(&c, 4, &[1, 2, 3, 4]).await;
    // Writes through the broker-only node reach the controller; its image follows.
    create_until_ok(&c, 4, topic("wide", 4, 4), READY).await;
    let m = eventually(READY, "node 4 sees the topic", async || {
        let m = metadata(&c, 4).await;
        topics_by_name(&m).contains_key("wide").then_some(m)
    })
    .await;
    assert_eq!(topics_by_name(&m)["wide"].partitions[0].replicas.len(), 4);
    let q = eventually(READY, "quorum through node 4", async || quorum(&c, 4).await).await;
    assert_eq!(q.voters.len(), 3, "node 4 is not a voter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_requests_are_refused_and_change_nothing() {
    let c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_until_ok(&c, 1, topic("exists", 1, 1), READY).await;
    // Node 2 answers below: compare with its image once it has the topic.
    let before = eventually(READY, "node 2 knows the topic", async || {
        let m = metadata(&c, 2).await;
        topics_by_name(&m).contains_key("exists").then_some(m)
    })
    .await;

    let mut unknown_config = topic("cfg", 1, 1);
    unknown_config
        .configs
        .insert("retention.msec".into(), "1".into());
    let mut bad_value = topic("cfg2", 1, 1);
    bad_value
        .configs
        .insert("retention.ms".into(), "soon".into());
    let cases = [
        (topic("bad name!", 1, 1), ErrorCode::InvalidTopic),
        (topic(&"x".repeat(250), 1, 1), ErrorCode::InvalidTopic),
        (topic("..", 1, 1), ErrorCode::InvalidTopic),
        (topic("__internal", 1, 1), ErrorCode::InvalidTopic),
        (topic("exists", 1, 1), ErrorCode::TopicAlreadyExists),
        (
            topic("too-many-replicas", 1, 4),
            ErrorCode::InvalidReplicationFactor,
        ),
        (topic("no-partitions", 0, 1), ErrorCode::InvalidPartitions),
        (unknown_config, ErrorCode::InvalidConfig),
        (bad_value, ErrorCode::InvalidConfig),
    ];
    for (t, code) in cases {
        let name = t.name.clone();
        let r = create(&c, 2, t).await;
        let e = r.error.unwrap_or_else(|| panic!("{name} was accepted"));
        assert_eq!(e.code, code as i32, "{name}: {}", e.message);
        assert!(!e.message.is_empty());
    }
    let after = metadata(&c, 2).await;
    assert_eq!(topics_by_name(&after), topics_by_name(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_active_controller_hands_leadership_over() {
    let mut c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_until_ok(&c, 1, topic("t", 3, 3), READY).await;
    let q = eventually(READY, "a quorum leader", async || quorum(&c, 1).await).await;
    let old = q.leader_id.expect("leader") as u32;

    let status = c.terminate(old, Duration::from_secs(30));
    assert!(
        status.success(),
        "exit status {status}\n{}",
        c.log_tail(old)
    );
    assert!(
        c.log_tail(old)
            .contains("controller leadership handed over"),
        "the stopping controller handed over before it exited\n{}",
        c.log_tail(old)
    );
    let other = c
        .ids()
        .into_iter()
        .find(|id| *id != old)
        .expect("another node");
    let q = eventually(READY, "the new leader", async || quorum(&c, other).await).await;
    assert_ne!(q.leader_id, Some(old as i32));
    create_until_ok(&c, other, topic("after", 1, 2), READY).await;
}

/// The status code of `GET path` on `addr`, or `None` when nothing answers.
pub(crate) async fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_registration_and_fencing() {
    let c = TestCluster::start(Spec::default());
    let http = c.node(3).http;
    let ready = async || (http_status(http, "/readyz").await == Some(200)).then_some(());
    eventually(READY, "node 3 ready", ready).await;
    assert_eq!(http_status(http, "/healthz").await, Some(200));
    assert_eq!(http_status(http, "/nope").await, Some(404));

    // Paused past its session timeout, the broker is fenced; resumed, it is unfenced again
    // and ready.
    c.pause(3);
    eventually(Duration::from_secs(30), "node 3 fenced", async || {
        let d = describe(&c, 1).await?;
        (state_of(&d, 3) == Some(BrokerState::Fenced)).then_some(())
    })
    .await;
    c.resume(3);
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    eventually(READY, "node 3 ready again", ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_cannot_reach_a_controller_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (client, internal, http, nowhere) = (free(), free(), free(), free());
    let mut child = std::process::Command::new(keel_tests::cluster::keeld_path())
        .args(["--node-id", "9", "--roles", "broker"])
        .args([
            "--listen",
            &client.to_string(),
            "--internal-listen",
            &internal.to_string(),
        ])
        .args(["--http-listen", &http.to_string(), "--controller-voters"])
        .arg(format!("1@{nowhere}"))
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start keeld");
    let healthy = eventually(READY, "healthz answers", async || {
        http_status(http, "/healthz").await.filter(|s| *s == 200)
    })
    .await;
    let ready = http_status(http, "/readyz").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(healthy, 200);
    assert_eq!(ready, Some(503), "not registered, so not ready");
}
