//! The metadata quorum over the gRPC transport: real tonic servers on loopback ports, real
//! RocksDB in temporary directories. Election and replication, failover, catch-up through a
//! streamed snapshot, refusal of misaddressed or foreign messages, and leadership transfer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use keel_proto::v1::raft_client::RaftClient;
use keel_proto::v1::{ErrorCode, RaftAppendEntriesRequest, RaftHeader, RaftVoteRequest};
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, VoteRequest, VoteResponse};
use openraft::{BasicNode, Config, ServerState, Vote};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use super::{
    raft_server, request_election, ClusterIdFn, GrpcNetwork, RequestElectionError, TransportError,
};
use crate::records::*;
use crate::store::{MetadataNode, MetadataRaft, MetadataResponse, NodeId, TypeConfig};
use crate::test_support::{self, register, WAIT};

const CLUSTER_ID: &str = "keel-test-cluster";

/// The shared test config with timers that leave room for a debug build's gRPC calls on a
/// loaded machine (openraft bounds an AppendEntries by the heartbeat interval).
fn config() -> Config {
    Config {
        heartbeat_interval: 100,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        install_snapshot_timeout: 5_000,
        ..test_support::config()
    }
}

fn cluster_id() -> ClusterIdFn {
    Arc::new(|| Some(CLUSTER_ID.to_owned()))
}

/// A running node: its Raft and the gRPC server in front of it.
struct GrpcNode {
    node: MetadataNode,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

#[derive(Default)]
struct Cluster {
    dirs: BTreeMap<NodeId, TempDir>,
    /// Each node keeps its first port across restarts: the membership names it.
    addrs: BTreeMap<NodeId, SocketAddr>,
    nodes: BTreeMap<NodeId, GrpcNode>,
}

impl Cluster {
    /// Starts nodes 1..=3 and initializes them as one quorum; returns its first leader.
    async fn three_nodes() -> (Self, NodeId) {
        let mut c = Self::default();
        for id in 1..=3 {
            c.start(id).await;
        }
        let members: BTreeMap<NodeId, BasicNode> = c
            .addrs
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.to_string())))
            .collect();
        c.raft(1).initialize(members).await.expect("initialize");
        let leader = c.leader(1, None).await;
        (c, leader)
    }

    async fn start(&mut self, id: NodeId) {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| TempDir::new().expect("tempdir"))
            .path()
            .to_owned();
        let bind = self
            .addrs
            .get(&id)
            .copied()
            .unwrap_or_else(|| "127.0.0.1:0".parse().expect("address"));
        let listener = TcpListener::bind(bind).await.expect("bind");
        self.addrs
            .insert(id, listener.local_addr().expect("bound address"));
        let node =
            test_support::start_node(id, &dir, config(), || GrpcNetwork::new(id, cluster_id()))
                .await;
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = Server::builder()
            .add_service(raft_server(node.raft.clone(), id, cluster_id()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        let server = tokio::spawn(server);
        self.nodes.insert(
            id,
            GrpcNode {
                node,
                stop_server,
                server,
            },
        );
    }

    /// Stops the node's server, then its Raft.
    async fn stop(&mut self, id: NodeId) {
        let n = self.nodes.remove(&id).expect("running");
        let _ = n.stop_server.send(());
        tokio::time::timeout(WAIT, n.server)
            .await
            .expect("server stops")
            .expect("server task")
            .expect("server");
        n.node.raft.shutdown().await.expect("shutdown");
    }

    async fn stop_all(&mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }

    fn raft(&self, id: NodeId) -> &MetadataRaft {
        &self.nodes[&id].node.raft
    }

    fn node(&self, id: NodeId) -> &MetadataNode {
        &self.nodes[&id].node
    }

    async fn leader(&self, on: NodeId, not: Option<NodeId>) -> NodeId {
        test_support::leader(self.raft(on), not).await
    }

    async fn write(&self, leader: NodeId, records: Vec<Record>) -> MetadataResponse {
        test_support::write(self.raft(leader), records).await
    }

    async fn converge(&self, offset: u64) {
        let nodes = self.nodes.iter().map(|(id, n)| (id, &n.node));
        test_support::converge(nodes, offset).await
    }

    /// Registers broker `broker` through `leader`: one metadata write.
    async fn register(&self, leader: NodeId, broker: BrokerId) -> MetadataResponse {
        let img = self.node(leader).view.current();
        self.write(leader, register(broker, &img)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_over_grpc_elects_fails_over_and_catches_up_by_snapshot() {
    let (mut c, leader) = Cluster::three_nodes().await;

    // One leader, and every node agrees on it.
    for id in 1..=3 {
        assert_eq!(c.leader(id, None).await, leader);
    }
    let leaders = c
        .nodes
        .values()
        .filter(|n| n.node.raft.metrics().borrow().state == ServerState::Leader)
        .count();
    assert_eq!(leaders, 1);

    // Writes through the leader commit on every node.
    let mut last = 0;
    for b in 1..=3 {
        last = c.register(leader, b).await.offset;
    }
    c.converge(last).await;
    let images: Vec<_> = c.nodes.values().map(|n| n.node.view.current()).collect();
    assert_eq!(images[0].brokers.len(), 3);
    assert!(images.windows(2).all(|w| w[0] == w[1]), "images converge");

    // Stop the leader's server and Raft: another leader is elected and takes writes.
    let old = leader;
    let old_last = c.raft(old).metrics().borrow().last_log_index.unwrap_or(0);
    c.stop(old).await;
    let survivor = *c.nodes.keys().next().expect("two nodes left");
    let leader = c.leader(survivor, Some(old)).await;
    assert_ne!(leader, old);

    // More writes than the snapshot policy keeps in the log, so the leader purges past what
    // the stopped node has: it can only catch up through a snapshot.
    for b in 10..18 {
        last = c.register(leader, b).await.offset;
    }
    c.raft(leader)
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > old_last),
            "leader purged past the stopped node",
        )
        .await
        .expect("purge");

    // Restart the old leader on its port, from its RocksDB: the snapshot streams over gRPC.
    c.start(old).await;
    c.converge(last).await;
    let snapshot = c.raft(old).metrics().borrow().snapshot;
    assert!(
        snapshot.is_some_and(|s| s.index > old_last),
        "caught up through a snapshot: {snapshot:?}"
    );
    let images: Vec<_> = c.nodes.values().map(|n| n.node.view.current()).collect();
    assert_eq!(images[0].brokers.len(), 3 + 8);
    assert!(images.windows(2).all(|w| w[0].brokers == w[1].brokers));

    // And a write after all that commits on every node, the restarted one included.
    let resp = c.register(leader, 20).await;
    c.converge(resp.offset).await;
    assert!(c.node(old).view.current().brokers.contains_key(&20));

    c.stop_all().await;
}

fn wire_header(cluster_id: &str, from: NodeId, target: NodeId, term: u64) -> Option<RaftHeader> {
    Some(RaftHeader {
        cluster_id: cluster_id.into(),
        from_id: from as i32,
        target_id: target as i32,
        term,
    })
}

/// A vote request for a term far ahead: it would make any node that handles it step up to that
/// term.
fn disruptive_vote(cluster_id: &str, from: NodeId, target: NodeId, term: u64) -> RaftVoteRequest {
    let rpc = VoteRequest::<NodeId>::new(Vote::new(term, from), None);
    RaftVoteRequest {
        header: wire_header(cluster_id, from, target, term),
        last_log_index: None,
        payload: Bytes::from(serde_json::to_vec(&rpc).expect("encode")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misaddressed_or_foreign_messages_are_refused_and_change_nothing() {
    let (mut c, leader) = Cluster::three_nodes().await;
    let resp = c.register(leader, 1).await;
    c.converge(resp.offset).await;

    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let before = c.raft(follower).metrics().borrow().clone();
    let far = before.current_term + 100;
    let mut client = RaftClient::connect(format!("http://{}", c.addrs[&follower]))
        .await
        .expect("connect");
    let refused = |code: ErrorCode, error: Option<keel_proto::v1::Error>, payload: Bytes| {
        let error = error.expect("refused");
        assert_eq!(error.code, code as i32, "{error:?}");
        assert!(payload.is_empty());
    };

    // Addressed to another node id (say, the address was reused).
    let other = (1..=3).find(|id| *id != follower).expect("another node");
    let r = client
        .vote(disruptive_vote(CLUSTER_ID, 9, other, far))
        .await
        .expect("answered")
        .into_inner();
    refused(ErrorCode::InvalidRequest, r.error, r.payload);

    // From another cluster.
    let r = client
        .vote(disruptive_vote("another-cluster", 9, follower, far))
        .await
        .expect("answered")
        .into_inner();
    refused(ErrorCode::InconsistentClusterId, r.error, r.payload);

    // Plain fields that contradict the payload (the header claims another term).
    let mut contradicting = disruptive_vote(CLUSTER_ID, 9, follower, far);
    contradicting.header.as_mut().expect("header").term = 1;
    let r = client
        .vote(contradicting)
        .await
        .expect("answered")
        .into_inner();
    refused(ErrorCode::InvalidRequest, r.error, r.payload);

    // A heartbeat of a fake leader of a later term, misaddressed.
    let rpc = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(far, 9),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let r = client
        .append_entries(RaftAppendEntriesRequest {
            header: wire_header(CLUSTER_ID, 9, other, far),
            prev_log_index: None,
            entry_count: 0,
            leader_commit: None,
            payload: Bytes::from(serde_json::to_vec(&rpc).expect("encode")),
        })
        .await
        .expect("answered")
        .into_inner();
    refused(ErrorCode::InvalidRequest, r.error, r.payload);

    // The client helper reports the refusal too.
    let err = request_election(
        &c.addrs[&follower].to_string(),
        leader,
        other,
        Some(CLUSTER_ID.into()),
    )
    .await
    .expect_err("misaddressed");
    assert!(
        matches!(&err, RequestElectionError::Transport(TransportError::Refused { error, .. })
            if error.code == ErrorCode::InvalidRequest as i32),
        "{err}"
    );

    // Nothing changed: same term, same vote, same leader; the cluster still commits.
    let after = c.raft(follower).metrics().borrow().clone();
    assert_eq!(after.current_term, before.current_term);
    assert_eq!(after.vote, before.vote);
    assert_eq!(after.current_leader, Some(leader));
    let resp = c.register(leader, 2).await;
    c.converge(resp.offset).await;
    assert_eq!(
        c.raft(leader).metrics().borrow().current_leader,
        Some(leader)
    );

    // Control: a well-addressed message without a cluster id (not known yet) reaches openraft,
    // which answers it: a stale vote request is not granted.
    let r = client
        .vote(disruptive_vote("", 9, follower, 1))
        .await
        .expect("answered")
        .into_inner();
    assert!(r.error.is_none(), "{:?}", r.error);
    let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
        serde_json::from_slice(&r.payload).expect("openraft's result");
    assert!(!answer.expect("a vote answer").vote_granted);

    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_makes_the_target_leader() {
    let (mut c, leader) = Cluster::three_nodes().await;
    let resp = c.register(leader, 1).await;
    // The target has the whole log, so it can win the election it starts.
    c.converge(resp.offset).await;

    let target = (1..=3).find(|id| *id != leader).expect("a follower");
    // Controlled shutdown's hand-over (see the module doc): the old leader stops competing.
    c.raft(leader).runtime_config().elect(false);
    request_election(
        &c.addrs[&target].to_string(),
        leader,
        target,
        Some(CLUSTER_ID.into()),
    )
    .await
    .expect("election requested");
    for id in 1..=3 {
        c.raft(id)
            .wait(Some(WAIT))
            .metrics(|m| m.current_leader == Some(target), "the target leads")
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
    }

    // The new leader takes writes.
    let resp = c.register(target, 2).await;
    c.converge(resp.offset).await;

    c.stop_all().await;
}

#[test]
fn snapshot_data_is_split_into_bounded_chunks_without_loss() {
    let data = Bytes::from((0..2_500u32).map(|i| i as u8).collect::<Vec<_>>());
    let chunks: Vec<Bytes> = super::split(&data, 1_000).collect();
    assert_eq!(
        chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
        [1_000, 1_000, 500]
    );
    assert_eq!(chunks.concat(), data.to_vec());
    assert_eq!(super::split(&Bytes::new(), 1_000).count(), 0);
}
