//! A three-node metadata quorum over the in-process [`Router`]: election, replication to every
//! image, failover, restart from RocksDB, and catch-up through a snapshot.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, ServerState};
use tempfile::TempDir;

use super::Router;
use crate::controller::{self, CreateTopicRequest};
use crate::records::*;
use crate::store::{MetadataNode, MetadataRaft, MetadataResponse, NodeId};
use crate::test_support::{self, config, register, WAIT};

struct Cluster {
    router: Router,
    dirs: BTreeMap<NodeId, TempDir>,
    nodes: BTreeMap<NodeId, MetadataNode>,
}

impl Cluster {
    async fn start(&mut self, id: NodeId) {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| TempDir::new().expect("tempdir"))
            .path()
            .to_owned();
        let node = test_support::start_node(id, &dir, config(), || self.router.network(id)).await;
        self.router.add(id, node.raft.clone());
        self.nodes.insert(id, node);
    }

    async fn stop(&mut self, id: NodeId) {
        self.router.remove(id);
        let node = self.nodes.remove(&id).expect("running");
        node.raft.shutdown().await.expect("shutdown");
    }

    fn raft(&self, id: NodeId) -> &MetadataRaft {
        &self.nodes[&id].raft
    }

    /// Waits until node `on` sees a leader other than `not`, and returns it.
    async fn leader(&self, on: NodeId, not: Option<NodeId>) -> NodeId {
        test_support::leader(self.raft(on), not).await
    }

    async fn write(&self, leader: NodeId, records: Vec<Record>) -> MetadataResponse {
        test_support::write(self.raft(leader), records).await
    }

    /// Waits until every running node's image has applied `offset`.
    async fn converge(&self, offset: u64) {
        test_support::converge(&self.nodes, offset).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_elects_replicates_fails_over_and_catches_up() {
    let mut c = Cluster {
        router: Router::new(),
        dirs: BTreeMap::new(),
        nodes: BTreeMap::new(),
    };
    for id in 1..=3 {
        c.start(id).await;
    }
    let members: BTreeMap<NodeId, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("n{id}"))))
        .collect();
    c.raft(1).initialize(members).await.expect("initialize");

    // One leader, and every node agrees on it.
    let leader = c.leader(1, None).await;
    for id in 1..=3 {
        assert_eq!(c.leader(id, None).await, leader);
    }
    let leaders = c
        .nodes
        .values()
        .filter(|n| n.raft.metrics().borrow().state == ServerState::Leader)
        .count();
    assert_eq!(leaders, 1);

    // Register three brokers, unfence them, create a topic: all through the leader.
    for b in 1..=3 {
        let img = c.nodes[&leader].view.current();
        let resp = c.write(leader, register(b, &img)).await;
        let img = c.nodes[&leader]
            .view
            .clone()
            .wait_for_offset(resp.offset, WAIT)
            .await
            .unwrap();
        assert_eq!(
            img.brokers[&b].broker_epoch, resp.offset,
            "broker epoch is the log index"
        );
        let recs = controller::unfence_broker(&img, b, resp.offset).unwrap();
        c.write(leader, recs).await;
    }
    let img = c.nodes[&leader].view.current();
    let req = CreateTopicRequest {
        name: "orders".into(),
        partitions: 3,
        replication_factor: 3,
        configs: BTreeMap::from([("min.insync.replicas".into(), "2".into())]),
    };
    let recs = controller::create_topic(&img, &req, TopicId(77), img.offset, 5).unwrap();
    let resp = c.write(leader, recs).await;
    c.converge(resp.offset).await;
    let images: Vec<_> = c.nodes.values().map(|n| n.view.current()).collect();
    assert!(images.iter().all(|i| i
        .topic_by_name("orders")
        .is_some_and(|t| t.partitions.len() == 3)));
    assert!(
        images.windows(2).all(|w| w[0] == w[1]),
        "images converge to the same value"
    );

    // Stop the leader: another is elected and takes writes.
    let old = leader;
    let last_offset_of_old = c.raft(old).metrics().borrow().last_log_index.unwrap_or(0);
    c.stop(old).await;
    let survivor = *c.nodes.keys().next().unwrap();
    let leader = c.leader(survivor, Some(old)).await;
    assert_ne!(leader, old);
    let img = c.nodes[&leader].view.current();
    let recs = controller::fence_broker(&img, old as BrokerId, 10).unwrap();
    c.write(leader, recs).await;

    // More writes than the snapshot policy allows in the log: the leader snapshots and purges
    // beyond what the stopped node has, so it can only catch up through a snapshot.
    let mut last = 0;
    for i in 0..8 {
        let img = c.nodes[&leader].view.current();
        let req = CreateTopicRequest {
            name: format!("t{i}"),
            partitions: 1,
            replication_factor: 2,
            configs: BTreeMap::new(),
        };
        let recs = controller::create_topic(&img, &req, TopicId(100 + i), img.offset, 6).unwrap();
        last = c.write(leader, recs).await.offset;
    }
    c.raft(leader)
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > last_offset_of_old),
            "leader purged past the stopped node",
        )
        .await
        .expect("purge");

    // Restart the old leader from its RocksDB: it rejoins and catches up.
    c.start(old).await;
    c.converge(last).await;
    let m = c.raft(old).metrics().borrow().clone();
    assert!(
        m.snapshot.is_some_and(|s| s.index > last_offset_of_old),
        "caught up through a snapshot: {:?}",
        m.snapshot
    );
    let images: Vec<_> = c.nodes.values().map(|n| n.view.current()).collect();
    let names: BTreeSet<&str> = images[0].topic_ids.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(images
        .windows(2)
        .all(|w| w[0].topics == w[1].topics && w[0].brokers == w[1].brokers));

    // And a write after all that still commits on every node.
    let img = c.nodes[&leader].view.current();
    let del = controller::delete_topic(&img, "t0").unwrap();
    let resp = c.write(leader, vec![del]).await;
    c.converge(resp.offset).await;
    assert!(c
        .nodes
        .values()
        .all(|n| n.view.current().topic_by_name("t0").is_none()));

    for id in c.nodes.keys().copied().collect::<Vec<_>>() {
        c.stop(id).await;
    }
}

/// A full stop and start keeps everything: the image comes back from the snapshot plus the
/// committed log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_keeps_metadata() {
    let mut c = Cluster {
        router: Router::new(),
        dirs: BTreeMap::new(),
        nodes: BTreeMap::new(),
    };
    for id in 1..=3 {
        c.start(id).await;
    }
    let members: BTreeMap<NodeId, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("n{id}"))))
        .collect();
    c.raft(1).initialize(members).await.expect("initialize");
    let leader = c.leader(1, None).await;
    let mut last = 0;
    for b in 1..=7 {
        let img = c.nodes[&leader].view.current();
        last = c.write(leader, register(b, &img)).await.offset;
    }
    c.converge(last).await;
    let before = c.nodes[&1].view.current();
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.start(id).await;
    }
    let leader = c.leader(1, None).await;
    // The new leader commits a blank entry of its term, after which every node has applied
    // everything from before.
    let term_entry = c
        .raft(leader)
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    c.converge(term_entry.max(last)).await;
    for id in 1..=3 {
        assert_eq!(
            c.nodes[&id].view.current().brokers,
            before.brokers,
            "node {id}"
        );
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
}
