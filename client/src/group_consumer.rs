//! [`GroupConsumer`]: a member of a consumer group. The coordinator assigns its partitions
//! (Kafka's KIP-848 protocol), it starts each at the group's committed offset (else
//! `auto_offset_reset`) and commits what it has returned.
//!
//! A background task heartbeats to the coordinator and hands each new assignment to the
//! consumer; [`GroupConsumer::poll`] applies it before fetching: it commits and stops reading
//! the partitions taken away, then the next heartbeat reports them released, and only then
//! does the coordinator give them to another member. Partitions that stay are never paused.
//! The partitions the member reports owning are conservative: a partition counts as owned from
//! the moment an assignment names it until `poll` has released it.
//!
//! Commits (at-least-once, as Kafka's consumer): with auto-commit, each `poll` first commits
//! the positions after the records the previous polls returned, at most every
//! `auto_commit_interval`, and always before giving partitions up and in
//! [`close`](GroupConsumer::close). [`commit`](GroupConsumer::commit) commits now.
//!
//! A member that was fenced or expired (its heartbeats stopped longer than the session
//! timeout) drops every partition without committing and joins again. Dropping a
//! `GroupConsumer` without `close` stops its heartbeats: the coordinator moves its
//! partitions after the session timeout, as after a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_proto::v1 as pb;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::groups::CoordinatorLink;
use crate::{
    AdminClient, Consumer, ConsumerOptions, ConsumerRecord, Error, ErrorCode, Position,
    TopicPartition,
};

/// What a [`GroupConsumer`] subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// These topics.
    Topics(Vec<String>),
    /// Every topic whose whole name matches this regular expression (RE2 syntax).
    Pattern(String),
}

/// How a [`GroupConsumer`] takes part in its group. Defaults follow Kafka's consumer.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// The group id (`group.id`).
    pub group_id: String,
    /// Static membership id (`group.instance.id`): a member that restarts under it within
    /// the session timeout gets its partitions back without a rebalance.
    pub instance_id: Option<String>,
    /// `client.rack`.
    pub rack_id: Option<String>,
    /// Server-side assignor (`group.remote.assignor`): `uniform` (default) or `range`.
    pub assignor: Option<String>,
    /// `enable.auto.commit`.
    pub auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
    /// Longest time between polls before the coordinator may remove the member while it
    /// owes a revocation (`max.poll.interval.ms`).
    pub rebalance_timeout: Duration,
    /// Sent as `x-keel-client-id`, shown by `keel group describe`.
    pub client_id: String,
    /// Fetching, offset reset (`auto.offset.reset`), retries.
    pub consumer: ConsumerOptions,
}

impl GroupOptions {
    /// Kafka's defaults for group `group_id`.
    pub fn new(group_id: impl Into<String>) -> GroupOptions {
        GroupOptions {
            group_id: group_id.into(),
            instance_id: None,
            rack_id: None,
            assignor: None,
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            rebalance_timeout: Duration::from_secs(300),
            client_id: "keel-rust".into(),
            consumer: ConsumerOptions::default(),
        }
    }
}

/// What the heartbeat task and the poll side share.
#[derive(Debug, Default)]
struct Member {
    member_id: String,
    epoch: i32,
    /// Partitions given to the member and not yet released, with their topic ids.
    owned: BTreeMap<TopicPartition, Bytes>,
    /// The latest assignment, for `poll` to converge to.
    target: Option<BTreeSet<TopicPartition>>,
    /// Fenced or expired: `poll` drops everything, then the task joins again.
    lost: bool,
    /// A non-retriable failure of the membership, reported by the next `poll`.
    failed: Option<Error>,
    closing: bool,
}

struct Inner {
    admin: AdminClient,
    link: CoordinatorLink,
    options: GroupOptions,
    subscription: Mutex<Subscription>,
    member: Mutex<Member>,
    /// Wakes the heartbeat task (partitions released, closing) and `poll` (new assignment).
    to_task: Notify,
    to_poll: Notify,
}

impl Inner {
    fn member(&self) -> MutexGuard<'_, Member> {
        self.member.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A consumer group member. See the module doc.
///
/// ```no_run
/// # async fn demo() -> Result<(), keel_client::Error> {
/// use std::time::Duration;
/// use keel_client::{GroupConsumer, GroupOptions, Subscription};
/// let mut c = GroupConsumer::connect(&["127.0.0.1:9292".into()], GroupOptions::new("billing")).await?;
/// c.subscribe(Subscription::Topics(vec!["orders".into()]));
/// loop {
///     for r in c.poll(Duration::from_secs(1)).await? {
///         println!("{}/{}@{}", r.topic, r.partition, r.offset);
///     }
/// }
/// # }
/// ```
pub struct GroupConsumer {
    inner: Arc<Inner>,
    consumer: Consumer,
    task: Option<JoinHandle<()>>,
    last_commit: Instant,
    /// Positions last committed, so an idle partition is not committed again.
    committed: BTreeMap<TopicPartition, i64>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group_id", &self.inner.options.group_id)
            .field("member", &*self.inner.member())
            .finish()
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl GroupConsumer {
    /// Connects to the first reachable address of `bootstrap`. The member joins at its first
    /// [`subscribe`](Self::subscribe).
    pub async fn connect(bootstrap: &[String], options: GroupOptions) -> Result<Self, Error> {
        if options.group_id.is_empty() {
            return Err(Error::InvalidArgument {
                argument: "group_id".into(),
                reason: "must not be empty",
            });
        }
        let consumer = Consumer::connect(bootstrap, options.consumer.clone()).await?;
        let admin = AdminClient::connect_with(bootstrap, options.consumer.metadata.clone()).await?;
        let inner = Arc::new(Inner {
            admin,
            link: CoordinatorLink::new(&options.group_id),
            options,
            subscription: Mutex::new(Subscription::Topics(vec![])),
            member: Mutex::new(Member::default()),
            to_task: Notify::new(),
            to_poll: Notify::new(),
        });
        Ok(GroupConsumer {
            inner,
            consumer,
            task: None,
            last_commit: Instant::now(),
            committed: BTreeMap::new(),
        })
    }

    /// Sets the subscription; the first call joins the group (heartbeats start).
    pub fn subscribe(&mut self, subscription: Subscription) {
        *self
            .inner
            .subscription
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = subscription;
        match &self.task {
            None => self.task = Some(tokio::spawn(heartbeats(self.inner.clone()))),
            Some(_) => self.inner.to_task.notify_one(),
        }
    }

    /// The partitions this member reads now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer.assignment()
    }

    /// The member id (empty until the first heartbeat answered) and epoch.
    pub fn member(&self) -> (String, i32) {
        let m = self.inner.member();
        (m.member_id.clone(), m.epoch)
    }

    /// Records of the member's partitions, waiting up to `timeout` for some. Applies a new
    /// assignment first and, with auto-commit, commits what earlier polls returned.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.inner.member().failed.clone() {
                return Err(e);
            }
            self.reconcile().await?;
            if self.inner.options.auto_commit
                && self.last_commit.elapsed() >= self.inner.options.auto_commit_interval
            {
                if let Err(e) = self.commit().await {
                    warn!(error = %e, "auto-commit failed");
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.consumer.assignment().is_empty() {
                let step = left.min(Duration::from_millis(200));
                let _ = tokio::time::timeout(step, self.inner.to_poll.notified()).await;
            } else {
                let records = self
                    .consumer
                    .poll(left.min(Duration::from_millis(200)))
                    .await?;
                if !records.is_empty() {
                    return Ok(records);
                }
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Commits these offsets (each the offset of the next record to read) of partitions the
    /// member owns.
    pub async fn commit_offsets(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<(), Error> {
        commit(&self.inner, offsets).await?;
        self.committed.extend(offsets.iter().cloned());
        Ok(())
    }

    /// Commits the positions after every record returned so far.
    pub async fn commit(&mut self) -> Result<(), Error> {
        let all: BTreeSet<TopicPartition> = self.consumer.assignment().into_iter().collect();
        self.commit_partitions(&all).await
    }

    async fn commit_partitions(&mut self, tps: &BTreeSet<TopicPartition>) -> Result<(), Error> {
        self.last_commit = Instant::now();
        let due: Vec<(TopicPartition, i64)> = tps
            .iter()
            .filter_map(|tp| Some((tp.clone(), self.consumer.position(tp)?)))
            .filter(|(tp, o)| self.committed.get(tp) != Some(o))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        commit(&self.inner, &due).await?;
        self.committed.extend(due);
        Ok(())
    }

    /// Converges the consumer to the latest assignment (see the module doc).
    async fn reconcile(&mut self) -> Result<(), Error> {
        let (target, lost) = {
            let mut m = self.inner.member();
            (m.target.take(), m.lost)
        };
        if lost {
            let all = self.consumer.assignment();
            info!(group = %self.inner.options.group_id, partitions = all.len(),
                "membership lost: dropping partitions without committing");
            self.consumer.unassign(&all);
            self.committed.clear();
            let mut m = self.inner.member();
            m.owned.clear();
            m.lost = false;
            drop(m);
            self.inner.to_task.notify_one();
            return Ok(());
        }
        let Some(target) = target else { return Ok(()) };
        let current: BTreeSet<TopicPartition> = self.consumer.assignment().into_iter().collect();
        let revoked: BTreeSet<TopicPartition> = current.difference(&target).cloned().collect();
        if !revoked.is_empty() {
            if self.inner.options.auto_commit {
                if let Err(e) = self.commit_partitions(&revoked).await {
                    warn!(error = %e, "commit before giving partitions up failed");
                }
            }
            let list: Vec<TopicPartition> = revoked.iter().cloned().collect();
            self.consumer.unassign(&list);
            for tp in &list {
                self.committed.remove(tp);
            }
            debug!(group = %self.inner.options.group_id, ?list, "partitions released");
        }
        let added: Vec<TopicPartition> = target.difference(&current).cloned().collect();
        if !added.is_empty() {
            if let Err(e) = self.take_up(&added).await {
                // Try again at the next poll.
                self.inner.member().target.get_or_insert(target);
                return Err(e);
            }
        }
        let mut m = self.inner.member();
        m.owned.retain(|tp, _| !revoked.contains(tp));
        drop(m);
        if !revoked.is_empty() {
            self.inner.to_task.notify_one();
        }
        Ok(())
    }

    /// Starts reading `added` at the group's committed offsets (else the reset position).
    async fn take_up(&mut self, added: &[TopicPartition]) -> Result<(), Error> {
        let committed = fetch_committed(&self.inner, added).await?;
        self.consumer.assign(added).await?;
        for (tp, offset) in committed {
            self.consumer.seek(&tp, Position::Offset(offset))?;
            self.committed.insert(tp, offset);
        }
        debug!(group = %self.inner.options.group_id, ?added, "partitions taken up");
        Ok(())
    }

    /// Commits (with auto-commit) and leaves the group: its partitions move at once (a
    /// static member's stay reserved for its instance id until the session timeout).
    pub async fn close(mut self) -> Result<(), Error> {
        let committed = match self.inner.options.auto_commit {
            true => self.commit().await,
            false => Ok(()),
        };
        self.inner.member().closing = true;
        self.inner.to_task.notify_one();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        committed
    }
}

async fn commit(inner: &Inner, offsets: &[(TopicPartition, i64)]) -> Result<(), Error> {
    let (member_id, member_epoch) = {
        let m = inner.member();
        (m.member_id.clone(), m.epoch)
    };
    inner
        .link
        .commit(&inner.admin, &member_id, member_epoch, offsets)
        .await
}

async fn fetch_committed(
    inner: &Inner,
    tps: &[TopicPartition],
) -> Result<Vec<(TopicPartition, i64)>, Error> {
    inner.link.committed(&inner.admin, tps).await
}

/// The heartbeat loop of one member (see the module doc).
async fn heartbeats(inner: Arc<Inner>) {
    let mut interval = Duration::from_secs(1);
    loop {
        let leaving = inner.member().closing;
        let request = heartbeat_request(&inner, leaving);
        let answer = inner
            .link
            .call(&inner.admin, "Groups.ConsumerGroupHeartbeat", |mut rpc| {
                let mut request = tonic::Request::new(request.clone());
                if let Ok(v) = inner.options.client_id.parse() {
                    request.metadata_mut().insert("x-keel-client-id", v);
                }
                async move { rpc.consumer_group_heartbeat(request).await }
            })
            .await;
        if leaving {
            return;
        }
        match answer {
            Ok(r) => {
                interval = Duration::from_millis(r.heartbeat_interval_ms.max(100) as u64);
                apply_answer(&inner, r);
            }
            Err(e) => match e.api_code() {
                Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch) => {
                    warn!(group = %inner.options.group_id, error = %e, "fenced; rejoining");
                    lose_membership(&inner).await;
                    continue;
                }
                _ if e.is_retriable() => {
                    debug!(group = %inner.options.group_id, error = %e, "heartbeat failed; retrying");
                }
                _ => {
                    warn!(group = %inner.options.group_id, error = %e, "membership failed");
                    inner.member().failed = Some(e);
                    inner.to_poll.notify_one();
                    return;
                }
            },
        }
        let _ = tokio::time::timeout(interval, inner.to_task.notified()).await;
    }
}

fn heartbeat_request(inner: &Inner, leaving: bool) -> pb::ConsumerGroupHeartbeatRequest {
    let m = inner.member();
    let (names, regex) = match &*inner
        .subscription
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
    {
        Subscription::Topics(t) => (t.clone(), None),
        Subscription::Pattern(p) => (vec![], Some(p.clone())),
    };
    let epoch = match (leaving, inner.options.instance_id.is_some()) {
        (true, true) => -2,
        (true, false) => -1,
        (false, _) => m.epoch,
    };
    let mut owned: BTreeMap<Bytes, pb::TopicPartitions> = BTreeMap::new();
    for (tp, id) in &m.owned {
        let entry = owned
            .entry(id.clone())
            .or_insert_with(|| pb::TopicPartitions {
                topic_id: id.clone(),
                topic: tp.topic.clone(),
                partitions: vec![],
            });
        entry.partitions.push(tp.partition);
    }
    let o = &inner.options;
    pb::ConsumerGroupHeartbeatRequest {
        group_id: o.group_id.clone(),
        member_id: m.member_id.clone(),
        member_epoch: epoch,
        instance_id: o.instance_id.clone(),
        rack_id: o.rack_id.clone(),
        rebalance_timeout_ms: Some(o.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32),
        subscribed_topic_names: names,
        subscribed_topic_regex: regex,
        server_assignor: o.assignor.clone(),
        owned_partitions: owned.into_values().collect(),
    }
}

fn apply_answer(inner: &Inner, r: pb::ConsumerGroupHeartbeatResponse) {
    let mut m = inner.member();
    m.member_id = r.member_id;
    m.epoch = r.member_epoch;
    let Some(a) = r.assignment else { return };
    let mut target = BTreeSet::new();
    for t in a.topic_partitions {
        for p in t.partitions {
            let tp = TopicPartition::new(t.topic.clone(), p);
            // Owned from now on, until poll releases it (see the module doc).
            m.owned.insert(tp.clone(), t.topic_id.clone());
            target.insert(tp);
        }
    }
    m.target = Some(target);
    drop(m);
    inner.to_poll.notify_one();
}

/// Waits until `poll` dropped every partition, then rejoins at epoch 0.
async fn lose_membership(inner: &Inner) {
    {
        let mut m = inner.member();
        m.lost = true;
        m.target = None;
    }
    inner.to_poll.notify_one();
    loop {
        {
            let mut m = inner.member();
            if !m.lost || m.closing {
                m.epoch = 0;
                return;
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), inner.to_task.notified()).await;
    }
}
