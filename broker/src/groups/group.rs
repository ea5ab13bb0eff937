//! One consumer group's state and its rules (KIP-848), without I/O: membership, epochs, the
//! target assignment, cooperative reconciliation and committed offsets.
//!
//! Every operation mutates the group and returns the [`Change`]s to persist; the coordinator
//! applies an operation to a copy, appends the changes to `__consumer_offsets`, and keeps the
//! copy only once they are durable, so a failed write changes nothing.
//!
//! Epochs: the group epoch moves on every membership or subscription change (and when a
//! subscribed topic's partition count changes); the target assignment is recomputed when it
//! lags the group epoch. A member moves to the target epoch in two steps when it must give
//! something up: first it is told to release the partitions it will lose (they stay
//! `revoking`, still its own, until a heartbeat no longer lists them), then it moves to the
//! new epoch and receives the partitions of its target that no other member holds. A partition
//! is therefore never held by two members at once, and members whose partitions do not move
//! keep them throughout.
//!
//! The reported `owned` set must be conservative: a member lists every partition it has been
//! given (even if it has not started reading it) until it has stopped reading and committed.

use std::collections::{BTreeMap, BTreeSet};

use keel_metadata::image::MetadataImage;
use keel_metadata::records::TopicId;
use keel_proto::v1::{self as pb, ErrorCode};
use regex::Regex;

use super::assignor::{self, Assignment, MemberSpec, TopicPartition, ASSIGNORS};

/// Limits and timeouts of groups (broker config).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i64,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`.
    pub max_size: usize,
    /// `offset.metadata.max.bytes`.
    pub metadata_max_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: 1000,
            metadata_max_bytes: 4096,
        }
    }
}

/// What a member subscribes to.
#[derive(Clone, Debug, Default)]
pub struct Subscription {
    pub names: BTreeSet<String>,
    pub regex: Option<Regex>,
}

impl PartialEq for Subscription {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names
            && self.regex.as_ref().map(Regex::as_str) == other.regex.as_ref().map(Regex::as_str)
    }
}

impl Subscription {
    /// A subscription from names and a pattern matched against whole topic names.
    pub fn new(names: Vec<String>, regex: Option<&str>) -> Result<Subscription, pb::Error> {
        let regex = match regex.filter(|r| !r.is_empty()) {
            None => None,
            Some(r) => Some(Regex::new(&format!("^(?:{r})$")).map_err(|e| {
                pb::Error::new(ErrorCode::InvalidRegularExpression, format!("{r}: {e}"))
            })?),
        };
        Ok(Subscription {
            names: names.into_iter().collect(),
            regex,
        })
    }

    /// The pattern as the member sent it.
    pub fn pattern(&self) -> Option<String> {
        let r = self.regex.as_ref()?.as_str();
        Some(r["^(?:".len()..r.len() - ")$".len()].to_owned())
    }

    fn is_empty(&self) -> bool {
        self.names.is_empty() && self.regex.is_none()
    }

    fn matches(&self, topic: &str) -> bool {
        self.names.contains(topic) || self.regex.as_ref().is_some_and(|r| r.is_match(topic))
    }
}

/// A member of a group.
#[derive(Clone, Debug, Default)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub subscription: Subscription,
    pub assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// The partitions it holds at its epoch.
    pub assigned: BTreeSet<TopicPartition>,
    /// Partitions it was asked to release and still holds.
    pub revoking: BTreeSet<TopicPartition>,
    /// A static member that sent epoch -2.
    pub left_temporarily: bool,
    // Not stored: rebuilt when a coordinator loads the group.
    pub client_id: String,
    pub client_host: String,
    pub session_deadline_ms: i64,
    pub revoking_since_ms: Option<i64>,
}

impl Member {
    fn holds(&self, tp: &TopicPartition) -> bool {
        self.assigned.contains(tp) || self.revoking.contains(tp)
    }
}

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: Option<i32>,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// Something to persist after an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Group,
    GroupGone,
    Member(String),
    MemberGone(String),
    Target(String),
    Offset(String, i32),
    OffsetGone(String, i32),
}

/// The state the describe and list calls report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Empty,
    Reconciling,
    Stable,
}

/// A group.
#[derive(Clone, Debug, Default)]
pub struct Group {
    pub id: String,
    pub epoch: i32,
    pub target_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, Member>,
    pub target: Assignment,
    pub offsets: BTreeMap<(String, i32), Committed>,
    /// Subscribed topics and their partition counts at the last epoch bump; `None` after a
    /// load, until the first heartbeat sets it (without a bump).
    pub subscribed: Option<BTreeMap<TopicId, i32>>,
}

/// A heartbeat as the group sees it.
#[derive(Clone, Debug, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: Option<i32>,
    pub topic_names: Vec<String>,
    pub topic_regex: Option<String>,
    pub assignor: Option<String>,
    pub owned: BTreeSet<TopicPartition>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's partitions, when they differ from what it reported owning.
    pub assignment: Option<BTreeSet<TopicPartition>>,
    /// The member holds exactly its target (nothing to release or to receive).
    pub settled: bool,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> pb::Error {
    pb::Error::new(code, msg)
}

const DEFAULT_REBALANCE_TIMEOUT_MS: i32 = 300_000;

impl Group {
    /// An empty group.
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_owned(),
            assignor: ASSIGNORS[0].to_owned(),
            subscribed: Some(BTreeMap::new()),
            ..Group::default()
        }
    }

    /// The group's state.
    pub fn state(&self) -> State {
        if self.members.is_empty() {
            return State::Empty;
        }
        let settled = self.target_epoch == self.epoch
            && self.members.values().all(|m| {
                m.left_temporarily
                    || (m.epoch == self.target_epoch
                        && m.revoking.is_empty()
                        && Some(&m.assigned) == self.target.get(&m.id))
            });
        match settled {
            true => State::Stable,
            false => State::Reconciling,
        }
    }

    /// Handles a heartbeat (see the module doc).
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        image: &MetadataImage,
        now_ms: i64,
        cfg: &GroupConfig,
    ) -> Result<(HeartbeatAnswer, Vec<Change>), pb::Error> {
        let mut changes = Vec::new();
        if let Some(a) = hb.assignor.as_deref() {
            if !ASSIGNORS.contains(&a) {
                return Err(err(ErrorCode::UnsupportedAssignor, a.to_owned()));
            }
        }
        let id = match hb.member_epoch {
            -1 => {
                return self
                    .leave(&hb.member_id, &mut changes)
                    .map(|a| (a, changes))
            }
            -2 => {
                return self
                    .leave_temporarily(&hb, &mut changes)
                    .map(|a| (a, changes))
            }
            0 => self.join(&hb, cfg, &mut changes)?,
            e if e > 0 => self.check_member(&hb)?,
            e => return Err(err(ErrorCode::InvalidRequest, format!("member epoch {e}"))),
        };
        let subscription = Subscription::new(hb.topic_names.clone(), hb.topic_regex.as_deref())?;
        let m = self.members.get_mut(&id).expect("joined or checked");
        m.session_deadline_ms = now_ms + cfg.session_timeout_ms;
        m.client_id = hb.client_id.clone();
        m.client_host = hb.client_host.clone();
        if update_member(m, &hb, subscription) {
            changes.push(Change::Member(id.clone()));
            // A join moved the epoch already.
            if hb.member_epoch != 0 {
                self.bump_epoch(&mut changes);
            }
        }
        self.refresh_subscribed(image, &mut changes);
        if self.epoch > self.target_epoch {
            self.compute_target(image, &mut changes);
        }
        self.reconcile(&id, &hb.owned, now_ms, &mut changes);
        let m = &self.members[&id];
        let answer = HeartbeatAnswer {
            member_id: id.clone(),
            member_epoch: m.epoch,
            assignment: (m.assigned != hb.owned || hb.member_epoch == 0)
                .then(|| m.assigned.clone()),
            settled: m.epoch == self.target_epoch
                && m.revoking.is_empty()
                && Some(&m.assigned) == self.target.get(&id),
        };
        Ok((answer, changes))
    }

    fn bump_epoch(&mut self, changes: &mut Vec<Change>) {
        self.epoch += 1;
        changes.push(Change::Group);
    }

    fn join(
        &mut self,
        hb: &Heartbeat,
        cfg: &GroupConfig,
        changes: &mut Vec<Change>,
    ) -> Result<String, pb::Error> {
        if hb.topic_names.is_empty() && hb.topic_regex.as_deref().unwrap_or("").is_empty() {
            return Err(err(
                ErrorCode::InvalidRequest,
                "a joining member must subscribe to topic names or a regex",
            ));
        }
        let id = match hb.member_id.as_str() {
            "" => uuid::Uuid::new_v4().to_string(),
            id => id.to_owned(),
        };
        if let Some(instance) = &hb.instance_id {
            if let Some(old) = self.static_member(instance).filter(|old| *old != id) {
                return self.take_over(&old, &id, changes);
            }
        }
        if self.members.contains_key(&id) {
            // A rejoin after a fence: the old incarnation released everything.
            self.remove_member(&id, changes);
        }
        if self.members.len() >= cfg.max_size {
            return Err(err(
                ErrorCode::GroupMaxSizeReached,
                format!("group {} has {} members", self.id, cfg.max_size),
            ));
        }
        let member = Member {
            id: id.clone(),
            instance_id: hb.instance_id.clone(),
            rebalance_timeout_ms: DEFAULT_REBALANCE_TIMEOUT_MS,
            ..Member::default()
        };
        self.members.insert(id.clone(), member);
        changes.push(Change::Member(id.clone()));
        self.bump_epoch(changes);
        Ok(id)
    }

    fn static_member(&self, instance: &str) -> Option<String> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.clone())
    }

    /// A static member rejoining under a new member id takes its predecessor's place,
    /// partitions and epoch included, if the predecessor left temporarily.
    fn take_over(
        &mut self,
        old: &str,
        new: &str,
        changes: &mut Vec<Change>,
    ) -> Result<String, pb::Error> {
        if !self.members[old].left_temporarily {
            return Err(err(
                ErrorCode::UnreleasedInstanceId,
                format!("member {old} still holds this instance id"),
            ));
        }
        let mut m = self.members.remove(old).expect("found");
        m.id = new.to_owned();
        m.left_temporarily = false;
        self.members.insert(new.to_owned(), m);
        if let Some(t) = self.target.remove(old) {
            self.target.insert(new.to_owned(), t);
        }
        changes.extend([
            Change::MemberGone(old.to_owned()),
            Change::Member(new.to_owned()),
            Change::Target(new.to_owned()),
        ]);
        Ok(new.to_owned())
    }

    fn check_member(&self, hb: &Heartbeat) -> Result<String, pb::Error> {
        let m = self.members.get(&hb.member_id).ok_or_else(|| {
            err(
                ErrorCode::UnknownMemberId,
                format!("{} is not a member of {}", hb.member_id, self.id),
            )
        })?;
        if hb.instance_id.is_some() && hb.instance_id != m.instance_id {
            return Err(err(ErrorCode::FencedInstanceId, "instance id mismatch"));
        }
        let lost_answer =
            hb.member_epoch == m.previous_epoch && hb.owned.iter().all(|tp| m.holds(tp));
        if m.left_temporarily || (hb.member_epoch != m.epoch && !lost_answer) {
            return Err(err(
                ErrorCode::FencedMemberEpoch,
                format!(
                    "member epoch {} is not current ({})",
                    hb.member_epoch, m.epoch
                ),
            ));
        }
        Ok(m.id.clone())
    }

    fn leave(
        &mut self,
        member_id: &str,
        changes: &mut Vec<Change>,
    ) -> Result<HeartbeatAnswer, pb::Error> {
        if !self.members.contains_key(member_id) {
            return Err(err(ErrorCode::UnknownMemberId, member_id.to_owned()));
        }
        self.remove_member(member_id, changes);
        Ok(HeartbeatAnswer {
            member_id: member_id.to_owned(),
            member_epoch: -1,
            assignment: None,
            settled: true,
        })
    }

    fn leave_temporarily(
        &mut self,
        hb: &Heartbeat,
        changes: &mut Vec<Change>,
    ) -> Result<HeartbeatAnswer, pb::Error> {
        let m = self
            .members
            .get_mut(&hb.member_id)
            .ok_or_else(|| err(ErrorCode::UnknownMemberId, hb.member_id.clone()))?;
        if m.instance_id.is_none() {
            return Err(err(
                ErrorCode::InvalidRequest,
                "epoch -2 is for static members (with an instance id)",
            ));
        }
        m.left_temporarily = true;
        changes.push(Change::Member(m.id.clone()));
        Ok(HeartbeatAnswer {
            member_id: m.id.clone(),
            member_epoch: -2,
            assignment: None,
            settled: true,
        })
    }

    /// Removes a member; its partitions are free at once and the group epoch moves.
    pub fn remove_member(&mut self, member_id: &str, changes: &mut Vec<Change>) {
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            changes.push(Change::MemberGone(member_id.to_owned()));
            self.bump_epoch(changes);
        }
    }

    /// Removes members whose session expired or who took longer than their rebalance
    /// timeout to release partitions. Returns the removed member ids.
    pub fn expire(&mut self, now_ms: i64, changes: &mut Vec<Change>) -> Vec<String> {
        let expired = self.expired(now_ms);
        for id in &expired {
            self.remove_member(id, changes);
        }
        expired
    }

    /// Members whose session expired or who took longer than their rebalance timeout to
    /// release partitions, at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> Vec<String> {
        self.members
            .values()
            .filter(|m| {
                m.session_deadline_ms < now_ms
                    || m.revoking_since_ms
                        .is_some_and(|t| t + i64::from(m.rebalance_timeout_ms) < now_ms)
            })
            .map(|m| m.id.clone())
            .collect()
    }

    /// Restarts every member's session clock (after a coordinator loaded the group).
    pub fn restart_sessions(&mut self, now_ms: i64, cfg: &GroupConfig) {
        for m in self.members.values_mut() {
            m.session_deadline_ms = now_ms + cfg.session_timeout_ms;
            m.revoking_since_ms = (!m.revoking.is_empty()).then_some(now_ms);
        }
    }

    fn refresh_subscribed(&mut self, image: &MetadataImage, changes: &mut Vec<Change>) {
        let now = self.resolve_topics(image);
        match &self.subscribed {
            None => self.subscribed = Some(now),
            Some(before) if *before != now => {
                self.subscribed = Some(now);
                self.bump_epoch(changes);
            }
            Some(_) => {}
        }
    }

    /// The topics the members subscribe to, with their partition counts.
    fn resolve_topics(&self, image: &MetadataImage) -> BTreeMap<TopicId, i32> {
        image
            .topics
            .values()
            .filter(|t| {
                self.members
                    .values()
                    .any(|m| m.subscription.matches(&t.name))
            })
            .map(|t| (t.topic_id, t.partitions.len() as i32))
            .collect()
    }

    fn compute_target(&mut self, image: &MetadataImage, changes: &mut Vec<Change>) {
        let topics = self.subscribed.clone().unwrap_or_default();
        let specs: BTreeMap<String, MemberSpec> = self
            .members
            .values()
            .map(|m| {
                let subscribed = image
                    .topics
                    .values()
                    .filter(|t| topics.contains_key(&t.topic_id))
                    .filter(|t| m.subscription.matches(&t.name))
                    .map(|t| t.topic_id)
                    .collect();
                let spec = MemberSpec {
                    sort_key: m.instance_id.clone().unwrap_or_else(|| m.id.clone()),
                    topics: subscribed,
                };
                (m.id.clone(), spec)
            })
            .collect();
        self.assignor = self.preferred_assignor();
        let target = assignor::assign(&self.assignor, &specs, &topics, &self.target)
            .expect("assignor names are checked on heartbeat");
        for (m, set) in &target {
            if self.target.get(m) != Some(set) {
                changes.push(Change::Target(m.clone()));
            }
        }
        self.target = target;
        self.target_epoch = self.epoch;
        changes.push(Change::Group);
    }

    /// The assignor most members ask for; the default when none asks.
    fn preferred_assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for a in self.members.values().filter_map(|m| m.assignor.as_deref()) {
            *votes.entry(a).or_default() += 1;
        }
        votes
            .into_iter()
            .max_by_key(|(a, n)| (*n, std::cmp::Reverse(*a)))
            .map_or(ASSIGNORS[0], |(a, _)| a)
            .to_owned()
    }

    /// Moves a member towards its target (see the module doc).
    fn reconcile(
        &mut self,
        id: &str,
        owned: &BTreeSet<TopicPartition>,
        now_ms: i64,
        changes: &mut Vec<Change>,
    ) {
        let desired = self.target.get(id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<TopicPartition> = self
            .members
            .values()
            .filter(|m| m.id != id)
            .flat_map(|m| m.assigned.iter().chain(&m.revoking).copied())
            .collect();
        let target_epoch = self.target_epoch;
        let m = self.members.get_mut(id).expect("present");
        let before = (m.epoch, m.assigned.clone(), m.revoking.clone());
        m.revoking.retain(|tp| owned.contains(tp));
        if m.revoking.is_empty() && m.epoch < target_epoch {
            let revoke: BTreeSet<TopicPartition> =
                m.assigned.difference(&desired).copied().collect();
            if revoke.is_empty() {
                m.previous_epoch = m.epoch;
                m.epoch = target_epoch;
            } else {
                m.assigned.retain(|tp| desired.contains(tp));
                m.revoking = revoke.intersection(owned).copied().collect();
            }
        }
        if m.revoking.is_empty() && m.epoch < target_epoch {
            // Everything to revoke was never taken up: move on at once.
            m.previous_epoch = m.epoch;
            m.epoch = target_epoch;
        }
        if m.epoch == target_epoch {
            let free = desired
                .iter()
                .filter(|tp| !held_by_others.contains(tp))
                .copied();
            m.assigned.extend(free.collect::<Vec<_>>());
        }
        m.revoking_since_ms = match (&m.revoking_since_ms, m.revoking.is_empty()) {
            (_, true) => None,
            (Some(t), false) => Some(*t),
            (None, false) => Some(now_ms),
        };
        if before != (m.epoch, m.assigned.clone(), m.revoking.clone()) {
            changes.push(Change::Member(id.to_owned()));
        }
    }

    /// Checks who may commit: a member at its current (or previous) epoch, or anyone with
    /// the admin form (no member id, epoch -1) while the group has no members.
    pub fn check_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), pb::Error> {
        if member_id.is_empty() && member_epoch < 0 {
            return match self.members.is_empty() {
                true => Ok(()),
                false => Err(err(
                    ErrorCode::GroupNotEmpty,
                    format!("group {} has active members", self.id),
                )),
            };
        }
        let m = self
            .members
            .get(member_id)
            .ok_or_else(|| err(ErrorCode::UnknownMemberId, member_id.to_owned()))?;
        if member_epoch > m.epoch {
            return Err(err(
                ErrorCode::IllegalGeneration,
                format!("epoch {member_epoch}"),
            ));
        }
        if member_epoch != m.epoch && member_epoch != m.previous_epoch {
            return Err(err(
                ErrorCode::StaleMemberEpoch,
                format!("epoch {member_epoch} is older than {}", m.epoch),
            ));
        }
        Ok(())
    }

    /// Records committed offsets (already checked).
    pub fn commit(&mut self, offsets: Vec<((String, i32), Committed)>, changes: &mut Vec<Change>) {
        for (key, c) in offsets {
            changes.push(Change::Offset(key.0.clone(), key.1));
            self.offsets.insert(key, c);
        }
    }

    /// Whether a member subscribes to `topic` (offsets of such topics cannot be deleted).
    pub fn subscribes_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| m.subscription.matches(topic))
    }
}

/// Applies a heartbeat's fields to a member; true when the group epoch must move.
fn update_member(m: &mut Member, hb: &Heartbeat, subscription: Subscription) -> bool {
    if let Some(r) = &hb.rack_id {
        m.rack_id = Some(r.clone());
    }
    if let Some(t) = hb.rebalance_timeout_ms.filter(|t| *t > 0) {
        m.rebalance_timeout_ms = t;
    }
    let mut bump = false;
    if hb.assignor.is_some() && hb.assignor != m.assignor {
        m.assignor = hb.assignor.clone();
        bump = true;
    }
    if !subscription.is_empty() && subscription != m.subscription {
        m.subscription = subscription;
        bump = true;
    }
    bump
}

#[cfg(test)]
#[path = "group_test.rs"]
mod group_test;
