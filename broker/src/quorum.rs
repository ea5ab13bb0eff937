//! The controller role of a node: the metadata Raft node on `<data_dir>/metadata`, over the
//! gRPC transport, bootstrapped from `controller_voters`.
//!
//! Bootstrap: a voter whose Raft state is empty initializes the quorum with the configured
//! voters. Every voter does this at its first start, which openraft allows when the membership
//! is the same everywhere (the election decides; no split brain). A node that has state never
//! initializes again, so a restart keeps what was committed. A controller started with
//! `controller_join` (not among the configured voters) starts empty and waits: `keel quorum
//! add-voter` makes the active controller add it as a learner, catch it up, then make it a
//! voter.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keel_metadata::network::GrpcNetwork;
use keel_metadata::node::{ControllerNode, ControllerSettings};
use keel_metadata::store::{self, CommitIndex, MetadataView, NodeId};
use openraft::BasicNode;

use crate::config::Config;

/// Why the controller role did not start.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("metadata directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] store::StartError),
    #[error("initializing the metadata quorum: {0}")]
    Initialize(String),
}

/// openraft's timing: heartbeats every 100 ms, elections after 0.5–1 s without one (Kafka's
/// KRaft uses a 1 s election timeout), snapshots every 10,000 entries.
pub fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "keel".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    }
}

/// A function that reads the cluster id from a view once the view exists.
pub fn cluster_id_fn(
    view: Arc<OnceLock<MetadataView>>,
) -> Arc<dyn Fn() -> Option<String> + Send + Sync> {
    Arc::new(move || {
        let id = view.get()?.current().cluster_id.clone();
        (!id.is_empty()).then_some(id)
    })
}

/// Starts this node's metadata Raft node and wraps it as a [`ControllerNode`]; also returns
/// the handle of its committed index (for `/metrics`).
pub async fn start(config: &Config) -> Result<(ControllerNode, CommitIndex), QuorumError> {
    let dir = config.data_dir.join("metadata");
    std::fs::create_dir_all(&dir).map_err(|source| QuorumError::Dir {
        path: dir.clone(),
        source,
    })?;
    let id = NodeId::from(config.node_id);
    let view_cell = Arc::new(OnceLock::new());
    let network = GrpcNetwork::new(id, cluster_id_fn(view_cell.clone()));
    let m = store::start(id, &dir, raft_config(), network).await?;
    let _ = view_cell.set(m.view.clone());
    let initialized = m
        .raft
        .is_initialized()
        .await
        .map_err(|e| QuorumError::Initialize(e.to_string()))?;
    if !initialized && config.controller_join {
        tracing::info!("controller_join: waiting to be added with `keel quorum add-voter`");
    }
    if !initialized && !config.controller_join {
        let voters: BTreeMap<NodeId, BasicNode> = config
            .controller_voters
            .0
            .iter()
            .map(|(id, addr)| (NodeId::from(*id), BasicNode::new(addr.clone())))
            .collect();
        tracing::info!(?voters, "bootstrapping the metadata quorum");
        m.raft
            .initialize(voters)
            .await
            .map_err(|e| QuorumError::Initialize(e.to_string()))?;
    }
    let settings = ControllerSettings {
        session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
        leader_rebalance_interval: config
            .auto_leader_rebalance_enable
            .then(|| Duration::from_millis(config.leader_imbalance_check_interval_ms)),
        leader_imbalance_percent: config.leader_imbalance_per_broker_percentage,
        ..Default::default()
    };
    let node = ControllerNode::new(id, m.raft, m.view, settings);
    Ok((node, m.commit_index))
}

/// When this node is the active controller, hands leadership to the most caught-up other
/// voter before Raft stops, so the quorum does not wait an election timeout: the procedure of
/// `keel_metadata::network` (stop proposing, wait until the target's log matches, stop
/// competing, ask it to run). Bounded: if anything fails, the others elect on their own.
/// Leaves this node's elections disabled.
pub async fn hand_over_leadership(c: &ControllerNode) {
    let Some(state) = c.quorum_state() else {
        return;
    };
    let Some(target) = state
        .voters
        .iter()
        .filter(|v| v.node_id != c.id())
        .max_by_key(|v| v.matched)
        .cloned()
    else {
        return;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    // Writes that arrive meanwhile wait, then find this node no longer leads and are
    // retried on the new leader. A write stuck on a lost quorum keeps the lock: go on
    // without it.
    let _paused = tokio::time::timeout_at(deadline, c.pause_writes())
        .await
        .ok();
    let last = c.raft().metrics().borrow().last_log_index;
    while tokio::time::Instant::now() < deadline {
        let matched = c.quorum_state().and_then(|s| {
            s.voters
                .iter()
                .find(|v| v.node_id == target.node_id)
                .and_then(|v| v.matched)
        });
        if matched >= last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.raft().runtime_config().elect(false);
    let cluster_id = Some(c.view().current().cluster_id.clone()).filter(|id| !id.is_empty());
    let asked = keel_metadata::network::request_election(
        &target.endpoint,
        c.id(),
        target.node_id,
        cluster_id,
    )
    .await;
    if let Err(e) = asked {
        tracing::warn!(to = target.node_id, error = %e, "leadership hand-over failed; the others will elect");
        return;
    }
    let moved = c
        .raft()
        .wait(Some(Duration::from_secs(3)))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != c.id()),
            "leadership moved",
        )
        .await;
    match moved {
        Ok(m) => tracing::info!(to = ?m.current_leader, "controller leadership handed over"),
        Err(e) => {
            tracing::warn!(error = %e, "leadership did not move in time; the others will elect")
        }
    }
}
