//! `keeld` refuses bad configuration at start-up with a message that names the key, and exits
//! non-zero without touching its data directory.
//!
//! Being an integration test of keel-broker, this file also makes `cargo test --workspace`
//! build the `keeld` binary that the multi-node tests of keel-tests start.

use std::process::Command;

/// Flags, environment, and what the error must mention.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

fn keeld(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keeld"));
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run keeld");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

#[test]
fn bad_flags_and_values_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cases: Vec<Case> = vec![
        (
            vec![
                "--data-dir",
                data,
                "--roles",
                "leader",
                "--controller-voters",
                "1@127.0.0.1:1",
            ],
            vec![],
            "roles",
        ),
        (
            vec!["--data-dir", data, "--controller-voters", "1@nowhere"],
            vec![],
            "controller_voters",
        ),
        (
            vec![
                "--data-dir",
                data,
                "--node-id",
                "2",
                "--controller-voters",
                "1@127.0.0.1:1",
            ],
            vec![],
            "not a voter",
        ),
        (
            vec!["--data-dir", data, "--config", "/no/such/keeld.toml"],
            vec![],
            "not found",
        ),
        (
            vec!["--data-dir", data, "--controller-voters", "1@127.0.0.1:1"],
            vec![("KEEL_BROKER_HEARTBEAT_INTERVAL_MS", "0")],
            "broker_heartbeat_interval_ms",
        ),
    ];
    for (args, env, needle) in cases {
        let (ok, text) = keeld(&args, &env);
        assert!(!ok, "{args:?} started");
        assert!(
            text.contains(needle),
            "{args:?}: {text:?} should mention {needle}"
        );
    }
    assert!(!std::path::Path::new(data).exists(), "nothing was created");
}

#[test]
fn a_taken_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, text) = keeld(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &addr,
            "--controller-voters",
            "1@127.0.0.1:1",
        ],
        &[],
    );
    assert!(!ok);
    assert!(text.contains("listen") && text.contains(&addr), "{text}");
}

#[test]
fn print_config_shows_each_value_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keeld.toml");
    std::fs::write(
        &file,
        "rack = \"zone-a\"\nreplica_lag_time_max_ms = 12000\n",
    )
    .unwrap();
    let (ok, text) = keeld(
        &[
            "--dev",
            "--config",
            file.to_str().unwrap(),
            "--node-id",
            "1",
            "--print-config",
        ],
        &[
            ("KEEL_REPLICA_LAG_TIME_MAX_MS", "15000"),
            ("KEEL_NUM_PARTITIONS", "6"),
        ],
    );
    assert!(ok, "{text}");
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .to_string()
    };
    assert!(line("node_id").ends_with("# flag"), "{text}");
    assert!(
        line("replica_lag_time_max_ms").contains("= 15000"),
        "{text}"
    );
    assert!(
        line("replica_lag_time_max_ms").ends_with("# environment"),
        "{text}"
    );
    assert!(
        line("rack").contains("\"zone-a\"") && line("rack").ends_with("# file"),
        "{text}"
    );
    assert!(
        line("broker_session_timeout_ms").ends_with("# default"),
        "{text}"
    );
    assert!(text.contains("# advertised_host (unset)"), "{text}");
    // The cluster defaults for topics are keys like the others.
    assert!(
        line("num_partitions").starts_with("num_partitions = 6 ")
            && line("num_partitions").ends_with("# environment"),
        "{text}"
    );
    assert!(
        line("auto_create_topics_enable").contains("= false")
            && line("auto_create_topics_enable").ends_with("# default"),
        "{text}"
    );
    let (ok, text) = keeld(
        &["--dev", "--print-config"],
        &[("KEEL_LOG_RETENTION_MS", "0")],
    );
    assert!(!ok && text.contains("log_retention_ms"), "{text}");
    // A bad value is refused the same way as at start-up.
    let (ok, text) = keeld(&["--dev", "--print-config"], &[("KEEL_RACK", "a b")]);
    assert!(!ok && text.contains("rack"), "{text}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keeld"))
        .args([
            "--dev",
            "--log-format",
            "json",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--internal-listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start keeld");
    let stdout = child.stdout.take().expect("stdout");
    let first = BufReader::new(stdout).lines().next();
    let _ = child.kill();
    let _ = child.wait();
    let line = first.expect("a log line").expect("utf-8");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(
        v["timestamp"].is_string() && v["level"].is_string(),
        "{line}"
    );
    assert!(v["fields"]["message"].is_string(), "{line}");
}
