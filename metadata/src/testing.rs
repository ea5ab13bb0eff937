//! An in-process Raft transport for tests: a [`Router`] that delivers openraft messages
//! straight to the target node's `Raft` handle, with a knob to cut nodes off.
//!
//! It is public so that the workspace's integration tests (`keel-tests`) can build in-process
//! clusters with it; production nodes use the gRPC transport.
//!
//! # Layout
//! - [`Router`] — the registry of running nodes and the isolation knob;
//! - [`RouterNetwork`] / [`RouterConnection`]: openraft's `RaftNetworkFactory` / `RaftNetwork`;
//! - `cluster_test.rs`: a three-node quorum with elections, failover, restart and snapshot
//!   catch-up.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, Snapshot, Vote};

use crate::store::{MetadataRaft, NodeId, TypeConfig};

/// The target node is not running or is isolated.
#[derive(Debug, thiserror::Error)]
#[error("node {0} is unreachable")]
pub struct NodeUnreachable(pub NodeId);

#[derive(Default)]
struct RouterInner {
    nodes: BTreeMap<NodeId, MetadataRaft>,
    isolated: BTreeSet<NodeId>,
}

/// Connects in-process Raft nodes. Cheap to clone.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<Mutex<RouterInner>>,
}

impl Router {
    /// A router with no nodes.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouterInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `raft` reachable as node `id`.
    pub fn add(&self, id: NodeId, raft: MetadataRaft) {
        self.lock().nodes.insert(id, raft);
    }

    /// Removes node `id`, returning its handle.
    pub fn remove(&self, id: NodeId) -> Option<MetadataRaft> {
        self.lock().nodes.remove(&id)
    }

    /// Drops every message from and to `id` until [`heal`](Self::heal).
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    /// Undoes [`isolate`](Self::isolate).
    pub fn heal(&self, id: NodeId) {
        self.lock().isolated.remove(&id);
    }

    /// The transport for node `from`.
    pub fn network(&self, from: NodeId) -> RouterNetwork {
        RouterNetwork {
            router: self.clone(),
            from,
        }
    }

    fn target(&self, from: NodeId, to: NodeId) -> Result<MetadataRaft, NodeUnreachable> {
        let inner = self.lock();
        if inner.isolated.contains(&from) || inner.isolated.contains(&to) {
            return Err(NodeUnreachable(to));
        }
        inner.nodes.get(&to).cloned().ok_or(NodeUnreachable(to))
    }
}

/// openraft's network factory over a [`Router`], for one sending node.
pub struct RouterNetwork {
    router: Router,
    from: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for RouterNetwork {
    type Network = RouterConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        RouterConnection {
            router: self.router.clone(),
            from: self.from,
            to: target,
        }
    }
}

/// A connection from one node to another over a [`Router`].
pub struct RouterConnection {
    router: Router,
    from: NodeId,
    to: NodeId,
}

type RpcResult<T> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;

impl RaftNetwork<TypeConfig> for RouterConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let raft = self
            .router
            .target(self.from, self.to)
            .map_err(|e| Unreachable::new(&e))?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RemoteError::new(self.to, e).into())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let raft = self
            .router
            .target(self.from, self.to)
            .map_err(|e| Unreachable::new(&e))?;
        raft.vote(rpc)
            .await
            .map_err(|e| RemoteError::new(self.to, e).into())
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let raft = self
            .router
            .target(self.from, self.to)
            .map_err(|e| Unreachable::new(&e))?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| match e {
                // The target is shutting down: as good as unreachable.
                Fatal::Stopped => {
                    StreamingError::Network(NetworkError::new(&NodeUnreachable(self.to)))
                }
                other => RemoteError::new(self.to, other).into(),
            })
    }
}

#[cfg(test)]
#[path = "cluster_test.rs"]
mod cluster_test;
