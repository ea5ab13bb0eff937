//! The `keel` binary's usage errors: one line on stderr and a non-zero exit, before any
//! connection. Being an integration test of keel-cli, this file also makes `cargo test
//! --workspace` build the `keel` binary that the multi-node tests of keel-tests run.

use std::process::Command;

fn keel(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env_remove("KEEL_BOOTSTRAP")
        .output()
        .expect("run keel")
}

#[test]
fn usage_errors_are_one_line_and_fail() {
    for args in [
        vec!["topic", "create"],
        vec!["topic", "create", "t", "-p", "many"],
        vec!["topic", "create", "t", "--config", "novalue"],
        vec!["no-such-verb"],
    ] {
        let out = keel(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
}

#[test]
fn an_unreachable_cluster_is_one_line_naming_the_address() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = keel(&["--bootstrap", &closed.to_string(), "topic", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&closed.to_string()), "{err}");
}
