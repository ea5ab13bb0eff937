//! [`AdminClient`]: topics, configs, partitions and cluster description over the `Admin` and
//! `Cluster` services, with bootstrap failover and bounded retries.
//!
//! Every node serves both services and forwards metadata writes to the active controller
//! itself, so the client needs no controller discovery: it talks to one node at a time and
//! moves on when that node fails it.
//!
//! # Retries
//!
//! An attempt fails over (to the endpoint named by the error's leader hint, else to the next
//! bootstrap address, round robin) and is retried after a backoff when it fails with
//! - a transport error of class `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED` or `UNKNOWN`
//!   (node unreachable, starting, stopping, hung, or the connection dropped), or
//! - a request-level wire error that is retriable (`NOT_CONTROLLER`, `REQUEST_TIMED_OUT`, ...,
//!   as [`ErrorCode::is_retriable`](keel_proto::v1::ErrorCode::is_retriable) says).
//!
//! Per-item errors (one topic of a batch) are never retried: they are returned with their item.
//! After [`AdminOptions::retries`] retries the last error is returned.
//!
//! A write retried after a timeout may have taken effect the first time: a retried create can
//! then answer `TOPIC_ALREADY_EXISTS`, as Kafka's admin client does.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_proto::v1::admin_client::AdminClient as AdminRpc;
use keel_proto::v1::cluster_client::ClusterClient as ClusterRpc;
use keel_proto::v1::producer_client::ProducerClient as ProducerRpc;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::pb_conv::{self, check};
use crate::{
    ClusterDescription, ClusterMetadata, ConfigChange, ConfigEntry, CreatedTopic, DeletedTopic,
    Election, ElectionResult, Error, NewTopic, QuorumDescription,
};

/// How an [`AdminClient`] connects and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminOptions {
    /// Longest wait for one TCP/HTTP2 connection.
    pub connect_timeout: Duration,
    /// Longest wait for one rpc, after which it fails with `DEADLINE_EXCEEDED` (and is retried
    /// elsewhere).
    pub request_timeout: Duration,
    /// Further attempts after the first failed one.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one, up to `max_backoff`.
    pub backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for AdminOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            retries: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl AdminOptions {
    /// The wait before retry number `retry` (0 for the first): `backoff · 2^retry`, at most
    /// `max_backoff`.
    ///
    /// ```
    /// # use keel_client::AdminOptions;
    /// # use std::time::Duration;
    /// let o = AdminOptions::default(); // 100 ms, at most 1 s
    /// let waits: Vec<_> = (0..6).map(|r| o.backoff_for(r).as_millis()).collect();
    /// assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    /// ```
    pub fn backoff_for(&self, retry: u32) -> Duration {
        self.backoff
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_backoff)
    }
}

/// An admin client of a Keel cluster.
///
/// Cheap to share (`&self` methods): calls may run concurrently on the one connection.
#[derive(Debug)]
pub struct AdminClient {
    bootstrap: Vec<String>,
    options: AdminOptions,
    conn: Mutex<Conn>,
}

/// The node the client talks to now.
#[derive(Debug)]
struct Conn {
    /// Its address, `host:port`.
    endpoint: String,
    /// The index in `bootstrap` that failover continues from.
    cursor: usize,
    /// Open channel to `endpoint`; `None` until (re)connected.
    channel: Option<Channel>,
}

/// Where the attempt after a failed one goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    /// Give up: the error is final.
    Stop,
    /// Retry at this endpoint (a leader hint).
    Redirect(String),
    /// Retry at the next bootstrap address.
    Failover,
}

/// Decides what follows a failed attempt (see the module doc).
fn next_after(err: &Error) -> Next {
    if !err.is_retriable() {
        return Next::Stop;
    }
    match err {
        Error::Api(api) => match &api.leader_endpoint {
            Some(hint) if parse_address(hint).is_ok() => Next::Redirect(hint.clone()),
            _ => Next::Failover,
        },
        _ => Next::Failover,
    }
}

/// Whether a topic's creation was refused because the controller moved.
fn not_controller(t: &CreatedTopic) -> bool {
    t.error
        .as_ref()
        .is_some_and(|e| e.code == pb::ErrorCode::NotController)
}

/// Partitions by topic name, as the wire lists them.
pub(crate) fn topic_partitions(topics: &[(String, Vec<i32>)]) -> Vec<pb::TopicPartitions> {
    topics
        .iter()
        .map(|(topic, partitions)| pb::TopicPartitions {
            topic: topic.clone(),
            partitions: partitions.clone(),
            ..Default::default()
        })
        .collect()
}

/// The `http://` URI of a `host:port` address, or why it is not one.
pub(crate) fn parse_address(address: &str) -> Result<String, Error> {
    let invalid = |reason| Error::InvalidArgument {
        argument: address.to_string(),
        reason,
    };
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected host:port"))?;
    if host.is_empty() || host.contains('/') {
        return Err(invalid("expected host:port"));
    }
    port.parse::<u16>()
        .map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
    Ok(format!("http://{address}"))
}

/// A response that carries a request-level `error`.
pub(crate) trait WireResponse {
    fn take_error(&mut self) -> Option<pb::Error>;
}

macro_rules! wire_response {
    ($($t:ty),* $(,)?) => {$(
        impl WireResponse for $t {
            fn take_error(&mut self) -> Option<pb::Error> {
                self.error.take()
            }
        }
    )*};
}

wire_response!(
    pb::CreateTopicsResponse,
    pb::DeleteTopicsResponse,
    pb::DescribeConfigsResponse,
    pb::AlterConfigsResponse,
    pb::CreatePartitionsResponse,
    pb::ElectLeadersResponse,
    pb::AlterPartitionReassignmentsResponse,
    pb::ListPartitionReassignmentsResponse,
    pb::DecommissionBrokerResponse,
    pb::AddVoterResponse,
    pb::RemoveVoterResponse,
    pb::InitProducerIdResponse,
    pb::FindCoordinatorResponse,
    pb::ConsumerGroupHeartbeatResponse,
    pb::OffsetCommitResponse,
    pb::OffsetFetchResponse,
);

// The Cluster responses keep their error for the conversion (`TryFrom`), which fails with it;
// the retry loop only peeks.
macro_rules! wire_response_peek {
    ($($t:ty),* $(,)?) => {$(
        impl WireResponse for $t {
            fn take_error(&mut self) -> Option<pb::Error> {
                self.error.clone()
            }
        }
    )*};
}

wire_response_peek!(
    pb::MetadataResponse,
    pb::DescribeClusterResponse,
    pb::DescribeQuorumResponse,
);

impl AdminClient {
    /// Connects to the first reachable address of `bootstrap` (`host:port` each), trying them
    /// in order, with [`AdminOptions::default`].
    pub async fn connect(bootstrap: &[String]) -> Result<Self, Error> {
        Self::connect_with(bootstrap, AdminOptions::default()).await
    }

    /// [`AdminClient::connect`] with explicit options.
    ///
    /// Fails with `INVALID_ARGUMENT` when `bootstrap` is empty or an address is not
    /// `host:port`, and with `UNAVAILABLE` naming every address when none can be reached.
    pub async fn connect_with(bootstrap: &[String], options: AdminOptions) -> Result<Self, Error> {
        if bootstrap.is_empty() {
            return Err(Error::InvalidArgument {
                argument: String::new(),
                reason: "no bootstrap address given",
            });
        }
        for address in bootstrap {
            parse_address(address)?;
        }
        let mut failures = Vec::new();
        for (cursor, address) in bootstrap.iter().enumerate() {
            match connect(address, &options).await {
                Ok(channel) => {
                    debug!(endpoint = %address, "connected");
                    return Ok(Self {
                        bootstrap: bootstrap.to_vec(),
                        options,
                        conn: Mutex::new(Conn {
                            endpoint: address.clone(),
                            cursor,
                            channel: Some(channel),
                        }),
                    });
                }
                Err(e) => {
                    debug!(endpoint = %address, error = %e, "bootstrap address unreachable");
                    failures.push(e);
                }
            }
        }
        Err(unreachable(bootstrap, failures))
    }

    /// The address of the node the client talks to now.
    pub fn endpoint(&self) -> String {
        self.lock().endpoint.clone()
    }

    /// Creates topics (the controller places their replicas). Returns one outcome per topic,
    /// each with its own error; `Err` only when the request as a whole failed. With
    /// `validate_only` the server checks everything and creates nothing.
    ///
    /// A topic refused with `NOT_CONTROLLER` (the controller changed while it was being
    /// created) is sent again, within the same retry budget, as Kafka's admin client does.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<Vec<CreatedTopic>, Error> {
        let mut outcomes = self.create_topics_once(topics, validate_only).await?;
        for retry in 0..self.options.retries {
            let again: Vec<NewTopic> = topics
                .iter()
                .filter(|t| {
                    outcomes
                        .iter()
                        .any(|o| o.name == t.name && not_controller(o))
                })
                .cloned()
                .collect();
            if again.is_empty() {
                break;
            }
            tokio::time::sleep(self.options.backoff_for(retry)).await;
            for o in self.create_topics_once(&again, validate_only).await? {
                if let Some(slot) = outcomes.iter_mut().find(|x| x.name == o.name) {
                    *slot = o;
                }
            }
        }
        Ok(outcomes)
    }

    async fn create_topics_once(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<Vec<CreatedTopic>, Error> {
        let request = pb::CreateTopicsRequest {
            topics: topics.iter().map(pb_conv::new_topic).collect(),
            timeout_ms: 0,
            validate_only,
        };
        let response = self
            .call("Admin.CreateTopics", |ch| {
                let request = request.clone();
                async move { AdminRpc::new(ch).create_topics(request).await }
            })
            .await?;
        response.topics.into_iter().map(TryInto::try_into).collect()
    }

    /// Deletes topics by name. Returns one outcome per topic, each with its own error.
    pub async fn delete_topics(&self, names: &[String]) -> Result<Vec<DeletedTopic>, Error> {
        let request = pb::DeleteTopicsRequest {
            topics: names
                .iter()
                .map(|name| pb::DeletableTopic {
                    name: name.clone(),
                    topic_id: Default::default(),
                })
                .collect(),
            timeout_ms: 0,
        };
        let response = self
            .call("Admin.DeleteTopics", |ch| {
                let request = request.clone();
                async move { AdminRpc::new(ch).delete_topics(request).await }
            })
            .await?;
        response.topics.into_iter().map(TryInto::try_into).collect()
    }

    /// Every configuration key of `topic` with its effective value and source, sorted by name.
    pub async fn describe_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>, Error> {
        const RPC: &str = "Admin.DescribeConfigs";
        let request = pb::DescribeConfigsRequest {
            resources: vec![pb::DescribeConfigsResource {
                resource: Some(pb_conv::topic_resource(topic)),
                config_names: Vec::new(),
            }],
            include_documentation: false,
        };
        let response = self
            .call(RPC, |ch| {
                let request = request.clone();
                async move { AdminRpc::new(ch).describe_configs(request).await }
            })
            .await?;
        let result = one_result(RPC, response.results)?;
        check(result.error)?;
        Ok(result.entries.into_iter().map(Into::into).collect())
    }

    /// Changes configuration keys of `topic`, incrementally: keys not named keep their values.
    /// The changes apply all together or not at all.
    pub async fn alter_configs(&self, topic: &str, changes: &[ConfigChange]) -> Result<(), Error> {
        const RPC: &str = "Admin.AlterConfigs";
        let request = pb::AlterConfigsRequest {
            resources: vec![pb::AlterConfigsResource {
                resource: Some(pb_conv::topic_resource(topic)),
                configs: changes.iter().map(pb_conv::config_change).collect(),
            }],
            validate_only: false,
        };
        let response = self
            .call(RPC, |ch| {
                let request = request.clone();
                async move { AdminRpc::new(ch).alter_configs(request).await }
            })
            .await?;
        check(one_result(RPC, response.results)?.error)
    }

    /// Raises the partition count of `topic` to `total` (the new total, as Kafka's
    /// `--partitions`); the controller places the new partitions.
    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<(), Error> {
        const RPC: &str = "Admin.CreatePartitions";
        let request = pb::CreatePartitionsRequest {
            topics: vec![pb::CreatePartitionsTopic {
                name: topic.to_string(),
                count: total,
                assignments: Vec::new(),
            }],
            timeout_ms: 0,
            validate_only: false,
        };
        let response = self
            .call(RPC, |ch| {
                let request = request.clone();
                async move { AdminRpc::new(ch).create_partitions(request).await }
            })
            .await?;
        check(one_result(RPC, response.results)?.error)
    }

    /// Runs leader elections on the partitions of `topics` (each with its partition list;
    /// an empty list means every partition of that topic). `topics` empty: every partition
    /// of every topic, for preferred elections only.
    pub async fn elect_leaders(
        &self,
        election: Election,
        topics: &[(String, Vec<i32>)],
    ) -> Result<Vec<ElectionResult>, Error> {
        let request = pb::ElectLeadersRequest {
            election_type: match election {
                Election::Preferred => pb::ElectionType::Preferred,
                Election::Unclean => pb::ElectionType::Unclean,
            } as i32,
            partitions: topic_partitions(topics),
            timeout_ms: 0,
        };
        let response = self
            .call("Admin.ElectLeaders", |ch| {
                let request = request.clone();
                async move { AdminRpc::new(ch).elect_leaders(request).await }
            })
            .await?;
        Ok(response
            .results
            .into_iter()
            .map(|r| ElectionResult {
                topic: r.topic,
                partition: r.partition,
                error: pb_conv::api_error(r.error),
            })
            .collect())
    }

    /// Brokers and topics from the answering node's metadata image. `topics` empty: every
    /// topic. A topic that is unknown comes back with its own error. With `include_configs`
    /// each topic carries its configuration overrides.
    pub async fn metadata(
        &self,
        topics: &[String],
        include_configs: bool,
    ) -> Result<ClusterMetadata, Error> {
        let request = pb::MetadataRequest {
            topics: topics.to_vec(),
            include_configs,
        };
        self.call("Cluster.Metadata", |ch| {
            let request = request.clone();
            async move { ClusterRpc::new(ch).metadata(request).await }
        })
        .await?
        .try_into()
    }

    /// A new producer id and its epoch for an idempotent producer (`Producer.InitProducerId`,
    /// answered by any broker).
    pub async fn init_producer_id(&self) -> Result<(i64, i16), Error> {
        let r = self
            .call("Producer.InitProducerId", |ch| async move {
                ProducerRpc::new(ch)
                    .init_producer_id(pb::InitProducerIdRequest::default())
                    .await
            })
            .await?;
        let epoch = i16::try_from(r.producer_epoch).map_err(|_| Error::InvalidResponse {
            rpc: "Producer.InitProducerId",
            reason: format!("producer epoch {} out of range", r.producer_epoch),
        })?;
        Ok((r.producer_id, epoch))
    }

    /// The cluster id, the active controller and every registered broker with its state.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, Error> {
        self.call("Cluster.DescribeCluster", |ch| async move {
            ClusterRpc::new(ch)
                .describe_cluster(pb::DescribeClusterRequest {})
                .await
        })
        .await?
        .try_into()
    }

    /// The metadata quorum: leader, term, commit index, voters and learners with their lag.
    pub async fn describe_quorum(&self) -> Result<QuorumDescription, Error> {
        self.call("Cluster.DescribeQuorum", |ch| async move {
            ClusterRpc::new(ch)
                .describe_quorum(pb::DescribeQuorumRequest {})
                .await
        })
        .await?
        .try_into()
    }

    /// The options this client was made with.
    pub fn options(&self) -> &AdminOptions {
        &self.options
    }

    /// Runs one rpc with failover and retries (see the module doc). `send` makes one attempt
    /// on the channel it is given.
    pub(crate) async fn call<R, F, Fut>(&self, rpc: &'static str, mut send: F) -> Result<R, Error>
    where
        R: WireResponse,
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut retry = 0;
        loop {
            let (endpoint, channel) = self.channel().await;
            let outcome = match channel {
                Ok(channel) => match send(channel).await {
                    Ok(response) => {
                        let mut response = response.into_inner();
                        check(response.take_error()).map(|()| response)
                    }
                    Err(status) => Err(Error::from_status(&endpoint, &status)),
                },
                Err(e) => Err(e),
            };
            let err = match outcome {
                Ok(response) => return Ok(response),
                Err(err) => err,
            };
            let next = next_after(&err);
            if next == Next::Stop || retry >= self.options.retries {
                return Err(err);
            }
            let wait = self.options.backoff_for(retry);
            debug!(rpc, endpoint = %endpoint, error = %err, retry, ?next, ?wait, "retrying");
            self.move_on(&endpoint, next);
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }

    /// The current endpoint and a channel to it, connecting first when there is none.
    async fn channel(&self) -> (String, Result<Channel, Error>) {
        let (endpoint, cached) = {
            let conn = self.lock();
            (conn.endpoint.clone(), conn.channel.clone())
        };
        if let Some(channel) = cached {
            return (endpoint, Ok(channel));
        }
        let result = connect(&endpoint, &self.options).await;
        if let Ok(channel) = &result {
            debug!(endpoint = %endpoint, "connected");
            let mut conn = self.lock();
            if conn.endpoint == endpoint {
                conn.channel = Some(channel.clone());
            }
        }
        (endpoint, result)
    }

    /// Leaves `failed` for the endpoint `next` names. A no-op when another call already moved
    /// the client away from `failed`.
    fn move_on(&self, failed: &str, next: Next) {
        let mut conn = self.lock();
        if conn.endpoint != failed {
            return;
        }
        conn.channel = None;
        match next {
            Next::Stop => {}
            Next::Redirect(endpoint) => conn.endpoint = endpoint,
            Next::Failover => {
                conn.cursor = (conn.cursor + 1) % self.bootstrap.len();
                conn.endpoint = self.bootstrap[conn.cursor].clone();
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // The guarded state is always consistent between statements, so a panic elsewhere
        // while holding it leaves nothing half-done.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Opens a channel to `address` (`host:port`).
async fn connect(address: &str, options: &AdminOptions) -> Result<Channel, Error> {
    let uri = parse_address(address)?;
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|_| Error::InvalidArgument {
            argument: address.to_string(),
            reason: "not a valid URI authority",
        })?
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .map_err(|e| Error::from_connect(address, &e))
}

/// The error when no bootstrap address could be reached: the single failure as it is, or one
/// `UNAVAILABLE` error listing each address's failure.
fn unreachable(bootstrap: &[String], mut failures: Vec<Error>) -> Error {
    if failures.len() == 1 {
        return failures.remove(0);
    }
    let message = failures
        .iter()
        .map(Error::message)
        .collect::<Vec<_>>()
        .join("; ");
    Error::Transport {
        endpoint: bootstrap.join(","),
        code: tonic::Code::Unavailable,
        message: format!("no bootstrap address reachable: {message}"),
    }
}

/// The one result of a single-resource request.
fn one_result<T>(rpc: &'static str, results: Vec<T>) -> Result<T, Error> {
    let count = results.len();
    let mut results = results.into_iter();
    match (results.next(), count) {
        (Some(result), 1) => Ok(result),
        _ => Err(Error::InvalidResponse {
            rpc,
            reason: format!("{count} results for one resource"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ApiError;
    use keel_proto::v1::ErrorCode;

    #[test]
    fn addresses_must_be_host_and_port() {
        assert_eq!(
            parse_address("127.0.0.1:9292").unwrap(),
            "http://127.0.0.1:9292"
        );
        assert_eq!(
            parse_address("keel-0.keel:9292").unwrap(),
            "http://keel-0.keel:9292"
        );
        assert_eq!(parse_address("[::1]:9292").unwrap(), "http://[::1]:9292");
        for bad in ["localhost", ":9292", "host:", "host:99999", "http://h:1/x"] {
            let err = parse_address(bad).unwrap_err();
            assert_eq!(err.code_name(), "INVALID_ARGUMENT", "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn what_follows_a_failed_attempt() {
        let api = |code| Error::Api(ApiError::new(code, "x"));
        let transport = |code| Error::Transport {
            endpoint: "a:1".into(),
            code,
            message: "x".into(),
        };
        let hinted = Error::Api(ApiError {
            leader_id: Some(2),
            leader_endpoint: Some("n2:9292".into()),
            ..ApiError::new(ErrorCode::NotController, "not me")
        });
        let bad_hint = Error::Api(ApiError {
            leader_endpoint: Some("n2".into()),
            ..ApiError::new(ErrorCode::NotController, "not me")
        });
        let cases = [
            (api(ErrorCode::NotController), Next::Failover),
            (api(ErrorCode::RequestTimedOut), Next::Failover),
            (hinted, Next::Redirect("n2:9292".into())),
            (bad_hint, Next::Failover),
            (api(ErrorCode::TopicAlreadyExists), Next::Stop),
            (api(ErrorCode::InvalidConfig), Next::Stop),
            (transport(tonic::Code::Unavailable), Next::Failover),
            (transport(tonic::Code::DeadlineExceeded), Next::Failover),
            (transport(tonic::Code::Unimplemented), Next::Stop),
            (transport(tonic::Code::Internal), Next::Stop),
            (
                Error::InvalidResponse {
                    rpc: "r",
                    reason: "x".into(),
                },
                Next::Stop,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(next_after(&err), want, "{err}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let o = AdminOptions {
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            ..AdminOptions::default()
        };
        let waits: Vec<u128> = (0..5).map(|r| o.backoff_for(r).as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
        assert_eq!(o.backoff_for(u32::MAX), Duration::from_millis(300));
    }

    fn client(bootstrap: &[&str]) -> AdminClient {
        AdminClient {
            bootstrap: bootstrap.iter().map(|s| s.to_string()).collect(),
            options: AdminOptions::default(),
            conn: Mutex::new(Conn {
                endpoint: bootstrap[0].to_string(),
                cursor: 0,
                channel: None,
            }),
        }
    }

    #[test]
    fn failover_walks_the_bootstrap_list_round_robin() {
        let c = client(&["a:1", "b:1", "c:1"]);
        c.move_on("a:1", Next::Failover);
        assert_eq!(c.endpoint(), "b:1");
        c.move_on("b:1", Next::Failover);
        assert_eq!(c.endpoint(), "c:1");
        c.move_on("c:1", Next::Failover);
        assert_eq!(c.endpoint(), "a:1");
    }

    #[test]
    fn a_redirect_is_followed_and_failover_resumes_from_the_bootstrap_cursor() {
        let c = client(&["a:1", "b:1"]);
        c.move_on("a:1", Next::Redirect("leader:9292".into()));
        assert_eq!(c.endpoint(), "leader:9292");
        c.move_on("leader:9292", Next::Failover);
        assert_eq!(c.endpoint(), "b:1");
    }

    #[test]
    fn a_stale_failure_does_not_move_the_client_again() {
        let c = client(&["a:1", "b:1", "c:1"]);
        c.move_on("a:1", Next::Failover);
        // A concurrent call that also failed on a:1 reports late.
        c.move_on("a:1", Next::Failover);
        assert_eq!(c.endpoint(), "b:1");
    }

    #[tokio::test]
    async fn connect_refuses_bad_arguments_before_dialing() {
        let err = AdminClient::connect(&[]).await.unwrap_err();
        assert_eq!(err.code_name(), "INVALID_ARGUMENT");
        let err = AdminClient::connect(&["127.0.0.1:9292".into(), "nope".into()])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "INVALID_ARGUMENT: nope: expected host:port"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unavailable() {
        // Take a free port and close it again: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = AdminClient::connect(std::slice::from_ref(&address))
            .await
            .unwrap_err();
        assert_eq!(err.code_name(), "UNAVAILABLE");
        assert!(err.is_retriable());
        assert!(
            err.to_string()
                .starts_with(&format!("UNAVAILABLE: {address}: cannot connect")),
            "{err}"
        );
    }

    #[test]
    fn unreachable_names_every_address() {
        let fail = |a: &str| Error::Transport {
            endpoint: a.into(),
            code: tonic::Code::Unavailable,
            message: "cannot connect: connection refused".into(),
        };
        let one = unreachable(&["a:1".into()], vec![fail("a:1")]);
        assert_eq!(
            one.to_string(),
            "UNAVAILABLE: a:1: cannot connect: connection refused"
        );
        let two = unreachable(
            &["a:1".into(), "b:1".into()],
            vec![fail("a:1"), fail("b:1")],
        );
        assert_eq!(
            two.to_string(),
            "UNAVAILABLE: a:1,b:1: no bootstrap address reachable: \
             a:1: cannot connect: connection refused; b:1: cannot connect: connection refused"
        );
        assert!(two.is_retriable());
    }

    #[test]
    fn single_resource_answers_have_exactly_one_result() {
        assert_eq!(one_result("r", vec![7]).unwrap(), 7);
        let err = one_result::<i32>("Admin.AlterConfigs", vec![]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "INVALID_RESPONSE: Admin.AlterConfigs: 0 results for one resource"
        );
        assert!(one_result("r", vec![1, 2]).is_err());
    }
}
