//! [`Consumer`]: reads assigned partitions from their leaders, from positions the caller sets
//! ([`Position`]: beginning, end, offset or time), through a poll call or a stream.
//!
//! Partitions are assigned by the caller (a [`GroupConsumer`](crate::GroupConsumer) assigns
//! them from its group). Each leader broker gets one long-polling `Consumer.Fetch` for the
//! assigned partitions it leads that have no fetch under way. Records come back as the raw
//! batches the broker stored (`RECORD_FORMAT_RECORD_BATCHES`), below the high watermark only,
//! and are decoded here (`fetched.rs`: CRC check, decompression), as Kafka's consumer does, so
//! the broker only reads and sends bytes.
//!
//! # Prefetch and back-pressure
//!
//! A poll takes every answer that has arrived, moves the positions past them, sends the next
//! fetches at once, and only then decodes and returns the records: the brokers read the next
//! data while this client decodes and while the caller handles the records (Kafka's
//! prefetch). So at most one fetch per leader broker is under way between polls, holding at
//! most `max_bytes` (`partition_max_bytes` per partition); nothing more is read ahead, and a
//! slow caller just polls less often. A fetch answered for a partition whose position moved
//! meanwhile (a seek, an unassign) is dropped.
//!
//! # Errors
//!
//! A moved leader or an unreachable broker (retriable) refreshes the metadata, and the
//! partition is fetched again from the new leader after `retry_backoff`. A position out of
//! range moves to the beginning or the end as [`ConsumerOptions::auto_offset_reset`] says (or
//! fails the poll). A batch that fails its CRC fails with `CORRUPT_RECORD` and the position
//! stays before it. Other errors fail the poll that meets them; records fetched in the same
//! round are returned first, and the error by the next poll.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::Stream;
use keel_proto::v1 as pb;
use keel_proto::v1::consumer_client::ConsumerClient;
use serde::Serialize;
use tokio::task::JoinSet;
use tracing::debug;

use crate::pb_conv::api_error;
use crate::topology::{Route, Topology};
use crate::{AdminOptions, ApiError, ConsumerRecord, Error, ErrorCode, TopicPartition};

/// Margin on top of a call's own wait before the client gives up on it.
const RPC_MARGIN: Duration = Duration::from_secs(5);
/// The largest Fetch answer taken: the broker's own message limit. gRPC's default of 4 MiB
/// refused the answers of a broker leading four or more partitions with 1 MiB each to give.
const MAX_ANSWER: usize = 64 << 20;

/// Where to read a partition from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The first offset still stored (log start).
    Beginning,
    /// After the last record a consumer can read (the high watermark): new records only.
    End,
    /// This offset.
    Offset(i64),
    /// The first record whose timestamp is at or after this time (ms since the Unix epoch);
    /// the end when there is none.
    Timestamp(i64),
}

/// Where a consumer goes when its position is out of range, and where it starts on
/// partitions without a position (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The beginning.
    Earliest,
    /// The end.
    #[default]
    Latest,
    /// Fail the poll with `OFFSET_OUT_OF_RANGE` (new partitions start at the end).
    Error,
}

/// How a [`Consumer`] fetches. Defaults follow Kafka's consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// Longest wait of one fetch for data (`fetch.max.wait.ms`).
    pub max_wait: Duration,
    /// Data, in bytes, a broker gathers before answering early (`fetch.min.bytes`).
    pub min_bytes: i32,
    /// Most data per fetch response (`fetch.max.bytes`).
    pub max_bytes: i32,
    /// Most data per partition in one fetch (`max.partition.fetch.bytes`).
    pub partition_max_bytes: i32,
    /// See [`OffsetReset`].
    pub auto_offset_reset: OffsetReset,
    /// Retries of offset lookups after retriable failures.
    pub retries: u32,
    /// Wait between those retries.
    pub retry_backoff: Duration,
    /// Longest wait for one rpc, besides a fetch's `max_wait`.
    pub request_timeout: Duration,
    /// How metadata requests connect and retry.
    pub metadata: AdminOptions,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
            retries: 10,
            retry_backoff: Duration::from_millis(200),
            request_timeout: Duration::from_secs(30),
            metadata: AdminOptions::default(),
        }
    }
}

/// The earliest and latest offsets of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionOffsets {
    /// Partition index.
    pub partition: i32,
    /// The log start offset.
    pub earliest: i64,
    /// The high watermark: the offset the next readable record will get.
    pub latest: i64,
}

/// What the consumer knows of an assigned partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// To be looked up before the next fetch.
    Seek(Position),
    /// The offset of the next record to read.
    At(i64),
}

/// An offset lookup (`Consumer.ListOffsets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    Earliest,
    Latest,
    Timestamp(i64),
}

/// A consumer of assigned partitions. See the module doc.
///
/// ```no_run
/// # async fn demo() -> Result<(), keel_client::Error> {
/// use std::time::Duration;
/// use keel_client::{Consumer, ConsumerOptions, Position};
/// let mut consumer = Consumer::connect(&["127.0.0.1:9292".into()], ConsumerOptions::default()).await?;
/// consumer.assign_topic("orders").await?;
/// consumer.seek_all(Position::Beginning);
/// for record in consumer.poll(Duration::from_secs(1)).await? {
///     println!("{}/{}@{}: {:?}", record.topic, record.partition, record.offset, record.value);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    topology: Arc<Topology>,
    options: ConsumerOptions,
    assigned: BTreeMap<TopicPartition, Slot>,
    /// An error met while records were also returned, reported by the next poll.
    deferred: Option<Error>,
    /// Fetches under way. They run as tasks so that they travel while the caller handles
    /// the records of the last poll (Kafka's prefetch); dropping the consumer aborts them.
    in_flight: JoinSet<Answer>,
    /// Answers that arrived and are not taken yet.
    ready: VecDeque<Answer>,
    /// Partitions in a fetch under way, with the offset each was asked from.
    fetching: BTreeMap<TopicPartition, i64>,
    /// Partitions left out of fetches until the given time after a retriable error.
    backoff: BTreeMap<TopicPartition, Instant>,
}

/// A fetch's answer, with what it asked.
#[derive(Debug)]
struct Answer {
    asked: BTreeMap<TopicPartition, i64>,
    generation: u64,
    result: Result<pb::FetchResponse, Error>,
}

/// One partition's fetched batches, still to be decoded.
struct Fetched {
    tp: TopicPartition,
    from: i64,
    data: Bytes,
}

impl Consumer {
    /// Connects to the first reachable address of `bootstrap`.
    pub async fn connect(bootstrap: &[String], options: ConsumerOptions) -> Result<Self, Error> {
        let topology = Topology::connect(bootstrap, options.metadata.clone()).await?;
        Ok(Self {
            topology: Arc::new(topology),
            options,
            assigned: BTreeMap::new(),
            deferred: None,
            in_flight: JoinSet::new(),
            ready: VecDeque::new(),
            fetching: BTreeMap::new(),
            backoff: BTreeMap::new(),
        })
    }

    /// Adds `partitions` to the assignment, each starting where `auto_offset_reset` says
    /// until [`Consumer::seek`]. Fails when a topic or partition does not exist.
    pub async fn assign(&mut self, partitions: &[TopicPartition]) -> Result<(), Error> {
        for tp in partitions {
            let route = self.topology.topic(&tp.topic).await?;
            if !(0..route.partitions()).contains(&tp.partition) {
                return Err(unknown_partition(tp));
            }
        }
        let start = Slot::Seek(self.reset_position());
        for tp in partitions {
            self.assigned.entry(tp.clone()).or_insert(start);
        }
        Ok(())
    }

    /// Assigns every partition of `topic`; returns them.
    pub async fn assign_topic(&mut self, topic: &str) -> Result<Vec<TopicPartition>, Error> {
        let route = self.topology.topic(topic).await?;
        let all: Vec<TopicPartition> = (0..route.partitions())
            .map(|p| TopicPartition::new(topic, p))
            .collect();
        self.assign(&all).await?;
        Ok(all)
    }

    /// Removes `partitions` from the assignment (their positions are forgotten).
    pub fn unassign(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.assigned.remove(tp);
        }
    }

    /// The assigned partitions, in order.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.keys().cloned().collect()
    }

    /// Moves an assigned partition to `position`, looked up at the next poll.
    pub fn seek(&mut self, tp: &TopicPartition, position: Position) -> Result<(), Error> {
        let slot = self
            .assigned
            .get_mut(tp)
            .ok_or_else(|| Error::InvalidArgument {
                argument: tp.to_string(),
                reason: "the partition is not assigned",
            })?;
        *slot = match position {
            Position::Offset(o) => Slot::At(o),
            other => Slot::Seek(other),
        };
        Ok(())
    }

    /// Moves every assigned partition to `position`.
    pub fn seek_all(&mut self, position: Position) {
        for tp in self.assignment() {
            // Assigned by construction.
            let _ = self.seek(&tp, position);
        }
    }

    /// The offset of the next record of `tp`; `None` when not assigned or still to be looked
    /// up.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        match self.assigned.get(tp)? {
            Slot::At(o) => Some(*o),
            Slot::Seek(_) => None,
        }
    }

    /// Earliest and latest offsets of every partition of `topic`.
    pub async fn list_offsets(&self, topic: &str) -> Result<Vec<PartitionOffsets>, Error> {
        let route = self.topology.topic(topic).await?;
        let tps: Vec<TopicPartition> = (0..route.partitions())
            .map(|p| TopicPartition::new(topic, p))
            .collect();
        let earliest = self.lookup(&tps, Spec::Earliest).await?;
        let latest = self.lookup(&tps, Spec::Latest).await?;
        Ok(tps
            .iter()
            .zip(earliest.into_iter().zip(latest))
            .map(|(tp, (e, l))| PartitionOffsets {
                partition: tp.partition,
                earliest: e.unwrap_or_default(),
                latest: l.unwrap_or_default(),
            })
            .collect())
    }

    /// For every partition of `topic`, the offset of the first record at or after
    /// `timestamp` (ms since the Unix epoch), or the partition's end when there is none.
    pub async fn offsets_for_timestamp(
        &self,
        topic: &str,
        timestamp: i64,
    ) -> Result<Vec<(i32, i64)>, Error> {
        let route = self.topology.topic(topic).await?;
        let tps: Vec<TopicPartition> = (0..route.partitions())
            .map(|p| TopicPartition::new(topic, p))
            .collect();
        let found = self.lookup(&tps, Spec::Timestamp(timestamp)).await?;
        let ends = self.lookup(&tps, Spec::Latest).await?;
        Ok(tps
            .iter()
            .zip(found.into_iter().zip(ends))
            .map(|(tp, (f, end))| (tp.partition, f.or(end).unwrap_or_default()))
            .collect())
    }

    /// Records of the assigned partitions, waiting up to `timeout` for some. Returns an empty
    /// list when none came.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.deferred.take() {
                return Err(e);
            }
            self.resolve_seeks().await?;
            let records = self.take_ready().await?;
            if !records.is_empty() {
                return Ok(records);
            }
            if !self.next_answer(deadline).await? {
                return Ok(Vec::new());
            }
        }
    }

    /// The records of the assigned partitions as a stream, polled with `max_wait`; ends at
    /// the first error (after yielding it).
    pub fn into_stream(self) -> impl Stream<Item = Result<ConsumerRecord, Error>> {
        let state = (Some(self), VecDeque::new());
        futures_util::stream::unfold(state, |(mut consumer, mut buffered)| async move {
            loop {
                if let Some(record) = buffered.pop_front() {
                    return Some((Ok(record), (consumer, buffered)));
                }
                let c = consumer.as_mut()?;
                let wait = c.options.max_wait;
                match c.poll(wait).await {
                    Ok(records) => buffered.extend(records),
                    Err(e) => return Some((Err(e), (None, buffered))),
                }
            }
        })
    }

    fn reset_position(&self) -> Position {
        match self.options.auto_offset_reset {
            OffsetReset::Earliest => Position::Beginning,
            OffsetReset::Latest | OffsetReset::Error => Position::End,
        }
    }

    /// Looks up every pending seek.
    async fn resolve_seeks(&mut self) -> Result<(), Error> {
        let mut by_spec: BTreeMap<(u8, i64), Vec<TopicPartition>> = BTreeMap::new();
        for (tp, slot) in &self.assigned {
            let key = match slot {
                Slot::At(_) => continue,
                Slot::Seek(Position::Beginning) => (0, 0),
                Slot::Seek(Position::End) => (1, 0),
                Slot::Seek(Position::Timestamp(t)) => (2, *t),
                Slot::Seek(Position::Offset(o)) => (3, *o),
            };
            by_spec.entry(key).or_default().push(tp.clone());
        }
        for ((kind, value), tps) in by_spec {
            let spec = match kind {
                0 => Spec::Earliest,
                1 => Spec::Latest,
                2 => Spec::Timestamp(value),
                _ => {
                    for tp in tps {
                        self.assigned.insert(tp, Slot::At(value));
                    }
                    continue;
                }
            };
            let found = self.lookup(&tps, spec).await?;
            let mut past_the_end = Vec::new();
            for (tp, offset) in tps.into_iter().zip(found) {
                match offset {
                    Some(o) => {
                        self.assigned.insert(tp, Slot::At(o));
                    }
                    None => past_the_end.push(tp),
                }
            }
            // No record at or after the time: read from the end.
            if !past_the_end.is_empty() {
                let ends = self.lookup(&past_the_end, Spec::Latest).await?;
                for (tp, o) in past_the_end.into_iter().zip(ends) {
                    self.assigned.insert(tp, Slot::At(o.unwrap_or_default()));
                }
            }
        }
        Ok(())
    }

    /// Offsets of `tps` for `spec`, in the order of `tps`, retrying retriable failures.
    async fn lookup(&self, tps: &[TopicPartition], spec: Spec) -> Result<Vec<Option<i64>>, Error> {
        let mut found: BTreeMap<TopicPartition, Option<i64>> = BTreeMap::new();
        let mut retry = 0;
        loop {
            let generation = self.topology.generation();
            let todo: Vec<TopicPartition> = tps
                .iter()
                .filter(|tp| !found.contains_key(*tp))
                .cloned()
                .collect();
            let mut last_error = None;
            for (route, group) in self.by_leader(&todo) {
                match self.list_offsets_on(route.as_ref(), &group, spec).await {
                    Ok(results) => {
                        for (tp, result) in group.into_iter().zip(results) {
                            match result {
                                Ok(offset) => {
                                    found.insert(tp, offset);
                                }
                                Err(e) if e.is_retriable() => last_error = Some(e),
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Err(e) if e.is_retriable() => last_error = Some(e),
                    Err(e) => return Err(e),
                }
            }
            let Some(e) = last_error else {
                return Ok(tps.iter().map(|tp| found[tp]).collect());
            };
            if retry >= self.options.retries {
                return Err(e);
            }
            debug!(error = %e, retry, "offset lookup retried");
            self.topology.refresh_after(generation).await?;
            tokio::time::sleep(self.options.retry_backoff).await;
            retry += 1;
        }
    }

    /// `tps` grouped by their current leader; `None` for partitions without one.
    fn by_leader(&self, tps: &[TopicPartition]) -> Vec<(Option<Route>, Vec<TopicPartition>)> {
        let mut groups: BTreeMap<Option<i32>, (Option<Route>, Vec<TopicPartition>)> =
            BTreeMap::new();
        for tp in tps {
            let route = self.topology.route(tp);
            let key = route.as_ref().map(|r| r.broker);
            groups
                .entry(key)
                .or_insert((route, Vec::new()))
                .1
                .push(tp.clone());
        }
        groups.into_values().collect()
    }

    /// One `ListOffsets` to `route` for `tps` (all of one topic or several); each partition's
    /// offset or error, in the order of `tps`.
    async fn list_offsets_on(
        &self,
        route: Option<&Route>,
        tps: &[TopicPartition],
        spec: Spec,
    ) -> Result<Vec<Result<Option<i64>, Error>>, Error> {
        let route = route.ok_or_else(no_leader)?;
        let (spec, timestamp) = match spec {
            Spec::Earliest => (pb::OffsetSpec::Earliest, 0),
            Spec::Latest => (pb::OffsetSpec::Latest, 0),
            Spec::Timestamp(t) => (pb::OffsetSpec::Timestamp, t),
        };
        let mut topics: BTreeMap<&str, Vec<pb::ListOffsetsPartition>> = BTreeMap::new();
        for tp in tps {
            topics
                .entry(&tp.topic)
                .or_default()
                .push(pb::ListOffsetsPartition {
                    partition: tp.partition,
                    spec: spec as i32,
                    timestamp,
                    current_leader_epoch: None,
                });
        }
        let mut request = tonic::Request::new(pb::ListOffsetsRequest {
            isolation_level: 0,
            topics: topics
                .into_iter()
                .map(|(topic, partitions)| pb::ListOffsetsTopic {
                    topic: topic.to_string(),
                    partitions,
                })
                .collect(),
        });
        request.set_timeout(self.options.request_timeout);
        let response = ConsumerClient::new(route.channel.clone())
            .list_offsets(request)
            .await
            .map_err(|s| Error::from_status(&route.endpoint, &s))?
            .into_inner();
        crate::pb_conv::check(response.error)?;
        let mut results = BTreeMap::new();
        for t in response.topics {
            for p in t.partitions {
                let result = match api_error(p.error) {
                    Some(e) => Err(Error::Api(e)),
                    None => Ok(p.offset),
                };
                results.insert(TopicPartition::new(t.topic.clone(), p.partition), result);
            }
        }
        Ok(tps
            .iter()
            .map(|tp| {
                results.remove(tp).unwrap_or_else(|| {
                    Err(Error::InvalidResponse {
                        rpc: "Consumer.ListOffsets",
                        reason: format!("no result for {tp}"),
                    })
                })
            })
            .collect())
    }

    /// Sends a fetch to each leader for its positioned partitions that have none under way
    /// and are not backing off after an error. Returns true when a partition has no known
    /// leader (the metadata needs a refresh).
    async fn send_fetches(&mut self) -> Result<bool, Error> {
        let now = Instant::now();
        self.backoff.retain(|_, until| *until > now);
        let ready: Vec<TopicPartition> = self
            .assigned
            .iter()
            .filter(|(tp, slot)| {
                matches!(slot, Slot::At(_))
                    && !self.fetching.contains_key(*tp)
                    && !self.backoff.contains_key(*tp)
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        let generation = self.topology.generation();
        let mut stale = false;
        for (route, group) in self.by_leader(&ready) {
            let Some(route) = route else {
                stale = true;
                self.back_off(&group);
                continue;
            };
            let asked: BTreeMap<TopicPartition, i64> = group
                .into_iter()
                .filter_map(|tp| {
                    let offset = self.position(&tp)?;
                    Some((tp, offset))
                })
                .collect();
            let request = self.fetch_request(&asked).await?;
            self.fetching.extend(asked.clone());
            let deadline = self.options.max_wait + self.options.request_timeout;
            self.in_flight.spawn(async move {
                let result = fetch(route, request, deadline).await;
                Answer {
                    asked,
                    generation,
                    result,
                }
            });
        }
        Ok(stale)
    }

    /// Keeps `tps` out of fetches for `retry_backoff`, so that a partition whose leader is
    /// moving is not asked again and again.
    fn back_off(&mut self, tps: &[TopicPartition]) {
        let until = Instant::now() + self.options.retry_backoff;
        for tp in tps {
            self.backoff.insert(tp.clone(), until);
        }
    }

    /// Waits until a fetch answers, or `until`. Returns false at `until`.
    async fn next_answer(&mut self, until: Instant) -> Result<bool, Error> {
        let next = match self.in_flight.is_empty() {
            // Nothing under way (no leader known, or backing off): wait for the backoff.
            true => {
                let retry = Instant::now() + self.options.retry_backoff;
                tokio::time::sleep_until(until.min(retry).into()).await;
                return Ok(Instant::now() < until);
            }
            false => tokio::time::timeout_at(until.into(), self.in_flight.join_next()).await,
        };
        match next {
            Err(_) => Ok(false),
            Ok(None) => Ok(true),
            Ok(Some(Ok(answer))) => {
                self.ready.push_back(answer);
                Ok(true)
            }
            Ok(Some(Err(e))) => Err(Error::Closed(match e.is_panic() {
                true => "a fetch task panicked",
                false => "a fetch task was cancelled",
            })),
        }
    }

    /// Takes every answer that has arrived: positions move to each partition's next fetch
    /// offset, errors are handled, and the fetches for the new positions go out before the
    /// records are decoded, so the brokers read the next data while this client decodes.
    async fn take_ready(&mut self) -> Result<Vec<ConsumerRecord>, Error> {
        while let Some(Ok(answer)) = self.in_flight.try_join_next() {
            self.ready.push_back(answer);
        }
        let mut fetched = Vec::new();
        let mut stale_since = None;
        while let Some(answer) = self.ready.pop_front() {
            let generation = answer.generation;
            if self.take_answer(answer, &mut fetched)? {
                stale_since = Some(stale_since.map_or(generation, |g: u64| g.min(generation)));
            }
        }
        let no_leader = self.send_fetches().await?;
        if let Some(generation) = stale_since.or(no_leader.then(|| self.topology.generation())) {
            if let Err(e) = self.topology.refresh_after(generation).await {
                debug!(error = %e, "metadata refresh failed");
            }
        }
        let expected = fetched
            .iter()
            .map(|f| crate::fetched::record_count(&f.data))
            .sum();
        let mut records = Vec::with_capacity(expected);
        for f in fetched {
            let decoded = crate::fetched::decode_into(
                &f.tp.topic,
                f.tp.partition,
                &f.data,
                f.from,
                &mut records,
            );
            if let Err(e) = decoded {
                // Back to before the bad data: the fetch just sent from past it is dropped
                // when it answers, as its offset no longer matches.
                self.assigned.insert(f.tp, Slot::At(f.from));
                self.deferred.get_or_insert(Error::Api(e));
            }
        }
        Ok(records)
    }

    async fn fetch_request(
        &self,
        asked: &BTreeMap<TopicPartition, i64>,
    ) -> Result<pb::FetchRequest, Error> {
        let mut topics: BTreeMap<&str, Vec<(&TopicPartition, i64)>> = BTreeMap::new();
        for (tp, offset) in asked {
            topics.entry(&tp.topic).or_default().push((tp, *offset));
        }
        let mut fetch_topics = Vec::with_capacity(topics.len());
        for (topic, tps) in topics {
            let route = self.topology.topic(topic).await?;
            // The epoch fences a fetch against a leader that lost (or has not yet taken)
            // the partition: the broker answers FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH
            // and the next round refreshes the metadata.
            let partitions = tps
                .into_iter()
                .map(|(tp, offset)| pb::FetchPartition {
                    partition: tp.partition,
                    fetch_offset: offset,
                    partition_max_bytes: self.options.partition_max_bytes,
                    current_leader_epoch: route
                        .leaders
                        .get(tp.partition as usize)
                        .copied()
                        .flatten()
                        .map(|l| l.epoch),
                })
                .collect();
            fetch_topics.push(pb::FetchTopic {
                topic: topic.to_string(),
                topic_id: route
                    .id
                    .map_or_else(Bytes::new, |id| Bytes::copy_from_slice(&id.0)),
                partitions,
            });
        }
        Ok(pb::FetchRequest {
            max_wait_ms: i32::try_from(self.options.max_wait.as_millis()).unwrap_or(i32::MAX),
            min_bytes: self.options.min_bytes,
            max_bytes: self.options.max_bytes,
            isolation_level: 0,
            format: pb::RecordFormat::RecordBatches as i32,
            topics: fetch_topics,
        })
    }

    /// Takes one broker's fetch answer: positions forward, data out to be decoded, errors
    /// handled. A partition whose position moved while the fetch was under way (a seek, an
    /// unassign) is left out. Returns true when the metadata looks stale.
    fn take_answer(&mut self, answer: Answer, fetched: &mut Vec<Fetched>) -> Result<bool, Error> {
        for tp in answer.asked.keys() {
            self.fetching.remove(tp);
        }
        let response = match answer.result {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                debug!(error = %e, "fetch failed");
                let tps: Vec<TopicPartition> = answer.asked.into_keys().collect();
                self.back_off(&tps);
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        crate::pb_conv::check(response.error)?;
        let mut stale = false;
        for t in response.topics {
            for p in t.partitions {
                let tp = TopicPartition::new(t.topic.clone(), p.partition);
                let Some(&from) = answer.asked.get(&tp) else {
                    continue;
                };
                if self.position(&tp) != Some(from) {
                    continue;
                }
                if let Some(e) = api_error(p.error) {
                    if self.partition_failed(&tp, e) {
                        stale = true;
                        self.back_off(std::slice::from_ref(&tp));
                    }
                    continue;
                }
                if let Some(pb::fetch_partition_response::Data::RecordBatches(data)) = p.data {
                    fetched.push(Fetched {
                        tp: tp.clone(),
                        from,
                        data,
                    });
                }
                self.assigned.insert(tp, Slot::At(p.next_fetch_offset));
            }
        }
        Ok(stale)
    }

    /// Handles a partition's fetch error; returns true when the metadata looks stale.
    fn partition_failed(&mut self, tp: &TopicPartition, e: ApiError) -> bool {
        if e.code == ErrorCode::OffsetOutOfRange {
            let reset = match self.options.auto_offset_reset {
                OffsetReset::Earliest => Position::Beginning,
                OffsetReset::Latest => Position::End,
                OffsetReset::Error => {
                    self.deferred.get_or_insert(Error::Api(e));
                    return false;
                }
            };
            debug!(partition = %tp, ?reset, "offset out of range; resetting");
            self.assigned.insert(tp.clone(), Slot::Seek(reset));
            return false;
        }
        if e.retriable {
            debug!(partition = %tp, error = %e, "fetch of partition failed");
            return true;
        }
        self.deferred.get_or_insert(Error::Api(e));
        false
    }
}

/// One fetch call, bounded by `deadline` in all.
async fn fetch(
    route: Route,
    request: pb::FetchRequest,
    deadline: Duration,
) -> Result<pb::FetchResponse, Error> {
    crate::fetch_call::fetch(route.channel, &request, deadline + RPC_MARGIN, MAX_ANSWER)
        .await
        .map_err(|s| Error::from_status(&route.endpoint, &s))
}

fn no_leader() -> Error {
    Error::Api(ApiError::new(
        ErrorCode::LeaderNotAvailable,
        "the partition has no known leader",
    ))
}

fn unknown_partition(tp: &TopicPartition) -> Error {
    Error::Api(ApiError::new(
        ErrorCode::UnknownTopicOrPartition,
        format!("no partition {tp}"),
    ))
}
