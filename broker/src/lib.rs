//! Keel's server, `keeld`: the client gRPC services, the partition manager, replica fetchers,
//! the group coordinator, config, and metrics and health endpoints.
//!
//! # Layout
//! - [`config`]: the node's settings and their validation.
//! - [`quorum`]: the controller role: the metadata Raft node and its bootstrap.
//! - [`lifecycle`]: the broker role's registration, heartbeats and controlled shutdown.
//! - [`follower`]: how a broker without the controller role follows the metadata.
//! - [`http`]: the HTTP side listener: `/healthz`, `/readyz` and `/metrics`.
//! - [`logs`]: the log formatter that puts the node id on every line.
//! - [`metrics`]: the Prometheus metrics.
//! - [`topic_defaults`]: cluster defaults for new topics and topic auto-creation.
//! - [`partitions`]: the partition manager: the partition replicas this broker hosts, their
//!   logs, leadership, high watermarks and per-partition replication logic.
//! - [`replication`]: the follower fetchers and the leader's ISR upkeep.
//! - [`producer_ids`]: producer-id blocks from the controller for `InitProducerId`.
//! - [`groups`]: the group coordinator (consumer groups, committed offsets).
//! - [`services`]: the gRPC services (`Admin`, `Cluster`, `Producer`, `Consumer`,
//!   `Groups`, `Controller`, `Replication`; `Raft` comes from keel-metadata) and request forwarding to
//!   the active controller.
//! - `src/main.rs`: the thin `keeld` binary; it parses flags and runs [`Node`].
//!
//! A node runs the metadata quorum, broker membership and the replicated data path (produce
//! and fetch on partition leaders, followers pulling from them); see ARCHITECTURE.md,
//! "Status".

pub mod config;
pub mod connections;
pub mod follower;
pub mod groups;
pub mod http;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod partitions;
pub mod producer_ids;
pub mod quorum;
pub mod replication;
pub mod request_memory;
pub mod services;
pub mod topic_defaults;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keel_metadata::image::MetadataImage;
use keel_metadata::node::ControllerNode;
use keel_metadata::store::MetadataView;
use keel_proto::v1::admin_server::AdminServer;
use keel_proto::v1::cluster_server::ClusterServer;
use keel_proto::v1::consumer_server::ConsumerServer;
use keel_proto::v1::controller_server::ControllerServer;
use keel_proto::v1::groups_server::GroupsServer;
use keel_proto::v1::producer_server::ProducerServer;
use keel_proto::v1::replication_server::ReplicationServer;
use keel_storage::{DataDir, LogConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use config::{Config, ConfigError};
use partitions::PartitionManager;
use request_memory::{RequestMemory, RequestMemoryLayer};
use services::admin::AdminService;
use services::cluster::ClusterService;
use services::consumer::ConsumerService;
use services::controller::ControllerService;
use services::fetch_body::{consumer_routes, replication_routes};
use services::groups::GroupsService;
use services::producer::ProducerService;
use services::replication::ReplicationService;
use services::Shared;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not open data directory: {0}")]
    DataDir(#[from] keel_storage::data_dir::OpenError),
    #[error("could not recover log {name}: {source}")]
    Recovery {
        name: String,
        source: keel_storage::LogError,
    },
    #[error("{key}: cannot listen on {addr}: {source}")]
    Listen {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("controller role: {0}")]
    Quorum(#[from] Box<quorum::QuorumError>),
}

/// A running node.
pub struct Node {
    config: Config,
    data: Arc<DataDir>,
    shared: Arc<Shared>,
    /// The broker role's partition replicas.
    partitions: Option<Arc<PartitionManager>>,
    client_addr: SocketAddr,
    internal_addr: SocketAddr,
    stop_tx: watch::Sender<bool>,
    /// Stops the listeners, last: peers and clients reach the node until Raft has stopped.
    listeners_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    broker_task: Option<JoinHandle<()>>,
    status: watch::Receiver<lifecycle::Status>,
    /// `node{node_id}`: every task of the node runs in it, so every log line names the node.
    span: tracing::Span,
}

/// Spawns `task` in the current span (the node's), so its log lines name the node. Every
/// task of the broker is spawned through here.
pub(crate) fn spawn<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(task.in_current_span())
}

/// Runs blocking `f` on tokio's blocking pool in the current span (the node's): as
/// [`spawn`], for the broker's blocking work (appends, reads, fsyncs, log opens).
pub(crate) fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { key, addr, source })
}

impl Node {
    /// Validates the config, opens the data directory (recovering every log in it), binds the
    /// listeners, starts the controller role and the broker role as configured. Everything
    /// the node runs, now and later, runs in a `node` span with its `node_id`.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        let span = tracing::info_span!(logs::NODE_SPAN, node_id = config.node_id);
        Node::start_in(config, span.clone()).instrument(span).await
    }

    async fn start_in(config: Config, span: tracing::Span) -> Result<Node, StartError> {
        config.validate()?;
        let data = Arc::new(open_data_dir(&config)?);
        let client = bind("listen", config.listen).await?;
        let internal = bind("internal_listen", config.internal_listen).await?;
        let http = bind("http_listen", config.http_listen).await?;
        let client_addr = local_addr(&client, config.listen);
        let internal_addr = local_addr(&internal, config.internal_listen);

        let (controller, commit_index) = match config.roles.is_controller() {
            true => {
                let (c, index) = quorum::start(&config).await.map_err(Box::new)?;
                (Some(c), Some(index))
            }
            false => (None, None),
        };
        let (images, view) = match &controller {
            Some(c) => (None, c.view().clone()),
            None => {
                let (tx, view) = MetadataView::channel(MetadataImage::default());
                (Some(tx), view)
            }
        };
        let voters = config.controller_voters.0.clone();
        let metrics = Arc::new(metrics::Metrics::default());
        let shared = Arc::new(Shared::new(
            config.node_id,
            controller.clone(),
            view,
            voters,
            metrics.clone(),
            topic_defaults::TopicDefaults::from_config(&config),
            config.reassignment_throttle_bytes_per_sec,
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (status_tx, status) = watch::channel(lifecycle::Status::default());
        let (listeners_tx, listeners_rx) = watch::channel(false);
        let partitions = config
            .roles
            .is_broker()
            .then(|| Arc::new(PartitionManager::new(config.node_id as i32, data.clone())));
        let producer_ids = partitions.as_ref().map(|_| {
            Arc::new(producer_ids::ProducerIds::new(
                shared.clone(),
                config.node_id as i32,
                status.clone(),
            ))
        });
        let coordinator = partitions.as_ref().map(|p| {
            Arc::new(groups::coordinator::Coordinator::new(
                config.node_id as i32,
                shared.clone(),
                p.clone(),
                group_config(&config),
                offsets_topic_config(&config),
            ))
        });
        let broker = partitions
            .clone()
            .zip(producer_ids)
            .zip(coordinator.clone())
            .map(|((p, ids), c)| BrokerServices {
                partitions: p,
                producer_ids: ids,
                coordinator: c,
            });
        let mut tasks = vec![
            spawn(serve_client(
                shared.clone(),
                broker,
                ClientListener {
                    listener: client,
                    max_connections: config.max_connections as usize,
                    request_memory: RequestMemory::new(
                        config.request_memory_bytes as usize,
                        MAX_MESSAGE,
                    ),
                },
                listeners_rx.clone(),
            )),
            spawn(serve_internal(
                shared.clone(),
                partitions.clone(),
                internal,
                listeners_rx.clone(),
            )),
        ];
        if let Some(c) = &controller {
            tasks.push(spawn(c.clone().run(stopped(stop_rx.clone()))));
        }
        // The broker keeps following the metadata through its controlled shutdown (until the
        // listeners stop): its replicas must learn that their leaderships moved, so that
        // acks=all produces waiting on them are told NOT_LEADER at once instead of hanging
        // until the connection closes.
        if let Some(p) = &partitions {
            tasks.push(spawn(p.clone().run(
                shared.view.clone(),
                status.clone(),
                listeners_rx.clone(),
            )));
        }
        if let Some(p) = &partitions {
            let ctx = Arc::new(replication::Context {
                metrics: metrics.clone(),
                me: config.node_id as i32,
                shared: shared.clone(),
                partitions: p.clone(),
                status: status.clone(),
                stop: listeners_rx.clone(),
            });
            let lag_max = Duration::from_millis(config.replica_lag_time_max_ms);
            let tick = (lag_max / 4).min(Duration::from_millis(250));
            tasks.push(spawn(partitions::upkeep::run(
                p.clone(),
                config.producer_id_expiration_ms as i64,
                listeners_rx.clone(),
            )));
            tasks.push(spawn(partitions::disk::watch(
                p.clone(),
                listeners_rx.clone(),
            )));
            tasks.push(spawn(replication::run(ctx.clone())));
            tasks.push(spawn(replication::isr::run(ctx, lag_max, tick)));
        }
        if let Some(c) = &coordinator {
            tasks.push(spawn(c.clone().run(listeners_rx.clone())));
        }
        if let Some(images) = images {
            let broker_id = config.node_id as i32;
            tasks.push(spawn(follower::run(
                shared.clone(),
                broker_id,
                images,
                listeners_rx.clone(),
            )));
        }
        let probes = http::Probes {
            shared: shared.clone(),
            broker: config.roles.is_broker().then(|| status.clone()),
            disk: partitions.as_ref().map(|p| p.disk().subscribe()),
            metrics: metrics::Sources {
                metrics,
                shared: shared.clone(),
                partitions: partitions.clone(),
                coordinator: coordinator.clone(),
                commit_index,
            },
        };
        tasks.push(spawn(http::serve(http, probes, listeners_rx.clone())));
        // The broker role: `partitions` is there exactly when the node has it.
        let broker_task = partitions.as_ref().map(|p| {
            let me = identity(&config, client_addr, internal_addr);
            spawn(lifecycle::run(
                shared.clone(),
                me,
                stop_rx.clone(),
                p.disk().subscribe(),
                status_tx,
            ))
        });
        tracing::info!(roles = %config.roles, client = %client_addr,
            internal = %internal_addr, data_dir = %config.data_dir.display(), "node started");
        Ok(Node {
            config,
            data,
            shared,
            partitions,
            client_addr,
            internal_addr,
            stop_tx,
            listeners_tx,
            tasks,
            broker_task,
            status,
            span,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data
    }

    /// The client listener's address (the real port when the config asked for port 0).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The internal listener's address.
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal_addr
    }

    /// The controller role, if this node has it.
    pub fn controller(&self) -> Option<&ControllerNode> {
        self.shared.controller.as_ref()
    }

    /// The metadata image this node has applied.
    pub fn view(&self) -> &MetadataView {
        &self.shared.view
    }

    /// The broker role's registration status.
    pub fn broker_status(&self) -> lifecycle::Status {
        *self.status.borrow()
    }

    /// The broker role's partition replicas.
    pub fn partitions(&self) -> Option<&Arc<PartitionManager>> {
        self.partitions.as_ref()
    }

    /// Runs until `shutdown` completes, then stops in order: controlled shutdown of the broker
    /// role (leaderships move away first), hand-over of controller leadership, Raft,
    /// listeners, and last the partition logs (flushed and closed cleanly, so the next start
    /// reads no segment data).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let span = self.span.clone();
        self.run_in(shutdown).instrument(span).await
    }

    async fn run_in(mut self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        tracing::info!("node stopping");
        self.stop_tx.send_replace(true);
        if let Some(t) = self.broker_task.take() {
            let _ = t.await;
        }
        if let Some(c) = self.shared.controller.clone() {
            quorum::hand_over_leadership(&c).await;
            if let Err(e) = c.raft().shutdown().await {
                tracing::warn!(error = %e, "metadata raft did not stop cleanly");
            }
        }
        self.listeners_tx.send_replace(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        if let Some(p) = self.partitions.take() {
            let closed = crate::spawn_blocking(move || p.close_all()).await;
            if closed.is_err() {
                tracing::error!("closing the partition logs panicked");
            }
        }
        tracing::info!("node stopped");
    }
}

fn open_data_dir(config: &Config) -> Result<DataDir, StartError> {
    let data = DataDir::open(&config.data_dir)?;
    let names = data.log_names().map_err(|e| StartError::Recovery {
        name: "*".into(),
        source: e.into(),
    })?;
    for name in names {
        let (log, stats) = data
            .open_log(&name, LogConfig::default())
            .map_err(|source| StartError::Recovery {
                name: name.clone(),
                source,
            })?;
        tracing::info!(log = %name, clean = stats.clean, bytes_scanned = stats.bytes_scanned,
            bytes_truncated = stats.bytes_truncated, "log recovered");
        log.close()
            .map_err(|source| StartError::Recovery { name, source })?;
    }
    Ok(data)
}

fn local_addr(l: &TcpListener, configured: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(configured)
}

fn identity(config: &Config, client: SocketAddr, internal: SocketAddr) -> lifecycle::Identity {
    let host = |a: SocketAddr| config.advertised_host.clone().unwrap_or(a.ip().to_string());
    let ep = |a: SocketAddr| (host(a), a.port());
    lifecycle::Identity {
        broker_id: config.node_id as i32,
        client: ep(client),
        internal: ep(internal),
        rack: config.rack.clone(),
        heartbeat_interval: Duration::from_millis(config.broker_heartbeat_interval_ms),
        // Long enough to move leaderships; short enough that the last nodes of a cluster that
        // stops as a whole (no quorum left to answer) do not hang.
        shutdown_timeout: Duration::from_millis(config.broker_session_timeout_ms),
    }
}

/// Resolves when `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Accepted connections with TCP_NODELAY: small request/answer frames must not wait for
/// Nagle's algorithm (it cost ~40 ms per metadata write before).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Max gRPC message size: metadata of large clusters and record batches fit.
const MAX_MESSAGE: usize = 64 << 20;
/// Requests a client connection may have under way at once (HTTP/2 streams); more wait in
/// the client.
const STREAMS_PER_CONNECTION: u32 = 32;
/// Bytes of a request body a client may send ahead of the broker reading it (HTTP/2 stream
/// window).
const STREAM_WINDOW: u32 = 512 << 10;

/// What a broker serves to clients beyond admin and cluster metadata.
struct BrokerServices {
    partitions: Arc<PartitionManager>,
    producer_ids: Arc<producer_ids::ProducerIds>,
    coordinator: Arc<groups::coordinator::Coordinator>,
}

fn group_config(config: &Config) -> groups::group::GroupConfig {
    groups::group::GroupConfig {
        session_timeout_ms: config.group_session_timeout_ms as i64,
        heartbeat_interval_ms: config.group_heartbeat_interval_ms.min(i32::MAX as u64) as i32,
        ..Default::default()
    }
}

fn offsets_topic_config(config: &Config) -> groups::coordinator::OffsetsTopicConfig {
    groups::coordinator::OffsetsTopicConfig {
        partitions: config.offsets_topic_num_partitions as i32,
        replication_factor: config.offsets_topic_replication_factor as i32,
        snapshot_bytes: config.offsets_snapshot_bytes,
    }
}

/// The client listener and the bounds on what its clients may hold.
struct ClientListener {
    listener: TcpListener,
    max_connections: usize,
    request_memory: Arc<RequestMemory>,
}

async fn serve_client(
    shared: Arc<Shared>,
    broker: Option<BrokerServices>,
    client: ClientListener,
    stop: watch::Receiver<bool>,
) {
    // The data path is served by brokers only; a controller-only node answers UNIMPLEMENTED.
    let producer = broker.as_ref().map(|b| {
        let service =
            ProducerService::new(shared.clone(), b.partitions.clone(), b.producer_ids.clone());
        ProducerServer::new(service).max_decoding_message_size(MAX_MESSAGE)
    });
    let groups = broker.as_ref().map(|b| {
        let service = GroupsService::new(shared.clone(), b.coordinator.clone());
        GroupsServer::new(service).max_decoding_message_size(MAX_MESSAGE)
    });
    let admin = AdminService::new(shared.clone())
        .with_partitions(broker.as_ref().map(|b| b.partitions.clone()));
    let consumer = broker.map(|b| {
        let service = ConsumerService::new(shared.clone(), b.partitions);
        let generated = ConsumerServer::new(service.clone()).max_encoding_message_size(MAX_MESSAGE);
        consumer_routes(service, generated)
    });
    let span = tracing::Span::current();
    // A request waiting for request memory keeps what it was sent of its body in HTTP/2's
    // buffers, counted against the connection's window. With room in that window for a full
    // stream window of every stream, the request being served always gets its data.
    let result = tonic::transport::Server::builder()
        .max_concurrent_streams(STREAMS_PER_CONNECTION)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(STREAM_WINDOW * STREAMS_PER_CONNECTION)
        // A peer that vanished is found and its connection (and what it held) let go.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(RequestMemoryLayer::new(client.request_memory))
        .trace_fn(move |_| span.clone())
        .add_service(AdminServer::new(admin).max_decoding_message_size(MAX_MESSAGE))
        .add_service(
            ClusterServer::new(ClusterService::new(shared)).max_decoding_message_size(MAX_MESSAGE),
        )
        .add_optional_service(producer)
        .add_optional_service(consumer)
        .add_optional_service(groups)
        .serve_with_incoming_shutdown(
            connections::limited(client.listener, client.max_connections),
            stopped(stop),
        )
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "client listener failed");
    }
}

async fn serve_internal(
    shared: Arc<Shared>,
    partitions: Option<Arc<PartitionManager>>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    // Brokers serve their followers; a controller-only node answers UNIMPLEMENTED.
    let replication = partitions.map(|p| {
        let service = ReplicationService::new(shared.clone(), p, stop.clone());
        let generated =
            ReplicationServer::new(service.clone()).max_encoding_message_size(MAX_MESSAGE);
        replication_routes(service, generated)
    });
    let span = tracing::Span::current();
    let mut router = tonic::transport::Server::builder()
        .trace_fn(move |_| span.clone())
        .add_service(
            AdminServer::new(AdminService::internal(shared.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ClusterServer::new(ClusterService::new(shared.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
        );
    if let Some(c) = &shared.controller {
        let cluster_view = Arc::new(std::sync::OnceLock::new());
        let _ = cluster_view.set(c.view().clone());
        router = router
            .add_service(keel_metadata::network::raft_server(
                c.raft().clone(),
                c.id(),
                quorum::cluster_id_fn(cluster_view),
            ))
            .add_service(
                ControllerServer::new(ControllerService::new(c.clone()))
                    .max_decoding_message_size(MAX_MESSAGE),
            );
    }
    let result = router
        .add_optional_service(replication)
        .serve_with_incoming_shutdown(incoming(listener), stopped(stop))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "internal listener failed");
    }
}
