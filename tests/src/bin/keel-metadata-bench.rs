//! Benchmarks the metadata quorum on a real three-node cluster of `keeld` processes:
//! topic creations committed per second (one client and several concurrent clients), and the
//! time from `kill -9` of the active controller to the next successful metadata write.
//!
//! ```text
//! cargo build --release -p keel-broker -p keel-tests
//! KEELD=target/release/keeld target/release/keel-metadata-bench [--topics N] [--clients C]
//!     [--failovers F] [--output json]
//! ```

use std::time::{Duration, Instant};

use comfy_table::{presets, Table};
use indicatif::{ProgressBar, ProgressStyle};
use keel_proto::v1::admin_client::AdminClient;
use keel_proto::v1::cluster_client::ClusterClient;
use keel_proto::v1::*;
use keel_tests::cluster::{Spec, TestCluster};
use tonic::transport::Channel;

struct Options {
    topics: usize,
    clients: usize,
    failovers: usize,
    json: bool,
}

fn options() -> Options {
    let mut o = Options {
        topics: 2000,
        clients: 8,
        failovers: 5,
        json: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--topics" => o.topics = num("--topics"),
            "--clients" => o.clients = num("--clients"),
            "--failovers" => o.failovers = num("--failovers"),
            "--output" => o.json = it.next().map(String::as_str) == Some("json"),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn channel(c: &TestCluster, id: u32) -> Channel {
    Channel::from_shared(c.client_url(id))
        .expect("url")
        .connect_lazy()
}

async fn leader(c: &TestCluster, ask: &[u32]) -> u32 {
    loop {
        for id in ask {
            let mut client = ClusterClient::new(channel(c, *id));
            if let Ok(r) = client.describe_quorum(DescribeQuorumRequest {}).await {
                if let Some(l) = r.into_inner().leader_id {
                    return l as u32;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a one-partition topic with `rf` replicas.
async fn create(admin: &mut AdminClient<Channel>, name: String, rf: i32) -> Result<(), Error> {
    let t = CreatableTopic {
        name,
        num_partitions: Some(1),
        replication_factor: Some(rf),
        ..Default::default()
    };
    let r = admin
        .create_topics(CreateTopicsRequest {
            topics: vec![t],
            timeout_ms: 0,
            validate_only: false,
        })
        .await
        .map_err(|s| Error::new(ErrorCode::NotController, s.message()))?
        .into_inner();
    match r.topics.into_iter().next().and_then(|t| t.error) {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {per_sec}").expect("template"),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Creates `n` topics with `clients` concurrent clients on the leader; returns creations/s.
async fn creation_rate(c: &TestCluster, on: u32, prefix: &str, n: usize, clients: usize) -> f64 {
    let pb = bar(n, &format!("create topics ({clients} clients)"));
    let start = Instant::now();
    let per = n / clients;
    let tasks: Vec<_> = (0..clients)
        .map(|k| {
            let mut admin = AdminClient::new(channel(c, on));
            let (prefix, pb) = (prefix.to_owned(), pb.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    create(&mut admin, format!("{prefix}-{k}-{i}"), 3)
                        .await
                        .expect("create");
                    pb.inc(1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    pb.finish_and_clear();
    (per * clients) as f64 / start.elapsed().as_secs_f64()
}

/// Kills the active controller and measures until a write through a survivor succeeds.
async fn failover(c: &mut TestCluster, round: usize) -> Duration {
    let ids = c.ids();
    let old = leader(c, &ids).await;
    let survivor = ids
        .iter()
        .copied()
        .find(|id| *id != old)
        .expect("a survivor");
    let mut admin = AdminClient::new(channel(c, survivor));
    c.kill(old);
    let start = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        // One replica: the killed broker may be fenced meanwhile; the write is what is measured.
        match create(&mut admin, format!("failover-{round}-{i}"), 1).await {
            Ok(()) => break,
            Err(e) if e.retriable => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("{}", e.message),
        }
    }
    let took = start.elapsed();
    c.start_node(old);
    // Let the restarted node rejoin before the next round.
    let mut client = ClusterClient::new(channel(c, old));
    while client
        .describe_cluster(DescribeClusterRequest {})
        .await
        .map(|r| {
            r.into_inner()
                .brokers
                .iter()
                .filter(|b| b.state == BrokerState::Unfenced as i32)
                .count()
        })
        .unwrap_or(0)
        < 3
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    took
}

#[tokio::main]
async fn main() {
    let o = options();
    let mut c = TestCluster::start(Spec {
        session_timeout_ms: 9000,
        heartbeat_interval_ms: 2000,
        ..Spec::default()
    });
    let ids = c.ids();
    let on = leader(&c, &ids).await;
    // Warm up and wait until the brokers are unfenced (RF 3 needs all three).
    let mut admin = AdminClient::new(channel(&c, on));
    while create(&mut admin, "warmup".into(), 3).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let serial = creation_rate(&c, on, "serial", o.topics / 4, 1).await;
    let parallel = creation_rate(&c, on, "parallel", o.topics, o.clients).await;
    let mut failovers = Vec::new();
    let pb = bar(o.failovers, "kill -9 the active controller");
    for round in 0..o.failovers {
        failovers.push(failover(&mut c, round).await);
        pb.inc(1);
    }
    pb.finish_and_clear();
    failovers.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let median = failovers.get(failovers.len() / 2).map(ms).unwrap_or(0.0);
    let worst = failovers.last().map(ms).unwrap_or(0.0);
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "topic_creations_per_sec_1_client": serial,
                "topic_creations_per_sec": parallel,
                "clients": o.clients,
                "failover_ms_median": median,
                "failover_ms_max": worst,
                "failovers": failovers.iter().map(ms).collect::<Vec<_>>(),
            })
        );
        return;
    }
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(vec!["MEASURE", "VALUE"]);
    t.add_row(vec![
        "topic creations/s, 1 client".to_owned(),
        format!("{serial:.0}"),
    ]);
    t.add_row(vec![
        format!("topic creations/s, {} clients", o.clients),
        format!("{parallel:.0}"),
    ]);
    t.add_row(vec![
        format!(
            "kill -9 controller → next write, median of {}",
            failovers.len()
        ),
        format!("{median:.0} ms"),
    ]);
    t.add_row(vec![
        "kill -9 controller → next write, max".to_owned(),
        format!("{worst:.0} ms"),
    ]);
    println!("{t}");
}
