//! The `Producer` service: appends records to the partitions this broker leads.
//!
//! Each partition of a request is handled on its own (concurrently), so one bad partition
//! never fails the others. The order for one partition: find it and check leadership
//! (`NOT_LEADER` with the image's hint), build or check the batches (nothing is appended if
//! any is bad), check `min.insync.replicas` for acks=all, append at the current leader
//! epoch, then for acks=all wait for the fsync (group commit) and for the high watermark to
//! pass the records, up to the request timeout.
//!
//! Idempotent producers: the sequence check and the append are one step under the
//! partition's log lock (`Log::append`); a duplicate is answered with its first write's base
//! offset once that write is as durable as the request's acks ask.
//!
//! Each topic of a request counts once in `keel_produce_requests_total`, with the record
//! batch bytes it appended (duplicates append nothing) and the time until its answer. With
//! `auto_create_topics_enable`, unknown topics are created first; their partitions then
//! answer as for any new topic (`LEADER_NOT_AVAILABLE` or `NOT_LEADER` until the leader has
//! opened its replica, both retriable).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_metadata::image::MetadataImage;
use keel_proto::v1 as pb;
use keel_proto::v1::partition_produce_data::Data;
use keel_proto::v1::producer_server::Producer;
use keel_proto::v1::{Acks, ErrorCode};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::records;
use super::Shared;
use crate::metrics::Kind;
use crate::partitions::partition::Appended;
use crate::partitions::{PartitionError, PartitionManager};
use crate::producer_ids::ProducerIds;
use keel_storage::producers::SequenceError;

/// Request timeout when the request names none (Kafka's `request.timeout.ms` default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the broker waits before it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckMode {
    None,
    Leader,
    All,
}

fn ack_mode(acks: i32) -> Option<AckMode> {
    match Acks::try_from(acks).ok()? {
        Acks::None => Some(AckMode::None),
        Acks::Leader => Some(AckMode::Leader),
        Acks::All | Acks::Unspecified => Some(AckMode::All),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Serves `Producer`.
pub struct ProducerService {
    shared: Arc<Shared>,
    partitions: Arc<PartitionManager>,
    producer_ids: Arc<ProducerIds>,
}

impl ProducerService {
    pub fn new(
        shared: Arc<Shared>,
        partitions: Arc<PartitionManager>,
        producer_ids: Arc<ProducerIds>,
    ) -> ProducerService {
        ProducerService {
            shared,
            partitions,
            producer_ids,
        }
    }

    async fn produce_topic(
        &self,
        image: &MetadataImage,
        t: pb::TopicProduceData,
        acks: AckMode,
        deadline: Instant,
        not_created: Option<&pb::Error>,
    ) -> pb::TopicProduceResponse {
        let started = Instant::now();
        let topic = t.topic.as_str();
        if let Some(e) = not_created.filter(|_| image.topic_by_name(topic).is_none()) {
            let partitions = t.partitions.iter().map(|p| pb::PartitionProduceResponse {
                partition: p.partition,
                error: Some(e.clone()),
                ..Default::default()
            });
            return pb::TopicProduceResponse {
                topic: t.topic.clone(),
                partitions: partitions.collect(),
            };
        }
        let results = t.partitions.into_iter().map(|p| async move {
            let index = p.partition;
            let outcome = self
                .produce_partition(image, topic, p, acks, deadline)
                .await;
            let bytes = outcome.as_ref().map_or(0, |p| p.bytes);
            (partition_response(topic, index, acks, outcome), bytes)
        });
        let (partitions, bytes): (Vec<_>, Vec<u64>) = futures_util::future::join_all(results)
            .await
            .into_iter()
            .unzip();
        self.shared.metrics.requests.record(
            image,
            Kind::Produce,
            topic,
            bytes.iter().sum(),
            started.elapsed(),
        );
        pb::TopicProduceResponse {
            topic: t.topic.clone(),
            partitions,
        }
    }

    async fn produce_partition(
        &self,
        image: &MetadataImage,
        topic: &str,
        data: pb::PartitionProduceData,
        acks: AckMode,
        deadline: Instant,
    ) -> Result<Produced, PartitionError> {
        let partition = self.partitions.leader_of(image, topic, data.partition)?;
        let role = partition.role();
        let now = now_ms();
        let settings = &role.settings;
        let batches = match data.data {
            None => {
                return Err(PartitionError::InvalidRequest(
                    "no records in the partition",
                ))
            }
            Some(Data::Records(r)) => vec![records::build_batch(&r, settings, now)?],
            Some(Data::RecordBatches(raw)) => {
                let checked = records::check_raw(&raw, settings.log.max_message_bytes)?;
                match settings.log_append_time {
                    true => records::stamp_append_time(checked, now)?,
                    false => checked,
                }
            }
        };
        if acks == AckMode::All && role.isr.len() < settings.min_insync_replicas {
            return Err(PartitionError::NotEnoughReplicas {
                isr: role.isr.len(),
                min: settings.min_insync_replicas,
            });
        }
        let size: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let appended = append_in_order(&partition, batches, self.partitions.appended()).await?;
        if acks == AckMode::All {
            let durable = async {
                // flush.mode=interval trades the fsync before the answer for throughput.
                if settings.flush_interval_ms.is_none() {
                    partition.flush_to(appended.next_offset).await?;
                }
                partition
                    .wait_replicated(appended.next_offset, appended.leader_epoch)
                    .await
            };
            tokio::time::timeout_at(deadline, durable)
                .await
                .map_err(|_| PartitionError::TimedOut)??;
        }
        Ok(Produced {
            appended,
            log_append_time: settings.log_append_time.then_some(now),
            bytes: if appended.duplicate { 0 } else { size },
        })
    }
}

/// What one partition of a produce did.
struct Produced {
    appended: Appended,
    log_append_time: Option<i64>,
    /// Record batch bytes appended (0 for a duplicate).
    bytes: u64,
}

/// How long an idempotent batch that arrived ahead of its predecessor waits for it.
const HOLD_OUT_OF_ORDER: Duration = Duration::from_millis(100);

/// Appends; an idempotent batch that arrived ahead of its producer's previous batch (a gap
/// in the sequence) waits up to [`HOLD_OUT_OF_ORDER`] for the gap to fill before it is
/// refused with `OUT_OF_ORDER_SEQUENCE`. A client keeps up to five batches of a partition in
/// flight and this broker serves concurrent requests concurrently, so a batch often
/// overtakes the one before it by microseconds; refusing it at once costs the client a
/// round trip and a resend. Waiting changes nothing in the log: a batch that still does not
/// fit is refused as before. `appended` is subscribed before the first try, so an append in
/// between is not missed.
async fn append_in_order(
    partition: &Arc<crate::partitions::Partition>,
    batches: Vec<Bytes>,
    mut appended: tokio::sync::watch::Receiver<u64>,
) -> Result<Appended, PartitionError> {
    let deadline = Instant::now() + HOLD_OUT_OF_ORDER;
    loop {
        appended.borrow_and_update();
        match append(partition, batches.clone()).await {
            Err(PartitionError::Sequence(SequenceError::OutOfOrder { expected, got, .. }))
                if got > expected && Instant::now() < deadline =>
            {
                let _ = tokio::time::timeout_at(deadline, appended.changed()).await;
            }
            outcome => return outcome,
        }
    }
}

/// Appends on a blocking thread (a buffered write plus index updates).
async fn append(
    partition: &Arc<crate::partitions::Partition>,
    batches: Vec<Bytes>,
) -> Result<Appended, PartitionError> {
    let p = partition.clone();
    crate::spawn_blocking(move || p.append(&batches))
        .await
        .map_err(|_| PartitionError::LeaderNotAvailable)?
}

fn partition_response(
    topic: &str,
    partition: i32,
    acks: AckMode,
    outcome: Result<Produced, PartitionError>,
) -> pb::PartitionProduceResponse {
    match outcome {
        Ok(p) => pb::PartitionProduceResponse {
            partition,
            error: None,
            base_offset: (acks != AckMode::None).then_some(p.appended.base_offset),
            log_append_time: p.log_append_time,
            log_start_offset: p.appended.log_start,
            record_errors: vec![],
        },
        Err(e) => {
            if let PartitionError::Storage(s) = &e {
                tracing::error!(%topic, partition, error = %s, "produce failed in storage");
            }
            pb::PartitionProduceResponse {
                partition,
                error: Some(pb::Error::from(&e)),
                ..Default::default()
            }
        }
    }
}

#[tonic::async_trait]
impl Producer for ProducerService {
    #[tracing::instrument(level = "debug", skip_all, fields(node_id = self.shared.node_id))]
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let req = request.into_inner();
        let Some(acks) = ack_mode(req.acks) else {
            return Ok(Response::new(pb::ProduceResponse {
                error: Some(pb::Error::new(
                    ErrorCode::InvalidRequiredAcks,
                    format!("unknown acks value {}", req.acks),
                )),
                topics: vec![],
            }));
        };
        let timeout = match req.timeout_ms {
            t if t > 0 => Duration::from_millis(t as u64),
            _ => DEFAULT_TIMEOUT,
        };
        let deadline = Instant::now() + timeout;
        let names: Vec<String> = req.topics.iter().map(|t| t.topic.clone()).collect();
        let not_created = super::cluster::auto_create(&self.shared, &names).await;
        let image = self.shared.view.current();
        let topics = req.topics.into_iter().map(|t| {
            let failed = not_created.get(&t.topic);
            self.produce_topic(&image, t, acks, deadline, failed)
        });
        let topics = futures_util::future::join_all(topics).await;
        Ok(Response::new(pb::ProduceResponse {
            error: None,
            topics,
        }))
    }

    /// A new producer id with epoch 0 (see [`crate::producer_ids`] for why a named id is
    /// not bumped).
    #[tracing::instrument(level = "debug", skip_all, fields(node_id = self.shared.node_id))]
    async fn init_producer_id(
        &self,
        _request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let resp = match self.producer_ids.next().await {
            Ok(id) => pb::InitProducerIdResponse {
                error: None,
                producer_id: id,
                producer_epoch: 0,
            },
            Err(e) => pb::InitProducerIdResponse {
                error: Some(e),
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_follow_kafka_and_unspecified_means_all() {
        assert_eq!(ack_mode(Acks::Unspecified as i32), Some(AckMode::All));
        assert_eq!(ack_mode(Acks::None as i32), Some(AckMode::None));
        assert_eq!(ack_mode(Acks::Leader as i32), Some(AckMode::Leader));
        assert_eq!(ack_mode(Acks::All as i32), Some(AckMode::All));
        assert_eq!(ack_mode(42), None);
    }
}
