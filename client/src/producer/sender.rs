//! Delivering batches: encode each once, send them to their leaders, answer every record, and
//! retry what failed retriably (after a metadata refresh and a backoff) until the batch's
//! retries or delivery timeout run out.
//!
//! A retried batch keeps its partition muted the whole time (the driver unmutes it only when
//! this task ends), so no later batch of the partition can overtake it. A batch is encoded
//! once, so a retry carries the same producer id, epoch and sequence as the first try.

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
use crate::{ApiError, Error, ErrorCode, RecordMetadata, TopicPartition};

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

/// One encoded batch and the records it answers for.
struct Outgoing {
    tp: TopicPartition,
    data: Bytes,
    records: Vec<Pending>,
    /// When the batch's first record was queued plus `delivery_timeout`.
    deadline: Instant,
}

/// What a broker reports for a written batch.
struct Written {
    base_offset: Option<i64>,
    log_append_time: Option<i64>,
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
    pub fn try_slot(&self, broker: i32) -> Option<(i32, OwnedSemaphorePermit)> {
        self.slots_of(broker)
            .try_acquire_owned()
            .ok()
            .map(|p| (broker, p))
    }

    fn slots_of(&self, broker: i32) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let max = self.options.max_in_flight;
        slots
            .entry(broker)
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone()
    }

    /// Delivers `batches` (see the module doc). `slot` is the in-flight slot the driver took
    /// for their leader, if it knew one. Returns the partitions whose batch failed for good.
    pub async fn deliver(
        &self,
        batches: Vec<(Batch<Pending>, ProducerFields)>,
        mut slot: Option<(i32, OwnedSemaphorePermit)>,
    ) -> Vec<TopicPartition> {
        let mut gave_up = Vec::new();
        let mut todo: Vec<Outgoing> = batches
            .into_iter()
            .filter_map(|(b, fields)| self.encode(b, fields, &mut gave_up))
            .collect();
        let mut retry = 0;
        while !todo.is_empty() {
            let generation = self.topology.generation();
            let mut failed = Vec::new();
            let mut groups: BTreeMap<i32, (Route, Vec<Outgoing>)> = BTreeMap::new();
            for o in todo.drain(..) {
                match self.topology.route(&o.tp) {
                    Some(route) => groups
                        .entry(route.broker)
                        .or_insert((route, vec![]))
                        .1
                        .push(o),
                    None => {
                        let e = ApiError::new(ErrorCode::LeaderNotAvailable, "no known leader");
                        failed.push((o, Error::Api(e)));
                    }
                }
            }
            for (broker, (route, group)) in groups {
                let permit = match slot.take() {
                    Some((b, permit)) if b == broker => permit,
                    _ => self
                        .slots_of(broker)
                        .acquire_owned()
                        .await
                        .expect("slot semaphores are never closed"),
                };
                for (o, result) in self.send(&route, group).await {
                    match result {
                        Ok(written) => complete(o, written),
                        Err(e) => failed.push((o, e)),
                    }
                }
                drop(permit);
            }
            slot = None;

            let now = Instant::now();
            for (o, e) in failed {
                if e.is_retriable() && retry < self.options.retries && now < o.deadline {
                    debug!(topic = %o.tp.topic, partition = o.tp.partition, retry, error = %e, "retrying batch");
                    todo.push(o);
                } else {
                    gave_up.push(o.tp.clone());
                    fail(o, e);
                }
            }
            if todo.is_empty() {
                return gave_up;
            }
            if let Err(e) = self.topology.refresh_after(generation).await {
                debug!(error = %e, "metadata refresh failed");
            }
            tokio::time::sleep(self.options.backoff_for(retry)).await;
            retry += 1;
        }
        gave_up
    }

    /// Encodes a batch; on failure (a record over 2 GiB) answers its records at once (and
    /// counts the partition in `gave_up`: the sequence it was given is never sent).
    fn encode(
        &self,
        batch: Batch<Pending>,
        fields: ProducerFields,
        gave_up: &mut Vec<TopicPartition>,
    ) -> Option<Outgoing> {
        let records: Vec<BatchRecord> = batch
            .records
            .iter()
            .map(|p| BatchRecord {
                timestamp: p.record.timestamp.unwrap_or_default(),
                key: p.record.key.clone(),
                value: p.record.value.clone(),
                headers: p.record.headers.clone(),
            })
            .collect();
        let deadline = batch.created + self.options.delivery_timeout;
        match record_batch::encode_with(self.options.compression, fields, &records) {
            Ok(data) => Some(Outgoing {
                tp: batch.tp,
                data,
                records: batch.records,
                deadline,
            }),
            Err(e) => {
                let e = Error::InvalidArgument {
                    argument: format!("{}: {e}", batch.tp),
                    reason: "cannot encode the batch",
                };
                for p in batch.records {
                    let _ = p.reply.send(Err(e.clone()));
                }
                gave_up.push(batch.tp);
                None
            }
        }
    }

    /// One produce request to `route`'s broker carrying `group`; each batch with its outcome.
    async fn send(
        &self,
        route: &Route,
        group: Vec<Outgoing>,
    ) -> Vec<(Outgoing, Result<Written, Error>)> {
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
                    Some(p) => match api_error(p.error) {
                        Some(e) => Err(Error::Api(e)),
                        None => Ok(Written {
                            base_offset: p.base_offset,
                            log_append_time: p.log_append_time,
                        }),
                    },
                };
                (o, outcome)
            })
            .collect()
    }
}

/// Answers every record of a written batch with its offset (base offset + position).
fn complete(o: Outgoing, written: Written) {
    for (i, p) in o.records.into_iter().enumerate() {
        let metadata = RecordMetadata {
            topic: o.tp.topic.clone(),
            partition: o.tp.partition,
            offset: written.base_offset.map(|base| base + i as i64),
            timestamp: written
                .log_append_time
                .or(p.record.timestamp)
                .unwrap_or_default(),
        };
        let _ = p.reply.send(Ok(metadata));
    }
}

/// Answers every record of a batch that will not be written with `e`.
fn fail(o: Outgoing, e: Error) {
    debug!(topic = %o.tp.topic, partition = o.tp.partition, error = %e, "batch failed");
    for p in o.records {
        let _ = p.reply.send(Err(e.clone()));
    }
}
