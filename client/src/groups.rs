//! Consumer groups from the admin side, and the coordinator connection the
//! [`GroupConsumer`](crate::GroupConsumer) shares.
//!
//! [`CoordinatorLink`] finds a group's coordinator (`Groups.FindCoordinator`, answered by any
//! broker), keeps a channel to it, and retries retriable failures: `NOT_COORDINATOR` follows
//! the hint the broker gives (every broker knows where the coordinator is), while
//! `COORDINATOR_LOAD_IN_PROGRESS`, `COORDINATOR_NOT_AVAILABLE` and transport failures find
//! the coordinator again after a backoff.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use keel_proto::v1 as pb;
use keel_proto::v1::groups_client::GroupsClient as GroupsRpc;
use serde::Serialize;
use tonic::transport::Channel;
use tracing::debug;

use crate::admin::WireResponse;
use crate::pb_conv::{api_error, check};
use crate::topology::lazy_channel;
use crate::{AdminClient, ApiError, Error, ErrorCode, TopicPartition};

/// A group as `keel group list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// `EMPTY`, `RECONCILING`, `STABLE`, ...
    pub state: String,
    /// The broker coordinating it.
    pub coordinator: i32,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMemberInfo {
    /// The member id.
    pub member_id: String,
    /// The static membership id, if any.
    pub instance_id: Option<String>,
    /// The member's current epoch.
    pub member_epoch: i32,
    /// The client id its heartbeats carry.
    pub client_id: String,
    /// Where its heartbeats come from.
    pub client_host: String,
    /// Subscribed topic names.
    pub subscribed_topics: Vec<String>,
    /// Subscription pattern, if any.
    pub subscribed_pattern: Option<String>,
    /// The partitions it owns now.
    pub assignment: Vec<TopicPartition>,
    /// The partitions the target assignment gives it.
    pub target_assignment: Vec<TopicPartition>,
}

/// A committed offset with the partition's lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupOffsetInfo {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The committed offset (the next record the group will read).
    pub committed_offset: i64,
    /// The metadata committed with it.
    pub metadata: String,
    /// The partition's high watermark, when its leader answered.
    pub high_watermark: Option<i64>,
    /// High watermark minus committed offset.
    pub lag: Option<i64>,
}

/// A group as `keel group describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// `EMPTY`, `RECONCILING`, `STABLE`, ...
    pub state: String,
    /// The group epoch.
    pub group_epoch: i32,
    /// The target assignment's epoch.
    pub assignment_epoch: i32,
    /// The server-side assignor in use.
    pub assignor: String,
    /// The coordinating broker.
    pub coordinator: i32,
    /// The members.
    pub members: Vec<GroupMemberInfo>,
    /// Committed offsets and lag.
    pub offsets: Vec<GroupOffsetInfo>,
}

fn state_name(state: i32) -> String {
    pb::GroupState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("GROUP_STATE_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("UNKNOWN({state})"))
}

/// Partitions of an assignment, by topic name.
pub(crate) fn assignment_partitions(a: Option<&pb::Assignment>) -> Vec<TopicPartition> {
    a.map(|a| {
        a.topic_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| TopicPartition::new(t.topic.clone(), *p))
            })
            .collect()
    })
    .unwrap_or_default()
}

impl From<pb::DescribedGroup> for GroupDescription {
    fn from(g: pb::DescribedGroup) -> Self {
        GroupDescription {
            state: state_name(g.state),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor_name,
            coordinator: g.coordinator_id,
            members: g
                .members
                .into_iter()
                .map(|m| GroupMemberInfo {
                    assignment: assignment_partitions(m.assignment.as_ref()),
                    target_assignment: assignment_partitions(m.target_assignment.as_ref()),
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    member_epoch: m.member_epoch,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    subscribed_topics: m.subscribed_topic_names,
                    subscribed_pattern: m.subscribed_topic_regex,
                })
                .collect(),
            offsets: g
                .offsets
                .into_iter()
                .map(|o| GroupOffsetInfo {
                    topic: o.topic,
                    partition: o.partition,
                    committed_offset: o.committed_offset,
                    metadata: o.committed_metadata,
                    high_watermark: o.high_watermark,
                    lag: o.lag,
                })
                .collect(),
            group_id: g.group_id,
        }
    }
}

/// The connection to one group's coordinator (see the module doc).
#[derive(Debug)]
pub(crate) struct CoordinatorLink {
    group_id: String,
    cached: Mutex<Option<(String, Channel)>>,
}

impl CoordinatorLink {
    pub fn new(group_id: &str) -> CoordinatorLink {
        CoordinatorLink {
            group_id: group_id.to_owned(),
            cached: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<(String, Channel)> {
        self.cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, value: Option<(String, Channel)>) {
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }

    /// The coordinator's address and a channel to it, asking any broker when unknown.
    async fn channel(&self, admin: &AdminClient) -> Result<(String, Channel), Error> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let addr = admin.find_coordinator(&self.group_id).await?.1;
        let channel = lazy_channel(&addr)?;
        self.set(Some((addr.clone(), channel.clone())));
        Ok((addr, channel))
    }

    /// Where to go after a failure: the hinted coordinator, or find it again.
    fn after(&self, err: &Error) {
        let hint = match err {
            Error::Api(ApiError {
                leader_endpoint: Some(hint),
                ..
            }) => lazy_channel(hint).ok().map(|ch| (hint.clone(), ch)),
            _ => None,
        };
        self.set(hint);
    }

    /// One rpc at the coordinator, retried while retriable (up to the admin's retries).
    pub async fn call<R, F, Fut>(
        &self,
        admin: &AdminClient,
        rpc: &'static str,
        mut send: F,
    ) -> Result<R, Error>
    where
        R: WireResponse,
        F: FnMut(GroupsRpc<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let options = admin.options();
        let mut retry = 0;
        loop {
            let outcome = match self.channel(admin).await {
                Ok((addr, ch)) => match send(GroupsRpc::new(ch)).await {
                    Ok(r) => {
                        let mut r = r.into_inner();
                        check(r.take_error()).map(|()| r)
                    }
                    Err(status) => Err(Error::from_status(&addr, &status)),
                },
                Err(e) => Err(e),
            };
            let err = match outcome {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            if !err.is_retriable() || retry >= options.retries {
                return Err(err);
            }
            debug!(rpc, group = %self.group_id, error = %err, retry, "retrying at the coordinator");
            self.after(&err);
            tokio::time::sleep(options.backoff_for(retry)).await;
            retry += 1;
        }
    }
}

impl CoordinatorLink {
    /// Commits `offsets` as member `member_id` at `member_epoch` (empty and -1: the admin
    /// form); fails with the request's error or the first partition's.
    pub async fn commit(
        &self,
        admin: &AdminClient,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), Error> {
        let mut topics: BTreeMap<String, Vec<pb::OffsetCommitPartition>> = BTreeMap::new();
        for (tp, offset) in offsets {
            topics
                .entry(tp.topic.clone())
                .or_default()
                .push(pb::OffsetCommitPartition {
                    partition: tp.partition,
                    committed_offset: *offset,
                    ..Default::default()
                });
        }
        let request = pb::OffsetCommitRequest {
            group_id: self.group_id.clone(),
            member_id: member_id.to_owned(),
            member_epoch,
            topics: topics
                .into_iter()
                .map(|(topic, partitions)| pb::OffsetCommitTopic { topic, partitions })
                .collect(),
        };
        let r = self
            .call(admin, "Groups.OffsetCommit", |mut rpc| {
                let request = request.clone();
                async move { rpc.offset_commit(request).await }
            })
            .await?;
        for p in r.topics.into_iter().flat_map(|t| t.partitions) {
            group_error(p.error)?;
        }
        Ok(())
    }

    /// The group's committed offsets of `tps` (every committed partition when empty).
    pub async fn committed(
        &self,
        admin: &AdminClient,
        tps: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>, Error> {
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            by_topic
                .entry(tp.topic.clone())
                .or_default()
                .push(tp.partition);
        }
        let request = pb::OffsetFetchRequest {
            group_id: self.group_id.clone(),
            member_id: String::new(),
            member_epoch: -1,
            partitions: by_topic
                .into_iter()
                .map(|(topic, partitions)| pb::TopicPartitions {
                    topic,
                    partitions,
                    ..Default::default()
                })
                .collect(),
        };
        let r = self
            .call(admin, "Groups.OffsetFetch", |mut rpc| {
                let request = request.clone();
                async move { rpc.offset_fetch(request).await }
            })
            .await?;
        Ok(r.topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic;
                t.partitions.into_iter().filter_map(move |p| {
                    Some((
                        TopicPartition::new(topic.clone(), p.partition),
                        p.committed_offset?,
                    ))
                })
            })
            .collect())
    }
}

/// The error of a per-group result, as an `Error`.
fn group_error(e: Option<pb::Error>) -> Result<(), Error> {
    match api_error(e) {
        Some(e) => Err(Error::Api(e)),
        None => Ok(()),
    }
}

impl AdminClient {
    /// The coordinator of `group_id`: broker id and `host:port` (`Groups.FindCoordinator`).
    /// The first call of a cluster creates `__consumer_offsets`; it is retried meanwhile.
    pub async fn find_coordinator(&self, group_id: &str) -> Result<(i32, String), Error> {
        let request = pb::FindCoordinatorRequest {
            group_ids: vec![group_id.to_owned()],
        };
        let mut retry = 0;
        loop {
            let r = self
                .call("Groups.FindCoordinator", |ch| {
                    let request = request.clone();
                    async move { GroupsRpc::new(ch).find_coordinator(request).await }
                })
                .await?;
            let c = r
                .coordinators
                .into_iter()
                .next()
                .ok_or(Error::InvalidResponse {
                    rpc: "Groups.FindCoordinator",
                    reason: "no coordinator in the answer".into(),
                })?;
            match group_error(c.error) {
                Ok(()) => return Ok((c.broker_id, format!("{}:{}", c.host, c.port))),
                Err(e) if e.is_retriable() && retry < self.options().retries => {
                    tokio::time::sleep(self.options().backoff_for(retry)).await;
                    retry += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every group of the cluster: each broker lists the groups it coordinates.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, Error> {
        let brokers = self.metadata(&[], false).await?.brokers;
        let mut out = Vec::new();
        for b in brokers {
            let ch = lazy_channel(&b.address())?;
            let r = GroupsRpc::new(ch)
                .list_groups(pb::ListGroupsRequest::default())
                .await
                .map_err(|s| Error::from_status(&b.address(), &s))?
                .into_inner();
            if let Some(e) = api_error(r.error) {
                if e.code != ErrorCode::CoordinatorLoadInProgress {
                    return Err(Error::Api(e));
                }
            }
            out.extend(r.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id,
                state: state_name(g.state),
                coordinator: b.id,
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// A group's members, assignments and (with `include_offsets`) committed offsets and lag.
    pub async fn describe_group(
        &self,
        group_id: &str,
        include_offsets: bool,
    ) -> Result<GroupDescription, Error> {
        let request = pb::DescribeGroupsRequest {
            group_ids: vec![group_id.to_owned()],
            include_offsets,
        };
        let g: pb::DescribedGroup = self
            .per_group("Groups.DescribeGroups", group_id, |mut rpc| {
                let request = request.clone();
                async move {
                    let mut r = rpc.describe_groups(request).await?.into_inner();
                    Ok(r.groups.pop().map(|g| (g.error.clone(), g)))
                }
            })
            .await?;
        Ok(g.into())
    }

    /// Deletes a group without active members, with its committed offsets.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), Error> {
        let request = pb::DeleteGroupsRequest {
            group_ids: vec![group_id.to_owned()],
        };
        self.per_group("Groups.DeleteGroups", group_id, |mut rpc| {
            let request = request.clone();
            async move {
                let mut r = rpc.delete_groups(request).await?.into_inner();
                Ok(r.results.pop().map(|g| (g.error.clone(), ())))
            }
        })
        .await
    }

    /// Sets committed offsets of a group that has no active members (the admin form of
    /// `Groups.OffsetCommit`); creates the group if needed. Fails as a whole with
    /// `GROUP_NOT_EMPTY` while members are active, or with the first partition's error.
    pub async fn alter_group_offsets(
        &self,
        group_id: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), Error> {
        CoordinatorLink::new(group_id)
            .commit(self, "", -1, offsets)
            .await
    }

    /// The committed offsets of a group, by partition.
    pub async fn group_offsets(&self, group_id: &str) -> Result<Vec<(TopicPartition, i64)>, Error> {
        CoordinatorLink::new(group_id).committed(self, &[]).await
    }

    /// A request about one group whose answer carries a per-group error: retried at the
    /// coordinator while that error is retriable.
    async fn per_group<T, F, Fut>(
        &self,
        rpc: &'static str,
        group_id: &str,
        mut send: F,
    ) -> Result<T, Error>
    where
        F: FnMut(GroupsRpc<Channel>) -> Fut,
        Fut: Future<Output = Result<Option<(Option<pb::Error>, T)>, tonic::Status>>,
    {
        let link = CoordinatorLink::new(group_id);
        let mut retry = 0;
        loop {
            let outcome: Result<T, Error> = async {
                let (addr, ch) = link.channel(self).await?;
                let answer = send(GroupsRpc::new(ch))
                    .await
                    .map_err(|s| Error::from_status(&addr, &s))?;
                let (error, value) = answer.ok_or(Error::InvalidResponse {
                    rpc,
                    reason: "no result for the group".into(),
                })?;
                group_error(error).map(|()| value)
            }
            .await;
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && retry < self.options().retries => {
                    link.after(&e);
                    tokio::time::sleep(self.options().backoff_for(retry)).await;
                    retry += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
