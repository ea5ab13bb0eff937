//! The `Groups` service: consumer groups and committed offsets, over the group coordinator
//! ([`crate::groups`]). This file converts between the wire and the coordinator's types and
//! checks what only the metadata image can tell (topics, partitions); the rules live in
//! [`crate::groups::group`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use keel_metadata::image::MetadataImage;
use keel_proto::v1::groups_server::Groups;
use keel_proto::v1::{self as pb, ErrorCode};
use tonic::{Request, Response, Status};

use super::convert::{parse_topic_id, topic_id_bytes};
use super::Shared;
use crate::groups::assignor::TopicPartition;
use crate::groups::coordinator::Coordinator;
use crate::groups::group::{Change, Committed, Group, Heartbeat, State};

/// The header a client may name itself with.
const CLIENT_ID_HEADER: &str = "x-keel-client-id";

type Reply<T> = Result<Response<T>, Status>;

/// The heartbeat interval given to a member that does not hold its target yet.
const RECONCILING_HEARTBEAT_MS: i32 = 300;

/// Serves `Groups`.
pub struct GroupsService {
    shared: Arc<Shared>,
    coordinator: Arc<Coordinator>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn err(code: ErrorCode, msg: impl Into<String>) -> pb::Error {
    pb::Error::new(code, msg)
}

/// Partitions by topic id as the wire lists them; unknown ids are dropped.
fn partition_set(list: &[pb::TopicPartitions]) -> BTreeSet<TopicPartition> {
    list.iter()
        .filter_map(|t| Some((parse_topic_id(&t.topic_id)?, t)))
        .flat_map(|(id, t)| t.partitions.iter().map(move |p| (id, *p)))
        .collect()
}

/// Partitions as the wire lists them, with topic names from the image.
fn assignment(image: &MetadataImage, set: &BTreeSet<TopicPartition>) -> pb::Assignment {
    let mut by_topic: BTreeMap<_, Vec<i32>> = BTreeMap::new();
    for (t, p) in set {
        by_topic.entry(*t).or_default().push(*p);
    }
    let topic_partitions = by_topic
        .into_iter()
        .map(|(id, partitions)| pb::TopicPartitions {
            topic_id: topic_id_bytes(id),
            topic: image
                .topics
                .get(&id)
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            partitions,
        })
        .collect();
    pb::Assignment { topic_partitions }
}

fn wire_state(s: State) -> pb::GroupState {
    match s {
        State::Empty => pb::GroupState::Empty,
        State::Reconciling => pb::GroupState::Reconciling,
        State::Stable => pb::GroupState::Stable,
    }
}

/// A member-side request for a group that does not exist names an unknown member.
fn no_group_means_unknown_member(e: pb::Error) -> pb::Error {
    match e.code() {
        ErrorCode::GroupIdNotFound => err(ErrorCode::UnknownMemberId, e.message),
        _ => e,
    }
}

impl GroupsService {
    pub fn new(shared: Arc<Shared>, coordinator: Arc<Coordinator>) -> GroupsService {
        GroupsService {
            shared,
            coordinator,
        }
    }

    fn heartbeat_of(&self, req: &Request<pb::ConsumerGroupHeartbeatRequest>) -> Heartbeat {
        let body = req.get_ref();
        Heartbeat {
            member_id: body.member_id.clone(),
            member_epoch: body.member_epoch,
            instance_id: body.instance_id.clone().filter(|i| !i.is_empty()),
            rack_id: body.rack_id.clone(),
            rebalance_timeout_ms: body.rebalance_timeout_ms,
            topic_names: body.subscribed_topic_names.clone(),
            topic_regex: body.subscribed_topic_regex.clone(),
            assignor: body.server_assignor.clone().filter(|a| !a.is_empty()),
            owned: partition_set(&body.owned_partitions),
            client_id: req
                .metadata()
                .get(CLIENT_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            client_host: req.remote_addr().map(|a| a.to_string()).unwrap_or_default(),
        }
    }

    async fn commit(&self, req: pb::OffsetCommitRequest) -> pb::OffsetCommitResponse {
        let image = self.shared.view.current();
        let max = self.coordinator.cfg.metadata_max_bytes;
        let now = now_ms();
        let mut valid = Vec::new();
        let topics: Vec<pb::OffsetCommitTopicResponse> = req
            .topics
            .iter()
            .map(|t| pb::OffsetCommitTopicResponse {
                topic: t.topic.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let error = check_commit(&image, &t.topic, p, max);
                        if error.is_none() {
                            let c = Committed {
                                offset: p.committed_offset,
                                leader_epoch: p.committed_leader_epoch,
                                metadata: p.committed_metadata.clone(),
                                commit_timestamp: now,
                            };
                            valid.push(((t.topic.clone(), p.partition), c));
                        }
                        pb::OffsetCommitPartitionResponse {
                            partition: p.partition,
                            error,
                        }
                    })
                    .collect(),
            })
            .collect();
        let admin = req.member_id.is_empty() && req.member_epoch < 0;
        let (member, epoch) = (req.member_id.clone(), req.member_epoch);
        let outcome = self
            .coordinator
            .update(&req.group_id, admin, move |g| {
                g.check_commit(&member, epoch)?;
                let mut changes = vec![];
                g.commit(valid, &mut changes);
                Ok(((), changes))
            })
            .await;
        match outcome {
            Ok(()) => pb::OffsetCommitResponse {
                error: None,
                topics,
            },
            Err(e) => pb::OffsetCommitResponse {
                error: Some(no_group_means_unknown_member(e)),
                topics: vec![],
            },
        }
    }

    fn fetch_offsets(g: Option<&Group>, req: &pb::OffsetFetchRequest) -> pb::OffsetFetchResponse {
        if let (Some(g), false) = (g, req.member_id.is_empty()) {
            if let Err(e) = g.check_commit(&req.member_id, req.member_epoch) {
                return pb::OffsetFetchResponse {
                    error: Some(e),
                    topics: vec![],
                };
            }
        }
        let offsets = g.map(|g| g.offsets.clone()).unwrap_or_default();
        let wanted: Vec<(String, Vec<i32>)> = match req.partitions.is_empty() {
            true => {
                let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (t, p) in offsets.keys() {
                    all.entry(t.clone()).or_default().push(*p);
                }
                all.into_iter().collect()
            }
            false => req
                .partitions
                .iter()
                .map(|t| (t.topic.clone(), t.partitions.clone()))
                .collect(),
        };
        let topics = wanted
            .into_iter()
            .map(|(topic, partitions)| pb::OffsetFetchTopic {
                partitions: partitions
                    .into_iter()
                    .map(|p| {
                        let c = offsets.get(&(topic.clone(), p));
                        pb::OffsetFetchPartition {
                            partition: p,
                            error: None,
                            committed_offset: c.map(|c| c.offset),
                            committed_leader_epoch: c.and_then(|c| c.leader_epoch),
                            committed_metadata: c.map(|c| c.metadata.clone()).unwrap_or_default(),
                        }
                    })
                    .collect(),
                topic,
            })
            .collect();
        pb::OffsetFetchResponse {
            error: None,
            topics,
        }
    }

    async fn describe_one(&self, group_id: &str, include_offsets: bool) -> pb::DescribedGroup {
        let failed = |e: pb::Error| pb::DescribedGroup {
            group_id: group_id.to_owned(),
            error: Some(e),
            ..Default::default()
        };
        let g = match self.coordinator.read(group_id, |g| g.cloned()).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                return failed(err(
                    ErrorCode::GroupIdNotFound,
                    format!("no group {group_id}"),
                ))
            }
            Err(e) => return failed(e),
        };
        let image = self.shared.view.current();
        let members = g
            .members
            .values()
            .map(|m| pb::GroupMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                rack_id: m.rack_id.clone(),
                member_epoch: m.epoch,
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                subscribed_topic_names: m.subscription.names.iter().cloned().collect(),
                subscribed_topic_regex: m.subscription.pattern(),
                assignment: Some(assignment(&image, &m.assigned)),
                target_assignment: Some(assignment(
                    &image,
                    &g.target.get(&m.id).cloned().unwrap_or_default(),
                )),
            })
            .collect();
        let offsets = match include_offsets {
            true => self.offsets_with_lag(&image, &g).await,
            false => vec![],
        };
        pb::DescribedGroup {
            group_id: g.id.clone(),
            error: None,
            state: wire_state(g.state()) as i32,
            group_epoch: g.epoch,
            assignment_epoch: g.target_epoch,
            assignor_name: g.assignor.clone(),
            coordinator_id: self.shared.node_id as i32,
            members,
            offsets,
        }
    }

    async fn offsets_with_lag(&self, image: &MetadataImage, g: &Group) -> Vec<pb::GroupOffset> {
        let keys: Vec<(String, i32)> = g.offsets.keys().cloned().collect();
        let hws = self.coordinator.high_watermarks(image, &keys).await;
        g.offsets
            .iter()
            .map(|((topic, partition), c)| {
                let hw = hws.get(&(topic.clone(), *partition)).copied();
                pb::GroupOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    committed_offset: c.offset,
                    committed_metadata: c.metadata.clone(),
                    high_watermark: hw,
                    lag: hw.map(|hw| (hw - c.offset).max(0)),
                }
            })
            .collect()
    }
}

/// Why one partition's offset cannot be committed, if it cannot.
fn check_commit(
    image: &MetadataImage,
    topic: &str,
    p: &pb::OffsetCommitPartition,
    max_metadata: usize,
) -> Option<pb::Error> {
    let exists = image
        .topic_by_name(topic)
        .is_some_and(|t| t.partitions.contains_key(&p.partition));
    if !exists {
        return Some(err(
            ErrorCode::UnknownTopicOrPartition,
            format!("{topic}-{}", p.partition),
        ));
    }
    if p.committed_metadata.len() > max_metadata {
        return Some(err(
            ErrorCode::OffsetMetadataTooLarge,
            format!(
                "{} bytes; at most {max_metadata}",
                p.committed_metadata.len()
            ),
        ));
    }
    if p.committed_offset < 0 {
        return Some(err(
            ErrorCode::InvalidRequest,
            "a committed offset is never negative",
        ));
    }
    None
}

#[tonic::async_trait]
impl Groups for GroupsService {
    async fn find_coordinator(
        &self,
        req: Request<pb::FindCoordinatorRequest>,
    ) -> Reply<pb::FindCoordinatorResponse> {
        let mut coordinators = Vec::new();
        for group_id in req.into_inner().group_ids {
            let c = match self.coordinator.find(&group_id).await {
                Ok((broker_id, addr)) => {
                    let (host, port) = addr.rsplit_once(':').unwrap_or((&addr, "0"));
                    pb::Coordinator {
                        group_id,
                        error: None,
                        broker_id,
                        host: host.to_owned(),
                        port: port.parse().unwrap_or(0),
                    }
                }
                Err(e) => pb::Coordinator {
                    group_id,
                    error: Some(e),
                    ..Default::default()
                },
            };
            coordinators.push(c);
        }
        Ok(Response::new(pb::FindCoordinatorResponse {
            error: None,
            coordinators,
        }))
    }

    async fn consumer_group_heartbeat(
        &self,
        req: Request<pb::ConsumerGroupHeartbeatRequest>,
    ) -> Reply<pb::ConsumerGroupHeartbeatResponse> {
        let hb = self.heartbeat_of(&req);
        let group_id = req.into_inner().group_id;
        let image = self.shared.view.current();
        let cfg = self.coordinator.cfg.clone();
        let join = hb.member_epoch == 0;
        let outcome = self
            .coordinator
            .update(&group_id, join, |g| g.heartbeat(hb, &image, now_ms(), &cfg))
            .await;
        let resp = match outcome {
            Ok(a) => pb::ConsumerGroupHeartbeatResponse {
                error: None,
                member_id: a.member_id,
                member_epoch: a.member_epoch,
                // A member still moving towards its target comes back soon, so a rebalance
                // takes a few round trips rather than a few heartbeat intervals.
                heartbeat_interval_ms: match a.settled {
                    true => cfg.heartbeat_interval_ms,
                    false => cfg.heartbeat_interval_ms.min(RECONCILING_HEARTBEAT_MS),
                },
                assignment: a.assignment.map(|set| assignment(&image, &set)),
            },
            Err(e) => pb::ConsumerGroupHeartbeatResponse {
                error: Some(no_group_means_unknown_member(e)),
                heartbeat_interval_ms: cfg.heartbeat_interval_ms,
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn offset_commit(
        &self,
        req: Request<pb::OffsetCommitRequest>,
    ) -> Reply<pb::OffsetCommitResponse> {
        Ok(Response::new(self.commit(req.into_inner()).await))
    }

    async fn offset_fetch(
        &self,
        req: Request<pb::OffsetFetchRequest>,
    ) -> Reply<pb::OffsetFetchResponse> {
        let req = req.into_inner();
        let resp = match self
            .coordinator
            .read(&req.group_id, |g| Self::fetch_offsets(g, &req))
            .await
        {
            Ok(r) => r,
            Err(e) => pb::OffsetFetchResponse {
                error: Some(e),
                topics: vec![],
            },
        };
        Ok(Response::new(resp))
    }

    async fn delete_offsets(
        &self,
        req: Request<pb::DeleteOffsetsRequest>,
    ) -> Reply<pb::DeleteOffsetsResponse> {
        let req = req.into_inner();
        let partitions = req.partitions.clone();
        let outcome = self
            .coordinator
            .update(&req.group_id, false, move |g| {
                let mut changes = vec![];
                let mut results = vec![];
                for t in &partitions {
                    let subscribed = g.subscribes_to(&t.topic);
                    for p in &t.partitions {
                        let error = match subscribed {
                            true => Some(err(
                                ErrorCode::GroupSubscribedToTopic,
                                format!("a member subscribes to {}", t.topic),
                            )),
                            false => {
                                if g.offsets.remove(&(t.topic.clone(), *p)).is_some() {
                                    changes.push(Change::OffsetGone(t.topic.clone(), *p));
                                }
                                None
                            }
                        };
                        results.push(pb::GroupPartitionResult {
                            topic: t.topic.clone(),
                            partition: *p,
                            error,
                        });
                    }
                }
                Ok((results, changes))
            })
            .await;
        let resp = match outcome {
            Ok(results) => pb::DeleteOffsetsResponse {
                error: None,
                results,
            },
            Err(e) => pb::DeleteOffsetsResponse {
                error: Some(e),
                results: vec![],
            },
        };
        Ok(Response::new(resp))
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Reply<pb::ListGroupsResponse> {
        let filter = req.into_inner().states_filter;
        let groups = self
            .coordinator
            .list()
            .await
            .into_iter()
            .map(|(group_id, s)| pb::ListedGroup {
                group_id,
                state: wire_state(s) as i32,
            })
            .filter(|g| filter.is_empty() || filter.contains(&g.state))
            .collect();
        let error = self.coordinator.loading().then(|| {
            err(
                ErrorCode::CoordinatorLoadInProgress,
                "some group state is still loading; the list may be incomplete",
            )
        });
        Ok(Response::new(pb::ListGroupsResponse { error, groups }))
    }

    async fn describe_groups(
        &self,
        req: Request<pb::DescribeGroupsRequest>,
    ) -> Reply<pb::DescribeGroupsResponse> {
        let req = req.into_inner();
        let mut groups = Vec::new();
        for id in &req.group_ids {
            groups.push(self.describe_one(id, req.include_offsets).await);
        }
        Ok(Response::new(pb::DescribeGroupsResponse {
            error: None,
            groups,
        }))
    }

    async fn delete_groups(
        &self,
        req: Request<pb::DeleteGroupsRequest>,
    ) -> Reply<pb::DeleteGroupsResponse> {
        let mut results = Vec::new();
        for group_id in req.into_inner().group_ids {
            let outcome = self
                .coordinator
                .update(&group_id, false, |g| match g.members.is_empty() {
                    true => Ok(((), vec![Change::GroupGone])),
                    false => Err(err(
                        ErrorCode::GroupNotEmpty,
                        format!("group {} has {} members", g.id, g.members.len()),
                    )),
                })
                .await;
            results.push(pb::DeletedGroup {
                group_id,
                error: outcome.err(),
            });
        }
        Ok(Response::new(pb::DeleteGroupsResponse {
            error: None,
            results,
        }))
    }
}
