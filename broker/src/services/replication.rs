//! The internal `Replication` service: a leader serving its followers.
//!
//! `ReplicaFetch` is one bidirectional stream per follower broker; each request is a fetch
//! round over every partition the follower replicates from this broker. A round first records
//! where the follower is (its fetch offsets, which move the high watermark), then answers with
//! records, a divergence (the follower must truncate) or an error per partition. When no
//! partition has data it waits, up to the round's `max_wait_ms`, for a leader here to append,
//! and reads again. The stream ends when the follower closes it or the node stops. The stream
//! is served through `fetch_body::replication_routes`, which sends each answer as chunks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_metadata::image::MetadataImage;
use keel_proto::v1 as pb;
use keel_proto::v1::replication_server::Replication;
use keel_proto::v1::ErrorCode;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use super::convert::parse_topic_id;
use super::fetch_body::encode_replica_chunks;
use super::Shared;
use crate::partitions::partition::{Fetched, ReplicaFetch};
use crate::partitions::{PartitionError, PartitionManager};
use crate::replication::throttle::Throttle;

/// The longest a round may wait for data, whatever the follower asks.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Serves `Replication`.
#[derive(Clone)]
pub struct ReplicationService {
    shared: Arc<Shared>,
    partitions: Arc<PartitionManager>,
    stop: watch::Receiver<bool>,
}

impl ReplicationService {
    /// Serves until `stop` turns true (the node's listeners are stopping).
    pub fn new(
        shared: Arc<Shared>,
        partitions: Arc<PartitionManager>,
        stop: watch::Receiver<bool>,
    ) -> ReplicationService {
        ReplicationService {
            shared,
            partitions,
            stop,
        }
    }

    /// One fetch round: read, and if there is nothing to send, wait for an append and read
    /// again, until the round's deadline.
    async fn round(&self, req: pb::ReplicaFetchRequest) -> pb::ReplicaFetchResponse {
        let image = self.shared.view.current();
        if let Err(e) = current_registration(&image, &req) {
            return pb::ReplicaFetchResponse {
                error: Some(e),
                topics: vec![],
            };
        }
        let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
        let deadline = Instant::now() + wait;
        let min_bytes = req.min_bytes.max(1) as usize;
        let req = Arc::new(req);
        let mut appended = self.partitions.appended();
        loop {
            appended.borrow_and_update();
            let (resp, bytes) = self.read_round(req.clone()).await;
            if bytes >= min_bytes || Instant::now() >= deadline {
                return resp;
            }
            let woke = tokio::time::timeout_at(deadline, appended.changed()).await;
            if !matches!(woke, Ok(Ok(()))) {
                return resp;
            }
        }
    }

    /// Serves every partition of the round on a blocking thread; returns the answer and the
    /// record bytes in it.
    async fn read_round(
        &self,
        req: Arc<pb::ReplicaFetchRequest>,
    ) -> (pb::ReplicaFetchResponse, usize) {
        let partitions = self.partitions.clone();
        let shared = self.shared.clone();
        let served = crate::spawn_blocking(move || {
            serve_all(&partitions, &req, &shared.reassignment_throttle)
        })
        .await;
        served.unwrap_or_else(|_| {
            let e = pb::Error::new(ErrorCode::UnknownServerError, "replica fetch panicked");
            (
                pb::ReplicaFetchResponse {
                    error: Some(e),
                    topics: vec![],
                },
                0,
            )
        })
    }
}

/// `STALE_BROKER_EPOCH` unless the follower's epoch is its current registration here.
fn current_registration(
    image: &MetadataImage,
    req: &pb::ReplicaFetchRequest,
) -> Result<(), pb::Error> {
    match image.brokers.get(&req.replica_id) {
        Some(b) if b.broker_epoch == req.replica_epoch => Ok(()),
        _ => Err(pb::Error::new(
            ErrorCode::StaleBrokerEpoch,
            format!(
                "broker {} epoch {} is not its current registration on this leader",
                req.replica_id, req.replica_epoch
            ),
        )),
    }
}

/// Serves a follower's round. Partitions for which the follower is a replica being added by a
/// reassignment get at most the throttle's allowance, shared by the round.
fn serve_all(
    partitions: &PartitionManager,
    req: &pb::ReplicaFetchRequest,
    throttle: &Throttle,
) -> (pb::ReplicaFetchResponse, usize) {
    let mut budget = req.max_bytes.max(1) as usize;
    let mut bytes = 0;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic_id = parse_topic_id(&t.topic_id);
        let mut out = Vec::with_capacity(t.partitions.len());
        for fp in &t.partitions {
            let partition = topic_id.and_then(|id| partitions.get(id, fp.partition));
            let throttled = partition
                .as_ref()
                .is_some_and(|p| p.is_adding(req.replica_id));
            let mut max_bytes = (fp.partition_max_bytes.max(1) as usize).min(budget.max(1));
            if throttled {
                max_bytes = max_bytes.min(throttle.allowance());
            }
            let f = ReplicaFetch {
                replica: req.replica_id,
                replica_epoch: req.replica_epoch,
                fetch_offset: fp.fetch_offset,
                last_fetched_epoch: fp.last_fetched_epoch,
                current_leader_epoch: fp.current_leader_epoch,
                max_bytes,
            };
            let served = partition
                .ok_or(PartitionError::UnknownTopicOrPartition)
                .and_then(|p| p.serve_replica_fetch(&f));
            let resp = partition_response(fp.partition, served);
            if throttled {
                throttle.spend(resp.record_batches.len());
            }
            budget = budget.saturating_sub(resp.record_batches.len());
            bytes += resp.record_batches.len();
            out.push(resp);
        }
        topics.push(pb::ReplicaFetchTopicResponse {
            topic_id: t.topic_id.clone(),
            partitions: out,
        });
    }
    (
        pb::ReplicaFetchResponse {
            error: None,
            topics,
        },
        bytes,
    )
}

fn partition_response(
    partition: i32,
    served: Result<Fetched, PartitionError>,
) -> pb::ReplicaFetchPartitionResponse {
    let mut resp = pb::ReplicaFetchPartitionResponse {
        partition,
        ..Default::default()
    };
    match served {
        Ok(Fetched::Records {
            batches,
            high_watermark,
            log_start,
        }) => {
            resp.record_batches = batches;
            resp.high_watermark = high_watermark;
            resp.log_start_offset = log_start;
        }
        Ok(Fetched::Diverging {
            epoch,
            end_offset,
            high_watermark,
            log_start,
        }) => {
            resp.diverging_epoch = Some(pb::EpochEndOffset { epoch, end_offset });
            resp.high_watermark = high_watermark;
            resp.log_start_offset = log_start;
        }
        Ok(Fetched::OutOfRange {
            log_start,
            high_watermark,
        }) => {
            resp.error = Some(pb::Error::new(
                ErrorCode::OffsetOutOfRange,
                format!("fetch offset outside the leader's log (start {log_start})"),
            ));
            resp.high_watermark = high_watermark;
            resp.log_start_offset = log_start;
        }
        Err(e) => resp.error = Some(pb::Error::from(&e)),
    }
    resp
}

/// The follower-side reading of one partition's answer.
pub fn fetched_from_wire(resp: pb::ReplicaFetchPartitionResponse) -> Result<Fetched, pb::Error> {
    match (resp.error, resp.diverging_epoch) {
        (Some(e), _) if e.code == ErrorCode::OffsetOutOfRange as i32 => Ok(Fetched::OutOfRange {
            log_start: resp.log_start_offset,
            high_watermark: resp.high_watermark,
        }),
        (Some(e), _) => Err(e),
        (None, Some(d)) => Ok(Fetched::Diverging {
            epoch: d.epoch,
            end_offset: d.end_offset,
            high_watermark: resp.high_watermark,
            log_start: resp.log_start_offset,
        }),
        (None, None) => Ok(Fetched::Records {
            batches: resp.record_batches,
            high_watermark: resp.high_watermark,
            log_start: resp.log_start_offset,
        }),
    }
}

type FetchStream =
    futures_util::stream::BoxStream<'static, Result<pb::ReplicaFetchResponse, Status>>;

#[tonic::async_trait]
impl Replication for ReplicationService {
    type ReplicaFetchStream = FetchStream;

    /// Never reached: `fetch_body::replication_routes` answers this path with chunks.
    async fn replica_fetch(
        &self,
        _request: Request<Streaming<pb::ReplicaFetchRequest>>,
    ) -> Result<Response<Self::ReplicaFetchStream>, Status> {
        Err(Status::unimplemented(
            "ReplicaFetch is served by the routed wrapper",
        ))
    }

    async fn offsets_for_leader_epoch(
        &self,
        request: Request<pb::OffsetsForLeaderEpochRequest>,
    ) -> Result<Response<pb::OffsetsForLeaderEpochResponse>, Status> {
        let req = request.into_inner();
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let id = parse_topic_id(&t.topic_id);
                let partitions = t.partitions.iter().map(|p| self.epoch_end(id, p)).collect();
                pb::OffsetsForLeaderEpochTopicResponse {
                    topic_id: t.topic_id,
                    partitions,
                }
            })
            .collect();
        Ok(Response::new(pb::OffsetsForLeaderEpochResponse {
            error: None,
            topics,
        }))
    }
}

impl ReplicationService {
    /// Answers the rounds of one follower's stream in turn, each as the chunks of its gRPC
    /// message. Ends with the stream: when the follower closes it, when an answer cannot be
    /// sent, or when the node stops.
    pub(crate) async fn serve_stream(
        self,
        mut inbound: Streaming<pb::ReplicaFetchRequest>,
        tx: mpsc::Sender<VecDeque<Bytes>>,
    ) {
        let mut stop = self.stop.clone();
        loop {
            let next = tokio::select! {
                next = inbound.message() => next,
                _ = stop.wait_for(|s| *s) => return,
            };
            let req = match next {
                Ok(Some(req)) => req,
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!(%status, "replica fetch stream broke");
                    return;
                }
            };
            let resp = tokio::select! {
                resp = self.round(req) => resp,
                _ = stop.wait_for(|s| *s) => return,
            };
            if tx.send(encode_replica_chunks(&resp)).await.is_err() {
                return;
            }
        }
    }

    fn epoch_end(
        &self,
        topic_id: Option<keel_metadata::records::TopicId>,
        p: &pb::OffsetsForLeaderEpochPartition,
    ) -> pb::OffsetsForLeaderEpochPartitionResponse {
        let found = topic_id
            .and_then(|id| self.partitions.get(id, p.partition))
            .ok_or(PartitionError::UnknownTopicOrPartition)
            .and_then(|part| part.end_offset_for_epoch(p.current_leader_epoch, p.leader_epoch));
        let mut resp = pb::OffsetsForLeaderEpochPartitionResponse {
            partition: p.partition,
            ..Default::default()
        };
        match found {
            Ok(end) => {
                resp.epoch_end_offset =
                    end.map(|(epoch, end_offset)| pb::EpochEndOffset { epoch, end_offset })
            }
            Err(e) => resp.error = Some(pb::Error::from(&e)),
        }
        resp
    }
}
