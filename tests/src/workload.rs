//! A produce workload that keeps its history, ways to read back what a cluster holds, and the
//! checker that compares the two.
//!
//! Producers send acks=all, one record per request, to the partition leader they learned from
//! metadata. By default every attempt carries a value of its own (`p<producer>-<seq>`), never
//! reused by a retry, so without the idempotent producer an acknowledged value must appear
//! exactly once, and an unacknowledged one at most once. What the checker demands (see
//! [`check`]): every acknowledged record is present, once, at the offset it was acknowledged
//! with; no value appears twice; each producer's records keep their order within a partition.
//!
//! With [`Workload::retry_failed`] a failed attempt is sent again with the same value (and,
//! with [`Workload::idempotent`], the same producer id, epoch and sequence) until it is
//! acknowledged, as a real producer retries. [`check_exactly_once`] then also demands that
//! every value sent is present exactly once (only the attempt cut short by the end of the run
//! may be missing): without idempotence, a retry after a lost answer shows up as a duplicate.
//!
//! Every failed attempt is recorded by what failed it ([`History::errors`]): an error code
//! from the broker, a gRPC status, or no known leader; [`History::non_retriable`] keeps those
//! a client could not simply retry (for the controlled-shutdown test, which allows only
//! retriable ones).
//!
//! [`produce_with_client`] is the same workload through the Rust client's [`Producer`]
//! (batches, several in flight, its own retries): its history holds every record it was told
//! was delivered, in send order.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_client::Producer;
use keel_proto::v1::cluster_client::ClusterClient;
use keel_proto::v1::consumer_client::ConsumerClient;
use keel_proto::v1::partition_produce_data::Data;
use keel_proto::v1::producer_client::ProducerClient;
use keel_proto::v1::*;
use keel_storage::{DataDir, LogConfig};
use tokio::sync::watch;
use tonic::transport::Channel;

/// What to produce, and where the cluster answers.
#[derive(Clone, Debug)]
pub struct Workload {
    pub topic: String,
    pub partitions: i32,
    /// Client URLs (`http://host:port`) of every node.
    pub urls: Vec<String>,
    /// Produce request timeout.
    pub timeout_ms: i32,
    /// Send a failed attempt again with the same value instead of moving on.
    pub retry_failed: bool,
    /// Idempotent producer: an id from InitProducerId, a sequence per partition.
    pub idempotent: bool,
    /// Send every produce here (a proxy in front of a one-node cluster) instead of to the
    /// leader's advertised address.
    pub via: Option<String>,
}

impl Workload {
    /// The default workload on `topic`: unique values, no idempotence, straight to leaders.
    pub fn new(topic: &str, partitions: i32, urls: Vec<String>, timeout_ms: i32) -> Workload {
        Workload {
            topic: topic.to_owned(),
            partitions,
            urls,
            timeout_ms,
            retry_failed: false,
            idempotent: false,
            via: None,
        }
    }
}

/// One acknowledged record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    pub partition: i32,
    pub offset: i64,
    pub value: Bytes,
}

/// What one producer did.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub acked: Vec<Acked>,
    pub attempts: u64,
    /// Attempts that ended in an error or no answer (their records may or may not exist).
    pub failed: u64,
    /// With `retry_failed`: the value still unacknowledged when the run stopped.
    pub abandoned: Option<Bytes>,
    /// Sequence errors (OUT_OF_ORDER_SEQUENCE, PRODUCER_FENCED, ...): never expected.
    pub sequence_errors: Vec<String>,
    /// [`produce_with_client`]: records whose delivery failed, with the error.
    pub client_errors: Vec<String>,
    /// Failed attempts by cause: an error code name (`NOT_LEADER`), `grpc <code>` for a
    /// request that got no answer, `no leader known`.
    pub errors: BTreeMap<String, u64>,
    /// Failures a client could not retry: a broker error not flagged retriable, a gRPC
    /// status other than a lost connection or a timeout, a malformed answer.
    pub non_retriable: Vec<String>,
}

/// Why an attempt failed.
#[derive(Debug)]
enum Failure {
    /// The broker answered with an error.
    Broker(Error),
    /// No answer: the gRPC status.
    Transport(tonic::Code),
    /// No leader for the partition in the last metadata.
    NoLeader,
    /// An answer without the partition.
    Malformed,
}

impl Failure {
    fn cause(&self) -> String {
        match self {
            Failure::Broker(e) => ErrorCode::try_from(e.code).map_or_else(
                |_| format!("code {}", e.code),
                |c| c.as_str_name().to_owned(),
            ),
            Failure::Transport(code) => format!("grpc {code:?}"),
            Failure::NoLeader => "no leader known".into(),
            Failure::Malformed => "malformed answer".into(),
        }
    }

    /// Whether a client would retry: broker errors flagged retriable; lost connections,
    /// refused connections and timeouts (a node stopping or gone); a partition between
    /// leaders.
    fn retriable(&self) -> bool {
        use tonic::Code;
        match self {
            Failure::Broker(e) => e.retriable,
            Failure::Transport(code) => matches!(
                code,
                Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Unknown
            ),
            Failure::NoLeader => true,
            Failure::Malformed => false,
        }
    }
}

/// Channels by URL, made lazily and reused.
#[derive(Default)]
struct Channels(HashMap<String, Channel>);

impl Channels {
    fn get(&mut self, url: &str) -> Channel {
        self.0
            .entry(url.to_owned())
            .or_insert_with(|| {
                Channel::from_shared(url.to_owned())
                    .expect("url")
                    .connect_timeout(Duration::from_secs(1))
                    .connect_lazy()
            })
            .clone()
    }
}

/// The client URL of each partition's leader, from the first node that answers metadata (or
/// the workload's `via` for every partition).
async fn leaders(w: &Workload, channels: &mut Channels) -> BTreeMap<i32, String> {
    if let Some(via) = &w.via {
        return (0..w.partitions).map(|p| (p, via.clone())).collect();
    }
    for url in &w.urls {
        let mut client = ClusterClient::new(channels.get(url));
        let mut req = tonic::Request::new(MetadataRequest {
            topics: vec![w.topic.clone()],
            include_configs: false,
        });
        req.set_timeout(Duration::from_secs(2));
        let Ok(resp) = client.metadata(req).await else {
            continue;
        };
        let m = resp.into_inner();
        let brokers: HashMap<i32, String> = m
            .brokers
            .iter()
            .map(|b| (b.broker_id, format!("http://{}:{}", b.host, b.port)))
            .collect();
        let Some(t) = m.topics.iter().find(|t| t.name == w.topic) else {
            continue;
        };
        return t
            .partitions
            .iter()
            .filter_map(|p| Some((p.partition, brokers.get(&p.leader_id?)?.clone())))
            .collect();
    }
    BTreeMap::new()
}

/// A producer id from the first node that gives one.
async fn init_producer_id(w: &Workload, channels: &mut Channels) -> i64 {
    loop {
        for url in &w.urls {
            let mut client = ProducerClient::new(channels.get(url));
            if let Ok(r) = client
                .init_producer_id(InitProducerIdRequest::default())
                .await
            {
                let r = r.into_inner();
                if r.error.is_none() {
                    return r.producer_id;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn request(
    w: &Workload,
    partition: i32,
    value: Bytes,
    idempotent_producer: Option<IdempotentProducer>,
) -> tonic::Request<ProduceRequest> {
    let mut req = tonic::Request::new(one_record(
        &w.topic,
        partition,
        value,
        w.timeout_ms,
        idempotent_producer,
    ));
    req.set_timeout(Duration::from_millis(w.timeout_ms as u64 + 3000));
    req
}

/// An acks=all produce request of one record holding `value` to `topic`/`partition`.
pub fn one_record(
    topic: &str,
    partition: i32,
    value: Bytes,
    timeout_ms: i32,
    idempotent_producer: Option<IdempotentProducer>,
) -> ProduceRequest {
    ProduceRequest {
        acks: Acks::All as i32,
        timeout_ms,
        topics: vec![TopicProduceData {
            topic: topic.to_owned(),
            partitions: vec![PartitionProduceData {
                partition,
                data: Some(Data::Records(ProducerRecords {
                    records: vec![ProducerRecord {
                        key: None,
                        value: Some(value),
                        headers: vec![],
                        timestamp: None,
                    }],
                    idempotent_producer,
                })),
            }],
        }],
    }
}

/// Produces until `stop` turns true, round robin over the partitions, one record per request.
pub async fn produce(w: Arc<Workload>, producer: u32, stop: watch::Receiver<bool>) -> History {
    let mut channels = Channels::default();
    let mut route = leaders(&w, &mut channels).await;
    let mut h = History::default();
    let producer_id = match w.idempotent {
        true => Some(init_producer_id(&w, &mut channels).await),
        false => None,
    };
    let mut sequences: HashMap<i32, i32> = HashMap::new();
    let mut retry: Option<(i32, Bytes)> = None;
    let mut seq = 0u64;
    while !*stop.borrow() {
        let (partition, value) = retry.take().unwrap_or_else(|| {
            let next = (
                (seq % w.partitions as u64) as i32,
                Bytes::from(format!("p{producer}-{seq:08}")),
            );
            seq += 1;
            next
        });
        h.attempts += 1;
        let idempotent = producer_id.map(|producer_id| IdempotentProducer {
            producer_id,
            producer_epoch: 0,
            base_sequence: sequences.get(&partition).copied().unwrap_or(0),
        });
        let outcome = match route.get(&partition).cloned() {
            None => Err(Failure::NoLeader),
            Some(url) => {
                let mut client = ProducerClient::new(channels.get(&url));
                let answer = client
                    .produce(request(&w, partition, value.clone(), idempotent))
                    .await;
                match answer.map(|r| r.into_inner().topics.pop()?.partitions.pop()) {
                    Err(status) => Err(Failure::Transport(status.code())),
                    Ok(None) => Err(Failure::Malformed),
                    Ok(Some(p)) => match (p.error, p.base_offset) {
                        (None, Some(offset)) => Ok(offset),
                        (Some(e), _) => Err(Failure::Broker(e)),
                        (None, None) => Err(Failure::Malformed),
                    },
                }
            }
        };
        match outcome {
            Ok(offset) => {
                h.acked.push(Acked {
                    partition,
                    offset,
                    value,
                });
                *sequences.entry(partition).or_insert(0) += 1;
            }
            Err(failure) => {
                h.failed += 1;
                *h.errors.entry(failure.cause()).or_default() += 1;
                if !failure.retriable() {
                    h.non_retriable.push(format!("{value:?}: {failure:?}"));
                }
                let sequence_error = match &failure {
                    Failure::Broker(e) if is_sequence_error(e.code) => Some(&e.message),
                    _ => None,
                };
                if let Some(message) = sequence_error {
                    // Not retriable: give the value up rather than loop on it.
                    h.sequence_errors.push(format!("{value:?}: {message}"));
                } else if w.retry_failed {
                    retry = Some((partition, value));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                route = leaders(&w, &mut channels).await;
            }
        }
    }
    h.abandoned = retry.map(|(_, value)| value);
    h
}

/// Produces with `producer` until `stop` turns true: values `p<id>-<seq>` round robin over
/// the workload's partitions, with at most `outstanding` deliveries unanswered (the oldest is
/// awaited first); every delivery is awaited before returning. A failed delivery counts in
/// `failed` and its error in `client_errors`.
pub async fn produce_with_client(
    producer: &Producer,
    w: &Workload,
    id: u32,
    outstanding: usize,
    stop: watch::Receiver<bool>,
) -> History {
    let mut h = History::default();
    let mut waiting = std::collections::VecDeque::new();
    let mut seq = 0u64;
    while !*stop.borrow() {
        let partition = (seq % w.partitions as u64) as i32;
        let value = Bytes::from(format!("p{id}-{seq:08}"));
        seq += 1;
        let record = keel_client::ProducerRecord::new(&w.topic, value.clone()).partition(partition);
        h.attempts += 1;
        match producer.send(record).await {
            Ok(delivery) => waiting.push_back((value, delivery)),
            Err(e) => {
                h.failed += 1;
                h.client_errors.push(format!("{value:?}: {e}"));
            }
        }
        while waiting.len() >= outstanding {
            let (value, delivery) = waiting.pop_front().expect("waiting");
            settle(&mut h, value, delivery.await);
        }
    }
    for (value, delivery) in waiting {
        settle(&mut h, value, delivery.await);
    }
    h
}

fn settle(
    h: &mut History,
    value: Bytes,
    delivered: Result<keel_client::RecordMetadata, keel_client::Error>,
) {
    match delivered {
        Ok(m) => h.acked.push(Acked {
            partition: m.partition,
            offset: m.offset.expect("acks=all gives offsets"),
            value,
        }),
        Err(e) => {
            h.failed += 1;
            h.client_errors.push(format!("{value:?}: {e}"));
        }
    }
}

fn is_sequence_error(code: i32) -> bool {
    [
        ErrorCode::OutOfOrderSequence,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::ProducerFenced,
        ErrorCode::UnknownProducerId,
        ErrorCode::DuplicateSequence,
    ]
    .iter()
    .any(|c| *c as i32 == code)
}

/// Every record of a partition below its high watermark, read from its leader, and the high
/// watermark.
pub async fn read_partition(w: &Workload, partition: i32) -> Option<(Vec<(i64, Bytes)>, i64)> {
    let mut channels = Channels::default();
    let url = leaders(w, &mut channels).await.remove(&partition)?;
    read_from(
        w,
        &mut ConsumerClient::new(channels.get(&url)),
        partition,
        0,
    )
    .await
}

/// The records of a partition from `offset` up to its high watermark, from the leader behind
/// `client`, and the high watermark; `None` when the leader does not answer well.
async fn read_from(
    w: &Workload,
    client: &mut ConsumerClient<Channel>,
    partition: i32,
    mut offset: i64,
) -> Option<(Vec<(i64, Bytes)>, i64)> {
    let mut out = Vec::new();
    loop {
        let req = FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 8 << 20,
            isolation_level: 0,
            format: RecordFormat::Records as i32,
            topics: vec![FetchTopic {
                topic: w.topic.clone(),
                topic_id: Bytes::new(),
                partitions: vec![FetchPartition {
                    partition,
                    fetch_offset: offset,
                    partition_max_bytes: 4 << 20,
                    current_leader_epoch: None,
                }],
            }],
        };
        let mut req = tonic::Request::new(req);
        req.set_timeout(Duration::from_secs(3));
        let resp = client.fetch(req).await.ok()?.into_inner();
        let p = resp.topics.first()?.partitions.first()?.clone();
        if p.error.is_some() {
            return None;
        }
        let done = (offset >= p.high_watermark).then_some((out.clone(), p.high_watermark));
        let Some(fetch_partition_response::Data::Records(recs)) = p.data else {
            return done;
        };
        if recs.records.is_empty() {
            return done;
        }
        for r in recs.records {
            offset = r.offset + 1;
            out.push((r.offset, r.value.unwrap_or_default()));
        }
    }
}

/// A consumer reading along while the workload runs: every record it was served, by
/// partition, until `stop`. Whatever a consumer was served must never disappear
/// ([`check_reads`]).
pub async fn read_along(
    w: Arc<Workload>,
    stop: watch::Receiver<bool>,
) -> BTreeMap<i32, Vec<(i64, Bytes)>> {
    let mut seen: BTreeMap<i32, Vec<(i64, Bytes)>> = BTreeMap::new();
    let mut channels = Channels::default();
    while !*stop.borrow() {
        for (partition, url) in leaders(&w, &mut channels).await {
            let records = seen.entry(partition).or_default();
            let next = records.last().map_or(0, |(o, _)| o + 1);
            let mut client = ConsumerClient::new(channels.get(&url));
            if let Some((more, _)) = read_from(&w, &mut client, partition, next).await {
                records.extend(more);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seen
}

/// Checks that every record a consumer was served is in the final log at the same offset.
pub fn check_reads(
    seen: &BTreeMap<i32, Vec<(i64, Bytes)>>,
    logs: &BTreeMap<i32, Vec<(i64, Bytes)>>,
) -> Result<usize, String> {
    let mut checked = 0;
    for (partition, records) in seen {
        let log: HashMap<i64, &Bytes> = logs
            .get(partition)
            .map(|l| l.iter().map(|(o, v)| (*o, v)).collect())
            .unwrap_or_default();
        for (offset, value) in records {
            match log.get(offset) {
                Some(v) if *v == value => checked += 1,
                other => {
                    return Err(format!(
                        "partition {partition} offset {offset}: a consumer read {value:?}, the log now holds {other:?}"
                    ))
                }
            }
        }
    }
    Ok(checked)
}

/// Every record of the log `name` in a stopped node's data directory.
pub fn read_log_on_disk(data_dir: &Path, name: &str) -> Vec<(i64, Bytes)> {
    let data = DataDir::open(data_dir).expect("open data dir");
    let (log, _) = data.open_log(name, LogConfig::default()).expect("open log");
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX).expect("read");
        let mut at = 0;
        while at < bytes.len() {
            let header = keel_storage::batch::BatchHeader::parse(&bytes[at..]).expect("header");
            let len = header.total_len();
            let batch = keel_storage::batch::decode(&bytes[at..at + len]).expect("batch");
            for r in batch.records {
                out.push((r.offset, r.value.unwrap_or_default()));
            }
            offset = header.last_offset() + 1;
            at += len;
        }
    }
    log.close().expect("close");
    out
}

/// What the checker counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub acked: usize,
    pub present: usize,
    pub unacked_present: usize,
}

/// Checks the histories against the partitions' contents (see the module doc); the error
/// names the first violation.
pub fn check(
    histories: &[History],
    logs: &BTreeMap<i32, Vec<(i64, Bytes)>>,
) -> Result<Summary, String> {
    let mut at: HashMap<Bytes, (i32, i64)> = HashMap::new();
    let mut present = 0;
    for (partition, records) in logs {
        let mut last = -1;
        let mut last_seq: HashMap<String, u64> = HashMap::new();
        for (offset, value) in records {
            if *offset <= last {
                return Err(format!(
                    "partition {partition}: offset {offset} after {last}"
                ));
            }
            last = *offset;
            // Duplicates first: a second copy of a value is also out of order, and "twice"
            // says what went wrong.
            if let Some(first) = at.insert(value.clone(), (*partition, *offset)) {
                return Err(format!(
                    "{value:?} appears twice: {first:?} and {:?}",
                    (partition, offset)
                ));
            }
            if let Some((producer, seq)) = parse_value(value) {
                if last_seq
                    .insert(producer, seq)
                    .is_some_and(|before| before >= seq)
                {
                    return Err(format!("partition {partition}: {value:?} at {offset} is out of its producer's order"));
                }
            }
            present += 1;
        }
    }
    let mut acked = 0;
    for h in histories {
        let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
        for a in &h.acked {
            acked += 1;
            match at.get(&a.value) {
                Some(&(p, o)) if (p, o) == (a.partition, a.offset) => {}
                found => {
                    return Err(format!(
                        "acknowledged {:?} at {}/{} but found at {found:?}",
                        a.value, a.partition, a.offset
                    ))
                }
            }
            let last = last_offset.entry(a.partition).or_insert(-1);
            if a.offset <= *last {
                return Err(format!("{:?} acknowledged out of order", a.value));
            }
            *last = a.offset;
        }
    }
    Ok(Summary {
        acked,
        present,
        unacked_present: present - acked,
    })
}

/// [`check`], and for workloads that retry with the same value: every value is present
/// exactly once, except a value still unacknowledged at the end (present at most once), and
/// no producer met a sequence error.
pub fn check_exactly_once(
    histories: &[History],
    logs: &BTreeMap<i32, Vec<(i64, Bytes)>>,
) -> Result<Summary, String> {
    let summary = check(histories, logs)?;
    let mut sent: std::collections::HashSet<&Bytes> = std::collections::HashSet::new();
    for h in histories {
        if let Some(e) = h.sequence_errors.first() {
            return Err(format!("sequence error: {e}"));
        }
        sent.extend(h.acked.iter().map(|a| &a.value));
        sent.extend(h.abandoned.iter());
    }
    for (partition, records) in logs {
        if let Some((offset, value)) = records.iter().find(|(_, v)| !sent.contains(v)) {
            return Err(format!(
                "{value:?} at {partition}/{offset} was written but neither acknowledged nor pending at the end"
            ));
        }
    }
    Ok(summary)
}

/// The producer and sequence number of a workload value.
fn parse_value(value: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (producer, seq) = text.split_once('-')?;
    Some((producer.to_owned(), seq.parse().ok()?))
}

/// What a consumer group reading along saw: every record delivered to one of its members,
/// by partition (a record delivered again after a rebalance appears again), the group's
/// committed offsets sampled while it ran, and the failures of its members.
#[derive(Clone, Debug, Default)]
pub struct GroupHistory {
    pub delivered: BTreeMap<i32, Vec<(i64, Bytes)>>,
    /// Committed offsets by partition, one map per sample, in time order.
    pub committed: Vec<BTreeMap<i32, i64>>,
    /// Errors a member could not retry (each ends that member; a new one takes its place).
    pub member_errors: Vec<String>,
    /// Retriable poll errors met (faults are expected to cause some).
    pub retried: u64,
}

/// The workload's nodes as the Rust client takes them (`host:port`).
pub fn bootstrap(w: &Workload) -> Vec<String> {
    w.urls
        .iter()
        .map(|u| u.trim_start_matches("http://").to_owned())
        .collect()
}

/// Options of the members of [`consume_in_group`]: auto-commit every 200 ms, from the
/// earliest offset.
fn group_options(group: &str) -> keel_client::GroupOptions {
    let mut o = keel_client::GroupOptions::new(group);
    o.consumer.auto_offset_reset = keel_client::OffsetReset::Earliest;
    o.auto_commit_interval = Duration::from_millis(200);
    o
}

/// One member of `group` on the workload's topic until `stop`: every record it is given goes
/// into `out`. A member that fails for good is replaced by a new one (the failure is kept).
async fn group_member(
    w: Arc<Workload>,
    group: String,
    out: Arc<std::sync::Mutex<GroupHistory>>,
    stop: watch::Receiver<bool>,
) {
    let bootstrap = bootstrap(&w);
    while !*stop.borrow() {
        let Ok(mut m) =
            keel_client::GroupConsumer::connect(&bootstrap, group_options(&group)).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        m.subscribe(keel_client::Subscription::Topics(vec![w.topic.clone()]));
        while !*stop.borrow() {
            let records = match m.poll(Duration::from_millis(200)).await {
                Ok(records) => records,
                Err(e) if e.is_retriable() => {
                    out.lock().expect("group history").retried += 1;
                    continue;
                }
                Err(e) => {
                    out.lock()
                        .expect("group history")
                        .member_errors
                        .push(e.to_string());
                    break;
                }
            };
            let mut h = out.lock().expect("group history");
            for r in records {
                let value = r.value.unwrap_or_default();
                h.delivered
                    .entry(r.partition)
                    .or_default()
                    .push((r.offset, value));
            }
        }
        // Closing commits what was delivered; under faults it may fail, which is allowed.
        let _ = m.close().await;
    }
}

/// Samples `group`'s committed offsets every 300 ms into `out` until `stop`.
async fn sample_commits(
    w: Arc<Workload>,
    group: String,
    out: Arc<std::sync::Mutex<GroupHistory>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut admin = None;
    loop {
        if admin.is_none() {
            admin = keel_client::AdminClient::connect(&bootstrap(&w)).await.ok();
        }
        if let Some(a) = &admin {
            if let Ok(offsets) = a.group_offsets(&group).await {
                let sample = offsets
                    .into_iter()
                    .filter(|(tp, _)| tp.topic == w.topic)
                    .map(|(tp, o)| (tp.partition, o))
                    .collect();
                out.lock().expect("group history").committed.push(sample);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A consumer group of `members` members reading the workload's topic along with commits,
/// and a sampler of its committed offsets, until `stop`; the returned history fills as
/// they run.
pub fn consume_in_group(
    w: &Arc<Workload>,
    group: &str,
    members: usize,
    stop: watch::Receiver<bool>,
) -> (
    Arc<std::sync::Mutex<GroupHistory>>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let out = Arc::new(std::sync::Mutex::new(GroupHistory::default()));
    let mut tasks: Vec<_> = (0..members)
        .map(|_| {
            let member = group_member(w.clone(), group.to_owned(), out.clone(), stop.clone());
            tokio::spawn(member)
        })
        .collect();
    let sampler = sample_commits(w.clone(), group.to_owned(), out.clone(), stop);
    tasks.push(tokio::spawn(sampler));
    (out, tasks)
}

/// The acknowledged values the group has not been given yet.
pub fn undelivered(histories: &[History], group: &GroupHistory) -> Vec<Bytes> {
    let delivered: std::collections::HashSet<&Bytes> =
        group.delivered.values().flatten().map(|(_, v)| v).collect();
    histories
        .iter()
        .flat_map(|h| &h.acked)
        .filter(|a| !delivered.contains(&a.value))
        .map(|a| a.value.clone())
        .collect()
}

/// Checks a group's history against the producers' and the final logs: every acknowledged
/// record was delivered to the group at least once, everything delivered is in the log at
/// the offset it was delivered with, no member failed for good, and no committed offset
/// seen in a sample is lost: the last sample of each partition is at least every earlier one.
/// Returns (records delivered, commit samples).
///
/// Samples in between may go back: a coordinator cut off from the other brokers still
/// believes it leads and answers OffsetFetch from memory (Kafka's does the same), so a sample
/// may read a deposed coordinator. Its own commits cannot be acknowledged (they need the
/// replicas it cannot reach), so what it shows is older, never newer.
pub fn check_group(
    histories: &[History],
    group: &GroupHistory,
    logs: &BTreeMap<i32, Vec<(i64, Bytes)>>,
) -> Result<(usize, usize), String> {
    if let Some(e) = group.member_errors.first() {
        return Err(format!("a group member failed: {e}"));
    }
    let missing = undelivered(histories, group);
    if let Some(v) = missing.first() {
        return Err(format!(
            "{} acknowledged records never delivered to the group, e.g. {v:?}",
            missing.len()
        ));
    }
    let delivered = check_reads(&group.delivered, logs)?;
    let mut highest: BTreeMap<i32, (i64, usize)> = BTreeMap::new();
    for (i, sample) in group.committed.iter().enumerate() {
        for (partition, offset) in sample {
            let seen = highest.entry(*partition).or_insert((*offset, i));
            if *offset > seen.0 {
                *seen = (*offset, i);
            }
        }
    }
    let last = group.committed.last().cloned().unwrap_or_default();
    for (partition, (offset, i)) in highest {
        let now = last.get(&partition).copied().unwrap_or(-1);
        if now < offset {
            return Err(format!(
                "partition {partition}: the committed offset went back from {offset} (sample \
                 {i}) to {now} at the end"
            ));
        }
    }
    Ok((delivered, group.committed.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(partition: i32, offset: i64, value: &str) -> Acked {
        Acked {
            partition,
            offset,
            value: Bytes::from(value.to_owned()),
        }
    }

    type Logs = BTreeMap<i32, Vec<(i64, Bytes)>>;

    /// Partition 0 holds p0-0 and p0-1, acknowledged by one producer.
    fn setup() -> (Vec<History>, Logs) {
        let h = History {
            acked: vec![acked(0, 0, "p0-0"), acked(0, 1, "p0-1")],
            ..History::default()
        };
        let log = vec![(0, Bytes::from("p0-0")), (1, Bytes::from("p0-1"))];
        (vec![h], BTreeMap::from([(0, log)]))
    }

    fn group(delivered: &[(i64, &str)], commits: &[i64]) -> GroupHistory {
        GroupHistory {
            delivered: BTreeMap::from([(
                0,
                delivered
                    .iter()
                    .map(|(o, v)| (*o, Bytes::from(v.to_string())))
                    .collect(),
            )]),
            committed: commits.iter().map(|o| BTreeMap::from([(0, *o)])).collect(),
            ..GroupHistory::default()
        }
    }

    #[test]
    fn the_group_checker_passes_a_good_run_and_names_each_violation() {
        let (histories, logs) = setup();
        // Redelivery after a rebalance is allowed (at least once).
        let good = group(&[(0, "p0-0"), (0, "p0-0"), (1, "p0-1")], &[0, 1, 1, 2]);
        assert_eq!(check_group(&histories, &good, &logs), Ok((3, 4)));

        let missing = group(&[(0, "p0-0")], &[1]);
        let e = check_group(&histories, &missing, &logs).unwrap_err();
        assert!(e.contains("never delivered"), "{e}");

        let backward = group(&[(0, "p0-0"), (1, "p0-1")], &[2, 1]);
        let e = check_group(&histories, &backward, &logs).unwrap_err();
        assert!(
            e.contains("went back from 2 (sample 0) to 1 at the end"),
            "{e}"
        );
        // A stale sample in between (a deposed coordinator) is not a loss.
        let stale_read = group(&[(0, "p0-0"), (1, "p0-1")], &[2, 1, 2]);
        assert!(check_group(&histories, &stale_read, &logs).is_ok());

        let vanished = group(&[(0, "p0-0"), (1, "p0-1"), (2, "p0-9")], &[]);
        let e = check_group(&histories, &vanished, &logs).unwrap_err();
        assert!(e.contains("offset 2"), "{e}");

        let mut failed = group(&[(0, "p0-0"), (1, "p0-1")], &[]);
        failed.member_errors.push("fenced".into());
        let e = check_group(&histories, &failed, &logs).unwrap_err();
        assert!(e.contains("member failed"), "{e}");
    }

    #[test]
    fn the_checker_finds_a_record_written_twice_and_one_lost() {
        let (histories, mut logs) = setup();
        assert!(check(&histories, &logs).is_ok());
        let mut twice = logs.clone();
        twice.get_mut(&0).unwrap().push((2, Bytes::from("p0-1")));
        let e = check(&histories, &twice).unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
        logs.get_mut(&0).unwrap().pop();
        let e = check(&histories, &logs).unwrap_err();
        assert!(
            e.contains("acknowledged b\"p0-1\" at 0/1 but found at None"),
            "{e}"
        );
    }
}
