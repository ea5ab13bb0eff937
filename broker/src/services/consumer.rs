//! The `Consumer` service: fetches (a long poll) and offset lookups on the partitions this
//! broker leads. Consumers see only records below the high watermark.
//!
//! A fetch reads every partition once; if it found fewer than `min_bytes` and found no
//! error, it waits for any high watermark on this broker to move (or `max_wait_ms`) and
//! reads again. `Subscribe` runs the same long poll over and over as a stream: it pushes each
//! non-empty result (only the partitions with data or errors), advances the positions itself,
//! drops a partition after reporting its error, and ends when no partition is left. The
//! stream is polled only as the client consumes (gRPC flow control), so it never reads ahead.
//!
//! Metrics: each topic of a Fetch counts once in `keel_fetch_requests_total` with the record
//! bytes of the answer and the time to it (long-poll wait included, as Kafka's fetch
//! latency); a Subscribe counts each message it pushes the same way.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_metadata::image::MetadataImage;
use keel_proto::v1 as pb;
use keel_proto::v1::consumer_server::Consumer;
use keel_proto::v1::fetch_partition_response::Data;
use keel_proto::v1::{OffsetSpec, RecordFormat};
use keel_storage::Offset;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::convert::topic_id_bytes;
use super::records;
use super::Shared;
use crate::metrics::Kind;
use crate::partitions::partition::Offsets;
use crate::partitions::{Partition, PartitionError, PartitionManager};
use crate::request_memory::{Reservation, Share};

/// `fetch.max.bytes` default (Kafka's): the most record data per response. Also the cap, so
/// responses stay below the 64 MiB gRPC message limit.
const FETCH_MAX_BYTES: usize = 50 * 1024 * 1024;
/// `max.partition.fetch.bytes` default (Kafka's).
const PARTITION_MAX_BYTES: usize = 1024 * 1024;
/// The longest long poll the broker holds.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The wait of a Subscribe round when the request asks for none (it would spin otherwise).
const SUBSCRIBE_MIN_WAIT: Duration = Duration::from_millis(500);

/// Serves `Consumer`.
#[derive(Clone)]
pub struct ConsumerService {
    shared: Arc<Shared>,
    partitions: Arc<PartitionManager>,
}

/// What one pass over the request found.
struct Pass {
    response: pb::FetchResponse,
    bytes: usize,
    /// Record bytes per topic of the request, in its order.
    topic_bytes: Vec<usize>,
    errors: bool,
}

impl ConsumerService {
    pub fn new(shared: Arc<Shared>, partitions: Arc<PartitionManager>) -> ConsumerService {
        ConsumerService { shared, partitions }
    }

    /// The partition if this broker leads it at the epoch the client expects (if it says).
    fn partition(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
        expected_epoch: Option<i32>,
    ) -> Result<Arc<Partition>, PartitionError> {
        let p = self.partitions.leader_of(image, topic, partition)?;
        let current = p.role().leader_epoch;
        match expected_epoch {
            Some(e) if e < current => Err(PartitionError::FencedLeaderEpoch {
                requested: e,
                current,
            }),
            Some(e) if e > current => Err(PartitionError::UnknownLeaderEpoch {
                requested: e,
                current,
            }),
            _ => Ok(p),
        }
    }

    /// Reads until `min_bytes` came back, a partition failed, or `wait` passed.
    /// With a `reservation` (a Fetch on the client listener), each pass first reserves what it
    /// may read in the broker's request memory and keeps only what it read.
    async fn long_poll(
        &self,
        req: &pb::FetchRequest,
        wait: Duration,
        reservation: Option<&Reservation>,
    ) -> Result<Pass, Status> {
        let deadline = Instant::now() + wait;
        let min_bytes = req.min_bytes.max(1) as usize;
        let want = match req.max_bytes {
            m if m > 0 => (m as usize).min(FETCH_MAX_BYTES),
            _ => FETCH_MAX_BYTES,
        };
        let mut changes = self.partitions.data_changed();
        loop {
            // Marked seen before the pass, so a change during it wakes the wait below.
            changes.borrow_and_update();
            // Each pass reads anew from the same offsets: a pass that is not answered gives
            // its share back before the wait, so passes never add up.
            let share = match reservation {
                Some(r) => Some(r.share_up_to(PARTITION_MAX_BYTES, want).await?),
                None => None,
            };
            let budget = share.as_ref().map_or(want, Share::bytes);
            let pass = self.fetch_pass(req, budget).await;
            if pass.bytes >= min_bytes || pass.errors || Instant::now() >= deadline {
                if let Some((r, share)) = reservation.zip(share) {
                    r.keep_read(share, pass.bytes);
                }
                return Ok(pass);
            }
            drop(share);
            let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
        }
    }

    async fn fetch_pass(&self, req: &pb::FetchRequest, mut budget: usize) -> Pass {
        let image = self.shared.view.current();
        let structured = req.format != RecordFormat::RecordBatches as i32;
        let mut pass = Pass {
            response: pb::FetchResponse::default(),
            bytes: 0,
            topic_bytes: Vec::with_capacity(req.topics.len()),
            errors: false,
        };
        for t in &req.topics {
            let topic_id = image.topic_by_name(&t.topic).map(|ti| ti.topic_id);
            let mut out = pb::FetchTopicResponse {
                topic: t.topic.clone(),
                topic_id: topic_id.map(topic_id_bytes).unwrap_or_default(),
                partitions: vec![],
            };
            let before = pass.bytes;
            for fp in &t.partitions {
                // The first batch of the first non-empty partition comes whole; after that
                // the budget rules.
                let room = match pass.bytes {
                    0 => budget.max(1),
                    _ => budget,
                };
                let result = match room {
                    _ if stale_topic_id(&t.topic_id, topic_id) => {
                        Err(PartitionError::InconsistentTopicId)
                    }
                    0 => Ok(None),
                    _ => self
                        .fetch_partition(&image, &t.topic, fp, room, structured)
                        .await
                        .map(Some),
                };
                let resp = match result {
                    Ok(Some((resp, n))) => {
                        pass.bytes += n;
                        budget = budget.saturating_sub(n);
                        resp
                    }
                    Ok(None) => self.empty_partition(&image, &t.topic, fp),
                    Err(e) => {
                        pass.errors = true;
                        error_partition(fp.partition, &e)
                    }
                };
                out.partitions.push(resp);
            }
            pass.topic_bytes.push(pass.bytes - before);
            pass.response.topics.push(out);
        }
        pass
    }

    /// A partition left out for lack of budget: its offsets, no data.
    fn empty_partition(
        &self,
        image: &MetadataImage,
        topic: &str,
        fp: &pb::FetchPartition,
    ) -> pb::FetchPartitionResponse {
        let offsets = self
            .partition(image, topic, fp.partition, fp.current_leader_epoch)
            .and_then(|p| p.offsets());
        match offsets {
            Ok(o) => with_offsets(fp.partition, o, fp.fetch_offset),
            Err(e) => error_partition(fp.partition, &e),
        }
    }

    async fn fetch_partition(
        &self,
        image: &MetadataImage,
        topic: &str,
        fp: &pb::FetchPartition,
        room: usize,
        structured: bool,
    ) -> Result<(pb::FetchPartitionResponse, usize), PartitionError> {
        let p = self.partition(image, topic, fp.partition, fp.current_leader_epoch)?;
        let max = match fp.partition_max_bytes {
            m if m > 0 => m as usize,
            _ => PARTITION_MAX_BYTES,
        }
        .min(room);
        let from = fp.fetch_offset;
        let (bytes, offsets) = crate::spawn_blocking(move || p.read(from, max))
            .await
            .map_err(|_| PartitionError::LeaderNotAvailable)??;
        let n = bytes.len();
        let mut resp = with_offsets(fp.partition, offsets, from);
        if n > 0 {
            let (data, next) = encode_data(bytes, from, structured)?;
            resp.next_fetch_offset = next.unwrap_or(from);
            resp.data = Some(data);
        }
        Ok((resp, n))
    }

    /// A Fetch: the long poll, counted in the metrics. Served here for the generated service
    /// and for [`fetch_body`](super::fetch_body), which sends the answer without copying it.
    pub async fn answer_fetch(
        &self,
        req: pb::FetchRequest,
        reservation: Option<Reservation>,
    ) -> Result<pb::FetchResponse, Status> {
        let started = Instant::now();
        let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
        let pass = self.long_poll(&req, wait, reservation.as_ref()).await?;
        self.record(&req, &pass, started);
        Ok(pass.response)
    }

    /// Counts one fetch per topic of `req` with the bytes `pass` returned.
    fn record(&self, req: &pb::FetchRequest, pass: &Pass, started: Instant) {
        let image = self.shared.view.current();
        let elapsed = started.elapsed();
        for (t, bytes) in req.topics.iter().zip(&pass.topic_bytes) {
            self.shared.metrics.requests.record(
                &image,
                Kind::Fetch,
                &t.topic,
                *bytes as u64,
                elapsed,
            );
        }
    }

    async fn list_partition(
        &self,
        image: &MetadataImage,
        topic: &str,
        lp: &pb::ListOffsetsPartition,
    ) -> Result<pb::ListOffsetsPartitionResponse, PartitionError> {
        let p = self.partition(image, topic, lp.partition, lp.current_leader_epoch)?;
        let epoch = p.role().leader_epoch;
        let spec = OffsetSpec::try_from(lp.spec).unwrap_or(OffsetSpec::Unspecified);
        let mut resp = pb::ListOffsetsPartitionResponse {
            partition: lp.partition,
            ..Default::default()
        };
        let found = match spec {
            OffsetSpec::Unspecified => {
                return Err(PartitionError::InvalidRequest("spec must be set"));
            }
            OffsetSpec::Earliest => Some((p.offsets()?.log_start, None, epoch)),
            OffsetSpec::Latest => Some((p.offsets()?.high_watermark, None, epoch)),
            OffsetSpec::Timestamp => {
                let ts = lp.timestamp;
                let found = crate::spawn_blocking(move || p.offset_for_timestamp(ts))
                    .await
                    .map_err(|_| PartitionError::LeaderNotAvailable)??;
                found.map(|(o, t, e)| (o, Some(t), e))
            }
            OffsetSpec::MaxTimestamp => {
                let found = crate::spawn_blocking(move || p.max_timestamp())
                    .await
                    .map_err(|_| PartitionError::LeaderNotAvailable)??;
                found.map(|(o, t, e)| (o, Some(t), e))
            }
        };
        if let Some((offset, timestamp, leader_epoch)) = found {
            resp.offset = Some(offset);
            resp.timestamp = timestamp;
            resp.leader_epoch = Some(leader_epoch);
        }
        Ok(resp)
    }
}

/// Moves a subscription's positions past what `resp` returned and drops the partitions that
/// failed. Returns the message to push: only topics and partitions with data or errors;
/// `None` when there is nothing to push.
fn advance(req: &mut pb::FetchRequest, mut resp: pb::FetchResponse) -> Option<pb::FetchResponse> {
    for (t, rt) in req.topics.iter_mut().zip(resp.topics.iter_mut()) {
        let mut failed = Vec::new();
        for (fp, rp) in t.partitions.iter_mut().zip(rt.partitions.iter()) {
            match rp.error {
                Some(_) => failed.push(fp.partition),
                None => fp.fetch_offset = rp.next_fetch_offset,
            }
        }
        t.partitions.retain(|fp| !failed.contains(&fp.partition));
        rt.partitions
            .retain(|rp| rp.error.is_some() || rp.data.is_some());
    }
    req.topics.retain(|t| !t.partitions.is_empty());
    resp.topics.retain(|t| !t.partitions.is_empty());
    (!resp.topics.is_empty()).then_some(resp)
}

/// Whether the client named a topic id (optional) that is not the topic's current one: the
/// topic was deleted and created again, and offsets from the old one mean nothing here.
fn stale_topic_id(requested: &[u8], current: Option<keel_metadata::records::TopicId>) -> bool {
    match (requested.is_empty(), current) {
        (true, _) => false,
        (false, Some(id)) => requested != id.to_bytes(),
        // Unknown topic: the partition lookup reports it.
        (false, None) => false,
    }
}

/// The partition's offsets and no data yet.
fn with_offsets(partition: i32, o: Offsets, from: Offset) -> pb::FetchPartitionResponse {
    pb::FetchPartitionResponse {
        partition,
        error: None,
        high_watermark: o.high_watermark,
        last_stable_offset: o.high_watermark,
        log_start_offset: o.log_start,
        next_fetch_offset: from,
        data: None,
    }
}

fn error_partition(partition: i32, e: &PartitionError) -> pb::FetchPartitionResponse {
    let mut resp = pb::FetchPartitionResponse {
        partition,
        error: Some(pb::Error::from(e)),
        ..Default::default()
    };
    // OFFSET_OUT_OF_RANGE tells the valid range in the offsets, too.
    if let PartitionError::OffsetOutOfRange {
        log_start,
        high_watermark,
        ..
    } = e
    {
        resp.log_start_offset = *log_start;
        resp.high_watermark = *high_watermark;
        resp.last_stable_offset = *high_watermark;
    }
    resp
}

/// Stored batches in the format the client asked for, and the next offset to fetch.
fn encode_data(
    stored: Bytes,
    from: Offset,
    structured: bool,
) -> Result<(Data, Option<Offset>), PartitionError> {
    if structured {
        let (recs, next) = records::consumer_records(&stored, from)?;
        Ok((Data::Records(pb::ConsumerRecords { records: recs }), next))
    } else {
        let next = records::next_offset(&stored);
        Ok((Data::RecordBatches(stored), next))
    }
}

type SubscribeStream = futures_util::stream::BoxStream<'static, Result<pb::FetchResponse, Status>>;

#[tonic::async_trait]
impl Consumer for ConsumerService {
    #[tracing::instrument(level = "debug", skip_all, fields(node_id = self.shared.node_id))]
    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let reservation = request.extensions().get::<Reservation>().cloned();
        let answer = self.answer_fetch(request.into_inner(), reservation).await?;
        Ok(Response::new(answer))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let sub = request.into_inner();
        let wait = Duration::from_millis(sub.max_wait_ms.max(0) as u64)
            .clamp(SUBSCRIBE_MIN_WAIT, MAX_WAIT);
        let req = pb::FetchRequest {
            max_wait_ms: sub.max_wait_ms,
            min_bytes: sub.min_bytes,
            max_bytes: sub.max_bytes,
            isolation_level: sub.isolation_level,
            format: sub.format,
            topics: sub.topics,
        };
        let state = (self.clone(), req);
        let stream = futures_util::stream::unfold(state, move |(svc, mut req)| async move {
            loop {
                if req.topics.iter().all(|t| t.partitions.is_empty()) {
                    return None;
                }
                let started = Instant::now();
                // Not counted in request memory: gRPC flow control holds a stream to about
                // one message on its way at a time.
                let mut pass = match svc.long_poll(&req, wait, None).await {
                    Ok(pass) => pass,
                    Err(status) => return Some((Err(status), (svc, req))),
                };
                let response = std::mem::take(&mut pass.response);
                let asked = req.clone();
                if let Some(msg) = advance(&mut req, response) {
                    svc.record(&asked, &pass, started);
                    return Some((Ok(msg), (svc, req)));
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(node_id = self.shared.node_id))]
    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let req = request.into_inner();
        let image = self.shared.view.current();
        let mut topics = Vec::with_capacity(req.topics.len());
        for t in &req.topics {
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for lp in &t.partitions {
                let resp = match self.list_partition(&image, &t.topic, lp).await {
                    Ok(r) => r,
                    Err(e) => pb::ListOffsetsPartitionResponse {
                        partition: lp.partition,
                        error: Some(pb::Error::from(&e)),
                        ..Default::default()
                    },
                };
                partitions.push(resp);
            }
            topics.push(pb::ListOffsetsTopicResponse {
                topic: t.topic.clone(),
                partitions,
            });
        }
        Ok(Response::new(pb::ListOffsetsResponse {
            error: None,
            topics,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_different_topic_id_is_stale() {
        let id = keel_metadata::records::TopicId(7);
        assert!(!stale_topic_id(&[], Some(id)), "no id: no check");
        assert!(!stale_topic_id(&id.to_bytes(), Some(id)));
        assert!(stale_topic_id(
            &keel_metadata::records::TopicId(8).to_bytes(),
            Some(id)
        ));
        assert!(
            !stale_topic_id(&id.to_bytes(), None),
            "unknown topic reported elsewhere"
        );
    }

    fn req(parts: &[(i32, i64)]) -> pb::FetchRequest {
        pb::FetchRequest {
            topics: vec![pb::FetchTopic {
                topic: "t".into(),
                topic_id: Bytes::new(),
                partitions: parts
                    .iter()
                    .map(|(p, o)| pb::FetchPartition {
                        partition: *p,
                        fetch_offset: *o,
                        ..Default::default()
                    })
                    .collect(),
            }],
            ..Default::default()
        }
    }

    fn part(p: i32, next: i64, data: bool, error: bool) -> pb::FetchPartitionResponse {
        pb::FetchPartitionResponse {
            partition: p,
            error: error.then(|| pb::Error::new(pb::ErrorCode::NotLeader, "moved")),
            next_fetch_offset: next,
            data: data.then(|| Data::RecordBatches(Bytes::from_static(b"x"))),
            ..Default::default()
        }
    }

    fn resp(parts: Vec<pb::FetchPartitionResponse>) -> pb::FetchResponse {
        pb::FetchResponse {
            error: None,
            topics: vec![pb::FetchTopicResponse {
                topic: "t".into(),
                topic_id: Bytes::new(),
                partitions: parts,
            }],
        }
    }

    #[test]
    fn a_subscription_advances_pushes_data_and_drops_failed_partitions() {
        let mut r = req(&[(0, 5), (1, 7), (2, 9)]);
        let msg = advance(
            &mut r,
            resp(vec![
                part(0, 8, true, false),
                part(1, 7, false, false),
                part(2, 0, false, true),
            ]),
        )
        .expect("something to push");
        let pushed: Vec<i32> = msg.topics[0]
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect();
        assert_eq!(pushed, vec![0, 2], "data and errors only");
        let left: Vec<(i32, i64)> = r.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition, p.fetch_offset))
            .collect();
        assert_eq!(
            left,
            vec![(0, 8), (1, 7)],
            "advanced; the failed one dropped"
        );

        // Nothing new: nothing to push, positions kept.
        assert!(advance(
            &mut r,
            resp(vec![part(0, 8, false, false), part(1, 7, false, false)])
        )
        .is_none());
        // All failed: the subscription is empty.
        advance(
            &mut r,
            resp(vec![part(0, 0, false, true), part(1, 0, false, true)]),
        )
        .unwrap();
        assert!(r.topics.is_empty());
    }
}
