//! SIGTERM of a partition leader under acks=all load, on three real `keeld` processes: the
//! node moves its leaderships away, flushes, and exits 0 within a bound; no acknowledged
//! record is lost (the workload checker, then every replica's files once the node is back);
//! the producers met only retriable errors (raw gRPC producers record each failure's cause;
//! the Rust client's idempotent producer retries and must deliver every record); and the
//! surviving new leader counts the election on `/metrics`.

use std::time::{Duration, Instant};

use keel_client::{Producer, ProducerOptions};
use keel_tests::cluster::{Spec, TestCluster};
use keel_tests::prom;
use keel_tests::workload::{self, check, History};
use tokio::sync::watch;

use crate::t10_quorum::{eventually, topics_by_name, try_metadata, wait_unfenced, READY};
use crate::t12_client::bootstrap;
use crate::t21_replication::{
    assert_replicas_identical, create_topic, http_get, leader_of, read_and_check, start_producers,
    stop_producers, wait_healthy, workload,
};

/// How long a stopping node may take: controlled shutdown (bounded by the session timeout,
/// 3 s here), the controller hand-over (up to 5 s), flush and close.
const EXIT_BOUND: Duration = Duration::from_secs(20);

/// The high watermark of the workload's partition 0, read from its leader.
async fn hw0(w: &workload::Workload) -> Option<i64> {
    workload::read_partition(w, 0).await.map(|(_, hw)| hw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_of_a_leader_under_acks_all_load_loses_nothing_and_errors_are_retriable() {
    let mut c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    create_topic(&c).await;
    let w = workload(&c);
    let (stop, raw) = start_producers(&w, 3);
    let producer = Producer::connect(&bootstrap(&c), ProducerOptions::default())
        .await
        .expect("client producer");
    let (client_stop, client_stopped) = watch::channel(false);
    let client = {
        let w = w.clone();
        tokio::spawn(async move {
            let h = workload::produce_with_client(&producer, &w, 100, 32, client_stopped).await;
            producer.close().await;
            h
        })
    };
    eventually(READY, "load flowing", async || {
        hw0(&w).await.filter(|hw| *hw > 50).map(|_| ())
    })
    .await;

    let t = wait_healthy(&c, READY).await;
    let victim = leader_of(&t, 0).expect("partition 0 led");
    let began = Instant::now();
    let status = c.terminate(victim, EXIT_BOUND);
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", c.log_tail(victim));
    eprintln!("node {victim} stopped in {:?}", began.elapsed());
    let log = c.log(victim);
    assert!(
        log.contains("controlled shutdown complete"),
        "node {victim} stopped without moving its leaderships first\n{}",
        c.log_tail(victim)
    );

    // The load goes on against the new leader.
    let survivor = c
        .ids()
        .into_iter()
        .find(|id| *id != victim)
        .expect("a survivor");
    let new_leader = eventually(READY, "partition 0 led elsewhere", async || {
        let m = try_metadata(&c, survivor).await?;
        leader_of(topics_by_name(&m).get("events")?, 0).filter(|l| *l != victim)
    })
    .await;
    let at_stop = hw0(&w).await.unwrap_or(0);
    eventually(READY, "records acknowledged after the stop", async || {
        hw0(&w).await.filter(|hw| *hw > at_stop + 50).map(|_| ())
    })
    .await;
    let mut histories = stop_producers(stop, raw).await;
    client_stop.send_replace(true);
    let client: History = client.await.expect("client producer task");

    for (i, h) in histories.iter().enumerate() {
        eprintln!(
            "producer {i}: {} acked, failures {:?}",
            h.acked.len(),
            h.errors
        );
        assert!(
            h.non_retriable.is_empty(),
            "producer {i} saw non-retriable errors: {:?}",
            h.non_retriable
        );
    }
    assert!(
        client.client_errors.is_empty(),
        "client deliveries failed: {:?}",
        client.client_errors
    );
    assert!(!client.acked.is_empty(), "the client delivered");
    histories.push(client);

    // Nothing acknowledged is lost, and the new leader counted its election.
    let served = read_and_check(&w, &histories, check).await;
    let metrics = http_get(c.node(new_leader).http, "/metrics")
        .await
        .expect("metrics");
    let e = prom::parse(&metrics).expect("valid metrics");
    let elections = e.sum("keel_leader_elections_total", &[]).unwrap_or(0.0);
    assert!(
        elections >= 1.0,
        "node {new_leader} counted {elections} elections"
    );

    // The stopped node comes back, catches up, and every replica holds what was served.
    c.start_node(victim);
    let t = wait_healthy(&c, READY).await;
    assert_replicas_identical(&mut c, &t, &served);
}
