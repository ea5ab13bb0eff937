//! One produce request: the batches of several partitions (one batch each) to their leader,
//! and each batch's outcome. A sender task sends once; when something failed retriably it
//! refreshes the metadata before handing the batches back, so that the driver's retries
//! (ordered per partition by `sequences.rs`, after a backoff) go to the new leader.
//!
//! A batch is encoded by the driver when it is taken ([`Outgoing::encode`]), and again only
//! when its partition moved to a new epoch; a retry otherwise carries the same bytes, so the
//! same producer id, epoch and sequence as the first try.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_proto::v1 as pb;
use keel_proto::v1::partition_produce_data::Data;
use keel_proto::v1::producer_client::ProducerClient;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use super::accumulator::Batch;
use super::{Pending, ProducerOptions};
use crate::pb_conv::api_error;
use crate::record_batch::{self, BatchRecord, ProducerFields};
use crate::topology::{Route, Topology};
use crate::{ApiError, Compression, Error, ErrorCode, RecordMetadata, TopicPartition};

/// Margin on top of the produce timeout the broker gets, so that the broker's own
/// `REQUEST_TIMED_OUT` arrives before the client gives up on the call.
const RPC_MARGIN: Duration = Duration::from_secs(5);

/// Shared by all sender tasks of a producer.
#[derive(Debug)]
pub(crate) struct Sender {
    topology: Arc<Topology>,
    options: ProducerOptions,
    /// In-flight request slots per broker (`max_in_flight` each).
    slots: Mutex<HashMap<i32, Arc<Semaphore>>>,
}

/// One batch, encoded, with the records it answers for.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The accumulator's batch id (grows with the partition's sequences).
    pub id: u64,
    pub tp: TopicPartition,
    data: Bytes,
    records: Vec<Pending>,
    /// When the batch's first record was queued plus `delivery_timeout`.
    pub deadline: Instant,
    /// Retries after retriable errors so far (out-of-order refusals do not count).
    pub retries: u32,
}

/// What a broker reports for a written batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    base_offset: Option<i64>,
    log_append_time: Option<i64>,
}

/// A batch handed back by a sender task with its outcome.
pub(crate) type Answered = (Outgoing, Result<Written, Error>);

impl Outgoing {
    /// A batch taken from the accumulator, not yet encoded.
    pub fn new(batch: Batch<Pending>, delivery_timeout: Duration) -> Self {
        Self {
            id: batch.id,
            tp: batch.tp,
            data: Bytes::new(),
            records: batch.records,
            deadline: batch.created + delivery_timeout,
            retries: 0,
        }
    }

    /// Encodes the records with `fields` (a first try, or a batch given new sequences).
    /// Fails only for a record over 2 GiB.
    pub fn encode(&mut self, codec: Compression, fields: ProducerFields) -> Result<(), Error> {
        let records: Vec<BatchRecord> = self
            .records
            .iter()
            .map(|p| BatchRecord {
                timestamp: p.record.timestamp.unwrap_or_default(),
                key: p.record.key.clone(),
                value: p.record.value.clone(),
                headers: p.record.headers.clone(),
            })
            .collect();
        self.data = record_batch::encode_with(codec, fields, &records).map_err(|e| {
            Error::InvalidArgument {
                argument: format!("{}: {e}", self.tp),
                reason: "cannot encode the batch",
            }
        })?;
        Ok(())
    }

    /// Answers every record with its offset (base offset + position).
    pub fn complete(self, written: Written) {
        for (i, p) in self.records.into_iter().enumerate() {
            let metadata = RecordMetadata {
                topic: self.tp.topic.clone(),
                partition: self.tp.partition,
                offset: written.base_offset.map(|base| base + i as i64),
                timestamp: written
                    .log_append_time
                    .or(p.record.timestamp)
                    .unwrap_or_default(),
            };
            let _ = p.reply.send(Ok(metadata));
        }
    }

    /// Answers every record with `e`: the batch will not be sent again.
    pub fn fail(self, e: Error) {
        debug!(topic = %self.tp.topic, partition = self.tp.partition, error = %e, "batch failed");
        for p in self.records {
            let _ = p.reply.send(Err(e.clone()));
        }
    }
}

impl Sender {
    pub fn new(topology: Arc<Topology>, options: ProducerOptions) -> Self {
        Self {
            topology,
            options,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A free in-flight slot of `broker`, without waiting.
    pub fn try_slot(&self, broker: i32) -> Option<OwnedSemaphorePermit> {
        self.slots_of(broker).try_acquire_owned().ok()
    }

    fn slots_of(&self, broker: i32) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let max = self.options.max_in_flight;
        slots
            .entry(broker)
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone()
    }

    /// Sends `batches` (at most one per partition) to `route`, holding `slot` meanwhile; with
    /// no route (no known leader) fails them with `LEADER_NOT_AVAILABLE`. `generation` is the
    /// metadata generation the route came from.
    pub async fn attempt(
        &self,
        route: Option<Route>,
        generation: u64,
        batches: Vec<Outgoing>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Vec<Answered> {
        let answered = match route {
            Some(route) => self.send(&route, batches).await,
            None => {
                let e = Error::Api(ApiError::new(
                    ErrorCode::LeaderNotAvailable,
                    "no known leader",
                ));
                batches.into_iter().map(|o| (o, Err(e.clone()))).collect()
            }
        };
        drop(slot);
        let retriable = |(_, r): &Answered| r.as_ref().is_err_and(Error::is_retriable);
        if answered.iter().any(retriable) {
            if let Err(e) = self.topology.refresh_after(generation).await {
                debug!(error = %e, "metadata refresh failed");
            }
        }
        answered
    }

    /// One produce request to `route`'s broker carrying `group`; each batch with its outcome.
    async fn send(&self, route: &Route, group: Vec<Outgoing>) -> Vec<Answered> {
        let mut topics: BTreeMap<&str, Vec<pb::PartitionProduceData>> = BTreeMap::new();
        for o in &group {
            topics
                .entry(&o.tp.topic)
                .or_default()
                .push(pb::PartitionProduceData {
                    partition: o.tp.partition,
                    data: Some(Data::RecordBatches(o.data.clone())),
                });
        }
        let timeout = self.options.request_timeout;
        let mut request = tonic::Request::new(pb::ProduceRequest {
            acks: self.options.acks.to_wire() as i32,
            timeout_ms: i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX),
            topics: topics
                .into_iter()
                .map(|(topic, partitions)| pb::TopicProduceData {
                    topic: topic.to_string(),
                    partitions,
                })
                .collect(),
        });
        request.set_timeout(timeout + RPC_MARGIN);
        let response = ProducerClient::new(route.channel.clone())
            .produce(request)
            .await;
        let response = match response {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let e = Error::from_status(&route.endpoint, &status);
                return group.into_iter().map(|o| (o, Err(e.clone()))).collect();
            }
        };
        if let Some(e) = api_error(response.error) {
            return group
                .into_iter()
                .map(|o| (o, Err(Error::Api(e.clone()))))
                .collect();
        }
        let mut results: HashMap<(String, i32), pb::PartitionProduceResponse> = HashMap::new();
        for t in response.topics {
            for p in t.partitions {
                results.insert((t.topic.clone(), p.partition), p);
            }
        }
        group
            .into_iter()
            .map(|o| {
                let outcome = match results.remove(&(o.tp.topic.clone(), o.tp.partition)) {
                    None => Err(Error::InvalidResponse {
                        rpc: "Producer.Produce",
                        reason: format!("no result for {}", o.tp),
                    }),
                    Some(p) => outcome(p),
                };
                (o, outcome)
            })
            .collect()
    }
}

/// A partition's result. `DUPLICATE_SEQUENCE` (a retry of a batch written so long ago that
/// the broker no longer has its offset) means written: a success without an offset.
fn outcome(p: pb::PartitionProduceResponse) -> Result<Written, Error> {
    match api_error(p.error) {
        Some(e) if e.code == ErrorCode::DuplicateSequence => Ok(Written {
            base_offset: None,
            log_append_time: None,
        }),
        Some(e) => Err(Error::Api(e)),
        None => Ok(Written {
            base_offset: p.base_offset,
            log_append_time: p.log_append_time,
        }),
    }
}
