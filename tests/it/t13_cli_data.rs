//! The `keel` data verbs against a real three-node cluster: `produce` from standard input and
//! `consume` back as JSON and text (keys on Kafka's partition, headers, offsets, seeks,
//! `--timeout-ms`), compression and acks flags, `offsets`, `bench produce` and `bench
//! consume`, and refused input (unknown topic, bad `--header`, bad `--acks`, a line without
//! the key separator) that prints one error line and exits non-zero.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use keel_client::partition_for_key;
use keel_tests::cluster::{keeld_path, Spec, TestCluster};
use serde_json::Value;

use crate::t10_quorum::wait_unfenced;
use crate::t12_client::{bootstrap, ready_topic};

struct Cli {
    bootstrap: String,
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    /// Runs `keel` with `args`, `input` on its standard input.
    fn run(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(keeld_path().with_file_name("keel"))
            .arg("--bootstrap")
            .arg(&self.bootstrap)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keel");
        let mut stdin = child.stdin.take().expect("stdin");
        // `keel` may refuse its arguments and exit before reading: a closed pipe is fine.
        if let Err(e) = stdin.write_all(input.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("keel exits");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Output {
            ok: out.status.success(),
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
        }
    }

    fn ok(&self, args: &[&str], input: &str) -> Output {
        let out = self.run(args, input);
        assert!(out.ok, "keel {args:?} failed: {}", out.stderr);
        out
    }

    /// Expects a failure with one line on stderr naming `code`.
    fn refused(&self, args: &[&str], input: &str, code: &str) {
        let out = self.run(args, input);
        assert!(!out.ok, "keel {args:?} succeeded: {}", out.stdout);
        assert_eq!(
            out.stderr.trim_end().lines().count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.starts_with("error: ") && out.stderr.contains(code),
            "{args:?}: {} should name {code}",
            out.stderr
        );
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_offsets_and_bench_round_trip() {
    let c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    ready_topic(&c, "lines", 3).await;
    let cli = Cli {
        bootstrap: bootstrap(&c).join(","),
    };

    // 30 keyed lines with a header: nothing printed, exit 0.
    let input: String = (0..30).map(|i| format!("key-{i}:value {i}\n")).collect();
    let out = cli.ok(
        &[
            "produce",
            "lines",
            "--key-separator",
            ":",
            "--header",
            "src=t13",
        ],
        &input,
    );
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));

    let out = cli.ok(
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--max-messages",
            "30",
            "--format",
            "json",
        ],
        "",
    );
    let records = json_lines(&out.stdout);
    assert_eq!(records.len(), 30);
    let mut offsets: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in &records {
        let key = r["key"].as_str().unwrap();
        let i: usize = key.strip_prefix("key-").unwrap().parse().unwrap();
        assert_eq!(r["topic"], "lines");
        assert_eq!(r["value"], format!("value {i}"));
        assert_eq!(
            r["partition"],
            partition_for_key(key.as_bytes(), 3),
            "{key}"
        );
        assert_eq!(
            r["headers"],
            serde_json::json!([{"key": "src", "value": "t13"}])
        );
        assert!(r["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
        offsets
            .entry(r["partition"].as_i64().unwrap())
            .or_default()
            .push(r["offset"].as_i64().unwrap());
    }
    for (p, mut o) in offsets.clone() {
        o.sort();
        assert_eq!(o, (0..o.len() as i64).collect::<Vec<_>>(), "partition {p}");
    }

    // offsets: per partition, and 30 records in all.
    let out = cli.ok(&["offsets", "lines", "-o", "json"], "");
    let o: Value = serde_json::from_str(&out.stdout).unwrap();
    let parts = o["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for p in parts {
        let n = offsets[&p["partition"].as_i64().unwrap()].len() as i64;
        assert_eq!(
            (p["earliest"].as_i64(), p["latest"].as_i64()),
            (Some(0), Some(n))
        );
    }
    let table = cli.ok(&["offsets", "lines"], "").stdout;
    assert!(
        table.starts_with("TOPIC") && table.contains("EARLIEST"),
        "{table}"
    );

    // One partition from an offset, as text; and `--timeout-ms` ends a follow.
    let (busiest, n) = offsets.iter().max_by_key(|(_, o)| o.len()).unwrap();
    let busiest = busiest.to_string();
    let out = cli.ok(
        &[
            "consume",
            "lines",
            "-p",
            &busiest,
            "--offset",
            "1",
            "--timeout-ms",
            "1500",
        ],
        "",
    );
    assert_eq!(out.stdout.lines().count(), n.len() - 1, "{}", out.stdout);
    assert!(out.stdout.lines().all(|l| l.starts_with("value ")));

    // Compression, acks=1, an explicit partition and -v (where each record went, on stderr).
    let out = cli.ok(
        &[
            "produce",
            "lines",
            "--compression",
            "zstd",
            "--acks",
            "1",
            "-p",
            "2",
            "--key",
            "k",
            "-v",
        ],
        "z1\nz2\n",
    );
    assert_eq!(out.stdout, "");
    // -v also turns on the client's debug log; the record lines are the ones to check.
    let placed: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("line "))
        .collect();
    assert_eq!(placed.len(), 2, "{}", out.stderr);
    assert!(
        placed[0].starts_with("line 1: lines/2 offset "),
        "{}",
        out.stderr
    );
    let out = cli.ok(
        &[
            "consume",
            "lines",
            "-p",
            "2",
            "--from-beginning",
            "--timeout-ms",
            "1500",
        ],
        "",
    );
    assert!(out.stdout.ends_with("z1\nz2\n"), "{}", out.stdout);

    // Refusals: one line, non-zero exit.
    cli.refused(&["produce", "missing"], "x\n", "UNKNOWN_TOPIC_OR_PARTITION");
    cli.refused(
        &["produce", "lines", "--header", "novalue"],
        "x\n",
        "INVALID_ARGUMENT",
    );
    cli.refused(
        &["produce", "lines", "--header", "=v"],
        "x\n",
        "INVALID_ARGUMENT",
    );
    cli.refused(
        &["produce", "lines", "--acks", "2"],
        "x\n",
        "INVALID_ARGUMENT",
    );
    cli.refused(&["produce", "lines", "-p", "9"], "x\n", "INVALID_ARGUMENT");
    cli.refused(
        &["produce", "lines", "--key-separator", ":"],
        "a:b\nno separator\n",
        "line 2",
    );
    cli.refused(
        &["consume", "missing", "--timeout-ms", "500"],
        "",
        "UNKNOWN_TOPIC_OR_PARTITION",
    );
    cli.refused(&["offsets", "missing"], "", "UNKNOWN_TOPIC_OR_PARTITION");

    // bench produce (two producers) and bench consume, as JSON and as a table.
    let out = cli.ok(
        &[
            "bench",
            "produce",
            "--topic",
            "lines",
            "--records",
            "3000",
            "--record-size",
            "64",
            "--producers",
            "2",
            "--acks",
            "1",
            "-o",
            "json",
        ],
        "",
    );
    let b: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (b["kind"].as_str(), b["records"].as_u64()),
        (Some("produce"), Some(3000))
    );
    assert_eq!(b["errors"], 0);
    assert_eq!(b["bytes"], 3000 * 64);
    assert!(b["records_per_s"].as_f64().unwrap() > 0.0);
    let l = &b["latency_ms"];
    assert!(l["p50"].as_f64().unwrap() > 0.0);
    assert!(l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["max"].as_f64());
    let out = cli.ok(
        &[
            "bench",
            "produce",
            "--topic",
            "lines",
            "--records",
            "200",
            "--rate",
            "1000",
        ],
        "",
    );
    assert!(
        out.stdout.contains("P999 MS") && out.stdout.contains("produce"),
        "{}",
        out.stdout
    );
    // The refused input above still wrote its first line ("a:b"): lines before a bad one are
    // sent, as Kafka's console producer does.
    let total = 30 + 2 + 1 + 3000 + 200;
    let out = cli.ok(&["bench", "consume", "--topic", "lines", "-o", "json"], "");
    let b: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(b["kind"], "consume");
    assert_eq!(b["records"], total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keyed_lines_through_a_replicated_topic() {
    let c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    let cli = Cli {
        bootstrap: bootstrap(&c).join(","),
    };
    cli.ok(&["topic", "create", "rep", "-p", "6", "-r", "3"], "");
    let describe = crate::t10_quorum::eventually(
        crate::t10_quorum::READY,
        "every partition led with three ISR members",
        async || {
            let out = cli.run(&["topic", "describe", "rep", "-o", "json"], "");
            let v: Value = serde_json::from_str(&out.stdout).ok()?;
            let parts = v["partitions"].as_array()?.clone();
            let full = parts.len() == 6
                && parts.iter().all(|p| {
                    p["isr"].as_array().is_some_and(|isr| isr.len() == 3) && !p["leader"].is_null()
                });
            full.then_some(v)
        },
    )
    .await;
    assert_eq!(
        describe["partitions"][0]["replicas"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // 10,000 lines over 50 keys; each key's values must come back in the order sent.
    let input: String = (0..10_000).map(|i| format!("k{}:v{i}\n", i % 50)).collect();
    cli.ok(&["produce", "rep", "--key-separator", ":"], &input);
    let out = cli.ok(
        &[
            "consume",
            "rep",
            "--from-beginning",
            "--max-messages",
            "10000",
            "--timeout-ms",
            "30000",
            "--format",
            "json",
        ],
        "",
    );
    let records = json_lines(&out.stdout);
    assert_eq!(records.len(), 10_000);
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &records {
        let key = r["key"].as_str().expect("key").to_string();
        let value = r["value"].as_str().expect("value");
        let p = r["partition"].as_i64().unwrap() as i32;
        assert_eq!(p, partition_for_key(key.as_bytes(), 6), "{key}");
        per_key
            .entry(key)
            .or_default()
            .push(value[1..].parse().expect("v<i>"));
    }
    assert_eq!(per_key.len(), 50);
    for (key, values) in &per_key {
        assert_eq!(values.len(), 200, "{key}");
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "{key}: out of order"
        );
    }

    // Produce-to-consume latency on the replicated topic, as JSON.
    let out = cli.ok(
        &[
            "bench",
            "e2e",
            "--topic",
            "rep",
            "--records",
            "300",
            "--rate",
            "300",
            "--linger-ms",
            "2",
            "-o",
            "json",
        ],
        "",
    );
    let e2e: Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(e2e["kind"], "e2e");
    assert_eq!(e2e["records"], 300);
    assert_eq!(e2e["errors"], 0);
    assert_eq!(e2e["latency_of"], "end_to_end");
    let p50 = e2e["latency_ms"]["p50"].as_f64().unwrap();
    let p95 = e2e["latency_ms"]["p95"].as_f64().unwrap();
    assert!(p50 > 0.0 && p95 >= p50, "{e2e}");

    // Shell completions name the verbs.
    let out = cli.ok(&["completions", "bash"], "");
    assert!(
        out.stdout.contains("complete") && out.stdout.contains("leader"),
        "{}",
        out.stdout
    );
}
