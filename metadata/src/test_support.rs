//! Helpers shared by the multi-node tests, over the in-process `Router` (`cluster_test.rs`)
//! and over gRPC (`network_test.rs`): the Raft config, condition waits and metadata writes.

use std::path::Path;
use std::time::Duration;

use openraft::network::RaftNetworkFactory;
use openraft::{Config, SnapshotPolicy, StorageError};

use crate::controller::{self, RegisterBrokerRequest, Registration};
use crate::image::MetadataImage;
use crate::records::*;
use crate::store::{
    self, MetadataNode, MetadataRaft, MetadataRequest, MetadataResponse, NodeId, StartError,
    TypeConfig,
};

/// Bound on every wait: generous, since tests share a loaded machine.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A Raft config with short timers and a small snapshot policy.
pub(crate) fn config() -> Config {
    Config {
        cluster_name: "keel-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        // Small, so that a few writes build a snapshot and purge the log behind it.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    }
}

/// Starts node `id` on `dir` with the transport `network()` builds. A node stopped earlier in
/// this process may still hold the RocksDB lock for a moment: `raft.shutdown()` joins
/// openraft's core task but not its state machine worker, which drops the store's handle when
/// it notices. So this retries while the lock is held, up to [`WAIT`].
pub(crate) async fn start_node<N>(
    id: NodeId,
    dir: &Path,
    config: Config,
    network: impl Fn() -> N,
) -> MetadataNode
where
    N: RaftNetworkFactory<TypeConfig>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match store::start(id, dir, config.clone(), network()).await {
            Ok(node) => return node,
            Err(StartError::Storage(e))
                if is_lock_held(&e) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("start node {id}: {e}"),
        }
    }
}

fn is_lock_held(e: &StorageError<NodeId>) -> bool {
    // RocksDB reports it only in its message.
    e.to_string().contains("lock hold by current process")
}

/// Waits until `raft` sees a leader other than `not`, and returns it.
pub(crate) async fn leader(raft: &MetadataRaft, not: Option<NodeId>) -> NodeId {
    let m = raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.current_leader.is_some_and(|l| Some(l) != not),
            "a leader is elected",
        )
        .await
        .expect("leader elected");
    m.current_leader.expect("checked")
}

/// Proposes `records` on `leader` and waits until they are committed and applied; every record
/// must apply.
pub(crate) async fn write(leader: &MetadataRaft, records: Vec<Record>) -> MetadataResponse {
    let resp = leader
        .client_write(MetadataRequest { records })
        .await
        .expect("write committed");
    assert!(
        resp.data.refused.is_empty(),
        "refused: {:?}",
        resp.data.refused
    );
    resp.data
}

/// Waits until every node's image has applied `offset`.
pub(crate) async fn converge<'a>(
    nodes: impl IntoIterator<Item = (&'a NodeId, &'a MetadataNode)>,
    offset: u64,
) {
    for (id, node) in nodes {
        let mut view = node.view.clone();
        view.wait_for_offset(offset, WAIT)
            .await
            .unwrap_or_else(|e| panic!("node {id} did not reach offset {offset}: {e}"));
    }
}

/// The records that register broker `id` (a fresh incarnation) on `image`.
pub(crate) fn register(id: BrokerId, image: &MetadataImage) -> Vec<Record> {
    let req = RegisterBrokerRequest {
        broker_id: id,
        incarnation_id: IncarnationId(1000 + id as u128),
        endpoints: BrokerEndpoints {
            client: Endpoint {
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
            },
            internal: Endpoint {
                host: "127.0.0.1".into(),
                port: 9100 + id as u16,
            },
        },
        rack: None,
    };
    match controller::register_broker(image, &req, false, 1).expect("register") {
        Registration::Records(r) => r,
        Registration::Existing(_) => panic!("fresh broker"),
    }
}
