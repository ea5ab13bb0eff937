//! The group rules: joins, cooperative moves, fencing, static members, expiry, commits.

use std::collections::{BTreeMap, BTreeSet};

use keel_metadata::image::{MetadataImage, PartitionState, TopicImage};
use keel_metadata::records::TopicId;
use keel_proto::v1::ErrorCode;

use super::*;

const T: TopicId = TopicId(7);

fn image(partitions: i32) -> MetadataImage {
    let mut image = MetadataImage::default();
    let topic = TopicImage {
        name: "orders".into(),
        topic_id: T,
        configs: BTreeMap::new(),
        partitions: (0..partitions)
            .map(|p| {
                let state = PartitionState {
                    replicas: vec![1],
                    isr: vec![1],
                    leader: Some(1),
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding_replicas: vec![],
                    removing_replicas: vec![],
                };
                (p, state)
            })
            .collect(),
        created_at_ms: 0,
    };
    image.topic_ids.insert("orders".into(), T);
    image.topics.insert(T, topic);
    image
}

fn cfg() -> GroupConfig {
    GroupConfig {
        session_timeout_ms: 1000,
        ..GroupConfig::default()
    }
}

/// A member's view: id, epoch, what it holds.
#[derive(Clone, Debug)]
struct Client {
    id: String,
    epoch: i32,
    owned: BTreeSet<TopicPartition>,
    instance: Option<String>,
}

impl Client {
    fn new(id: &str) -> Client {
        Client {
            id: id.into(),
            epoch: 0,
            owned: BTreeSet::new(),
            instance: None,
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            member_id: self.id.clone(),
            member_epoch: self.epoch,
            instance_id: self.instance.clone(),
            topic_names: vec!["orders".into()],
            owned: self.owned.clone(),
            ..Heartbeat::default()
        }
    }

    /// One heartbeat; the client converges to the answer's assignment at once.
    fn beat(&mut self, g: &mut Group, image: &MetadataImage, now: i64) -> Vec<Change> {
        let (answer, changes) = g.heartbeat(self.heartbeat(), image, now, &cfg()).unwrap();
        self.id = answer.member_id;
        self.epoch = answer.member_epoch;
        if let Some(a) = answer.assignment {
            self.owned = a;
        }
        changes
    }
}

fn no_partition_twice(g: &Group) {
    let mut seen = BTreeSet::new();
    for m in g.members.values() {
        for tp in m.assigned.iter().chain(&m.revoking) {
            assert!(seen.insert(*tp), "{tp:?} held twice: {g:#?}");
        }
    }
}

/// Heartbeats every client in turn until the group is stable.
fn settle(g: &mut Group, clients: &mut [Client], image: &MetadataImage, now: i64) {
    for _ in 0..10 {
        for c in clients.iter_mut() {
            c.beat(g, image, now);
            no_partition_twice(g);
        }
        if g.state() == State::Stable {
            return;
        }
    }
    panic!("group did not settle: {g:#?}");
}

#[test]
fn three_members_share_six_partitions() {
    let image = image(6);
    let mut g = Group::new("g");
    let mut clients = vec![Client::new("a"), Client::new("b"), Client::new("c")];
    settle(&mut g, &mut clients, &image, 0);
    let all: BTreeSet<_> = clients.iter().flat_map(|c| c.owned.clone()).collect();
    assert_eq!(all.len(), 6);
    assert!(clients.iter().all(|c| c.owned.len() == 2));
}

#[test]
fn a_joining_member_only_pauses_the_moved_partition() {
    let image = image(6);
    let mut g = Group::new("g");
    let mut clients = vec![Client::new("a"), Client::new("b"), Client::new("c")];
    settle(&mut g, &mut clients, &image, 0);
    let before: Vec<_> = clients.iter().map(|c| c.owned.clone()).collect();
    clients.push(Client::new("d"));
    // Every partition a client keeps, it never stops holding during the rebalance.
    for _ in 0..10 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.beat(&mut g, &image, 0);
            no_partition_twice(&g);
            if i < 3 {
                let kept = before[i].intersection(&c.owned).count();
                assert!(kept >= 1, "{} lost everything", c.id);
            }
        }
    }
    assert_eq!(g.state(), State::Stable);
    let moved: usize = (0..3)
        .map(|i| before[i].difference(&clients[i].owned).count())
        .sum();
    assert_eq!(moved, 1);
    assert_eq!(clients[3].owned.len(), 1);
}

#[test]
fn a_partition_is_given_only_after_its_owner_released_it() {
    let image = image(2);
    let mut g = Group::new("g");
    let mut a = Client::new("a");
    a.beat(&mut g, &image, 0);
    assert_eq!(a.owned.len(), 2);
    let mut b = Client::new("b");
    b.beat(&mut g, &image, 0);
    assert!(b.owned.is_empty(), "a still holds both");
    // b heartbeats again before a releases: still nothing.
    b.beat(&mut g, &image, 0);
    assert!(b.owned.is_empty());
    a.beat(&mut g, &image, 0);
    assert_eq!(a.owned.len(), 1, "a was told to release one");
    // The release is seen on a's next heartbeat (it reports owning one).
    a.beat(&mut g, &image, 0);
    b.beat(&mut g, &image, 0);
    assert_eq!(b.owned.len(), 1);
    assert!(a.owned.is_disjoint(&b.owned));
    assert_eq!(g.state(), State::Stable);
}

#[test]
fn stale_epochs_are_fenced_and_unknown_members_refused() {
    let image = image(2);
    let mut g = Group::new("g");
    let mut a = Client::new("a");
    a.beat(&mut g, &image, 0);
    let mut stale = a.heartbeat();
    stale.member_epoch = a.epoch + 5;
    let e = g.heartbeat(stale, &image, 0, &cfg()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::FencedMemberEpoch);
    let mut unknown = a.heartbeat();
    unknown.member_id = "zz".into();
    let e = g.heartbeat(unknown, &image, 0, &cfg()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownMemberId);
    let previous = g.members["a"].previous_epoch;
    assert_eq!(g.check_commit("a", previous).map_err(|e| e.code()), Ok(()));
    let e = g.check_commit("a", previous - 1).unwrap_err();
    assert_eq!(e.code(), ErrorCode::StaleMemberEpoch);
    let e = g.check_commit("a", a.epoch + 1).unwrap_err();
    assert_eq!(e.code(), ErrorCode::IllegalGeneration);
}

#[test]
fn a_silent_member_expires_and_its_partitions_move() {
    let image = image(4);
    let mut g = Group::new("g");
    let mut clients = vec![Client::new("a"), Client::new("b")];
    settle(&mut g, &mut clients, &image, 0);
    let mut changes = vec![];
    assert!(g.expire(500, &mut changes).is_empty());
    // Only a keeps heartbeating.
    clients[0].beat(&mut g, &image, 900);
    assert_eq!(g.expire(1500, &mut changes), vec!["b".to_string()]);
    clients[0].beat(&mut g, &image, 1500);
    assert_eq!(clients[0].owned.len(), 4);
}

#[test]
fn a_static_member_takes_back_its_partitions_without_a_rebalance() {
    let image = image(4);
    let mut g = Group::new("g");
    let mut a = Client::new("a");
    a.instance = Some("host-a".into());
    let mut clients = vec![a, Client::new("b")];
    settle(&mut g, &mut clients, &image, 0);
    let epoch = g.epoch;
    let held = clients[0].owned.clone();
    // a leaves temporarily (epoch -2) and restarts under a new member id.
    let mut leave = clients[0].heartbeat();
    leave.member_epoch = -2;
    g.heartbeat(leave, &image, 0, &cfg()).unwrap();
    let mut restarted = Client::new("a2");
    restarted.instance = Some("host-a".into());
    restarted.beat(&mut g, &image, 10);
    assert_eq!(restarted.owned, held);
    assert_eq!(g.epoch, epoch, "no rebalance");
    // A second process with the same instance id while a2 is active is refused.
    let mut twin = Client::new("a3");
    twin.instance = Some("host-a".into());
    let e = g
        .heartbeat(twin.heartbeat(), &image, 10, &cfg())
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnreleasedInstanceId);
}

#[test]
fn leaving_frees_partitions_at_once() {
    let image = image(4);
    let mut g = Group::new("g");
    let mut clients = vec![Client::new("a"), Client::new("b")];
    settle(&mut g, &mut clients, &image, 0);
    let mut leave = clients[1].heartbeat();
    leave.member_epoch = -1;
    let (answer, _) = g.heartbeat(leave, &image, 0, &cfg()).unwrap();
    assert_eq!(answer.member_epoch, -1);
    clients[0].beat(&mut g, &image, 0);
    assert_eq!(clients[0].owned.len(), 4);
}

#[test]
fn more_partitions_bump_the_epoch_and_get_assigned() {
    let mut g = Group::new("g");
    let mut clients = vec![Client::new("a"), Client::new("b")];
    settle(&mut g, &mut clients, &image(2), 0);
    let epoch = g.epoch;
    settle(&mut g, &mut clients, &image(4), 0);
    assert!(g.epoch > epoch);
    assert_eq!(clients.iter().map(|c| c.owned.len()).sum::<usize>(), 4);
}

#[test]
fn bad_subscriptions_and_assignors_are_refused() {
    let image = image(1);
    let mut g = Group::new("g");
    let mut hb = Client::new("a").heartbeat();
    hb.topic_names.clear();
    assert_eq!(
        g.heartbeat(hb.clone(), &image, 0, &cfg())
            .unwrap_err()
            .code(),
        ErrorCode::InvalidRequest
    );
    hb.topic_regex = Some("(".into());
    assert_eq!(
        g.heartbeat(hb.clone(), &image, 0, &cfg())
            .unwrap_err()
            .code(),
        ErrorCode::InvalidRegularExpression
    );
    hb.topic_regex = Some("ord.*".into());
    hb.assignor = Some("sticky".into());
    assert_eq!(
        g.heartbeat(hb.clone(), &image, 0, &cfg())
            .unwrap_err()
            .code(),
        ErrorCode::UnsupportedAssignor
    );
    hb.assignor = Some("range".into());
    let (answer, _) = g.heartbeat(hb, &image, 0, &cfg()).unwrap();
    assert_eq!(
        answer.assignment.unwrap().len(),
        1,
        "the regex matched orders"
    );
    assert!(g.members.is_empty() || g.assignor == "range");
}

#[test]
fn the_admin_commit_form_needs_an_empty_group() {
    let image = image(1);
    let mut g = Group::new("g");
    assert!(g.check_commit("", -1).is_ok());
    Client::new("a").beat(&mut g, &image, 0);
    assert_eq!(
        g.check_commit("", -1).unwrap_err().code(),
        ErrorCode::GroupNotEmpty
    );
}
