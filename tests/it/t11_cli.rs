//! The `keel` CLI against a real three-node cluster: every topic verb, `cluster describe` and
//! `quorum describe`, as tables and as JSON, with a dead bootstrap address first, and refused
//! requests that print one error line and exit non-zero.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keel_tests::cluster::{keeld_path, Spec, TestCluster};
use serde_json::Value;

fn keel_path() -> PathBuf {
    keeld_path().with_file_name("keel")
}

pub(crate) struct Cli {
    pub(crate) bootstrap: String,
}

impl Cli {
    pub(crate) fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(keel_path())
            .arg("--bootstrap")
            .arg(&self.bootstrap)
            .args(args)
            .output()
            .expect("run keel");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "keel {args:?} failed: {err}");
        out
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("one JSON document")
    }

    /// Retries `args` until it succeeds (the cluster may still be electing).
    fn eventually_ok(&self, args: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (ok, out, err) = self.run(args);
            if ok {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "keel {args:?} kept failing: {err}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn unfenced_brokers(cluster: &Value) -> usize {
    cluster["brokers"]
        .as_array()
        .map_or(0, |b| b.iter().filter(|b| b["state"] == "unfenced").count())
}

#[test]
fn topic_cluster_and_quorum_verbs_work_end_to_end() {
    assert!(
        Path::new(&keel_path()).is_file(),
        "keel binary missing: {}",
        keel_path().display()
    );
    let c = TestCluster::start(Spec::default());
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cli = Cli {
        bootstrap: format!("{dead},{},{}", c.node(2).client, c.node(3).client),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let describe = || {
        let (ok, out, _) = cli.run(&["cluster", "describe", "--output", "json"]);
        ok.then(|| serde_json::from_str::<Value>(&out).expect("JSON"))
    };
    while describe().is_none_or(|d| unfenced_brokers(&d) < 3) {
        assert!(Instant::now() < deadline, "brokers never all unfenced");
        std::thread::sleep(Duration::from_millis(200));
    }

    cli.eventually_ok(
        &[
            "topic",
            "create",
            "orders",
            "-p",
            "3",
            "-r",
            "3",
            "--config",
            "retention.ms=60000",
        ],
        Duration::from_secs(30),
    );
    let list = cli.json(&["topic", "list"]);
    let orders = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .expect("listed");
    assert_eq!(orders["partitions"], 3);
    assert_eq!(orders["replication_factor"], 3);

    let d = cli.json(&["topic", "describe", "orders"]);
    assert_eq!(d["configs"]["retention.ms"], "60000");
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for p in parts {
        assert_eq!(p["replicas"].as_array().unwrap().len(), 3);
        assert_eq!(p["isr"].as_array().unwrap().len(), 3);
        assert!(p["leader"].is_number());
    }
    let table = cli.ok(&["topic", "describe", "orders"]);
    assert!(
        table.contains("PARTITION") && table.contains("LEADER"),
        "{table}"
    );

    cli.ok(&[
        "topic",
        "alter",
        "orders",
        "--config",
        "cleanup.policy=compact",
        "--delete-config",
        "retention.ms",
    ]);
    cli.ok(&["topic", "add-partitions", "orders", "-p", "5"]);
    let d = cli.json(&["topic", "describe", "orders"]);
    assert_eq!(d["partitions"].as_array().unwrap().len(), 5);
    assert_eq!(d["configs"]["cleanup.policy"], "compact");
    assert!(d["configs"].get("retention.ms").is_none());

    let cluster = cli.json(&["cluster", "describe"]);
    assert_eq!(unfenced_brokers(&cluster), 3);
    assert!(cluster["controller_id"].is_number());
    let quorum = cli.json(&["quorum", "describe"]);
    assert_eq!(quorum["voters"].as_array().unwrap().len(), 3);
    assert_eq!(quorum["leader_id"], cluster["controller_id"]);
    let table = cli.ok(&["quorum", "describe"]);
    assert!(table.contains("LAG"), "{table}");

    // Refusals: one line, non-zero exit, nothing changed.
    for (args, code) in [
        (vec!["topic", "create", "bad name!"], "INVALID_TOPIC"),
        (vec!["topic", "create", "orders"], "TOPIC_ALREADY_EXISTS"),
        (
            vec!["topic", "create", "big", "-r", "4"],
            "INVALID_REPLICATION_FACTOR",
        ),
        (
            vec!["topic", "create", "cfg", "--config", "no.such=1"],
            "INVALID_CONFIG",
        ),
        (
            vec!["topic", "add-partitions", "orders", "-p", "2"],
            "INVALID_PARTITIONS",
        ),
        (
            vec!["topic", "delete", "missing"],
            "UNKNOWN_TOPIC_OR_PARTITION",
        ),
    ] {
        let (ok, out, err) = cli.run(&args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(code), "{args:?}: {err} should name {code}");
    }
    let names: Vec<String> = cli
        .json(&["topic", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["orders".to_owned()]);

    cli.ok(&["topic", "delete", "orders"]);
    assert!(cli.json(&["topic", "list"]).as_array().unwrap().is_empty());
}

/// `keeld --dev` is a one-node cluster that needs no flags, and `keel` finds it with no
/// `--bootstrap` (both default to 127.0.0.1:9292).
#[test]
fn keeld_dev_is_a_ready_one_node_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Command::new(keeld_path())
        .arg("--dev")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start keeld --dev");
    let keel = |args: &[&str]| {
        Command::new(keel_path())
            .args(args)
            .env_remove("KEEL_BOOTSTRAP")
            .output()
            .expect("run keel")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let created = loop {
        let out = keel(&["topic", "create", "dev-topic", "-p", "2"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let described = keel(&["topic", "describe", "dev-topic", "--output", "json"]);
    // SAFETY: SIGTERM to the child we started: a clean stop.
    unsafe { libc::kill(dev.id() as i32, libc::SIGTERM) };
    let status = dev.wait().expect("keeld exits");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let d: Value = serde_json::from_slice(&described.stdout).expect("JSON");
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(2));
    assert!(status.success(), "keeld --dev exited with {status}");
    assert!(dir.path().join(".keel-dev/data/metadata").is_dir());
}
