//! The `Admin` service: topic creation, deletion, configuration, partition growth, leader
//! elections and replica reassignments.
//!
//! Every write runs on the active controller (see [`Route`]); each topic (or partition) of a
//! request succeeds or fails on its own. CreateTopics fills in what a topic leaves unset from
//! the active controller's [`TopicDefaults`]. Reads (DescribeConfigs,
//! ListPartitionReassignments) come from this node's image; a broker adds the copy progress of
//! the reassigned partitions it leads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use keel_metadata::controller::{CreateTopicRequest, TOPIC_CONFIG_DEFAULTS};
use keel_metadata::node::ControllerNode;
use keel_proto::v1::admin_client::AdminClient;
use keel_proto::v1::admin_server::Admin;
use keel_proto::v1::*;
use tonic::{Request, Response, Status};

use super::convert::{invalid, parse_topic_id, topic_id_bytes, write_error};
use super::{forward, with_offset, Remote, Route, Shared, FORWARDED};
use crate::partitions::PartitionManager;
use crate::topic_defaults::{NewTopic, TopicDefaults};

/// The `Admin` service of a node.
pub struct AdminService {
    shared: Arc<Shared>,
    /// Served on the internal listener, where a broker may create internal (`__`) topics.
    internal_listener: bool,
    /// The broker's partitions (for reassignment progress); `None` on a controller-only node.
    partitions: Option<Arc<PartitionManager>>,
}

/// The header with which a broker asks the active controller, on its internal listener, to
/// create an internal topic (a name starting with `__`). Clients cannot: the client
/// listener ignores it and forwarding does not copy client headers.
pub const INTERNAL_TOPIC: &str = "keel-internal-topic";

impl AdminService {
    /// The service of the client listener.
    pub fn new(shared: Arc<Shared>) -> Self {
        AdminService {
            shared,
            internal_listener: false,
            partitions: None,
        }
    }

    /// Adds the broker's partitions, so that ListPartitionReassignments reports the copy
    /// progress of the partitions this node leads.
    pub fn with_partitions(mut self, partitions: Option<Arc<PartitionManager>>) -> Self {
        self.partitions = partitions;
        self
    }

    /// The service of the internal listener.
    pub fn internal(shared: Arc<Shared>) -> Self {
        AdminService {
            shared,
            internal_listener: true,
            partitions: None,
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// Runs `local` on the active controller, or forwards the request there with `remote`; when
/// neither is possible, `failed` builds the answer from the error.
pub(super) async fn on_controller<T, R, F>(
    shared: &Shared,
    req: Request<T>,
    local: impl FnOnce(ControllerNode, T) -> F,
    remote: Remote<T, R>,
    failed: impl FnOnce(&T, Error) -> R,
) -> Reply<R>
where
    T: Clone,
    F: std::future::Future<Output = R>,
{
    let route = shared.route(req.metadata());
    let body = req.into_inner();
    let out = match route {
        Route::Local(c) => {
            let out = local(c, body).await;
            return Ok(with_offset(out, shared.view.offset()));
        }
        Route::Forward(addrs) => match forward(shared, &addrs, body.clone(), remote).await {
            Ok(r) => r,
            Err(e) => failed(&body, e),
        },
        Route::Unavailable(e) => failed(&body, e),
    };
    Ok(Response::new(out))
}

/// Creates topics on behalf of the broker itself (the group coordinator's internal topic):
/// at the active controller, here or forwarded.
pub async fn create_topics_internal(
    shared: &Shared,
    req: CreateTopicsRequest,
) -> Result<CreateTopicsResponse, Error> {
    create_as_broker(shared, req, true).await
}

/// Creates the topics `names` with the cluster defaults, for `auto_create_topics_enable`:
/// at the active controller, here or forwarded, and waits until this node's image has them.
/// Returns each topic's error; a topic that already exists counts as created.
pub async fn auto_create_topics(shared: &Shared, names: &[String]) -> BTreeMap<String, Error> {
    let req = CreateTopicsRequest {
        topics: names
            .iter()
            .map(|name| CreatableTopic {
                name: name.clone(),
                ..Default::default()
            })
            .collect(),
        timeout_ms: 10_000,
        validate_only: false,
    };
    let failed = |e: &Error| names.iter().map(|n| (n.clone(), e.clone())).collect();
    let resp = match create_as_broker(shared, req, false).await {
        Ok(resp) => resp,
        Err(e) => return failed(&e),
    };
    let mut errors = BTreeMap::new();
    for t in resp.topics {
        match t.error {
            Some(e) if e.code != ErrorCode::TopicAlreadyExists as i32 => {
                errors.insert(t.name, e);
            }
            _ => tracing::info!(topic = %t.name, "topic auto-created"),
        }
    }
    errors
}

/// CreateTopics from this broker: run here when it is the active controller, else forwarded
/// (with the internal-topic header when `internal`), then waits until this node's image
/// holds the result.
async fn create_as_broker(
    shared: &Shared,
    req: CreateTopicsRequest,
    internal: bool,
) -> Result<CreateTopicsResponse, Error> {
    let addrs = match shared.route(&tonic::metadata::MetadataMap::new()) {
        Route::Local(c) => return Ok(create_topics(c, req, internal, &shared.topic_defaults).await),
        Route::Forward(addrs) => addrs,
        Route::Unavailable(e) => return Err(e),
    };
    let headers: &[&str] = match internal {
        true => &[FORWARDED, INTERNAL_TOPIC],
        false => &[FORWARDED],
    };
    for addr in &addrs {
        let mut r = Request::new(req.clone());
        for key in headers {
            r.metadata_mut()
                .insert(*key, tonic::metadata::MetadataValue::from_static("1"));
        }
        match AdminClient::new(shared.channel(addr))
            .create_topics(r)
            .await
        {
            Ok(resp) => {
                shared.catch_up_with(resp.metadata()).await;
                return Ok(resp.into_inner());
            }
            Err(status) => tracing::debug!(%addr, %status, "topic creation not forwarded"),
        }
    }
    Err(Error::new(
        ErrorCode::NotController,
        "no controller reachable to create the topic; retry",
    ))
}

/// Every config of a topic: its overrides, then the defaults of the keys it does not set.
fn effective_configs(
    overrides: &BTreeMap<String, String>,
) -> std::collections::HashMap<String, String> {
    let mut all: std::collections::HashMap<String, String> = TOPIC_CONFIG_DEFAULTS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all.extend(overrides.clone());
    all
}

async fn create_one(
    c: &ControllerNode,
    t: &CreatableTopic,
    validate_only: bool,
    allow_internal: bool,
    defaults: &TopicDefaults,
) -> CreatedTopic {
    let given: BTreeMap<String, String> = t.configs.clone().into_iter().collect();
    let NewTopic {
        partitions,
        replication_factor: rf,
        configs,
    } = defaults.apply(t.num_partitions, t.replication_factor, &given);
    let mut out = CreatedTopic {
        name: t.name.clone(),
        num_partitions: partitions,
        replication_factor: rf,
        ..Default::default()
    };
    let refused = if !t.assignments.is_empty() {
        Some(Error::new(
            ErrorCode::InvalidReplicaAssignment,
            "explicit replica assignments are not supported yet; give -p and -r instead",
        ))
    } else if t.name.starts_with("__") && !allow_internal {
        Some(Error::new(
            ErrorCode::InvalidTopic,
            format!(
                "topic {:?}: names starting with __ are reserved for internal topics",
                t.name
            ),
        ))
    } else {
        None
    };
    if let Some(e) = refused {
        out.error = Some(e);
        return out;
    }
    let req = CreateTopicRequest {
        name: t.name.clone(),
        partitions,
        replication_factor: rf,
        configs: configs.clone(),
    };
    match c.create_topic(req, validate_only).await {
        Ok(id) => {
            if !validate_only {
                out.topic_id = topic_id_bytes(id);
            }
            out.configs = effective_configs(&configs);
        }
        Err(e) => out.error = Some(write_error(e)),
    }
    out
}

async fn create_topics(
    c: ControllerNode,
    req: CreateTopicsRequest,
    allow_internal: bool,
    defaults: &TopicDefaults,
) -> CreateTopicsResponse {
    let mut seen = BTreeSet::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        if !seen.insert(t.name.clone()) {
            topics.push(CreatedTopic {
                name: t.name.clone(),
                error: Some(invalid(format!("topic {:?} is listed twice", t.name))),
                ..Default::default()
            });
            continue;
        }
        topics.push(create_one(&c, &t, req.validate_only, allow_internal, defaults).await);
    }
    CreateTopicsResponse {
        error: None,
        topics,
    }
}

async fn delete_topics(c: ControllerNode, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let id = (!t.topic_id.is_empty()).then(|| parse_topic_id(&t.topic_id));
        let mut out = DeletedTopic {
            name: t.name.clone(),
            topic_id: t.topic_id.clone(),
            error: None,
        };
        let name = match (id, t.name.as_str()) {
            (Some(None), _) => {
                out.error = Some(invalid("topic_id must be 16 bytes"));
                topics.push(out);
                continue;
            }
            (Some(Some(id)), "") => match c.view().current().topics.get(&id) {
                Some(topic) => topic.name.clone(),
                None => {
                    out.error = Some(Error::new(
                        ErrorCode::UnknownTopicId,
                        format!("unknown topic id {id}"),
                    ));
                    topics.push(out);
                    continue;
                }
            },
            (_, name) => name.to_owned(),
        };
        match c.delete_topic(&name, id.flatten()).await {
            Ok(id) => {
                out.name = name;
                out.topic_id = topic_id_bytes(id);
            }
            Err(e) => out.error = Some(write_error(e)),
        }
        topics.push(out);
    }
    DeleteTopicsResponse {
        error: None,
        topics,
    }
}

fn topic_resource(r: &Option<ConfigResource>) -> Result<String, Error> {
    match r {
        Some(r) if r.r#type == ConfigResourceType::Topic as i32 => Ok(r.name.clone()),
        Some(r) if r.r#type == ConfigResourceType::Broker as i32 => Err(invalid(
            "broker configs are static (the config file); only topic configs can be read or changed here",
        )),
        _ => Err(invalid("the resource type must be TOPIC or BROKER")),
    }
}

async fn alter_configs(c: ControllerNode, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut results = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let error = match topic_resource(&r.resource) {
            Err(e) => Some(e),
            Ok(name) => match config_changes(&r.configs) {
                Err(e) => Some(e),
                Ok(changes) => c
                    .alter_configs(&name, changes, req.validate_only)
                    .await
                    .err()
                    .map(write_error),
            },
        };
        results.push(AlterConfigsResult {
            resource: r.resource,
            error,
        });
    }
    AlterConfigsResponse {
        error: None,
        results,
    }
}

fn config_changes(configs: &[AlterableConfig]) -> Result<BTreeMap<String, Option<String>>, Error> {
    let mut changes = BTreeMap::new();
    for c in configs {
        let value = match AlterConfigOp::try_from(c.op) {
            Ok(AlterConfigOp::Set) => Some(c.value.clone()),
            Ok(AlterConfigOp::Delete) => None,
            _ => {
                return Err(invalid(format!(
                    "config {}: op must be SET or DELETE",
                    c.name
                )))
            }
        };
        if changes.insert(c.name.clone(), value).is_some() {
            return Err(invalid(format!("config {} is listed twice", c.name)));
        }
    }
    Ok(changes)
}

async fn create_partitions(
    c: ControllerNode,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let error = if !t.assignments.is_empty() {
            Some(Error::new(
                ErrorCode::InvalidReplicaAssignment,
                "explicit replica assignments are not supported yet",
            ))
        } else {
            c.create_partitions(&t.name, t.count, req.validate_only)
                .await
                .err()
                .map(write_error)
        };
        results.push(CreatePartitionsResult {
            name: t.name,
            error,
        });
    }
    CreatePartitionsResponse {
        error: None,
        results,
    }
}

/// The partitions an election request names: every partition of each named topic whose list
/// is empty, every partition of every topic for an empty request (preferred elections only).
/// Unknown topics and partitions come back as failed results.
fn election_targets(
    image: &keel_metadata::image::MetadataImage,
    req: &ElectLeadersRequest,
) -> (
    Vec<(String, keel_metadata::records::TopicId, i32)>,
    Vec<PartitionResult>,
) {
    let mut targets = Vec::new();
    let mut unknown = Vec::new();
    let all: Vec<TopicPartitions> = match req.partitions.is_empty() {
        true => image
            .topics
            .values()
            .map(|t| TopicPartitions {
                topic: t.name.clone(),
                ..Default::default()
            })
            .collect(),
        false => req.partitions.clone(),
    };
    for tp in all {
        let Some(t) = image.topic_by_name(&tp.topic) else {
            unknown.push(PartitionResult {
                topic: tp.topic.clone(),
                partition: -1,
                error: Some(Error::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("unknown topic {}", tp.topic),
                )),
            });
            continue;
        };
        let indexes: Vec<i32> = match tp.partitions.is_empty() {
            true => t.partitions.keys().copied().collect(),
            false => tp.partitions.clone(),
        };
        for p in indexes {
            if t.partitions.contains_key(&p) {
                targets.push((t.name.clone(), t.topic_id, p));
            } else {
                unknown.push(PartitionResult {
                    topic: t.name.clone(),
                    partition: p,
                    error: Some(Error::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic {} has no partition {p}", t.name),
                    )),
                });
            }
        }
    }
    (targets, unknown)
}

async fn elect_leaders(c: ControllerNode, req: ElectLeadersRequest) -> ElectLeadersResponse {
    use keel_metadata::controller::Election;
    let election = match ElectionType::try_from(req.election_type) {
        Ok(ElectionType::Unclean) if req.partitions.is_empty() => {
            return ElectLeadersResponse {
                error: Some(invalid(
                    "an unclean election needs an explicit list of partitions",
                )),
                results: vec![],
            }
        }
        Ok(ElectionType::Unclean) => Election::Unclean,
        Ok(_) => Election::Preferred,
        Err(_) => {
            return ElectLeadersResponse {
                error: Some(invalid(format!(
                    "unknown election type {}",
                    req.election_type
                ))),
                results: vec![],
            }
        }
    };
    let (targets, mut results) = election_targets(&c.view().current(), &req);
    let ids = targets.iter().map(|(_, id, p)| (*id, *p)).collect();
    match c.elect_leaders(election, ids).await {
        Ok(outcomes) => {
            for ((topic, _, partition), outcome) in targets.into_iter().zip(outcomes) {
                results.push(PartitionResult {
                    topic,
                    partition,
                    error: outcome.err().map(|e| Error::new(e.code(), e.to_string())),
                });
            }
            ElectLeadersResponse {
                error: None,
                results,
            }
        }
        Err(e) => ElectLeadersResponse {
            error: Some(write_error(e)),
            results,
        },
    }
}

async fn alter_reassignments(
    c: ControllerNode,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let (moves, named, mut results) = super::reassign::moves(&c.view().current(), &req);
    match c.alter_reassignments(moves).await {
        Ok(outcomes) => {
            for ((topic, partition), outcome) in named.into_iter().zip(outcomes) {
                results.push(PartitionResult {
                    topic,
                    partition,
                    error: outcome.err().map(|e| Error::new(e.code(), e.to_string())),
                });
            }
            AlterPartitionReassignmentsResponse {
                error: None,
                results,
            }
        }
        Err(e) => AlterPartitionReassignmentsResponse {
            error: Some(write_error(e)),
            results,
        },
    }
}

fn describe_configs(shared: &Shared, req: &DescribeConfigsRequest) -> DescribeConfigsResponse {
    let image = shared.view.current();
    let results = req
        .resources
        .iter()
        .map(|r| {
            let mut out = DescribeConfigsResult {
                resource: r.resource.clone(),
                ..Default::default()
            };
            let topic = topic_resource(&r.resource).and_then(|name| {
                image.topic_by_name(&name).ok_or_else(|| {
                    Error::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("unknown topic {name}"),
                    )
                })
            });
            match topic {
                Err(e) => out.error = Some(e),
                Ok(t) => out.entries = config_entries(&t.configs, &r.config_names),
            }
            out
        })
        .collect();
    DescribeConfigsResponse {
        error: None,
        results,
    }
}

fn config_entries(overrides: &BTreeMap<String, String>, names: &[String]) -> Vec<ConfigEntry> {
    TOPIC_CONFIG_DEFAULTS
        .iter()
        .filter(|(k, _)| names.is_empty() || names.iter().any(|n| n == k))
        .map(|(k, default)| {
            let (value, source) = match overrides.get(*k) {
                Some(v) => (v.clone(), ConfigSource::DynamicTopicConfig),
                None => ((*default).to_owned(), ConfigSource::DefaultConfig),
            };
            ConfigEntry {
                name: (*k).to_owned(),
                value: Some(value),
                source: source as i32,
                ..Default::default()
            }
        })
        .collect()
}

fn each_topic_failed<T>(
    names: impl Iterator<Item = String>,
    e: &Error,
    make: impl Fn(String, Error) -> T,
) -> Vec<T> {
    names.map(|n| make(n, e.clone())).collect()
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topics(
        &self,
        req: Request<CreateTopicsRequest>,
    ) -> Reply<CreateTopicsResponse> {
        let allow_internal = self.internal_listener && req.metadata().contains_key(INTERNAL_TOPIC);
        let defaults = self.shared.topic_defaults.clone();
        on_controller(
            &self.shared,
            req,
            move |c, body| async move { create_topics(c, body, allow_internal, &defaults).await },
            |ch, r| Box::pin(async move { AdminClient::new(ch).create_topics(r).await }),
            |body, e| CreateTopicsResponse {
                topics: each_topic_failed(
                    body.topics.iter().map(|t| t.name.clone()),
                    &e,
                    |name, error| CreatedTopic {
                        name,
                        error: Some(error),
                        ..Default::default()
                    },
                ),
                error: Some(e),
            },
        )
        .await
    }

    async fn delete_topics(
        &self,
        req: Request<DeleteTopicsRequest>,
    ) -> Reply<DeleteTopicsResponse> {
        on_controller(
            &self.shared,
            req,
            delete_topics,
            |ch, r| Box::pin(async move { AdminClient::new(ch).delete_topics(r).await }),
            |body, e| DeleteTopicsResponse {
                topics: each_topic_failed(
                    body.topics.iter().map(|t| t.name.clone()),
                    &e,
                    |name, error| DeletedTopic {
                        name,
                        error: Some(error),
                        ..Default::default()
                    },
                ),
                error: Some(e),
            },
        )
        .await
    }

    async fn describe_configs(
        &self,
        req: Request<DescribeConfigsRequest>,
    ) -> Reply<DescribeConfigsResponse> {
        Ok(Response::new(describe_configs(&self.shared, req.get_ref())))
    }

    async fn alter_configs(
        &self,
        req: Request<AlterConfigsRequest>,
    ) -> Reply<AlterConfigsResponse> {
        on_controller(
            &self.shared,
            req,
            alter_configs,
            |ch, r| Box::pin(async move { AdminClient::new(ch).alter_configs(r).await }),
            |body, e| AlterConfigsResponse {
                results: body
                    .resources
                    .iter()
                    .map(|r| AlterConfigsResult {
                        resource: r.resource.clone(),
                        error: Some(e.clone()),
                    })
                    .collect(),
                error: Some(e),
            },
        )
        .await
    }

    async fn create_partitions(
        &self,
        req: Request<CreatePartitionsRequest>,
    ) -> Reply<CreatePartitionsResponse> {
        on_controller(
            &self.shared,
            req,
            create_partitions,
            |ch, r| Box::pin(async move { AdminClient::new(ch).create_partitions(r).await }),
            |body, e| CreatePartitionsResponse {
                results: each_topic_failed(
                    body.topics.iter().map(|t| t.name.clone()),
                    &e,
                    |name, error| CreatePartitionsResult {
                        name,
                        error: Some(error),
                    },
                ),
                error: Some(e),
            },
        )
        .await
    }

    async fn elect_leaders(
        &self,
        req: Request<ElectLeadersRequest>,
    ) -> Reply<ElectLeadersResponse> {
        on_controller(
            &self.shared,
            req,
            elect_leaders,
            |ch, r| Box::pin(async move { AdminClient::new(ch).elect_leaders(r).await }),
            |_, e| ElectLeadersResponse {
                error: Some(e),
                results: vec![],
            },
        )
        .await
    }

    async fn alter_partition_reassignments(
        &self,
        req: Request<AlterPartitionReassignmentsRequest>,
    ) -> Reply<AlterPartitionReassignmentsResponse> {
        on_controller(
            &self.shared,
            req,
            alter_reassignments,
            |ch, r| {
                Box::pin(async move { AdminClient::new(ch).alter_partition_reassignments(r).await })
            },
            |_, e| AlterPartitionReassignmentsResponse {
                error: Some(e),
                results: vec![],
            },
        )
        .await
    }

    async fn list_partition_reassignments(
        &self,
        req: Request<ListPartitionReassignmentsRequest>,
    ) -> Reply<ListPartitionReassignmentsResponse> {
        let image = self.shared.view.current();
        Ok(Response::new(super::reassign::list(
            &image,
            self.partitions.as_deref(),
            req.get_ref(),
        )))
    }
}
