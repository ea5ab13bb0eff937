//! The production Raft transport of the metadata quorum: openraft's network over the internal
//! gRPC service `keel.v1.Raft` (`proto/keel/v1/internal.proto`).
//!
//! This module owns both ends of that service and nothing else: the client side that openraft
//! drives ([`GrpcNetwork`], one [`GrpcConnection`] per target) and the server side that hands
//! incoming messages to the local `Raft` ([`RaftService`], built by [`raft_server`]). Binding
//! the listener and running the tonic server belong to the caller, which also serves other
//! services on the same internal listener.
//!
//! # Wire format
//! Each message's `payload` is openraft's own request type as JSON (like the rest of the
//! crate); the answer's `payload` is openraft's `Result` for it, as JSON. The plain proto
//! fields (`RaftHeader`, `prev_log_index`, `entry_count`, ...) repeat parts of the payload for
//! routing and logs; the receiver refuses a message whose plain fields contradict its payload,
//! is addressed to another node id, or comes from another cluster. A refusal sets the
//! answer's `error` and reaches openraft on the sender as `Unreachable`, so it backs off rather
//! than retrying at once: the address now belongs to a node it did not mean.
//!
//! Snapshots travel as a stream: a `RaftSnapshotHeader` (the leader's vote and the
//! `SnapshotMeta`, both JSON), then the data in chunks of at most [`SNAPSHOT_CHUNK_BYTES`].
//! The receiver installs only a stream that ends normally.
//!
//! # Leadership transfer
//! openraft 0.9 has no transfer-leader call. `TransferLeader` therefore means "start an
//! election now" on the receiver (`raft.trigger().elect()`), and [`request_election`] is the
//! client for it. For the receiver to win, the old leader (controlled shutdown):
//! 1. stops proposing and waits until the target's log matches its own (the target must have
//!    the longest log to get votes);
//! 2. disables its own elections (`raft.runtime_config().elect(false)`), so that it cannot
//!    win the seat back;
//! 3. calls [`request_election`] on the target and waits for the target to lead.
//!
//! The target's first attempt may be refused: a voter that heard from the leader within the
//! leader lease (`election_timeout_max`) does not vote. It moves the term on, though; the old
//! leader sees the higher term in its next heartbeat answer and steps down, and the target,
//! still a candidate, retries after one election timeout and wins, before any other follower's
//! timer (lease plus election timeout) fires.
//!
//! # Failures
//! | on the sender | reaches openraft as |
//! |---|---|
//! | no connection, refused connection, invalid address, refusal by the receiver | `Unreachable` (back off) |
//! | other gRPC failure, undecodable answer | `NetworkError` |
//! | no answer within `RPCOption::hard_ttl()` | `Timeout` |
//! | an openraft error from the receiver's `Raft` | `RemoteError` |

use std::fmt::Debug;
use std::future::Future;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_proto::v1::raft_client::RaftClient;
use keel_proto::v1::raft_server::{Raft, RaftServer};
use keel_proto::v1::raft_snapshot_chunk::Chunk;
use keel_proto::v1::{
    Error as WireError, ErrorCode, RaftAppendEntriesRequest, RaftAppendEntriesResponse, RaftHeader,
    RaftInstallSnapshotResponse, RaftSnapshotChunk, RaftSnapshotHeader, RaftTransferLeaderRequest,
    RaftTransferLeaderResponse, RaftVoteRequest, RaftVoteResponse,
};
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RPCTypes, Snapshot, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::store::{MetadataRaft, NodeId, TypeConfig};

/// Reads the cluster id from the caller's metadata image; `None` while it is not known yet.
pub type ClusterIdFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Largest gRPC message either side sends or accepts. An AppendEntries carries up to
/// openraft's `max_payload_entries` entries, and one entry may hold a large batch of records.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Largest data chunk of a streamed snapshot.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// How long to wait for a TCP connection to a peer. Each call is also bounded by openraft's
/// `hard_ttl`, usually shorter; this bound matters for [`request_election`] and keeps a
/// half-open connection attempt from lingering after its call was dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Bound on a whole [`request_election`] call.
const REQUEST_ELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to a peer failed on the sending side.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer's address does not form a valid URI.
    #[error("invalid address {addr:?} of node {node}: {source}")]
    BadAddress {
        /// The peer.
        node: NodeId,
        /// Its address as given in the membership.
        addr: String,
        /// Why tonic refused it (shared: a connection reports it on every call).
        source: Arc<tonic::transport::Error>,
    },
    /// A node id does not fit the wire's `int32`.
    #[error("node id {0} does not fit in an int32")]
    IdOutOfRange(NodeId),
    /// The gRPC call failed (connection, stream or server error).
    #[error("call to node {node} failed: {status}")]
    Call {
        /// The peer.
        node: NodeId,
        /// What tonic reported.
        status: Status,
    },
    /// The peer refused the message before openraft saw it.
    #[error("node {node} refused the message: {} {}", code_name(.error.code), .error.message)]
    Refused {
        /// The peer.
        node: NodeId,
        /// The refusal it sent.
        error: WireError,
    },
    /// A payload could not be encoded, or the peer's answer could not be decoded.
    #[error("payload to or from node {node}: {source}")]
    Payload {
        /// The peer.
        node: NodeId,
        /// The JSON error.
        source: serde_json::Error,
    },
}

fn code_name(code: i32) -> &'static str {
    ErrorCode::try_from(code).map_or("UNKNOWN_CODE", |c| c.as_str_name())
}

impl TransportError {
    /// Whether openraft should back off before retrying (see the module's failure table).
    fn is_unreachable(&self) -> bool {
        match self {
            Self::BadAddress { .. } | Self::IdOutOfRange(_) | Self::Refused { .. } => true,
            Self::Call { status, .. } => status.code() == tonic::Code::Unavailable,
            Self::Payload { .. } => false,
        }
    }
}

/// A call that got no usable answer.
enum CallFailure {
    Transport(TransportError),
    Timeout(Duration),
}

impl From<TransportError> for CallFailure {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}

// -------------------------------------------------------------------------------------------
// Client side
// -------------------------------------------------------------------------------------------

/// openraft's network factory over gRPC, for one sending node.
pub struct GrpcNetwork {
    id: NodeId,
    cluster_id: ClusterIdFn,
}

impl GrpcNetwork {
    /// The transport of node `id`; every message carries the cluster id read from
    /// `cluster_id` at send time (an empty string while it is unknown).
    pub fn new(id: NodeId, cluster_id: ClusterIdFn) -> Self {
        Self { id, cluster_id }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        GrpcConnection {
            from: self.id,
            target,
            node: node.clone(),
            cluster_id: self.cluster_id.clone(),
            client: lazy_client(&node.addr).map_err(Arc::new),
        }
    }
}

/// A client of `keel.v1.Raft` with Keel's message size limits, over a channel that connects on
/// first use and reconnects after a failure.
fn lazy_client(addr: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    let channel = endpoint.connect_timeout(CONNECT_TIMEOUT).connect_lazy();
    Ok(RaftClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// openraft's connection from one node to another over gRPC.
pub struct GrpcConnection {
    from: NodeId,
    target: NodeId,
    node: BasicNode,
    cluster_id: ClusterIdFn,
    /// An invalid address is kept as its error and reported on every call, because openraft
    /// gives the factory no way to fail.
    client: Result<RaftClient<Channel>, Arc<tonic::transport::Error>>,
}

type RpcResult<T> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;
type SnapshotResult = Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>>;

impl GrpcConnection {
    fn client(&self) -> Result<RaftClient<Channel>, TransportError> {
        match &self.client {
            Ok(c) => Ok(c.clone()),
            Err(source) => Err(TransportError::BadAddress {
                node: self.target,
                addr: self.node.addr.clone(),
                source: source.clone(),
            }),
        }
    }

    fn header(&self, term: u64) -> Result<RaftHeader, TransportError> {
        header((self.cluster_id)(), self.from, self.target, term)
    }

    fn encode<T: Serialize>(&self, value: &T) -> Result<Bytes, TransportError> {
        to_json(value).map_err(|source| TransportError::Payload {
            node: self.target,
            source,
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        refusal: Option<WireError>,
        payload: &[u8],
    ) -> Result<T, TransportError> {
        if let Some(error) = refusal {
            return Err(TransportError::Refused {
                node: self.target,
                error,
            });
        }
        serde_json::from_slice(payload).map_err(|source| TransportError::Payload {
            node: self.target,
            source,
        })
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RemoteError<NodeId, BasicNode, E> {
        RemoteError::new_with_node(self.target, self.node.clone(), e)
    }

    fn rpc_error(
        &self,
        action: RPCTypes,
        failure: CallFailure,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId>> {
        match failure {
            CallFailure::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.from,
                target: self.target,
                timeout,
            }),
            CallFailure::Transport(e) if e.is_unreachable() => Unreachable::new(&e).into(),
            CallFailure::Transport(e) => NetworkError::new(&e).into(),
        }
    }

    fn streaming_error(&self, failure: CallFailure) -> StreamingError<TypeConfig, Fatal<NodeId>> {
        match failure {
            CallFailure::Timeout(timeout) => StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: self.from,
                target: self.target,
                timeout,
            }),
            CallFailure::Transport(e) if e.is_unreachable() => Unreachable::new(&e).into(),
            CallFailure::Transport(e) => NetworkError::new(&e).into(),
        }
    }

    /// Encodes the snapshot as the stream `InstallSnapshot` expects: header, then data chunks.
    fn snapshot_chunks(
        &self,
        vote: &Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
    ) -> Result<Vec<RaftSnapshotChunk>, TransportError> {
        let data = Bytes::from(snapshot.snapshot.into_inner());
        let header = RaftSnapshotHeader {
            header: Some(self.header(vote.leader_id.term)?),
            snapshot_id: snapshot.meta.snapshot_id.clone(),
            last_log_index: snapshot.meta.last_log_id.map(|l| l.index),
            total_bytes: data.len() as u64,
            vote: self.encode(vote)?,
            meta: self.encode(&snapshot.meta)?,
        };
        let mut chunks = vec![RaftSnapshotChunk {
            chunk: Some(Chunk::Header(header)),
        }];
        chunks.extend(
            split(&data, SNAPSHOT_CHUNK_BYTES).map(|d| RaftSnapshotChunk {
                chunk: Some(Chunk::Data(d)),
            }),
        );
        Ok(chunks)
    }
}

impl GrpcConnection {
    /// One AppendEntries round trip: the receiver's openraft result, or why there is none.
    async fn call_append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
        ttl: Duration,
    ) -> Result<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>, CallFailure> {
        let req = RaftAppendEntriesRequest {
            header: Some(self.header(rpc.vote.leader_id.term)?),
            prev_log_index: rpc.prev_log_id.map(|l| l.index),
            // openraft sends at most `max_payload_entries` (hundreds); saturating can only make
            // the receiver refuse, never misread.
            entry_count: u32::try_from(rpc.entries.len()).unwrap_or(u32::MAX),
            leader_commit: rpc.leader_commit.map(|l| l.index),
            payload: self.encode(&rpc)?,
        };
        let mut client = self.client()?;
        let call = client.append_entries(with_timeout(req, ttl));
        let resp = unary(self.target, ttl, call).await?;
        Ok(self.decode(resp.error, &resp.payload)?)
    }

    /// One Vote round trip: the receiver's openraft result, or why there is none.
    async fn call_vote(
        &self,
        rpc: VoteRequest<NodeId>,
        ttl: Duration,
    ) -> Result<Result<VoteResponse<NodeId>, RaftError<NodeId>>, CallFailure> {
        let req = RaftVoteRequest {
            header: Some(self.header(rpc.vote.leader_id.term)?),
            last_log_index: rpc.last_log_id.map(|l| l.index),
            payload: self.encode(&rpc)?,
        };
        let mut client = self.client()?;
        let call = client.vote(with_timeout(req, ttl));
        let resp = unary(self.target, ttl, call).await?;
        Ok(self.decode(resp.error, &resp.payload)?)
    }

    /// One InstallSnapshot stream: the receiver's openraft result, or why there is none.
    async fn call_install_snapshot(
        &self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        ttl: Duration,
    ) -> Result<Result<SnapshotResponse<NodeId>, Fatal<NodeId>>, CallFailure> {
        let chunks = self.snapshot_chunks(&vote, snapshot)?;
        let resp = send_snapshot(self.target, self.client()?, chunks, ttl).await?;
        Ok(self.decode(resp.error, &resp.payload)?)
    }
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call_append_entries(rpc, option.hard_ttl())
            .await
            .map_err(|f| self.rpc_error(RPCTypes::AppendEntries, f))?
            .map_err(|e| self.remote(e).into())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call_vote(rpc, option.hard_ttl())
            .await
            .map_err(|f| self.rpc_error(RPCTypes::Vote, f))?
            .map_err(|e| self.remote(e).into())
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> SnapshotResult {
        let result = tokio::select! {
            // Dropping the call resets its stream, so the receiver installs nothing.
            closed = cancel => return Err(StreamingError::Closed(closed)),
            res = self.call_install_snapshot(vote, snapshot, option.hard_ttl()) => {
                res.map_err(|f| self.streaming_error(f))?
            }
        };
        result.map_err(|e| match e {
            // The receiver is shutting down: as good as unreachable, so back off.
            Fatal::Stopped => Unreachable::new(&Fatal::<NodeId>::Stopped).into(),
            other => self.remote(other).into(),
        })
    }
}

/// Splits `data` into slices of at most `size` bytes, without copying.
fn split(data: &Bytes, size: usize) -> impl Iterator<Item = Bytes> + '_ {
    (0..data.len())
        .step_by(size)
        .map(move |start| data.slice(start..(start + size).min(data.len())))
}

fn to_json<T: Serialize>(value: &T) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(value).map(Bytes::from)
}

fn wire_id(id: NodeId) -> Result<i32, TransportError> {
    i32::try_from(id).map_err(|_| TransportError::IdOutOfRange(id))
}

fn header(
    cluster_id: Option<String>,
    from: NodeId,
    target: NodeId,
    term: u64,
) -> Result<RaftHeader, TransportError> {
    Ok(RaftHeader {
        cluster_id: cluster_id.unwrap_or_default(),
        from_id: wire_id(from)?,
        target_id: wire_id(target)?,
        term,
    })
}

/// A request whose deadline also travels to the server (`grpc-timeout`), so that it drops
/// work nobody waits for any more.
fn with_timeout<T>(message: T, ttl: Duration) -> Request<T> {
    let mut req = Request::new(message);
    req.set_timeout(ttl);
    req
}

/// Runs one unary call, bounded by `ttl`.
async fn unary<T>(
    target: NodeId,
    ttl: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, CallFailure> {
    match tokio::time::timeout(ttl, call).await {
        Err(_) => Err(CallFailure::Timeout(ttl)),
        Ok(res) => answered(target, res),
    }
}

fn answered<T>(target: NodeId, res: Result<Response<T>, Status>) -> Result<T, CallFailure> {
    res.map(Response::into_inner).map_err(|status| {
        TransportError::Call {
            node: target,
            status,
        }
        .into()
    })
}

/// Streams `chunks` to the target and waits for its answer. Like openraft's own chunked
/// sender, `ttl` bounds each step (handing over a chunk, and the final answer, which includes
/// the installation), not the whole transfer.
async fn send_snapshot(
    target: NodeId,
    mut client: RaftClient<Channel>,
    chunks: Vec<RaftSnapshotChunk>,
    ttl: Duration,
) -> Result<RaftInstallSnapshotResponse, CallFailure> {
    // One chunk in flight: the sender waits for the connection instead of queueing the
    // snapshot a second time.
    let (tx, rx) = mpsc::channel(1);
    let call = client.install_snapshot(ReceiverStream::new(rx));
    tokio::pin!(call);
    for chunk in chunks {
        tokio::select! {
            // The receiver answered before the end of the stream: a refusal or an error.
            res = &mut call => return answered(target, res),
            sent = tokio::time::timeout(ttl, tx.send(chunk)) => match sent {
                Ok(Ok(())) => {}
                // The request stream is gone: the call ended; its result says how.
                Ok(Err(_)) => break,
                Err(_) => return Err(CallFailure::Timeout(ttl)),
            },
        }
    }
    // Closing the stream normally tells the receiver the snapshot is complete.
    drop(tx);
    unary(target, ttl, call).await
}

/// Why [`request_election`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestElectionError {
    /// The request did not get an answer, or the target refused it.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// No answer within the call's bound.
    #[error("node {0} did not answer within {REQUEST_ELECTION_TIMEOUT:?}")]
    Timeout(NodeId),
    /// The target's Raft has stopped.
    #[error("node {node}: {source}")]
    Remote {
        /// The target.
        node: NodeId,
        /// openraft's error on the target.
        source: Fatal<NodeId>,
    },
}

/// Asks node `target`, listening on `addr` (`host:port` of its internal listener), to start a
/// Raft election at once (`Raft.TransferLeader`). Controlled shutdown of the active controller
/// calls it with an up-to-date follower; the module doc lists what the old leader does first so
/// that the target wins. Returns once the target has started the election, not when it has
/// won: callers wait on their own metrics for the new leader.
///
/// The request's header carries term 0: the receiver does not use the term of this message,
/// and callers need not know it.
pub async fn request_election(
    addr: &str,
    from: NodeId,
    target: NodeId,
    cluster_id: Option<String>,
) -> Result<(), RequestElectionError> {
    let mut client = lazy_client(addr).map_err(|source| TransportError::BadAddress {
        node: target,
        addr: addr.to_owned(),
        source: Arc::new(source),
    })?;
    let req = RaftTransferLeaderRequest {
        header: Some(header(cluster_id, from, target, 0)?),
        // openraft 0.9 has no TransferLeaderRequest: the message itself is the request.
        payload: Bytes::new(),
    };
    let ttl = REQUEST_ELECTION_TIMEOUT;
    let resp: RaftTransferLeaderResponse =
        match unary(target, ttl, client.transfer_leader(with_timeout(req, ttl))).await {
            Ok(resp) => resp,
            Err(CallFailure::Timeout(_)) => return Err(RequestElectionError::Timeout(target)),
            Err(CallFailure::Transport(e)) => return Err(e.into()),
        };
    if let Some(error) = resp.error {
        return Err(TransportError::Refused {
            node: target,
            error,
        }
        .into());
    }
    let result: Result<(), Fatal<NodeId>> =
        serde_json::from_slice(&resp.payload).map_err(|source| TransportError::Payload {
            node: target,
            source,
        })?;
    result.map_err(|source| RequestElectionError::Remote {
        node: target,
        source,
    })
}

// -------------------------------------------------------------------------------------------
// Server side
// -------------------------------------------------------------------------------------------

/// The `keel.v1.Raft` service of one node: checks each message's routing fields and hands it
/// to the node's Raft.
pub struct RaftService {
    raft: MetadataRaft,
    id: NodeId,
    cluster_id: ClusterIdFn,
}

impl RaftService {
    /// The service of node `id` over its Raft handle; messages whose non-empty cluster id
    /// differs from `cluster_id()` (when known) are refused.
    pub fn new(raft: MetadataRaft, id: NodeId, cluster_id: ClusterIdFn) -> Self {
        Self {
            raft,
            id,
            cluster_id,
        }
    }

    /// Refuses a message that is not for this node or not from this cluster; returns its
    /// header.
    fn admit<'h>(&self, header: Option<&'h RaftHeader>) -> Result<&'h RaftHeader, WireError> {
        let h = header.ok_or_else(|| invalid("missing header"))?;
        if u64::try_from(h.target_id).ok() != Some(self.id) {
            return Err(invalid(format!(
                "addressed to node {}, this is node {}",
                h.target_id, self.id
            )));
        }
        match (self.cluster_id)() {
            Some(local) if !h.cluster_id.is_empty() && h.cluster_id != local => {
                Err(WireError::new(
                    ErrorCode::InconsistentClusterId,
                    format!(
                        "message of cluster {:?}, this node is in {local:?}",
                        h.cluster_id
                    ),
                ))
            }
            _ => Ok(h),
        }
    }

    async fn append_entries(&self, req: &RaftAppendEntriesRequest) -> Result<Bytes, Refusal> {
        let h = self.admit(req.header.as_ref())?;
        let rpc: AppendEntriesRequest<TypeConfig> = from_json(&req.payload)?;
        check_vote(h, &rpc.vote)?;
        check(
            "prev_log_index",
            req.prev_log_index,
            rpc.prev_log_id.map(|l| l.index),
        )?;
        check("entry_count", req.entry_count as usize, rpc.entries.len())?;
        check(
            "leader_commit",
            req.leader_commit,
            rpc.leader_commit.map(|l| l.index),
        )?;
        Ok(to_json(&self.raft.append_entries(rpc).await)?)
    }

    async fn vote(&self, req: &RaftVoteRequest) -> Result<Bytes, Refusal> {
        let h = self.admit(req.header.as_ref())?;
        let rpc: VoteRequest<NodeId> = from_json(&req.payload)?;
        check_vote(h, &rpc.vote)?;
        check(
            "last_log_index",
            req.last_log_index,
            rpc.last_log_id.map(|l| l.index),
        )?;
        Ok(to_json(&self.raft.vote(rpc).await)?)
    }

    /// Reads the whole stream, then installs it. A stream that fails part way returns the
    /// stream's error and installs nothing.
    async fn install_snapshot(
        &self,
        mut stream: Streaming<RaftSnapshotChunk>,
    ) -> Result<Bytes, Refusal> {
        let first = stream.message().await?.and_then(|c| c.chunk);
        let Some(Chunk::Header(header)) = first else {
            return Err(invalid("a snapshot stream starts with its header").into());
        };
        let h = self.admit(header.header.as_ref())?;
        let vote: Vote<NodeId> = from_json(&header.vote)?;
        let meta: SnapshotMeta<NodeId, BasicNode> = from_json(&header.meta)?;
        check_vote(h, &vote)?;
        check("snapshot_id", &header.snapshot_id, &meta.snapshot_id)?;
        check(
            "last_log_index",
            header.last_log_index,
            meta.last_log_id.map(|l| l.index),
        )?;
        let data = read_data(&mut stream, header.total_bytes).await?;
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        };
        Ok(to_json(
            &self.raft.install_full_snapshot(vote, snapshot).await,
        )?)
    }

    /// "Start an election now": openraft 0.9 has no transfer-leader call (see the module doc).
    async fn transfer_leader(&self, req: &RaftTransferLeaderRequest) -> Result<Bytes, Refusal> {
        self.admit(req.header.as_ref())?;
        tracing::info!(
            node_id = self.id,
            from = req.header.as_ref().map(|h| h.from_id),
            "leadership transfer requested: starting an election"
        );
        Ok(to_json(&self.raft.trigger().elect().await)?)
    }
}

/// Collects the data chunks after the header, refusing a stream whose size differs from the
/// header's `total_bytes`.
async fn read_data(
    stream: &mut Streaming<RaftSnapshotChunk>,
    total_bytes: u64,
) -> Result<Vec<u8>, Refusal> {
    // The header's size is a hint from a trusted peer; still cap the allocation made on it.
    let capacity =
        usize::try_from(total_bytes).map_or(MAX_MESSAGE_BYTES, |n| n.min(MAX_MESSAGE_BYTES));
    let mut data = Vec::with_capacity(capacity);
    while let Some(chunk) = stream.message().await? {
        match chunk.chunk {
            Some(Chunk::Data(bytes)) => data.extend_from_slice(&bytes),
            _ => return Err(invalid("a snapshot stream has one header, then data").into()),
        }
    }
    check("total_bytes", total_bytes, data.len() as u64)?;
    Ok(data)
}

/// Why the service did not hand a message to openraft.
enum Refusal {
    /// Answer with this error in the response.
    Refused(WireError),
    /// Fail the call (a broken stream, or an answer that could not be encoded).
    Failed(Status),
}

impl From<WireError> for Refusal {
    fn from(e: WireError) -> Self {
        Self::Refused(e)
    }
}

impl From<Status> for Refusal {
    fn from(s: Status) -> Self {
        Self::Failed(s)
    }
}

impl From<serde_json::Error> for Refusal {
    /// Only answers are encoded on this side; a payload that fails to decode is refused by
    /// [`from_json`] instead.
    fn from(e: serde_json::Error) -> Self {
        Self::Failed(Status::internal(format!("encoding the answer: {e}")))
    }
}

/// The answer's `(error, payload)`, or the call's failure.
fn answer(res: Result<Bytes, Refusal>) -> Result<(Option<WireError>, Bytes), Status> {
    match res {
        Ok(payload) => Ok((None, payload)),
        Err(Refusal::Refused(error)) => {
            tracing::warn!(code = code_name(error.code), message = %error.message, "raft message refused");
            Ok((Some(error), Bytes::new()))
        }
        Err(Refusal::Failed(status)) => Err(status),
    }
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidRequest, message)
}

fn from_json<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(payload).map_err(|e| invalid(format!("undecodable payload: {e}")))
}

/// Refuses a plain field that contradicts the payload.
fn check<T: PartialEq + Debug>(field: &str, plain: T, payload: T) -> Result<(), WireError> {
    if plain == payload {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} is {plain:?} but the payload says {payload:?}"
        )))
    }
}

/// The header's sender and term must be the payload vote's.
fn check_vote(h: &RaftHeader, vote: &Vote<NodeId>) -> Result<(), WireError> {
    check(
        "from_id",
        u64::try_from(h.from_id).ok(),
        Some(vote.leader_id.node_id),
    )?;
    check("term", h.term, vote.leader_id.term)
}

#[tonic::async_trait]
impl Raft for RaftService {
    #[tracing::instrument(level = "debug", skip_all, fields(node_id = self.id))]
    async fn append_entries(
        &self,
        request: Request<RaftAppendEntriesRequest>,
    ) -> Result<Response<RaftAppendEntriesResponse>, Status> {
        let (error, payload) = answer(RaftService::append_entries(self, request.get_ref()).await)?;
        Ok(Response::new(RaftAppendEntriesResponse { error, payload }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(node_id = self.id))]
    async fn vote(
        &self,
        request: Request<RaftVoteRequest>,
    ) -> Result<Response<RaftVoteResponse>, Status> {
        let (error, payload) = answer(RaftService::vote(self, request.get_ref()).await)?;
        Ok(Response::new(RaftVoteResponse { error, payload }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(node_id = self.id))]
    async fn install_snapshot(
        &self,
        request: Request<Streaming<RaftSnapshotChunk>>,
    ) -> Result<Response<RaftInstallSnapshotResponse>, Status> {
        let (error, payload) =
            answer(RaftService::install_snapshot(self, request.into_inner()).await)?;
        Ok(Response::new(RaftInstallSnapshotResponse {
            error,
            payload,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(node_id = self.id))]
    async fn transfer_leader(
        &self,
        request: Request<RaftTransferLeaderRequest>,
    ) -> Result<Response<RaftTransferLeaderResponse>, Status> {
        let (error, payload) = answer(RaftService::transfer_leader(self, request.get_ref()).await)?;
        Ok(Response::new(RaftTransferLeaderResponse { error, payload }))
    }
}

/// The `keel.v1.Raft` server of node `id`, ready for `tonic::transport::Server::add_service`,
/// accepting messages up to [`MAX_MESSAGE_BYTES`].
pub fn raft_server(
    raft: MetadataRaft,
    id: NodeId,
    cluster_id: ClusterIdFn,
) -> RaftServer<RaftService> {
    RaftServer::new(RaftService::new(raft, id, cluster_id))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

#[cfg(test)]
#[path = "network_test.rs"]
mod tests;
