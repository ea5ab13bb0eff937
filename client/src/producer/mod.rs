//! [`Producer`]: sends records to partition leaders in batches, and hands back a
//! [`DeliveryFuture`] per record that resolves to where it was written.
//!
//! # How a record travels
//!
//! 1. [`Producer::send`] learns the topic's partitions (cached metadata), picks the partition
//!    (explicit, murmur2 of the key, or sticky: see `partitioner.rs`), takes the record's size
//!    from the buffer budget (`buffer_memory`; `send` waits while it is spent, which is the
//!    producer's back-pressure) and queues the record for the driver.
//! 2. The driver (one task, `driver.rs`) owns the [`accumulator`](accumulator): it adds the
//!    record to its partition's batch and, whenever batches are ready (full, `linger` old,
//!    flushed), groups them by leader into one request per broker, at most `max_in_flight`
//!    requests per broker at a time and at most `max_in_flight_per_partition` batches of a
//!    partition (5 with idempotence, else 1), each partition's in sequence order.
//! 3. A sender task (`sender.rs`) sends one request and hands each batch back with its
//!    outcome. The driver resolves the records' futures with their offsets, or queues a batch
//!    that failed retriably (a moved leader: `NOT_LEADER`, a dead broker, a lost answer) for
//!    a retry after a metadata refresh and a backoff, until `retries` or `delivery_timeout`
//!    run out. A partition with a queued batch sends nothing new: once its in-flight batches
//!    are answered it resends the queue oldest first, one batch at a time (`sequences.rs`),
//!    so records keep their order.
//!
//! # Idempotence (on by default)
//!
//! With `idempotence` and acks=all, [`Producer::connect`] asks a broker for a producer id
//! (`InitProducerId`) and every batch carries the id, its epoch and a per-partition sequence
//! (`sequences.rs`), so a retry of a batch whose answer was lost is recognised by the leader
//! and not written twice, across leader failover too, and a batch that overtook an earlier one
//! is refused (`OUT_OF_ORDER_SEQUENCE`) and resent after it. A batch that fails for good
//! bumps the epoch and restarts every partition's sequences at 0 (the rule, and what happens
//! to the batches behind it, is in `sequences.rs`). With other acks, idempotence is off (as
//! Kafka's producer does when it is not asked for explicitly).
//!
//! # Layout
//!
//! - `mod.rs` — [`Producer`], [`ProducerOptions`], [`DeliveryFuture`].
//! - `accumulator.rs` — batching, pure (unit tests).
//! - `driver.rs` — the driver task: inbox, linger and retry timers, dispatch, answers.
//! - `sender.rs` — one produce request and its outcomes; a batch's encoding.
//! - `sequences.rs` — which batch of a partition goes next and with which producer id, epoch
//!   and sequence; retries in order; the epoch bump after a failure; pure (unit and property
//!   tests in `sequences_test.rs`).

mod accumulator;
mod driver;
mod sender;
mod sequences;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::partitioner::partition_for_key;
use crate::topology::Topology;
use crate::{Acks, AdminOptions, Compression, Error, ProducerRecord, RecordMetadata};
use sequences::{Identity, Sequences, MAX_IN_FLIGHT_IDEMPOTENT};

pub use sequences::ProducerStats;

/// How a [`Producer`] batches, sends and retries. Defaults follow Kafka's producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerOptions {
    /// Durability required before a record counts as written.
    pub acks: Acks,
    /// Codec of the batches.
    pub compression: Compression,
    /// Longest wait for more records before a batch that is not full is sent (`linger.ms`).
    pub linger: Duration,
    /// Largest batch per partition in bytes, before compression (`batch.size`).
    pub batch_size: usize,
    /// Bytes of records buffered or in flight before [`Producer::send`] waits
    /// (`buffer.memory`).
    pub buffer_memory: usize,
    /// Requests in flight per broker (`max.in.flight.requests.per.connection`).
    pub max_in_flight: usize,
    /// Batches of one partition in flight at once. `None` (the default): 5 with idempotence
    /// (the most brokers can deduplicate: they remember a producer's last five batches per
    /// partition; more is refused by [`Producer::connect`]), and 1 without, which keeps
    /// records in order across retries. Without idempotence, more than 1 lets a retried batch
    /// land after batches sent behind it (as in Kafka).
    pub max_in_flight_per_partition: Option<usize>,
    /// Makes retries write nothing twice (`enable.idempotence`); takes effect with
    /// acks=all only.
    pub idempotence: bool,
    /// Retries of a batch after retriable failures (`retries`).
    pub retries: u32,
    /// Wait before the first retry, doubled for each further one (`retry.backoff.ms`).
    pub retry_backoff: Duration,
    /// Longest wait between retries (`retry.backoff.max.ms`).
    pub max_retry_backoff: Duration,
    /// Time from `send` to giving up on a record (`delivery.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Longest wait for one produce request; also the broker's acks=all wait
    /// (`request.timeout.ms`).
    pub request_timeout: Duration,
    /// How metadata requests connect and retry.
    pub metadata: AdminOptions,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            compression: Compression::None,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            max_in_flight: 5,
            max_in_flight_per_partition: None,
            idempotence: true,
            retries: 10,
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            metadata: AdminOptions::default(),
        }
    }
}

impl ProducerOptions {
    /// Whether the producer is idempotent: asked for, and with acks=all.
    fn is_idempotent(&self) -> bool {
        self.idempotence && self.acks == Acks::All
    }

    /// The bound on a partition's batches in flight (see `max_in_flight_per_partition`), or
    /// why the options are refused.
    fn per_partition_in_flight(&self) -> Result<usize, Error> {
        let idempotent = self.is_idempotent();
        match self.max_in_flight_per_partition {
            None if idempotent => Ok(MAX_IN_FLIGHT_IDEMPOTENT),
            None => Ok(1),
            Some(n) if n == 0 || (idempotent && n > MAX_IN_FLIGHT_IDEMPOTENT) => {
                Err(Error::InvalidArgument {
                    argument: format!("max_in_flight_per_partition={n}"),
                    reason: "must be 1 to 5 with idempotence (brokers remember five batches), \
                             and positive without",
                })
            }
            Some(n) => Ok(n),
        }
    }

    /// The wait before retry number `retry` (0 for the first).
    pub(crate) fn backoff_for(&self, retry: u32) -> Duration {
        self.retry_backoff
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_retry_backoff)
    }
}

/// A record on its way to the driver, with what the driver needs to place and answer it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub record: ProducerRecord,
    /// The topic's partition count when the record was sent (for the sticky partitioner).
    pub partitions: i32,
    /// Its share of `buffer_memory`, given back (dropped) when the record is answered.
    pub _permit: OwnedSemaphorePermit,
    pub reply: oneshot::Sender<Result<RecordMetadata, Error>>,
}

/// What the driver is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Append(Pending),
    Flush(oneshot::Sender<()>),
}

/// An asynchronous producer; cheap to share (`&self` methods).
///
/// ```no_run
/// # async fn demo() -> Result<(), keel_client::Error> {
/// use keel_client::{Producer, ProducerOptions, ProducerRecord};
/// let producer = Producer::connect(&["127.0.0.1:9292".into()], ProducerOptions::default()).await?;
/// let delivery = producer.send(ProducerRecord::new("orders", "paid").key("order-17")).await?;
/// let written = delivery.await?;
/// println!("{}/{} at {:?}", written.topic, written.partition, written.offset);
/// producer.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Producer {
    topology: Arc<Topology>,
    inbox: mpsc::Sender<Command>,
    buffer: Arc<Semaphore>,
    buffer_memory: usize,
    driver: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Mutex<ProducerStats>>,
}

impl Producer {
    /// Connects to the first reachable address of `bootstrap` and starts the driver task.
    pub async fn connect(bootstrap: &[String], options: ProducerOptions) -> Result<Self, Error> {
        if options.batch_size == 0 || options.max_in_flight == 0 {
            return Err(Error::InvalidArgument {
                argument: format!(
                    "batch_size={} max_in_flight={}",
                    options.batch_size, options.max_in_flight
                ),
                reason: "batch_size and max_in_flight must be positive",
            });
        }
        let per_partition = options.per_partition_in_flight()?;
        let topology = Arc::new(Topology::connect(bootstrap, options.metadata.clone()).await?);
        let identity = match options.is_idempotent() {
            true => {
                let (producer_id, epoch) = topology.admin().init_producer_id().await?;
                Some(Identity { producer_id, epoch })
            }
            false => None,
        };
        let sequences = Sequences::new(identity, per_partition);
        // Records queue in the accumulator, not here: a short inbox is enough to decouple.
        let (inbox, commands) = mpsc::channel(1024);
        let buffer_memory = options.buffer_memory.min(Semaphore::MAX_PERMITS);
        let stats = Arc::new(Mutex::new(ProducerStats::default()));
        let driver = driver::run(
            commands,
            topology.clone(),
            options,
            sequences,
            stats.clone(),
        );
        Ok(Self {
            topology,
            inbox,
            buffer: Arc::new(Semaphore::new(buffer_memory)),
            buffer_memory,
            driver: Mutex::new(Some(tokio::spawn(driver))),
            stats,
        })
    }

    /// The partition count of `topic` (from cached metadata); fails with the topic's error
    /// (`UNKNOWN_TOPIC_OR_PARTITION`) when it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<i32, Error> {
        Ok(self.topology.topic(topic).await?.partitions())
    }

    /// Queues `record` and returns the future of its delivery. Waits while the buffer is full.
    ///
    /// Fails at once (nothing queued) when the topic is unknown, the explicit partition does
    /// not exist, or the record alone is larger than `buffer_memory`.
    pub async fn send(&self, mut record: ProducerRecord) -> Result<DeliveryFuture, Error> {
        record.timestamp.get_or_insert_with(now_ms);
        let route = self.topology.topic(&record.topic).await?;
        let partitions = route.partitions();
        record.partition = match (record.partition, &record.key) {
            (Some(p), _) if !(0..partitions).contains(&p) => {
                return Err(Error::InvalidArgument {
                    argument: format!("{}/{p}", record.topic),
                    reason: "no such partition",
                })
            }
            (Some(p), _) => Some(p),
            (None, Some(key)) => Some(partition_for_key(key, partitions)),
            (None, None) => None,
        };
        let size = record.estimated_size();
        if size > self.buffer_memory {
            return Err(Error::InvalidArgument {
                argument: format!("{size} bytes"),
                reason: "the record is larger than buffer_memory",
            });
        }
        let permit = self
            .buffer
            .clone()
            .acquire_many_owned(size as u32)
            .await
            .map_err(|_| Error::Closed("the producer is closed"))?;
        let (reply, delivered) = oneshot::channel();
        let pending = Pending {
            record,
            partitions,
            _permit: permit,
            reply,
        };
        self.inbox
            .send(Command::Append(pending))
            .await
            .map_err(|_| Error::Closed("the producer is closed"))?;
        Ok(DeliveryFuture(delivered))
    }

    /// Sends every record queued so far at once (ignoring `linger`) and waits until each has
    /// been answered, delivered or failed.
    pub async fn flush(&self) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.inbox
            .send(Command::Flush(done))
            .await
            .map_err(|_| Error::Closed("the producer is closed"))?;
        wait.await
            .map_err(|_| Error::Closed("the producer's driver stopped"))
    }

    /// Counters of what the producer's batches went through so far (in-flight depth, resends,
    /// out-of-order refusals, epoch bumps).
    pub fn stats(&self) -> ProducerStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers every queued record, then stops the driver. Records still queued when a
    /// `Producer` is dropped without `close` are delivered too, by the driver, as long as the
    /// runtime runs.
    pub async fn close(self) {
        let driver = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(self.inbox);
        if let Some(driver) = driver {
            if let Err(e) = driver.await {
                tracing::error!(error = %e, "producer driver failed");
            }
        }
    }
}

/// The producer's clock, in ms since the Unix epoch (Kafka's CreateTime).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The outcome of one sent record: where it was written, or why it was not.
#[derive(Debug)]
pub struct DeliveryFuture(oneshot::Receiver<Result<RecordMetadata, Error>>);

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed("the producer stopped before answering"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_up_to_the_cap() {
        let o = ProducerOptions::default();
        let waits: Vec<u128> = (0..6).map(|r| o.backoff_for(r).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }

    #[tokio::test]
    async fn zero_batch_size_is_refused_before_connecting() {
        let options = ProducerOptions {
            batch_size: 0,
            ..ProducerOptions::default()
        };
        let err = Producer::connect(&["127.0.0.1:9".into()], options)
            .await
            .unwrap_err();
        assert_eq!(err.code_name(), "INVALID_ARGUMENT");
    }

    #[test]
    fn five_in_flight_per_partition_with_idempotence_one_without() {
        let idempotent = ProducerOptions::default();
        assert_eq!(idempotent.per_partition_in_flight(), Ok(5));
        let plain = ProducerOptions {
            acks: Acks::Leader,
            ..ProducerOptions::default()
        };
        assert_eq!(plain.per_partition_in_flight(), Ok(1));
        let seven = |o: ProducerOptions| ProducerOptions {
            max_in_flight_per_partition: Some(7),
            ..o
        };
        assert_eq!(seven(plain).per_partition_in_flight(), Ok(7));
        let refused = seven(idempotent).per_partition_in_flight().unwrap_err();
        assert_eq!(refused.code_name(), "INVALID_ARGUMENT");
        let zero = ProducerOptions {
            max_in_flight_per_partition: Some(0),
            ..ProducerOptions::default()
        };
        assert!(zero.per_partition_in_flight().is_err());
    }
}
