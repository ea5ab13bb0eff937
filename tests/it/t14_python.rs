//! The Python examples (`examples/python/`) against a live one-node cluster: a producer and a
//! consumer written with nothing but grpcio and stubs generated from `proto/`, which shows the
//! gRPC API is usable without the Rust client. `scripts/python-examples.sh` sets up their
//! virtualenv on first use (grpcio from PyPI, python3-venv from apt-get when missing),
//! generates the stubs, and fails unless the consumer reads back exactly the records
//! (partition, offset, key, value) the producer had acknowledged.

use std::path::Path;
use std::process::Command;

use keel_tests::cluster::{Spec, TestCluster};

use crate::t10_quorum::{create_until_ok, topic, wait_unfenced, READY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpc_producer_and_consumer_round_trip() {
    let c = TestCluster::start(Spec {
        voters: 1,
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1]).await;
    // Three partitions: the producer picks them by key and the consumer reads them all.
    create_until_ok(&c, 1, topic("py", 3, 1), READY).await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bootstrap = c.node(1).client.to_string();
    // Blocking this runtime thread is fine: the cluster runs in its own processes.
    let out = Command::new("bash")
        .arg("scripts/python-examples.sh")
        .args([bootstrap.as_str(), "py", "300"])
        .current_dir(&root)
        .output()
        .expect("run bash");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "scripts/python-examples.sh {bootstrap} py 300 failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        c.log_tail(1)
    );
}
