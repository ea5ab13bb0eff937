//! The `Cluster` service: metadata for clients, the description of the cluster and of the
//! metadata quorum, and membership changes: voters added and removed (openraft membership
//! changes on the active controller), brokers decommissioned or unregistered.
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

use std::time::Duration;

use keel_metadata::node::{ControllerNode, WriteError};

use super::admin::on_controller;
use super::convert::{self, invalid, write_error};
use super::{forward, Remote, Route, Shared};

/// How long AddVoter waits for the new voter to catch up when the request names no timeout.
const ADD_VOTER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the active controller asked to remove itself looks for a leader to do it when
/// handing its seat over failed (an election with split votes may take a few rounds).
const REMOVE_SELF_TIMEOUT: Duration = Duration::from_secs(15);

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
            brokers: convert::brokers_with_load(&image),
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

    async fn add_voter(&self, req: Request<AddVoterRequest>) -> Reply<AddVoterResponse> {
        on_controller(
            &self.shared,
            req,
            add_voter,
            |ch, r| Box::pin(async move { ClusterClient::new(ch).add_voter(r).await }),
            |_, e| AddVoterResponse {
                error: Some(e),
                voters: vec![],
            },
        )
        .await
    }

    async fn remove_voter(&self, req: Request<RemoveVoterRequest>) -> Reply<RemoveVoterResponse> {
        let shared = self.shared.clone();
        on_controller(
            &self.shared,
            req,
            |c, r| remove_voter(shared, c, r),
            |ch, r| Box::pin(async move { ClusterClient::new(ch).remove_voter(r).await }),
            |_, e| RemoveVoterResponse {
                error: Some(e),
                voters: vec![],
            },
        )
        .await
    }

    async fn unregister_broker(
        &self,
        _req: Request<UnregisterBrokerRequest>,
    ) -> Reply<UnregisterBrokerResponse> {
        Err(Status::unimplemented(
            "use DecommissionBroker: it moves the broker's replicas away, then unregisters it",
        ))
    }

    async fn decommission_broker(
        &self,
        req: Request<DecommissionBrokerRequest>,
    ) -> Reply<DecommissionBrokerResponse> {
        on_controller(
            &self.shared,
            req,
            decommission,
            |ch, r| Box::pin(async move { ClusterClient::new(ch).decommission_broker(r).await }),
            |_, e| DecommissionBrokerResponse { error: Some(e) },
        )
        .await
    }
}

async fn add_voter(c: ControllerNode, req: AddVoterRequest) -> AddVoterResponse {
    let failed = |e| AddVoterResponse {
        error: Some(e),
        voters: vec![],
    };
    if req.node_id <= 0 || !valid_endpoint(&req.endpoint) {
        return failed(invalid(format!(
            "add-voter needs a positive node id and a host:port endpoint, got {}@{:?}",
            req.node_id, req.endpoint
        )));
    }
    let wait = match req.timeout_ms {
        t if t > 0 => Duration::from_millis(t as u64),
        _ => ADD_VOTER_TIMEOUT,
    };
    let node_id = req.node_id as u64;
    match tokio::time::timeout(wait, c.add_voter(node_id, req.endpoint.clone())).await {
        Ok(Ok(voters)) => AddVoterResponse {
            error: None,
            voters: voters.into_iter().map(|v| v as i32).collect(),
        },
        Ok(Err(e)) => failed(write_error(e)),
        Err(_) => {
            c.forget_learner(node_id).await;
            failed(Error::new(
                ErrorCode::RequestTimedOut,
                format!(
                    "node {node_id} at {} did not catch up within {wait:?}: is it running with \
                     the controller role and reachable? Nothing changed.",
                    req.endpoint
                ),
            ))
        }
    }
}

fn valid_endpoint(endpoint: &str) -> bool {
    endpoint
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

async fn remove_voter(
    shared: Arc<Shared>,
    c: ControllerNode,
    req: RemoveVoterRequest,
) -> RemoveVoterResponse {
    if req.node_id <= 0 {
        return RemoveVoterResponse {
            error: Some(invalid("remove-voter needs a positive node id")),
            voters: vec![],
        };
    }
    if req.node_id as u64 == c.id() && c.voter_ids().len() > 1 {
        return remove_self(&shared, &c, req).await;
    }
    removed(c.remove_voter(req.node_id as u64).await)
}

async fn decommission(
    c: ControllerNode,
    req: DecommissionBrokerRequest,
) -> DecommissionBrokerResponse {
    DecommissionBrokerResponse {
        error: c
            .decommission(req.broker_id, req.cancel)
            .await
            .err()
            .map(write_error),
    }
}

/// Removing the active controller itself: hand leadership to the most caught-up other voter
/// first (no election timeout for the quorum to sit out), then ask the new leader to remove
/// this node, which is then an ordinary follower. When the hand-over fails (another voter won,
/// or this node won back), the removal goes to whoever leads within [`REMOVE_SELF_TIMEOUT`]:
/// a leader that removes itself steps down once the change is committed.
async fn remove_self(
    shared: &Shared,
    c: &ControllerNode,
    req: RemoveVoterRequest,
) -> RemoveVoterResponse {
    crate::quorum::hand_over_leadership(c).await;
    let deadline = tokio::time::Instant::now() + REMOVE_SELF_TIMEOUT;
    let call: Remote<_, _> =
        |ch, r| Box::pin(async move { ClusterClient::new(ch).remove_voter(r).await });
    let elect = |on| c.raft().runtime_config().elect(on);
    loop {
        let resp = match c.leader() {
            Some((id, _)) if id == c.id() => removed(c.remove_voter(id).await),
            Some((_, addr)) => {
                // Not a candidate while another leader removes it.
                elect(false);
                forward(shared, &[addr], req, call)
                    .await
                    .unwrap_or_else(|e| RemoveVoterResponse {
                        error: Some(e),
                        voters: vec![],
                    })
            }
            None => RemoveVoterResponse {
                error: Some(shared.not_controller()),
                voters: vec![],
            },
        };
        let retry = resp.error.as_ref().is_some_and(not_controller);
        if !retry || tokio::time::Instant::now() >= deadline {
            // A controller-only node leaves the membership and may never hear of it: its
            // elections would only disturb the others. Otherwise it is still a voter, or a
            // learner that follows the log and may be made a voter again.
            let gone = resp.error.is_none() && !c.is_registered_broker(c.id());
            elect(!gone);
            return resp;
        }
        // No leader, or one that lost its seat: this node may be needed to elect one.
        elect(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn not_controller(e: &Error) -> bool {
    e.code == ErrorCode::NotController as i32
}

fn removed(result: Result<Vec<u64>, WriteError>) -> RemoveVoterResponse {
    match result {
        Ok(voters) => RemoveVoterResponse {
            error: None,
            voters: voters.into_iter().map(|v| v as i32).collect(),
        },
        Err(e) => RemoveVoterResponse {
            error: Some(write_error(e)),
            voters: vec![],
        },
    }
}
