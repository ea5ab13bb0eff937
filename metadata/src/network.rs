//! The production Raft transport of the metadata quorum: openraft's network over the internal
//! gRPC service `keel.v1.Raft`, client ([`GrpcNetwork`]) and server ([`RaftService`]).
//!
//! Each rpc carries one openraft message serialized as JSON in `payload`; the plain proto
//! fields beside it (term, indexes, counts) are for routing, logs and sanity checks. The
//! answer's `payload` is openraft's own `Result`, so a remote openraft error travels back
//! unchanged and becomes a `RemoteError` on the sender. A receiver refuses, before openraft
//! sees it, a message meant for another node id (the address was reused) or from another
//! cluster; the sender treats that refusal as an unreachable node, so openraft backs off.
//!
//! Snapshots stream as a header (vote and meta) followed by data chunks of at most 1 MiB; the
//! receiver installs only a stream that ended normally.
//!
//! openraft 0.9 has no leadership transfer; `TransferLeader` asks the receiver to start an
//! election at once (see [`request_election`]). It wins only once the other voters' leader
//! lease (the election timeout since the leader's last heartbeat) has expired, so it cannot
//! take leadership from a leader that still heartbeats.

// openraft's RPC errors are large; its traits dictate them, and the helpers here pass them on
// unchanged rather than boxing them.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_proto::v1::raft_client::RaftClient;
use keel_proto::v1::raft_server::{Raft, RaftServer};
use keel_proto::v1::*;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, Snapshot, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::store::{MetadataRaft, NodeId, TypeConfig};

/// Reads the cluster id from the node's image; `None` while the cluster has none yet.
pub type ClusterIdFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Largest gRPC message either side accepts: a batch of log entries or a snapshot chunk.
const MAX_MESSAGE: usize = 64 << 20;
/// Size of one snapshot data chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A message the receiver refused before openraft saw it.
#[derive(Debug, thiserror::Error)]
#[error("node refused the message: {0}")]
struct Refused(String);

fn to_json<T: Serialize>(v: &T) -> Bytes {
    // openraft's messages and our records serialize without failing (string keys only).
    Bytes::from(serde_json::to_vec(v).expect("raft messages serialize to JSON"))
}

fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy())
}

fn client(ch: Channel) -> RaftClient<Channel> {
    RaftClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// openraft's network factory over gRPC, for one sending node.
pub struct GrpcNetwork {
    from: NodeId,
    cluster_id: ClusterIdFn,
}

impl GrpcNetwork {
    /// The transport of node `from`; `cluster_id` fills the header of every message.
    pub fn new(from: NodeId, cluster_id: ClusterIdFn) -> Self {
        GrpcNetwork { from, cluster_id }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        GrpcConnection {
            from: self.from,
            target,
            addr: node.addr.clone(),
            cluster_id: self.cluster_id.clone(),
            channel: channel(&node.addr).ok(),
        }
    }
}

/// A connection from one node to another over gRPC.
pub struct GrpcConnection {
    from: NodeId,
    target: NodeId,
    addr: String,
    cluster_id: ClusterIdFn,
    /// `None` when the address is not a valid endpoint: every call is then unreachable.
    channel: Option<Channel>,
}

type RpcResult<T> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;

impl GrpcConnection {
    fn header(&self, term: u64) -> RaftHeader {
        RaftHeader {
            cluster_id: (self.cluster_id)().unwrap_or_default(),
            from_id: self.from as i32,
            target_id: self.target as i32,
            term,
        }
    }

    fn client(&self) -> Result<RaftClient<Channel>, Unreachable> {
        let ch = self
            .channel
            .clone()
            .ok_or_else(|| Unreachable::new(&Refused(format!("bad address {:?}", self.addr))))?;
        Ok(client(ch))
    }

    /// Decodes an answer: a refusal becomes unreachable, openraft's error a remote error.
    fn answer<T: DeserializeOwned>(&self, error: Option<Error>, payload: &[u8]) -> RpcResult<T> {
        if let Some(e) = error {
            return Err(Unreachable::new(&Refused(e.message)).into());
        }
        let result: Result<T, RaftError<NodeId>> =
            serde_json::from_slice(payload).map_err(|e| NetworkError::new(&e))?;
        result.map_err(|e| RemoteError::new(self.target, e).into())
    }
}

fn with_timeout<T>(msg: T, ttl: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(ttl);
    req
}

/// A transport failure: connection problems are `Unreachable` (openraft backs off), the rest
/// are network errors.
fn failed(status: Status) -> RPCError<NodeId, BasicNode, RaftError<NodeId>> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => Unreachable::new(&status).into(),
        _ => NetworkError::new(&status).into(),
    }
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let msg = RaftAppendEntriesRequest {
            header: Some(self.header(rpc.vote.leader_id().term)),
            prev_log_index: rpc.prev_log_id.map(|l| l.index),
            entry_count: rpc.entries.len() as u32,
            leader_commit: rpc.leader_commit.map(|l| l.index),
            payload: to_json(&rpc),
        };
        let resp = self
            .client()?
            .append_entries(with_timeout(msg, option.hard_ttl()))
            .await
            .map_err(failed)?
            .into_inner();
        self.answer(resp.error, &resp.payload)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let msg = RaftVoteRequest {
            header: Some(self.header(rpc.vote.leader_id().term)),
            last_log_index: rpc.last_log_id.map(|l| l.index),
            payload: to_json(&rpc),
        };
        let resp = self
            .client()?
            .vote(with_timeout(msg, option.hard_ttl()))
            .await
            .map_err(failed)?
            .into_inner();
        self.answer(resp.error, &resp.payload)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let data = snapshot.snapshot.into_inner();
        let first = RaftSnapshotChunk {
            chunk: Some(raft_snapshot_chunk::Chunk::Header(RaftSnapshotHeader {
                header: Some(self.header(vote.leader_id().term)),
                snapshot_id: snapshot.meta.snapshot_id.clone(),
                last_log_index: snapshot.meta.last_log_id.map(|l| l.index),
                total_bytes: data.len() as u64,
                vote: to_json(&vote),
                meta: to_json(&snapshot.meta),
            })),
        };
        let chunks: Vec<RaftSnapshotChunk> = std::iter::once(first)
            .chain(data.chunks(SNAPSHOT_CHUNK).map(|c| RaftSnapshotChunk {
                chunk: Some(raft_snapshot_chunk::Chunk::Data(Bytes::copy_from_slice(c))),
            }))
            .collect();
        let mut client = self.client()?;
        let send =
            client.install_snapshot(with_timeout(tokio_stream::iter(chunks), option.hard_ttl()));
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            resp = send => resp.map_err(|s| match failed(s) {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                other => StreamingError::Network(NetworkError::new(&other)),
            })?.into_inner(),
        };
        if let Some(e) = resp.error {
            return Err(StreamingError::Unreachable(Unreachable::new(&Refused(
                e.message,
            ))));
        }
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            serde_json::from_slice(&resp.payload).map_err(|e| NetworkError::new(&e))?;
        result.map_err(|e| RemoteError::new(self.target, e).into())
    }
}

/// The `Raft` gRPC service of one node: hands each message to its openraft node.
pub struct RaftService {
    raft: MetadataRaft,
    id: NodeId,
    cluster_id: ClusterIdFn,
}

/// The server of node `id`, ready to add to a tonic router.
pub fn raft_server(
    raft: MetadataRaft,
    id: NodeId,
    cluster_id: ClusterIdFn,
) -> RaftServer<RaftService> {
    RaftServer::new(RaftService {
        raft,
        id,
        cluster_id,
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE)
}

type Reply<T> = Result<Response<T>, Status>;

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(payload)
        .map_err(|e| Status::invalid_argument(format!("payload is not a raft message: {e}")))
}

impl RaftService {
    /// Why this node refuses a message with `header`, if it does.
    fn refusal(&self, header: Option<&RaftHeader>) -> Option<Error> {
        let Some(h) = header else {
            return Some(Error::new(
                ErrorCode::InvalidRequest,
                "the raft header is missing",
            ));
        };
        if h.target_id as NodeId != self.id {
            return Some(Error::new(
                ErrorCode::InvalidRequest,
                format!("this is node {}, not node {}", self.id, h.target_id),
            ));
        }
        match (self.cluster_id)() {
            Some(ours) if !h.cluster_id.is_empty() && h.cluster_id != ours => Some(Error::new(
                ErrorCode::InconsistentClusterId,
                format!("this is cluster {ours}, not {}", h.cluster_id),
            )),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftAppendEntriesRequest>,
    ) -> Reply<RaftAppendEntriesResponse> {
        let req = req.into_inner();
        if let Some(error) = self.refusal(req.header.as_ref()) {
            return Ok(Response::new(RaftAppendEntriesResponse {
                error: Some(error),
                payload: Bytes::new(),
            }));
        }
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.payload)?;
        let result = self.raft.append_entries(rpc).await;
        Ok(Response::new(RaftAppendEntriesResponse {
            error: None,
            payload: to_json(&result),
        }))
    }

    async fn vote(&self, req: Request<RaftVoteRequest>) -> Reply<RaftVoteResponse> {
        let req = req.into_inner();
        if let Some(error) = self.refusal(req.header.as_ref()) {
            return Ok(Response::new(RaftVoteResponse {
                error: Some(error),
                payload: Bytes::new(),
            }));
        }
        let rpc: VoteRequest<NodeId> = decode(&req.payload)?;
        let result = self.raft.vote(rpc).await;
        Ok(Response::new(RaftVoteResponse {
            error: None,
            payload: to_json(&result),
        }))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<RaftSnapshotChunk>>,
    ) -> Reply<RaftInstallSnapshotResponse> {
        let mut stream = req.into_inner();
        let first = stream.message().await?.and_then(|c| c.chunk);
        let Some(raft_snapshot_chunk::Chunk::Header(head)) = first else {
            return Err(Status::invalid_argument(
                "a snapshot stream starts with its header",
            ));
        };
        if let Some(error) = self.refusal(head.header.as_ref()) {
            return Ok(Response::new(RaftInstallSnapshotResponse {
                error: Some(error),
                payload: Bytes::new(),
            }));
        }
        let vote: Vote<NodeId> = decode(&head.vote)?;
        let meta: SnapshotMeta<NodeId, BasicNode> = decode(&head.meta)?;
        let mut data = Vec::with_capacity(head.total_bytes.min(MAX_MESSAGE as u64) as usize);
        // An error ends the stream here (`?`), before anything is installed.
        while let Some(chunk) = stream.message().await? {
            match chunk.chunk {
                Some(raft_snapshot_chunk::Chunk::Data(d)) => data.extend_from_slice(&d),
                _ => {
                    return Err(Status::invalid_argument(
                        "only data chunks follow the header",
                    ))
                }
            }
        }
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        };
        let result = self.raft.install_full_snapshot(vote, snapshot).await;
        Ok(Response::new(RaftInstallSnapshotResponse {
            error: None,
            payload: to_json(&result),
        }))
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftTransferLeaderRequest>,
    ) -> Reply<RaftTransferLeaderResponse> {
        let req = req.into_inner();
        if let Some(error) = self.refusal(req.header.as_ref()) {
            return Ok(Response::new(RaftTransferLeaderResponse {
                error: Some(error),
                payload: Bytes::new(),
            }));
        }
        tracing::info!(
            node_id = self.id,
            "asked to take over leadership: starting an election"
        );
        let result = self.raft.trigger().elect().await;
        Ok(Response::new(RaftTransferLeaderResponse {
            error: None,
            payload: to_json(&result),
        }))
    }
}

/// Asks node `target` at `addr` to start an election now (`Raft.TransferLeader`), so that it
/// takes over from `from`, which is about to stop leading.
pub async fn request_election(
    addr: &str,
    from: NodeId,
    target: NodeId,
    cluster_id: &str,
) -> Result<(), String> {
    let ch = channel(addr).map_err(|e| e.to_string())?;
    let msg = RaftTransferLeaderRequest {
        header: Some(RaftHeader {
            cluster_id: cluster_id.to_owned(),
            from_id: from as i32,
            target_id: target as i32,
            term: 0,
        }),
        payload: Bytes::new(),
    };
    let resp = client(ch)
        .transfer_leader(with_timeout(msg, Duration::from_secs(2)))
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    if let Some(e) = resp.error {
        return Err(e.message);
    }
    let result: Result<(), Fatal<NodeId>> =
        serde_json::from_slice(&resp.payload).map_err(|e| e.to_string())?;
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
#[path = "network_test.rs"]
mod tests;
