//! The gRPC services a node serves, over the node's shared state.
//!
//! Every node serves `Admin` and `Cluster` on its client listener and, for forwarding, on its
//! internal listener too. Controller nodes also serve `Raft` and `Controller` on the internal
//! listener. A metadata write that reaches a node other than the active controller is
//! forwarded, unchanged, to the active controller's internal listener with the
//! [`FORWARDED`] header; a forwarded request is never forwarded again, so a stale leader hint
//! costs one retriable `NOT_CONTROLLER` rather than a loop.
//!
//! # Layout
//! - this file: [`Shared`] (what every service reads) and [`Route`] (where a write goes);
//! - [`admin`]: the `Admin` service (topics and their configs, elections, reassignments);
//! - [`reassign`]: reassignment requests to moves, and the list of moves in progress;
//! - [`cluster`]: the `Cluster` service (metadata, cluster and quorum descriptions);
//! - [`controller`]: the internal `Controller` service (broker registration, heartbeats, the
//!   metadata stream);
//! - [`producer`]: the `Producer` service (appends on partition leaders);
//! - [`consumer`]: the `Consumer` service (fetch long poll, offset lookups);
//! - [`fetch_body`]: `Consumer` as routed on the client listener, Fetch answers sent without
//!   copying their record batches;
//! - [`groups`]: the `Groups` service (consumer groups and committed offsets);
//! - [`records`]: records between the wire and the record-batch codec;
//! - [`replication`]: the internal `Replication` service (a leader serving follower fetches);
//! - [`convert`]: metadata types to and from proto messages, errors with leader hints.

pub mod admin;
pub mod cluster;
pub mod consumer;
pub mod controller;
pub mod convert;
pub mod fetch_body;
pub mod groups;
pub mod producer;
pub mod reassign;
pub mod records;
pub mod replication;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_metadata::node::ControllerNode;
use keel_metadata::store::MetadataView;
use keel_proto::v1::{Error, ErrorCode};
use tonic::transport::{Channel, Endpoint};

use crate::metrics::Metrics;
use crate::topic_defaults::TopicDefaults;

/// The request header that marks a forwarded request.
pub const FORWARDED: &str = "keel-forwarded";

/// The response header in which the active controller reports the metadata offset its answer
/// reflects. A forwarding node waits until it has applied that offset before it relays the
/// answer, so a client that writes through a node and then reads from it sees its write.
pub const METADATA_OFFSET: &str = "keel-metadata-offset";

/// `body` as a response that carries `offset` in the [`METADATA_OFFSET`] header.
pub fn with_offset<R>(body: R, offset: u64) -> tonic::Response<R> {
    let mut resp = tonic::Response::new(body);
    resp.metadata_mut().insert(
        METADATA_OFFSET,
        tonic::metadata::MetadataValue::from(offset),
    );
    resp
}

/// What the services of one node share.
pub struct Shared {
    /// This node's id.
    pub node_id: u32,
    /// The node's metrics (the services count produce and fetch requests).
    pub metrics: Arc<Metrics>,
    /// Defaults for new topics, applied when this node is the active controller, and
    /// whether unknown topics are created on first use.
    pub topic_defaults: TopicDefaults,
    /// The controller role, when this node has it.
    pub controller: Option<ControllerNode>,
    /// The metadata image this node has applied.
    pub view: MetadataView,
    /// Internal addresses of the controller voters by node id, from the config.
    pub voters: BTreeMap<u32, String>,
    /// The active controller as the metadata stream last named it (broker-only nodes);
    /// negative when unknown.
    reported_controller: AtomicI32,
    /// Limits what this node, as a leader, sends to replicas a reassignment is adding.
    pub reassignment_throttle: crate::replication::throttle::Throttle,
    channels: Mutex<HashMap<String, Channel>>,
}

/// Where a metadata write is handled.
pub enum Route {
    /// Here: this node is the active controller.
    Local(ControllerNode),
    /// At these internal addresses, tried in order.
    Forward(Vec<String>),
    /// Nowhere now; the error says why (retriable).
    Unavailable(Error),
}

impl Shared {
    /// Shared state for a node.
    pub fn new(
        node_id: u32,
        controller: Option<ControllerNode>,
        view: MetadataView,
        voters: BTreeMap<u32, String>,
        metrics: Arc<Metrics>,
        topic_defaults: TopicDefaults,
        reassignment_throttle_bytes_per_sec: u64,
    ) -> Shared {
        Shared {
            node_id,
            metrics,
            topic_defaults,
            controller,
            view,
            voters,
            reported_controller: AtomicI32::new(-1),
            reassignment_throttle: crate::replication::throttle::Throttle::new(
                reassignment_throttle_bytes_per_sec,
            ),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Where a metadata write from a request with `metadata` goes.
    pub fn route(&self, metadata: &tonic::metadata::MetadataMap) -> Route {
        let forwarded = metadata.contains_key(FORWARDED);
        match &self.controller {
            Some(c) if c.is_active() => Route::Local(c.clone()),
            _ if forwarded => Route::Unavailable(self.not_controller()),
            Some(c) => match c.leader().filter(|(id, _)| *id != c.id()) {
                Some((_, addr)) => Route::Forward(vec![addr]),
                None => Route::Unavailable(self.not_controller()),
            },
            // A broker without the controller role asks the controller its metadata stream
            // named first, then the other voters.
            None => Route::Forward(self.voters_controller_first()),
        }
    }

    /// The active controller's node id as this node knows it: from its own Raft node, or, on a
    /// broker-only node, as the metadata stream reported it.
    pub fn controller_id(&self) -> Option<i32> {
        match &self.controller {
            Some(c) => c.leader().map(|(id, _)| id as i32),
            None => Some(self.reported_controller.load(Ordering::Relaxed)).filter(|id| *id >= 0),
        }
    }

    /// The voters' addresses, the one believed to be the active controller first.
    pub fn voters_controller_first(&self) -> Vec<String> {
        let first = self
            .controller_id()
            .and_then(|id| self.voters.get(&(id as u32)));
        first
            .into_iter()
            .chain(self.voters.values().filter(|a| Some(*a) != first))
            .cloned()
            .collect()
    }

    /// Records the active controller named by the metadata stream.
    pub fn set_reported_controller(&self, id: Option<i32>) {
        self.reported_controller
            .store(id.unwrap_or(-1), Ordering::Relaxed);
    }

    /// `NOT_CONTROLLER`, with the active controller's id and address when known.
    pub fn not_controller(&self) -> Error {
        let leader = self.controller.as_ref().and_then(|c| c.leader());
        convert::not_controller(leader)
    }

    /// Waits (best effort, up to 5 s) until this node has applied the metadata offset an
    /// answer of the active controller reports in [`METADATA_OFFSET`], so that what it wrote
    /// is visible here next.
    pub async fn catch_up_with(&self, answer: &tonic::metadata::MetadataMap) {
        let offset = answer
            .get(METADATA_OFFSET)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(offset) = offset {
            // A slow follower still answers, just without the guarantee.
            let mut view = self.view.clone();
            let _ = view.wait_for_offset(offset, Duration::from_secs(5)).await;
        }
    }

    /// A channel to `addr` (`host:port`), connected lazily and reused.
    pub fn channel(&self, addr: &str) -> Channel {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(addr.to_owned())
            .or_insert_with(|| {
                Endpoint::from_shared(format!("http://{addr}"))
                    .expect("voter addresses are validated host:port")
                    .connect_timeout(std::time::Duration::from_secs(2))
                    .timeout(std::time::Duration::from_secs(30))
                    .connect_lazy()
            })
            .clone()
    }
}

/// One rpc of a client over a channel, for [`forward`]: a plain function so that the futures
/// of the services stay `Send` (async closures here trip the compiler's higher-ranked checks).
pub type Remote<T, R> =
    fn(
        Channel,
        tonic::Request<T>,
    ) -> futures_util::future::BoxFuture<'static, Result<tonic::Response<R>, tonic::Status>>;

/// Calls `call` on each address until one answers; a transport failure moves on to the next.
/// Returns the first answer or, when none answers, `NOT_CONTROLLER`.
pub async fn forward<T: Clone, R>(
    shared: &Shared,
    addrs: &[String],
    request: T,
    call: Remote<T, R>,
) -> Result<R, Error> {
    for addr in addrs {
        let mut req = tonic::Request::new(request.clone());
        req.metadata_mut()
            .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        match call(shared.channel(addr), req).await {
            Ok(resp) => {
                shared.catch_up_with(resp.metadata()).await;
                return Ok(resp.into_inner());
            }
            Err(status) => {
                tracing::debug!(%addr, %status, "forwarding to the controller failed");
            }
        }
    }
    Err(Error::new(
        ErrorCode::NotController,
        "no controller reachable to forward to; retry",
    ))
}
