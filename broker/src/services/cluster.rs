//! The `Cluster` service: metadata for clients, the description of the cluster and of the
//! metadata quorum. Voter and broker membership changes come with the elastic-cluster work and
//! answer `UNIMPLEMENTED`.
//!
//! With `auto_create_topics_enable`, a Metadata request naming unknown topics creates them
//! first (with the cluster defaults) and answers with the new topics, or with the creation's
//! error for a topic that could not be created.

use std::collections::BTreeMap;
use std::sync::Arc;

use keel_proto::v1::cluster_client::ClusterClient;
use keel_proto::v1::cluster_server::Cluster;
use keel_proto::v1::*;
use tonic::{Request, Response, Status};

use super::convert;
use super::{forward, Remote, Route, Shared};

/// The `Cluster` service of a node.
pub struct ClusterService {
    shared: Arc<Shared>,
}

impl ClusterService {
    /// The service over a node's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        ClusterService { shared }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn metadata(
    shared: &Shared,
    controller_id: Option<i32>,
    req: &MetadataRequest,
    not_created: &BTreeMap<String, Error>,
) -> MetadataResponse {
    let image = shared.view.current();
    let topics = if req.topics.is_empty() {
        image
            .topics
            .values()
            .map(|t| convert::topic(&image, t, req.include_configs))
            .collect()
    } else {
        req.topics
            .iter()
            .map(|name| match image.topic_by_name(name) {
                Some(t) => convert::topic(&image, t, req.include_configs),
                None => TopicMetadata {
                    error: Some(not_created.get(name).cloned().unwrap_or_else(|| {
                        Error::new(
                            ErrorCode::UnknownTopicOrPartition,
                            format!("unknown topic {name}"),
                        )
                    })),
                    name: name.clone(),
                    ..Default::default()
                },
            })
            .collect()
    };
    MetadataResponse {
        error: None,
        cluster_id: image.cluster_id.clone(),
        controller_id,
        brokers: image.unfenced_brokers().map(convert::broker).collect(),
        topics,
        metadata_offset: image.offset,
    }
}

/// With `auto_create_topics_enable`, creates the topics of `names` this node does not know;
/// returns the errors of those that could not be created.
pub async fn auto_create(shared: &Shared, names: &[String]) -> BTreeMap<String, Error> {
    if !shared.topic_defaults.auto_create {
        return BTreeMap::new();
    }
    let image = shared.view.current();
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| image.topic_by_name(n).is_none())
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if unknown.is_empty() {
        return BTreeMap::new();
    }
    super::admin::auto_create_topics(shared, &unknown).await
}

fn quorum(state: keel_metadata::node::QuorumState) -> DescribeQuorumResponse {
    let member = |m: &keel_metadata::node::QuorumMember| QuorumMember {
        node_id: m.node_id as i32,
        endpoint: m.endpoint.clone(),
        last_log_index: m.matched,
        lag: m.lag,
        // openraft 0.9 reports no per-follower contact time; only the leader's own is known.
        last_contact_ms: (m.node_id == state.leader_id).then_some(0),
    };
    DescribeQuorumResponse {
        error: None,
        leader_id: Some(state.leader_id as i32),
        term: state.term,
        commit_index: state.commit_index,
        voters: state.voters.iter().map(member).collect(),
        learners: state.learners.iter().map(member).collect(),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn metadata(&self, req: Request<MetadataRequest>) -> Reply<MetadataResponse> {
        let not_created = auto_create(&self.shared, &req.get_ref().topics).await;
        Ok(Response::new(metadata(
            &self.shared,
            self.shared.controller_id(),
            req.get_ref(),
            &not_created,
        )))
    }

    async fn describe_cluster(
        &self,
        _req: Request<DescribeClusterRequest>,
    ) -> Reply<DescribeClusterResponse> {
        let image = self.shared.view.current();
        Ok(Response::new(DescribeClusterResponse {
            error: None,
            cluster_id: image.cluster_id.clone(),
            controller_id: self.shared.controller_id(),
            brokers: image.brokers.values().map(convert::broker).collect(),
            metadata_offset: image.offset,
        }))
    }

    async fn describe_quorum(
        &self,
        req: Request<DescribeQuorumRequest>,
    ) -> Reply<DescribeQuorumResponse> {
        let failed = |e| DescribeQuorumResponse {
            error: Some(e),
            ..Default::default()
        };
        let resp = match self.shared.route(req.metadata()) {
            Route::Local(c) => match c.quorum_state() {
                Some(state) => quorum(state),
                None => failed(self.shared.not_controller()),
            },
            Route::Forward(addrs) => {
                let call: Remote<_, _> = |ch, r| {
                    Box::pin(async move { ClusterClient::new(ch).describe_quorum(r).await })
                };
                forward(&self.shared, &addrs, req.into_inner(), call)
                    .await
                    .unwrap_or_else(failed)
            }
            Route::Unavailable(e) => failed(e),
        };
        Ok(Response::new(resp))
    }

    async fn add_voter(&self, _req: Request<AddVoterRequest>) -> Reply<AddVoterResponse> {
        Err(Status::unimplemented(
            "voter changes come with the elastic-cluster work",
        ))
    }

    async fn remove_voter(&self, _req: Request<RemoveVoterRequest>) -> Reply<RemoveVoterResponse> {
        Err(Status::unimplemented(
            "voter changes come with the elastic-cluster work",
        ))
    }

    async fn unregister_broker(
        &self,
        _req: Request<UnregisterBrokerRequest>,
    ) -> Reply<UnregisterBrokerResponse> {
        Err(Status::unimplemented(
            "broker decommissioning comes with the elastic-cluster work",
        ))
    }
}
