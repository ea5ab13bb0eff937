//! Three metadata Raft nodes over the real gRPC transport on 127.0.0.1: election and
//! commits, failover when the leader stops, catch-up of a lagging node by a streamed snapshot,
//! refusal of misaddressed or foreign messages, and leadership hand-over by TransferLeader.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use super::*;
use crate::records::{ClusterIdRecord, Record};
use crate::store::{self, MetadataRequest, MetadataView};

const WAIT: Duration = Duration::from_secs(20);

fn config() -> Config {
    Config {
        cluster_name: "keel-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Small, so that a few writes build a snapshot and purge the log behind it.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    }
}

struct Member {
    raft: MetadataRaft,
    view: MetadataView,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

struct Net {
    addrs: BTreeMap<NodeId, SocketAddr>,
    dirs: BTreeMap<NodeId, TempDir>,
    members: BTreeMap<NodeId, Member>,
}

fn no_cluster_id() -> ClusterIdFn {
    Arc::new(|| None)
}

async fn start_member(id: NodeId, dir: &Path, listener: TcpListener) -> Member {
    let m = store::start(id, dir, config(), GrpcNetwork::new(id, no_cluster_id()))
        .await
        .expect("start");
    let (stop, rx) = oneshot::channel::<()>();
    let service = raft_server(m.raft.clone(), id, no_cluster_id());
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = rx.await;
            })
            .await;
    });
    Member {
        raft: m.raft,
        view: m.view,
        stop,
        server,
    }
}

impl Net {
    async fn start() -> Net {
        let mut net = Net {
            addrs: BTreeMap::new(),
            dirs: BTreeMap::new(),
            members: BTreeMap::new(),
        };
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            net.addrs.insert(id, l.local_addr().expect("addr"));
            net.dirs.insert(id, TempDir::new().expect("tempdir"));
            listeners.insert(id, l);
        }
        for (id, l) in listeners {
            let m = start_member(id, net.dirs[&id].path(), l).await;
            net.members.insert(id, m);
        }
        let nodes: BTreeMap<NodeId, BasicNode> = net
            .addrs
            .iter()
            .map(|(id, a)| (*id, BasicNode::new(a.to_string())))
            .collect();
        net.members[&1]
            .raft
            .initialize(nodes)
            .await
            .expect("initialize");
        net
    }

    async fn stop(&mut self, id: NodeId) {
        let m = self.members.remove(&id).expect("running");
        let _ = m.stop.send(());
        let _ = m.server.await;
        m.raft.shutdown().await.expect("shutdown");
    }

    async fn restart(&mut self, id: NodeId) {
        let l = TcpListener::bind(self.addrs[&id]).await.expect("rebind");
        let m = start_member(id, self.dirs[&id].path(), l).await;
        self.members.insert(id, m);
    }

    async fn leader(&self, not: Option<NodeId>) -> NodeId {
        let (_, any) = self.members.iter().next().expect("a member");
        let m = any
            .raft
            .wait(Some(WAIT))
            .metrics(
                |m| m.current_leader.is_some_and(|l| Some(l) != not),
                "a leader",
            )
            .await
            .expect("a leader is elected");
        m.current_leader.expect("checked")
    }

    /// Commits one entry through the leader (retrying while leadership settles).
    async fn write(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let leader = self.leader(None).await;
            if let Some(m) = self.members.get(&leader) {
                let req = MetadataRequest {
                    records: vec![Record::ClusterId(ClusterIdRecord {
                        cluster_id: "test-cluster".into(),
                    })],
                };
                if let Ok(resp) = m.raft.client_write(req).await {
                    return resp.log_id.index;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no write committed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn converge(&self, offset: u64) {
        for (id, m) in &self.members {
            let mut view = m.view.clone();
            view.wait_for_offset(offset, WAIT)
                .await
                .unwrap_or_else(|e| panic!("node {id} did not reach {offset}: {e}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_quorum_elects_commits_and_fails_over() {
    let mut net = Net::start().await;
    let offset = net.write().await;
    net.converge(offset).await;
    assert_eq!(net.members[&2].view.current().cluster_id, "test-cluster");

    let old = net.leader(None).await;
    net.stop(old).await;
    let new = net.leader(Some(old)).await;
    assert_ne!(new, old);
    let offset = net.write().await;
    net.converge(offset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_by_a_streamed_snapshot() {
    let mut net = Net::start().await;
    net.converge(net.write().await).await;
    let leader = net.leader(None).await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    let lagging_last = net.members[&lagging]
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    net.stop(lagging).await;
    let mut last = 0;
    for _ in 0..20 {
        last = net.write().await;
    }
    // The leader snapshots and purges its log past the stopped node: only a snapshot can
    // bring it back.
    net.members[&net.leader(None).await]
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > lagging_last),
            "leader purged past the stopped node",
        )
        .await
        .expect("purge");
    net.restart(lagging).await;
    net.converge(last).await;
    let m = net.members[&lagging].raft.metrics().borrow().clone();
    assert!(
        m.snapshot.is_some_and(|s| s.index > lagging_last),
        "caught up through a snapshot: {:?}",
        m.snapshot
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misaddressed_and_foreign_messages_are_refused_and_change_nothing() {
    let net = Net::start().await;
    net.converge(net.write().await).await;
    let target = 2;
    let before = net.members[&target].raft.metrics().borrow().clone();

    // A vote for a far higher term, addressed to the wrong node id.
    let vote = VoteRequest::<NodeId> {
        vote: Vote::new(before.current_term + 10, 3),
        last_log_id: None,
    };
    let mut client = client(channel(&net.addrs[&target].to_string()).unwrap());
    let header = |target_id: i32, cluster_id: &str| RaftHeader {
        cluster_id: cluster_id.into(),
        from_id: 3,
        target_id,
        term: before.current_term + 10,
    };
    let wrong_target = RaftVoteRequest {
        header: Some(header(7, "")),
        last_log_index: None,
        payload: to_json(&vote),
    };
    let resp = client.vote(wrong_target).await.unwrap().into_inner();
    assert_eq!(
        resp.error.map(|e| e.code),
        Some(ErrorCode::InvalidRequest as i32)
    );

    // The same to a node that knows its cluster id, from another cluster.
    let service = RaftService {
        raft: net.members[&target].raft.clone(),
        id: target,
        cluster_id: Arc::new(|| Some("ours".to_owned())),
    };
    let foreign = RaftVoteRequest {
        header: Some(header(target as i32, "theirs")),
        last_log_index: None,
        payload: to_json(&vote),
    };
    let resp = service
        .vote(Request::new(foreign))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.error.map(|e| e.code),
        Some(ErrorCode::InconsistentClusterId as i32)
    );

    let after = net.members[&target].raft.metrics().borrow().clone();
    assert_eq!(
        after.current_term, before.current_term,
        "no vote reached openraft"
    );
    assert_eq!(after.vote, before.vote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_is_accepted_by_its_target_only() {
    let net = Net::start().await;
    net.converge(net.write().await).await;
    let leader = net.leader(None).await;
    let target = (1..=3).find(|id| *id != leader).expect("a follower");
    let addr = net.addrs[&target].to_string();
    // Accepted: the target starts an election. While the leader heartbeats, the other voters'
    // leader lease refuses it, so leadership stays where it is.
    request_election(&addr, leader, target, "")
        .await
        .expect("election requested");
    let err = request_election(&addr, leader, 42, "")
        .await
        .expect_err("wrong target id");
    assert!(err.contains("not node 42"), "{err}");
    net.converge(net.write().await).await;
}
