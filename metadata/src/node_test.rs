//! Three in-process voters over the [`Router`](crate::testing::Router), each wrapped in a
//! [`ControllerNode`]: writes and forwarding hints, the cluster id, fencing of silent brokers,
//! unfencing when they return, controlled shutdown, sessions across a failover, and a removed
//! voter kept as a learner.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{BasicNode, Config};
use tempfile::TempDir;
use tokio::sync::oneshot;

use super::*;
use crate::controller::RegisterBrokerRequest;
use crate::store;
use crate::testing::Router;

const WAIT: Duration = Duration::from_secs(15);
const SESSION: Duration = Duration::from_millis(1500);

struct Voter {
    node: ControllerNode,
    stop: oneshot::Sender<()>,
    _dir: TempDir,
}

struct Quorum {
    router: Router,
    voters: BTreeMap<NodeId, Voter>,
}

fn raft_config() -> Config {
    Config {
        cluster_name: "keel-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        ..Default::default()
    }
}

impl Quorum {
    async fn start() -> Quorum {
        let router = Router::new();
        let mut voters = BTreeMap::new();
        for id in 1..=3 {
            let dir = TempDir::new().expect("tempdir");
            let m = store::start(id, dir.path(), raft_config(), router.network(id))
                .await
                .expect("start");
            router.add(id, m.raft.clone());
            let node = ControllerNode::new(
                id,
                m.raft,
                m.view,
                ControllerSettings {
                    session_timeout: SESSION,
                    ..Default::default()
                },
            );
            let (stop, rx) = oneshot::channel();
            tokio::spawn(node.clone().run(async move {
                let _ = rx.await;
            }));
            voters.insert(
                id,
                Voter {
                    node,
                    stop,
                    _dir: dir,
                },
            );
        }
        let members: BTreeMap<NodeId, BasicNode> = (1..=3)
            .map(|id| (id, BasicNode::new(format!("127.0.0.1:{}", 9000 + id))))
            .collect();
        voters[&1]
            .node
            .raft()
            .initialize(members)
            .await
            .expect("initialize");
        Quorum { router, voters }
    }

    /// Waits until some voter (other than `not`) is active and returns it.
    async fn active(&self, not: Option<NodeId>) -> ControllerNode {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(v) = self
                .voters
                .values()
                .find(|v| v.node.is_active() && Some(v.node.id()) != not)
            {
                return v.node.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no active controller"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(&mut self, id: NodeId) {
        self.router.remove(id);
        let v = self.voters.remove(&id).expect("running");
        let _ = v.stop.send(());
        v.node.raft().shutdown().await.expect("shutdown");
    }
}

fn broker(id: BrokerId, incarnation: u128) -> RegisterBrokerRequest {
    let ep = |port| Endpoint {
        host: "127.0.0.1".into(),
        port,
    };
    RegisterBrokerRequest {
        broker_id: id,
        incarnation_id: IncarnationId(incarnation),
        endpoints: BrokerEndpoints {
            client: ep(9200 + id as u16),
            internal: ep(9300 + id as u16),
        },
        rack: None,
    }
}

fn beat(id: BrokerId, epoch: BrokerEpoch, shutdown: bool) -> Heartbeat {
    Heartbeat {
        broker_id: id,
        broker_epoch: epoch,
        // Far ahead: the broker counts as caught up.
        metadata_offset: u64::MAX,
        want_fence: false,
        want_shutdown: shutdown,
    }
}

fn topic(name: &str, partitions: i32, rf: i32) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
    }
}

/// Registers brokers 1..=n and heartbeats them until they are unfenced.
async fn live_brokers(c: &ControllerNode, n: BrokerId) -> BTreeMap<BrokerId, BrokerEpoch> {
    let mut epochs = BTreeMap::new();
    for id in 1..=n {
        let epoch = c
            .register_broker(broker(id, id as u128))
            .await
            .expect("register");
        let reply = c
            .heartbeat(beat(id, epoch, false))
            .await
            .expect("heartbeat");
        assert!(!reply.is_fenced && reply.is_caught_up, "{reply:?}");
        epochs.insert(id, epoch);
    }
    epochs
}

/// Heartbeats the given brokers every 200 ms until the returned task is aborted.
fn keep_alive(
    c: &ControllerNode,
    epochs: BTreeMap<BrokerId, BrokerEpoch>,
) -> tokio::task::JoinHandle<()> {
    let c = c.clone();
    tokio::spawn(async move {
        loop {
            for (&id, &epoch) in &epochs {
                let _ = c.heartbeat(beat(id, epoch, false)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn wait_state(c: &ControllerNode, id: BrokerId, want: BrokerState) {
    let mut view = c.view().clone();
    view.wait_until(WAIT, |img| {
        img.brokers.get(&id).is_some_and(|b| b.state == want)
    })
    .await
    .unwrap_or_else(|e| panic!("broker {id} never became {want:?}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_through_the_active_controller_and_others_point_to_it() {
    let q = Quorum::start().await;
    let active = q.active(None).await;
    live_brokers(&active, 3).await;
    active
        .create_topic(topic("orders", 3, 3), false)
        .await
        .expect("create");

    let follower = q
        .voters
        .values()
        .find(|v| v.node.id() != active.id())
        .expect("a follower");
    let err = follower
        .node
        .create_topic(topic("other", 1, 1), false)
        .await
        .expect_err("followers do not write");
    match err {
        WriteError::NotController {
            leader: Some((id, addr)),
        } => {
            assert_eq!(id, active.id());
            assert_eq!(addr, format!("127.0.0.1:{}", 9000 + id));
        }
        other => panic!("expected a leader hint, got {other:?}"),
    }

    // The cluster gets an id, the same on every voter.
    let mut view = follower.node.view().clone();
    let img = view
        .wait_until(WAIT, |img| {
            !img.cluster_id.is_empty() && img.topic_ids.contains_key("orders")
        })
        .await
        .expect("follower applies");
    // Leadership may have moved meanwhile (busy test machine): compare once both applied it.
    let mut view = active.view().clone();
    view.wait_until(WAIT, |a| a.cluster_id == img.cluster_id)
        .await
        .expect("one cluster id on every voter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_change_nothing() {
    let q = Quorum::start().await;
    let active = q.active(None).await;
    let epochs = live_brokers(&active, 2).await;
    // A slow machine could otherwise fence the brokers mid-test, which writes a record.
    let keeper = keep_alive(&active, epochs);
    active
        .create_topic(topic("t", 1, 2), false)
        .await
        .expect("create");
    let before = active.view().current();
    let cases = [
        (topic("bad name", 1, 1), ErrorCode::InvalidTopic),
        (topic("t", 1, 1), ErrorCode::TopicAlreadyExists),
        (topic("big", 1, 3), ErrorCode::InvalidReplicationFactor),
        (topic("zero", 0, 1), ErrorCode::InvalidPartitions),
    ];
    for (req, code) in cases {
        let err = active
            .create_topic(req.clone(), false)
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{req:?}: {err}");
    }
    let mut unknown = topic("cfg", 1, 1);
    unknown.configs.insert("no.such.key".into(), "1".into());
    let err = active
        .create_topic(unknown, false)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), ErrorCode::InvalidConfig);
    // validate_only checks but writes nothing.
    active
        .create_topic(topic("dry", 1, 1), true)
        .await
        .expect("valid");
    let after = active.view().current();
    keeper.abort();
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.offset, before.offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_wants_fence_is_fenced_at_once_and_unfenced_when_it_stops_asking() {
    let q = Quorum::start().await;
    let active = q.active(None).await;
    let epochs = live_brokers(&active, 2).await;
    active
        .create_topic(topic("t", 4, 2), false)
        .await
        .expect("create");
    let wants_fence = Heartbeat {
        want_fence: true,
        ..beat(2, epochs[&2], false)
    };
    let reply = active
        .heartbeat(wants_fence.clone())
        .await
        .expect("heartbeat");
    assert!(reply.is_fenced, "{reply:?}");
    let img = active.view().current();
    assert_eq!(img.brokers[&2].state, BrokerState::Fenced);
    for (_, _, p) in img.partitions() {
        assert_eq!(p.leader, Some(1), "broker 2 leads nothing");
        assert_eq!(p.isr, vec![1], "broker 2 left every ISR");
    }
    // Asking again keeps it fenced; stopping asking unfences it.
    let reply = active.heartbeat(wants_fence).await.expect("heartbeat");
    assert!(reply.is_fenced, "{reply:?}");
    let reply = active
        .heartbeat(beat(2, epochs[&2], false))
        .await
        .expect("heartbeat");
    assert!(!reply.is_fenced, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_broker_is_fenced_and_unfenced_when_it_returns() {
    let q = Quorum::start().await;
    let active = q.active(None).await;
    let epochs = live_brokers(&active, 2).await;
    active
        .create_topic(topic("t", 4, 2), false)
        .await
        .expect("create");

    // Broker 1 keeps heartbeating; broker 2 goes silent.
    let keeper = keep_alive(&active, BTreeMap::from([(1, epochs[&1])]));
    wait_state(&active, 2, BrokerState::Fenced).await;
    let img = active.view().current();
    assert_eq!(img.brokers[&1].state, BrokerState::Unfenced);
    for (_, _, p) in img.partitions() {
        assert_eq!(p.leader, Some(1), "fenced broker 2 leads nothing");
        assert_eq!(p.isr, vec![1], "fenced broker 2 left every ISR");
    }

    // It comes back with the same registration: unfenced once caught up.
    let lagging = Heartbeat {
        metadata_offset: 0,
        ..beat(2, epochs[&2], false)
    };
    let reply = active.heartbeat(lagging).await.expect("heartbeat");
    assert!(reply.is_fenced && !reply.is_caught_up, "{reply:?}");
    let reply = active
        .heartbeat(beat(2, epochs[&2], false))
        .await
        .expect("heartbeat");
    assert!(!reply.is_fenced, "{reply:?}");
    assert_eq!(
        active.view().current().brokers[&2].state,
        BrokerState::Unfenced
    );
    // A stale epoch is refused.
    let err = active
        .heartbeat(beat(2, epochs[&2] - 1, false))
        .await
        .expect_err("stale");
    assert_eq!(err.code(), ErrorCode::StaleBrokerEpoch);
    keeper.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controlled_shutdown_moves_leadership_then_lets_the_broker_go() {
    let q = Quorum::start().await;
    let active = q.active(None).await;
    let epochs = live_brokers(&active, 2).await;
    active
        .create_topic(topic("t", 4, 2), false)
        .await
        .expect("create");
    let leads_of_1 = |img: &MetadataImage| {
        img.partitions()
            .filter(|(_, _, p)| p.leader == Some(1))
            .count()
    };
    assert!(leads_of_1(&active.view().current()) > 0);

    let reply = active
        .heartbeat(beat(1, epochs[&1], true))
        .await
        .expect("heartbeat");
    assert!(
        reply.should_shutdown,
        "every partition has another ISR member: {reply:?}"
    );
    let img = active.view().current();
    assert_eq!(leads_of_1(&img), 0);
    assert_eq!(img.brokers[&1].state, BrokerState::Fenced);
    assert!(img.partitions().all(|(_, _, p)| p.leader == Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_active_controller_keeps_live_brokers_and_fences_silent_ones() {
    let mut q = Quorum::start().await;
    let first = q.active(None).await;
    let epochs = live_brokers(&first, 2).await;
    first
        .create_topic(topic("t", 2, 2), false)
        .await
        .expect("create");
    q.stop(first.id()).await;

    let second = q.active(Some(first.id())).await;
    // Broker 1 heartbeats to the new controller; broker 2 stays silent.
    let deadline = tokio::time::Instant::now() + SESSION * 3;
    while tokio::time::Instant::now() < deadline {
        second
            .heartbeat(beat(1, epochs[&1], false))
            .await
            .expect("heartbeat");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let img = second.view().current();
    assert_eq!(img.brokers[&1].state, BrokerState::Unfenced);
    assert_eq!(img.brokers[&2].state, BrokerState::Fenced);
    assert!(
        img.topic_ids.contains_key("t"),
        "committed metadata survives failover"
    );
    // Writes work again on the new controller.
    second
        .create_topic(topic("after", 1, 1), false)
        .await
        .expect("create");
    let voters: BTreeSet<NodeId> = q.voters.keys().copied().collect();
    assert_eq!(voters.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_voter_that_is_a_broker_follows_as_a_learner_until_decommissioned() {
    let q = Quorum::start().await;
    let active = q.active(None).await;
    let epochs = live_brokers(&active, 3).await;
    let beating = keep_alive(&active, epochs);
    let gone = (1..=3).find(|id| *id != active.id()).expect("a follower");
    let voters = active.remove_voter(gone).await.expect("remove");
    assert_eq!(voters.len(), 2, "{voters:?}");
    assert!(!voters.contains(&gone), "{voters:?}");
    let members = |c: &ControllerNode| c.raft().metrics().borrow().membership_config.clone();
    let learners: Vec<NodeId> = members(&active).membership().learner_ids().collect();
    assert_eq!(learners, vec![gone]);

    // As a learner it keeps applying what the voters commit.
    active
        .register_broker(broker(4, 4))
        .await
        .expect("register");
    let mut view = q.voters[&gone].node.view().clone();
    view.wait_until(WAIT, |img| img.brokers.contains_key(&4))
        .await
        .expect("the learner follows the log");

    // Once its broker is decommissioned (it holds no replicas), it leaves the membership.
    active
        .decommission(gone as BrokerId, false)
        .await
        .expect("decommission");
    let mut metrics = active.raft().metrics();
    tokio::time::timeout(WAIT, async {
        while members(&active).nodes().any(|(id, _)| *id == gone) {
            metrics.changed().await.expect("metrics");
        }
    })
    .await
    .expect("the learner is dropped after the decommission");
    assert_eq!(active.voter_ids().len(), 2);
    beating.abort();
}
