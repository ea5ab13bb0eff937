//! A controller node at run time: the Raft handle and image of one voter, the broker sessions
//! its active controller keeps, and the write path that checks a request against the latest
//! image and commits its records.
//!
//! Only the Raft leader writes. Writes are serialized by a lock held from validation to
//! commit, so every check sees the effect of every earlier write: the controller logic in
//! [`controller`](crate::controller) stays a set of pure functions of one image. A node that
//! is not the leader answers [`WriteError::NotController`] with the leader's id and address,
//! and the caller forwards.
//!
//! Broker sessions (last heartbeat per broker) live only in the active controller's memory. A
//! new active controller starts every session afresh, so a controller failover never fences a
//! broker that keeps heartbeating.
//!
//! # Layout
//! - [`ControllerNode`] — the handle: topic writes, broker registration and heartbeats,
//!   quorum description;
//! - [`ControllerNode::run`] — the background task: leadership changes, cluster id, fencing of
//!   expired sessions;
//! - `node_test.rs` — three in-process voters: writes, forwarding hints, fencing, unfencing,
//!   controlled shutdown, failover keeping sessions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_proto::v1::ErrorCode;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;

use crate::controller::{self, ControllerError, CreateTopicRequest, Registration};
use crate::image::{BrokerState, MetadataImage};
use crate::reassign;
use crate::records::*;
use crate::store::{MetadataRaft, MetadataRequest, MetadataView, NodeId, RecordRefusal};

/// Producer ids per block handed to a broker (Kafka's block size).
pub const PRODUCER_ID_BLOCK: i32 = 1000;

/// Timing of the active controller.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// A broker without a heartbeat for this long is fenced (`broker.session.timeout.ms`).
    pub session_timeout: Duration,
    /// A metadata write that has not committed by then fails as unavailable (the quorum may
    /// have lost its majority); the caller retries.
    pub write_timeout: Duration,
    /// How often the active controller gives leaderships back to preferred replicas
    /// (`leader_imbalance_check_interval_ms`); `None` turns auto leader rebalancing off.
    pub leader_rebalance_interval: Option<Duration>,
    /// A broker's share of preferred leaderships held by others that triggers the rebalance
    /// (`leader_imbalance_per_broker_percentage`).
    pub leader_imbalance_percent: u32,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            session_timeout: Duration::from_secs(9),
            write_timeout: Duration::from_secs(10),
            leader_rebalance_interval: Some(Duration::from_secs(300)),
            leader_imbalance_percent: 10,
        }
    }
}

/// Why a metadata write did not commit. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This node is not the active controller; `leader` is the one it knows, if any.
    #[error("not the active controller (leader {leader:?})")]
    NotController {
        /// Id and internal address of the active controller.
        leader: Option<(NodeId, String)>,
    },
    /// The request breaks a rule.
    #[error(transparent)]
    Rejected(#[from] ControllerError),
    /// The image refused records that the controller had checked: a bug, reported rather than
    /// hidden.
    #[error("records refused at apply time: {0:?}")]
    Refused(Vec<RecordRefusal>),
    /// Raft stopped or failed.
    #[error("metadata quorum unavailable: {0}")]
    Unavailable(String),
}

impl WriteError {
    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            WriteError::NotController { .. } => ErrorCode::NotController,
            WriteError::Rejected(e) => e.code(),
            WriteError::Refused(_) => ErrorCode::UnknownServerError,
            WriteError::Unavailable(_) => ErrorCode::NotController,
        }
    }
}

type Result<T, E = WriteError> = std::result::Result<T, E>;

/// A broker's heartbeat, as the controller reads it.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    /// The broker.
    pub broker_id: BrokerId,
    /// Its registration's epoch.
    pub broker_epoch: BrokerEpoch,
    /// The metadata offset the broker has applied.
    pub metadata_offset: MetadataOffset,
    /// The broker wants to be fenced (or to stay fenced): its disk refuses writes.
    pub want_fence: bool,
    /// The broker wants to shut down.
    pub want_shutdown: bool,
}

/// The controller's answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The broker has applied its own registration.
    pub is_caught_up: bool,
    /// The broker is fenced.
    pub is_fenced: bool,
    /// Controlled shutdown is complete: the broker may stop.
    pub should_shutdown: bool,
}

/// One member of the quorum and its replication progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumMember {
    /// Node id.
    pub node_id: NodeId,
    /// Internal address.
    pub endpoint: String,
    /// Last log index the leader knows it holds.
    pub matched: Option<u64>,
    /// Entries behind the leader's last log index.
    pub lag: Option<u64>,
}

/// The quorum as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumState {
    /// The leader's id.
    pub leader_id: NodeId,
    /// Current term.
    pub term: u64,
    /// Last applied (and so committed) index on the leader.
    pub commit_index: u64,
    /// Voters, leader included.
    pub voters: Vec<QuorumMember>,
    /// Learners.
    pub learners: Vec<QuorumMember>,
}

struct Sessions {
    /// The leader term these sessions belong to; a new term starts them afresh.
    term: u64,
    /// Wall-clock ms of each broker's last heartbeat or registration.
    last_seen_ms: BTreeMap<BrokerId, i64>,
}

struct Inner {
    id: NodeId,
    raft: MetadataRaft,
    view: MetadataView,
    settings: ControllerSettings,
    sessions: Mutex<Sessions>,
    /// Held from validation to commit; the term it last confirmed it leads in.
    write_lock: tokio::sync::Mutex<u64>,
    /// Held during a change of the voters (not the write lock: catching a new voter up may
    /// take a while, and metadata writes go on meanwhile).
    voters_lock: tokio::sync::Mutex<()>,
}

/// Metadata writes wait while this lives (see [`ControllerNode::pause_writes`]).
pub struct WritesPaused<'a> {
    _write_lock: tokio::sync::MutexGuard<'a, u64>,
}

/// A controller node. Cheap to clone.
#[derive(Clone)]
pub struct ControllerNode {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl ControllerNode {
    /// Wraps a started Raft node. Call [`run`](Self::run) to start its background duties.
    pub fn new(
        id: NodeId,
        raft: MetadataRaft,
        view: MetadataView,
        settings: ControllerSettings,
    ) -> Self {
        let inner = Inner {
            id,
            raft,
            view,
            settings,
            sessions: Mutex::new(Sessions {
                term: 0,
                last_seen_ms: BTreeMap::new(),
            }),
            write_lock: tokio::sync::Mutex::new(0),
            voters_lock: tokio::sync::Mutex::new(()),
        };
        ControllerNode {
            inner: Arc::new(inner),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The Raft handle.
    pub fn raft(&self) -> &MetadataRaft {
        &self.inner.raft
    }

    /// The applied image.
    pub fn view(&self) -> &MetadataView {
        &self.inner.view
    }

    /// The leader this node knows, with its internal address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.inner.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .nodes()
            .find(|(n, _)| **n == id)
            .map(|(_, node)| node.addr.clone())?;
        Some((id, addr))
    }

    /// Whether this node is the active controller.
    pub fn is_active(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.id)
    }

    /// Holds metadata writes back until the guard is dropped. A leader handing over stops
    /// proposing, so that the target's log can match its own: a target one entry short
    /// cannot win the election it is asked to run.
    pub async fn pause_writes(&self) -> WritesPaused<'_> {
        WritesPaused {
            _write_lock: self.inner.write_lock.lock().await,
        }
    }

    fn not_controller(&self) -> WriteError {
        WriteError::NotController {
            leader: self.leader().filter(|(id, _)| *id != self.inner.id),
        }
    }

    /// Checks a request against the latest image and commits the records it yields. `build`
    /// returns the records and a value for the caller; no records means nothing to commit.
    async fn write<T>(
        &self,
        build: impl FnOnce(&MetadataImage) -> Result<(Vec<Record>, T), ControllerError>,
    ) -> Result<(MetadataOffset, T)> {
        let mut confirmed_term = self.inner.write_lock.lock().await;
        if !self.is_active() {
            return Err(self.not_controller());
        }
        let timeout = self.inner.settings.write_timeout;
        let result =
            tokio::time::timeout(timeout, self.write_locked(&mut confirmed_term, build)).await;
        result.unwrap_or_else(|_| {
            // The quorum did not answer (lost majority?). The proposal may still commit, so
            // the next write must first see everything committed before it checks anything.
            *confirmed_term = 0;
            Err(WriteError::Unavailable(format!(
                "the metadata quorum did not commit within {timeout:?}"
            )))
        })
    }

    async fn write_locked<T>(
        &self,
        confirmed_term: &mut u64,
        build: impl FnOnce(&MetadataImage) -> Result<(Vec<Record>, T), ControllerError>,
    ) -> Result<(MetadataOffset, T)> {
        let term = self.inner.raft.metrics().borrow().current_term;
        if *confirmed_term != term {
            // First write of this term: make sure the image holds every entry committed by
            // earlier leaders before checking anything against it.
            self.inner
                .raft
                .ensure_linearizable()
                .await
                .map_err(|_| self.not_controller())?;
            *confirmed_term = term;
        }
        let image = self.inner.view.current();
        let (records, out) = build(&image)?;
        if records.is_empty() {
            return Ok((image.offset, out));
        }
        let res = self
            .inner
            .raft
            .client_write(MetadataRequest { records })
            .await
            .map_err(|e| self.write_failed(e))?;
        if !res.data.refused.is_empty() {
            return Err(WriteError::Refused(res.data.refused));
        }
        Ok((res.data.offset, out))
    }

    fn write_failed(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
    ) -> WriteError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                WriteError::NotController {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                }
            }
            other => WriteError::Unavailable(other.to_string()),
        }
    }

    /// Creates a topic and returns its id (`validate_only`: checks only, returns a would-be id).
    pub async fn create_topic(
        &self,
        req: CreateTopicRequest,
        validate_only: bool,
    ) -> Result<TopicId> {
        let topic_id = TopicId(uuid::Uuid::new_v4().as_u128());
        let start = rand_u64();
        let now = now_ms();
        self.write(|img| {
            let records = controller::create_topic(img, &req, topic_id, start, now)?;
            Ok((if validate_only { vec![] } else { records }, topic_id))
        })
        .await
        .map(|(_, id)| id)
    }

    /// Deletes a topic by name; with `expected_id`, only if the name still has that id.
    pub async fn delete_topic(&self, name: &str, expected_id: Option<TopicId>) -> Result<TopicId> {
        self.write(|img| {
            let record = controller::delete_topic(img, name)?;
            let Record::RemoveTopic(r) = &record else {
                unreachable!("delete_topic returns RemoveTopic")
            };
            if expected_id.is_some_and(|id| id != r.topic_id) {
                return Err(ControllerError::UnknownTopicId {
                    topic_id: expected_id.unwrap_or(r.topic_id),
                });
            }
            let id = r.topic_id;
            Ok((vec![record], id))
        })
        .await
        .map(|(_, id)| id)
    }

    /// Sets (`Some`) or removes (`None`) topic config overrides.
    pub async fn alter_configs(
        &self,
        name: &str,
        changes: BTreeMap<String, Option<String>>,
        validate_only: bool,
    ) -> Result<()> {
        self.write(|img| {
            let record = controller::alter_configs(img, name, &changes)?;
            Ok((if validate_only { vec![] } else { vec![record] }, ()))
        })
        .await
        .map(|_| ())
    }

    /// Runs leader elections on `partitions` (all in one metadata write); returns each
    /// partition's outcome, in order.
    pub async fn elect_leaders(
        &self,
        election: controller::Election,
        partitions: Vec<(crate::records::TopicId, i32)>,
    ) -> Result<Vec<Result<(), ControllerError>>> {
        let (_, outcomes) = self
            .write(|img| {
                let mut records = Vec::new();
                let mut outcomes = Vec::new();
                for (topic_id, partition) in &partitions {
                    match controller::elect_leader(img, *topic_id, *partition, election) {
                        Ok(r) => {
                            records.push(r);
                            outcomes.push(Ok(()));
                        }
                        Err(e) => outcomes.push(Err(e)),
                    }
                }
                Ok((records, outcomes))
            })
            .await?;
        Ok(outcomes)
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<()> {
        let start = rand_u64();
        self.write(|img| {
            let records = controller::create_partitions(img, name, count, start)?;
            Ok((if validate_only { vec![] } else { records }, ()))
        })
        .await
        .map(|_| ())
    }

    /// Registers a broker and returns its broker epoch.
    pub async fn register_broker(
        &self,
        req: controller::RegisterBrokerRequest,
    ) -> Result<BrokerEpoch> {
        let expired = self.session_expired(req.broker_id);
        let now = now_ms();
        let (offset, existing) = self
            .write(
                |img| match controller::register_broker(img, &req, expired, now)? {
                    Registration::Existing(epoch) => Ok((vec![], Some(epoch))),
                    Registration::Records(records) => Ok((records, None)),
                },
            )
            .await?;
        self.touch(req.broker_id);
        Ok(existing.unwrap_or(offset))
    }

    fn session_expired(&self, broker: BrokerId) -> bool {
        let sessions = self.sessions();
        let timeout = self.inner.settings.session_timeout.as_millis() as i64;
        sessions
            .last_seen_ms
            .get(&broker)
            .is_none_or(|seen| now_ms().saturating_sub(*seen) > timeout)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self, broker: BrokerId) {
        self.sessions().last_seen_ms.insert(broker, now_ms());
    }

    /// Handles a heartbeat: keeps the session alive, unfences a broker that has caught up,
    /// fences one that asks for it, starts and finishes controlled shutdown.
    pub async fn heartbeat(&self, hb: Heartbeat) -> Result<HeartbeatReply> {
        if !self.is_active() {
            return Err(self.not_controller());
        }
        let image = self.inner.view.current();
        let state = controller::current_broker(&image, hb.broker_id, hb.broker_epoch)?;
        self.touch(hb.broker_id);
        let is_caught_up = hb.metadata_offset >= hb.broker_epoch;
        let state = match state {
            BrokerState::Fenced if is_caught_up && !hb.want_fence && !hb.want_shutdown => {
                self.write(|img| {
                    Ok((
                        controller::unfence_broker(img, hb.broker_id, hb.broker_epoch)?,
                        (),
                    ))
                })
                .await?;
                BrokerState::Unfenced
            }
            // Kafka's wantFence: a broker whose disk refuses writes asks to be fenced, so its
            // leaderships move to healthy replicas and it leaves every ISR at once.
            BrokerState::Unfenced if hb.want_fence && !hb.want_shutdown => {
                tracing::warn!(
                    broker_id = hb.broker_id,
                    "fencing a broker at its own request"
                );
                self.write(|img| Ok((controller::fence_broker(img, hb.broker_id, now_ms())?, ())))
                    .await?;
                BrokerState::Fenced
            }
            BrokerState::Unfenced if hb.want_shutdown => {
                self.write(|img| {
                    let records =
                        controller::begin_controlled_shutdown(img, hb.broker_id, hb.broker_epoch)?;
                    Ok((records, ()))
                })
                .await?;
                BrokerState::ShuttingDown
            }
            s => s,
        };
        let should_shutdown = hb.want_shutdown
            && (state == BrokerState::Fenced
                || controller::controlled_shutdown_done(&self.inner.view.current(), hb.broker_id));
        if should_shutdown && state != BrokerState::Fenced {
            // The broker stops now: fence it so that it leaves every ISR at once instead of
            // after its session times out.
            self.write(|img| Ok((controller::fence_broker(img, hb.broker_id, now_ms())?, ())))
                .await?;
        }
        Ok(HeartbeatReply {
            is_caught_up,
            is_fenced: state != BrokerState::Unfenced,
            should_shutdown,
        })
    }

    /// Commits a partition leader's ISR proposal and returns the partition's new state.
    pub async fn alter_partition(
        &self,
        req: controller::AlterPartitionRequest,
    ) -> Result<crate::image::PartitionState> {
        self.write(|img| {
            let change = controller::alter_partition(img, &req)?;
            let moving = img
                .partition(req.topic_id, req.partition)
                .is_some_and(|p| p.is_reassigning());
            let mut records = vec![change];
            if moving {
                // The ISR change may complete the reassignment: commit that in the same entry.
                let mut next = img.clone();
                let _ = next.apply(img.offset + 1, &records[0]);
                records.extend(reassign::completion(&next, req.topic_id, req.partition));
            }
            Ok((records, ()))
        })
        .await?;
        self.inner
            .view
            .current()
            .partition(req.topic_id, req.partition)
            .cloned()
            .ok_or_else(|| {
                ControllerError::UnknownPartition {
                    topic_id: req.topic_id,
                    partition: req.partition,
                }
                .into()
            })
    }

    /// Hands the next block of [`PRODUCER_ID_BLOCK`] producer ids to a broker; returns its
    /// first id.
    pub async fn allocate_producer_ids(
        &self,
        broker_id: BrokerId,
        broker_epoch: BrokerEpoch,
    ) -> Result<i64> {
        let (_, first) = self
            .write(|img| {
                let record = controller::allocate_producer_ids(
                    img,
                    broker_id,
                    broker_epoch,
                    PRODUCER_ID_BLOCK,
                )?;
                Ok((vec![record], img.next_producer_id))
            })
            .await?;
        Ok(first)
    }

    /// Starts (`Some(target)`) or cancels (`None`) reassignments in one metadata write;
    /// returns each partition's outcome, in order.
    pub async fn alter_reassignments(
        &self,
        moves: Vec<(TopicId, PartitionIndex, Option<Vec<BrokerId>>)>,
    ) -> Result<Vec<Result<(), ControllerError>>> {
        let (_, outcomes) = self
            .write(|img| {
                // Each move is checked against the image with the earlier moves applied.
                let mut scratch = img.clone();
                let mut records = Vec::new();
                let mut outcomes = Vec::new();
                for (topic_id, partition, target) in &moves {
                    let record = match target {
                        Some(t) => reassign::start_reassignment(&scratch, *topic_id, *partition, t),
                        None => {
                            reassign::cancel_reassignment(&scratch, *topic_id, *partition).map(Some)
                        }
                    };
                    outcomes.push(record.map(|r| {
                        if let Some(r) = r {
                            let _ = scratch.apply(img.offset + 1, &r);
                            records.push(r);
                        }
                    }));
                }
                Ok((records, outcomes))
            })
            .await?;
        Ok(outcomes)
    }

    /// Starts or cancels decommissioning a broker.
    pub async fn decommission(&self, broker_id: BrokerId, cancel: bool) -> Result<()> {
        self.write(|img| Ok((vec![reassign::decommission(img, broker_id, cancel)?], ())))
            .await
            .map(|_| ())
    }

    /// Adds `node_id` at `addr` to the voters: first as a learner, blocking until it has caught
    /// up, then as a voter. Returns the voters after the change.
    pub async fn add_voter(&self, node_id: NodeId, addr: String) -> Result<Vec<NodeId>> {
        let _one_change = self.inner.voters_lock.lock().await;
        if !self.is_active() {
            return Err(self.not_controller());
        }
        if self.voter_ids().contains(&node_id) {
            return Err(ControllerError::DuplicateVoter { node_id }.into());
        }
        tracing::info!(node_id, %addr, "adding a voter: catching it up as a learner");
        self.inner
            .raft
            .add_learner(node_id, openraft::BasicNode::new(addr), true)
            .await
            .map_err(|e| self.membership_failed(e))?;
        let add = openraft::ChangeMembers::AddVoterIds(std::collections::BTreeSet::from([node_id]));
        self.inner
            .raft
            .change_membership(add, false)
            .await
            .map_err(|e| self.membership_failed(e))?;
        tracing::info!(node_id, "voter added");
        Ok(self.voter_ids())
    }

    /// Removes `node_id` from the voters. A node that is also a registered broker stays a
    /// learner (KRaft's observer), so that its broker keeps following the metadata; a
    /// controller-only node leaves the membership. Removing this node itself makes it step
    /// down once the change is committed. Returns the voters after the change.
    pub async fn remove_voter(&self, node_id: NodeId) -> Result<Vec<NodeId>> {
        let _one_change = self.inner.voters_lock.lock().await;
        if !self.is_active() {
            return Err(self.not_controller());
        }
        let voters = self.voter_ids();
        if !voters.contains(&node_id) {
            return Err(ControllerError::VoterNotFound { node_id }.into());
        }
        if voters.len() == 1 {
            return Err(ControllerError::LastVoter { node_id }.into());
        }
        let is_broker = self.is_registered_broker(node_id);
        let remove =
            openraft::ChangeMembers::RemoveVoters(std::collections::BTreeSet::from([node_id]));
        self.inner
            .raft
            .change_membership(remove, is_broker)
            .await
            .map_err(|e| self.membership_failed(e))?;
        tracing::info!(node_id, kept_as_learner = is_broker, "voter removed");
        Ok(voters.into_iter().filter(|v| *v != node_id).collect())
    }

    /// Drops `node_id` from the membership if it is only a learner (an AddVoter that timed out
    /// before the node caught up), so that the leader stops replicating to it.
    pub async fn forget_learner(&self, node_id: NodeId) {
        if self.voter_ids().contains(&node_id) {
            return;
        }
        let remove =
            openraft::ChangeMembers::RemoveNodes(std::collections::BTreeSet::from([node_id]));
        if let Err(e) = self.inner.raft.change_membership(remove, false).await {
            tracing::warn!(node_id, error = %e, "could not drop the learner");
        }
    }

    /// Whether `node_id` is registered as a broker in the applied image.
    pub fn is_registered_broker(&self, node_id: NodeId) -> bool {
        BrokerId::try_from(node_id)
            .is_ok_and(|id| self.inner.view.current().brokers.contains_key(&id))
    }

    /// Drops the learners that are no longer registered brokers: removed voters whose broker
    /// was decommissioned since. Skipped while a voter change (which may be catching a new
    /// voter up as a learner) is under way.
    async fn drop_departed_learners(&self) {
        let Ok(_one_change) = self.inner.voters_lock.try_lock() else {
            return;
        };
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let departed: std::collections::BTreeSet<NodeId> = membership
            .learner_ids()
            .filter(|id| !self.is_registered_broker(*id))
            .collect();
        if departed.is_empty() {
            return;
        }
        tracing::info!(?departed, "dropping learners whose broker is gone");
        let remove = openraft::ChangeMembers::RemoveNodes(departed);
        if let Err(e) = self.inner.raft.change_membership(remove, false).await {
            tracing::warn!(error = %e, "could not drop the learners");
        }
    }

    /// The voters of the membership this node knows.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        let m = self.inner.raft.metrics().borrow().clone();
        let ids = m.membership_config.membership().voter_ids().collect();
        ids
    }

    fn membership_failed(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
    ) -> WriteError {
        match e {
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                ControllerError::ReconfigurationInProgress {
                    detail: c.to_string(),
                }
                .into()
            }
            other => self.write_failed(other),
        }
    }

    /// The quorum as this node sees it; `None` unless it is the leader.
    pub fn quorum_state(&self) -> Option<QuorumState> {
        if !self.is_active() {
            return None;
        }
        let m = self.inner.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let replication = m.replication.clone().unwrap_or_default();
        let member = |id: &NodeId, addr: &str| {
            let matched = if *id == self.inner.id {
                m.last_log_index
            } else {
                replication.get(id).cloned().flatten().map(|l| l.index)
            };
            QuorumMember {
                node_id: *id,
                endpoint: addr.to_owned(),
                matched,
                lag: matched.map(|i| last.saturating_sub(i)),
            }
        };
        let membership = m.membership_config.membership();
        let voter_ids: Vec<NodeId> = membership.voter_ids().collect();
        let (voters, learners) = membership
            .nodes()
            .map(|(id, node)| member(id, &node.addr))
            .partition(|q| voter_ids.contains(&q.node_id));
        Some(QuorumState {
            leader_id: self.inner.id,
            term: m.current_term,
            commit_index: m.last_applied.map_or(0, |l| l.index),
            voters,
            learners,
        })
    }

    /// Runs the active controller's background duties until `shutdown`: starting sessions
    /// afresh when this node becomes leader, naming the cluster, and fencing brokers whose
    /// session expired.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let period = (self.inner.settings.session_timeout / 4).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(period);
        let mut last_rebalance = tokio::time::Instant::now();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            if !self.is_active() {
                continue;
            }
            self.start_term_if_new();
            if let Err(e) = self.ensure_cluster_id().await {
                tracing::debug!(error = %e, "could not name the cluster yet");
                continue;
            }
            if let Err(e) = self.fence_expired().await {
                tracing::warn!(error = %e, "fencing expired brokers failed");
            }
            if let Err(e) = self.move_replicas().await {
                tracing::warn!(error = %e, "reassignment or decommission step failed");
            }
            self.drop_departed_learners().await;
            let rebalance = self.inner.settings.leader_rebalance_interval;
            if rebalance.is_some_and(|every| last_rebalance.elapsed() >= every) {
                last_rebalance = tokio::time::Instant::now();
                if let Err(e) = self.rebalance_leaders().await {
                    tracing::warn!(error = %e, "preferred leader rebalance failed");
                }
            }
        }
    }

    /// Completes reassignments whose targets are in sync (one may have been left by an earlier
    /// controller) and takes the next steps of decommissions.
    async fn move_replicas(&self) -> Result<()> {
        self.write(|img| {
            let mut records = reassign::completions(img);
            records.extend(reassign::decommission_steps(img));
            for r in &records {
                if let Record::UnregisterBroker(u) = r {
                    tracing::info!(broker_id = u.broker_id, "broker decommissioned");
                }
            }
            Ok((records, ()))
        })
        .await
        .map(|_| ())
    }

    /// Kafka's auto leader rebalance: preferred elections for the partitions of brokers whose
    /// imbalance is above the threshold.
    async fn rebalance_leaders(&self) -> Result<()> {
        let percent = self.inner.settings.leader_imbalance_percent;
        self.write(|img| {
            let records: Vec<Record> = reassign::imbalanced_leaders(img, percent)
                .into_iter()
                .filter_map(|(t, p)| {
                    controller::elect_leader(img, t, p, controller::Election::Preferred).ok()
                })
                .collect();
            if !records.is_empty() {
                tracing::info!(
                    partitions = records.len(),
                    "leaders go back to their preferred replicas"
                );
            }
            Ok((records, ()))
        })
        .await
        .map(|_| ())
    }

    fn start_term_if_new(&self) {
        let term = self.inner.raft.metrics().borrow().current_term;
        let image = self.inner.view.current();
        let mut sessions = self.sessions();
        if sessions.term == term {
            return;
        }
        let now = now_ms();
        sessions.term = term;
        sessions.last_seen_ms = image.brokers.keys().map(|b| (*b, now)).collect();
        tracing::info!(
            node_id = self.inner.id,
            term,
            "active controller: broker sessions start afresh"
        );
    }

    async fn ensure_cluster_id(&self) -> Result<()> {
        if !self.inner.view.current().cluster_id.is_empty() {
            return Ok(());
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.write(|img| {
            let records = if img.cluster_id.is_empty() {
                vec![Record::ClusterId(ClusterIdRecord {
                    cluster_id: id.clone(),
                })]
            } else {
                vec![]
            };
            Ok((records, ()))
        })
        .await
        .map(|_| ())
    }

    async fn fence_expired(&self) -> Result<()> {
        let timeout = self.inner.settings.session_timeout.as_millis() as i64;
        let seen = self.sessions().last_seen_ms.clone();
        let expired =
            controller::expired_brokers(&self.inner.view.current(), &seen, now_ms(), timeout);
        for broker in expired {
            tracing::warn!(broker_id = broker, "broker session expired: fencing it");
            self.write(|img| {
                // Checked again under the write lock: a heartbeat may have raced the timer.
                let still_expired = controller::expired_brokers(
                    img,
                    &self.sessions().last_seen_ms,
                    now_ms(),
                    timeout,
                );
                if !still_expired.contains(&broker) {
                    return Ok((vec![], ()));
                }
                Ok((controller::fence_broker(img, broker, now_ms())?, ()))
            })
            .await?;
        }
        Ok(())
    }
}

fn rand_u64() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

#[cfg(test)]
#[path = "node_test.rs"]
mod tests;
