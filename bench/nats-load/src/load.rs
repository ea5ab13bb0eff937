//! The workloads: produce (windowed async publishes), consume (a pull consumer from the
//! start) and e2e (fixed-rate publish, arrival latency).

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use async_nats::jetstream::{self, consumer, context::PublishAckFuture};
use bytes::Bytes;
use clap::Args;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::connect;

/// Latencies up to an hour are recorded; longer ones are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

#[derive(Args)]
pub struct ProduceArgs {
    /// Subject to publish to (a stream must capture it).
    #[arg(long)]
    subject: String,
    /// Messages to publish in all.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Publishers, each with its own connection.
    #[arg(long, default_value_t = 4)]
    publishers: u64,
    /// Publishes whose ack is outstanding, per publisher.
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// Most messages per second in all (default: no limit).
    #[arg(long)]
    rate: Option<u64>,
}

#[derive(Args)]
pub struct ConsumeArgs {
    /// Stream to read.
    #[arg(long)]
    stream: String,
    /// Messages to read (default: all the stream holds).
    #[arg(long)]
    records: Option<u64>,
    /// Messages asked for per pull request.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Give up when nothing arrived for this long, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(Args)]
pub struct E2eArgs {
    /// Stream to read new messages from.
    #[arg(long)]
    stream: String,
    /// Subject to publish to.
    #[arg(long)]
    subject: String,
    /// Messages to send and receive.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Payload bytes per message (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(8..))]
    record_size: u64,
    /// Messages per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Give up when nothing arrived for this long, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// The same shape as `keel bench ... -o json`.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    kind: &'static str,
    topic: String,
    records: u64,
    errors: u64,
    bytes: u64,
    elapsed_s: f64,
    records_per_s: f64,
    mb_per_s: f64,
    latency_of: &'static str,
    latency_ms: Latency,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn record_latency(h: &mut Histogram<u64>, took: Duration) {
    h.saturating_record((took.as_micros() as u64).clamp(1, MAX_LATENCY_US));
}

pub fn result(
    (kind, topic, latency_of): (&'static str, &str, &'static str),
    (records, errors, bytes): (u64, u64, u64),
    elapsed: Duration,
    h: &Histogram<u64>,
) -> BenchResult {
    let s = elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    BenchResult {
        kind,
        topic: topic.to_string(),
        records,
        errors,
        bytes,
        elapsed_s: s,
        records_per_s: records as f64 / s,
        mb_per_s: bytes as f64 / 1e6 / s,
        latency_of,
        latency_ms: Latency {
            p50: ms(0.5),
            p95: ms(0.95),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        },
    }
}

/// Bytes that do not compress to nothing (the same pattern as `keel bench produce`).
fn payload(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect::<Vec<u8>>()
        .into()
}

/// What one publisher counted.
struct Tally {
    latency: Histogram<u64>,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
}

type Pending = (Instant, PublishAckFuture, OwnedSemaphorePermit);

pub async fn produce(servers: &[String], args: &ProduceArgs) -> Result<BenchResult> {
    let publishers = args.publishers.max(1);
    let mut contexts = Vec::new();
    for i in 0..publishers {
        let client = connect(servers, i as usize).await?;
        // The context's own limit stays above ours so that only our window applies.
        contexts.push(
            jetstream::context::ContextBuilder::new()
                .max_ack_inflight(args.window + 1)
                .timeout(Duration::from_secs(30))
                .build(client),
        );
    }
    let value = payload(args.record_size);
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(publishers as f64 / r as f64));
    let start = Instant::now();
    let mut runs = Vec::new();
    for (i, js) in contexts.into_iter().enumerate() {
        let count = args.records / publishers + if i == 0 { args.records % publishers } else { 0 };
        let (subject, value, window) = (args.subject.clone(), value.clone(), args.window);
        runs.push(tokio::spawn(async move {
            run_publisher(js, subject, value, (count, window, interval)).await
        }));
    }
    let mut latency = histogram();
    let (mut acked, mut errors, mut first_error) = (0, 0, None);
    for run in runs {
        let tally = run.await.context("a publisher task failed")?;
        latency.add(&tally.latency).map_err(|e| anyhow!("{e}"))?;
        acked += tally.acked;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    let elapsed = start.elapsed();
    if acked == 0 {
        return Err(anyhow!(
            "no publish was acknowledged: {}",
            first_error.unwrap_or_else(|| "no error reported".into())
        ));
    }
    if let Some(e) = first_error {
        eprintln!("{errors} publishes failed, the first: {e}");
    }
    let counts = (acked, errors, acked * args.record_size as u64);
    Ok(result(
        ("produce", &args.subject, "delivery"),
        counts,
        elapsed,
        &latency,
    ))
}

/// Publishes `count` messages with at most `window` acks outstanding, one per `interval` at
/// most, while a collector awaits the acks.
async fn run_publisher(
    js: jetstream::Context,
    subject: String,
    value: Bytes,
    (count, window, interval): (u64, usize, Option<Duration>),
) -> Tally {
    let (queue, acks) = mpsc::unbounded_channel::<Pending>();
    let collector = tokio::spawn(collect(acks));
    let permits = Arc::new(Semaphore::new(window));
    let start = tokio::time::Instant::now();
    let mut send_error = None;
    for i in 0..count {
        if let Some(interval) = interval {
            tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let sent = Instant::now();
        match js.publish(subject.clone(), value.clone()).await {
            // The collector outlives the queue: it stops only when the queue closes.
            Ok(ack) => drop(queue.send((sent, ack, permit))),
            Err(e) => {
                send_error = Some(e.to_string());
                break;
            }
        }
    }
    drop(queue);
    let mut tally = collector.await.unwrap_or_else(|_| Tally {
        latency: histogram(),
        acked: 0,
        errors: count,
        first_error: Some("the ack collector failed".into()),
    });
    if let Some(e) = send_error {
        tally.first_error.get_or_insert(e);
    }
    tally
}

/// Awaits acks as they arrive, recording each one's latency; a permit goes back with each.
async fn collect(mut queue: mpsc::UnboundedReceiver<Pending>) -> Tally {
    let mut tally = Tally {
        latency: histogram(),
        acked: 0,
        errors: 0,
        first_error: None,
    };
    let mut waiting = FuturesUnordered::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        tokio::select! {
            next = queue.recv(), if open => match next {
                Some((sent, ack, permit)) => waiting.push(async move {
                    let outcome = ack.await;
                    drop(permit);
                    (outcome, sent.elapsed())
                }),
                None => open = false,
            },
            Some((outcome, took)) = waiting.next(), if !waiting.is_empty() => match outcome {
                Ok(_) => {
                    tally.acked += 1;
                    record_latency(&mut tally.latency, took);
                }
                Err(e) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(e.to_string());
                }
            },
        }
    }
    tally
}

/// An ephemeral pull consumer that acknowledges nothing, from `deliver`.
async fn pull_consumer(
    js: &jetstream::Context,
    stream: &str,
    deliver: consumer::DeliverPolicy,
) -> Result<consumer::PullConsumer> {
    js.get_stream(stream)
        .await
        .with_context(|| format!("stream {stream}"))?
        .create_consumer(consumer::pull::Config {
            deliver_policy: deliver,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating a consumer on {stream}"))
}

pub async fn consume(servers: &[String], args: &ConsumeArgs) -> Result<BenchResult> {
    let js = jetstream::new(connect(servers, 0).await?);
    let target = match args.records {
        Some(n) => n,
        None => {
            let mut s = js.get_stream(&args.stream).await?;
            s.info().await?.state.messages
        }
    };
    let consumer = pull_consumer(&js, &args.stream, consumer::DeliverPolicy::All).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(args.batch)
        .messages()
        .await?;
    let idle = Duration::from_millis(args.timeout_ms);
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    while records < target {
        let next = tokio::time::timeout(idle, messages.next()).await;
        let Ok(Some(message)) = next else { break };
        bytes += message.map_err(|e| anyhow!("{e}"))?.payload.len() as u64;
        records += 1;
    }
    let elapsed = start.elapsed();
    let counts = (records, target.saturating_sub(records), bytes);
    Ok(result(
        ("consume", &args.stream, "none"),
        counts,
        elapsed,
        &histogram(),
    ))
}

/// Microseconds since the Unix epoch: the send time carried in an e2e payload (publisher and
/// consumer run in this one process, so their clocks agree).
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub async fn e2e(servers: &[String], args: &E2eArgs) -> Result<BenchResult> {
    let js = jetstream::new(connect(servers, 0).await?);
    let consumer = pull_consumer(&js, &args.stream, consumer::DeliverPolicy::New).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(10_000)
        .messages()
        .await?;
    let publisher = jetstream::new(connect(servers, 1).await?);
    let sender = tokio::spawn(send_timestamped(
        publisher,
        args.subject.clone(),
        (args.records, args.record_size as usize, args.rate),
    ));
    let idle = Duration::from_millis(args.timeout_ms);
    // A consumer that trickles (one message every few seconds) must not hold the run
    // forever: stop at the send time plus twice the idle limit and count what is missing.
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs_f64(args.records as f64 / args.rate.max(1) as f64)
        + 2 * idle;
    let mut latency = histogram();
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    while records < args.records {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let next = tokio::time::timeout(wait, messages.next()).await;
        let Ok(Some(message)) = next else { break };
        let message = message.map_err(|e| anyhow!("{e}"))?;
        let arrived = now_us();
        let Some(stamp) = message.payload.get(..8) else {
            continue;
        };
        let sent = u64::from_be_bytes(stamp.try_into().expect("8 bytes"));
        record_latency(
            &mut latency,
            Duration::from_micros(arrived.saturating_sub(sent)),
        );
        records += 1;
        bytes += message.payload.len() as u64;
    }
    let elapsed = start.elapsed();
    match tokio::time::timeout(idle, sender).await {
        Ok(joined) => joined.context("the publisher task failed")??,
        Err(_) => eprintln!("e2e: the publisher had not finished {idle:?} after the consumer"),
    }
    if records < args.records {
        eprintln!("e2e: {} of {} messages arrived", records, args.records);
    }
    let counts = (records, args.records.saturating_sub(records), bytes);
    Ok(result(
        ("e2e", &args.subject, "end_to_end"),
        counts,
        elapsed,
        &latency,
    ))
}

/// Publishes `count` messages at `rate`, each carrying its send time; acks are awaited in the
/// background (the consumer measures the latency).
async fn send_timestamped(
    js: jetstream::Context,
    subject: String,
    (count, size, rate): (u64, usize, u64),
) -> Result<()> {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = tokio::time::Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..count {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let mut value = vec![0u8; size];
        value[..8].copy_from_slice(&now_us().to_be_bytes());
        let ack = js.publish(subject.clone(), value.into()).await?;
        acks.push(ack.into_future());
        // Reap finished acks as we go so the set stays small.
        while let Some(Some(ack)) = futures_util::FutureExt::now_or_never(acks.next()) {
            ack?;
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    Ok(())
}
