//! `deploy/local-cluster.sh` as a user runs it: `up` starts three `keeld` processes on the
//! fixed ports 9292/9392/9492 and waits until they are ready, the `keel` CLI creates a
//! replicated topic and moves records through it, `status` shows every node alive and ready,
//! and `down` stops exactly the processes it started, cleanly. The script and the CLI run in a
//! network namespace of their own (`keel_tests::netns`), so the fixed ports cannot meet
//! another test's `keeld --dev` on 127.0.0.1:9292.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keel_tests::cluster::keeld_path;
use keel_tests::netns::Net;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf()
}

/// Runs `program args` inside namespace `ns` with the script's environment.
fn in_ns(ns: &str, dir: &Path, program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .env("KEEL_LOCAL_DIR", dir)
        .env("KEELD", keeld_path())
        .env_remove("KEEL_BOOTSTRAP");
    match stdin {
        None => cmd.output().expect("runs"),
        Some(input) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("runs");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().expect("finishes")
        }
    }
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{}", pid.trim())).exists()
}

#[test]
fn the_local_cluster_script_starts_a_cluster_the_cli_uses_and_stops_it_cleanly() {
    let net = Net::create(&[1]);
    let ns = net.ns(1);
    let dir = tempfile::tempdir().unwrap();
    let script = repo().join("deploy/local-cluster.sh");
    let keel = keeld_path().with_file_name("keel");
    let bootstrap = "127.0.0.1:9292,127.0.0.1:9392,127.0.0.1:9492";

    let up = ok(in_ns(&ns, dir.path(), &script, &["up"], None), "up");
    assert!(up.contains("ready: --bootstrap"), "{up}");
    let pids: Vec<String> = (1..=3)
        .map(|n| std::fs::read_to_string(dir.path().join(format!("node-{n}.pid"))).unwrap())
        .collect();
    assert!(pids.iter().all(|p| alive(p)));
    let status = ok(in_ns(&ns, dir.path(), &script, &["status"], None), "status");
    let ready = status.lines().filter(|l| l.contains("yes    yes")).count();
    assert_eq!(ready, 3, "{status}");

    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--bootstrap", bootstrap];
        all.extend_from_slice(args);
        in_ns(&ns, dir.path(), &keel, &all, stdin)
    };
    ok(
        cli(&["topic", "create", "local", "-p", "3", "-r", "3"], None),
        "topic create",
    );
    ok(
        cli(&["produce", "local"], Some("one\ntwo\nthree\n")),
        "produce",
    );
    let read = ok(
        cli(
            &[
                "consume",
                "local",
                "--from-beginning",
                "-n",
                "3",
                "--timeout-ms",
                "10000",
            ],
            None,
        ),
        "consume",
    );
    let mut values: Vec<&str> = read.lines().collect();
    values.sort();
    assert_eq!(values, vec!["one", "three", "two"]);
    let described = ok(
        cli(&["topic", "describe", "local", "-o", "json"], None),
        "describe",
    );
    let d: serde_json::Value = serde_json::from_str(&described).unwrap();
    let isr_full = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["isr"].as_array().map(Vec::len) == Some(3));
    assert!(isr_full, "{described}");

    let down = ok(in_ns(&ns, dir.path(), &script, &["down"], None), "down");
    assert!(down.contains("stopped 3 node(s)"), "{down}");
    assert!(pids.iter().all(|p| !alive(p)), "every node exited");
    for n in 1..=3 {
        let log = std::fs::read_to_string(dir.path().join(format!("node-{n}.log"))).unwrap();
        assert!(
            log.contains("node stopped"),
            "node {n} stopped cleanly:\n{log}"
        );
    }
    // A second `down` finds nothing of its own to stop.
    let again = ok(
        in_ns(&ns, dir.path(), &script, &["down"], None),
        "down again",
    );
    assert!(again.contains("stopped 0 node(s)"), "{again}");
}
