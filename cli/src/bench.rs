//! `keel bench produce` and `keel bench consume`: load with a progress bar (indicatif, on
//! stderr, drawn only on a terminal), then a [`BenchResult`]: throughput and a latency
//! distribution (hdrhistogram, microsecond resolution).
//!
//! - produce: latency is per record, from `send` to its acknowledgement (with the chosen
//!   acks). Each producer has a collector task that awaits deliveries as they complete, so a
//!   record's latency is taken when it is acknowledged, not when the sender gets round to it.
//! - consume: latency is per poll that returned records (the time of one fetch round).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use keel_client::{
    Consumer, ConsumerOptions, DeliveryFuture, Position, Producer, ProducerOptions, ProducerRecord,
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::args::{BenchConsumeArgs, BenchE2eArgs, BenchProduceArgs};
use crate::CliError;

/// Latencies up to an hour are recorded; longer ones are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What a benchmark measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    /// `produce`, `consume` or `e2e`.
    pub kind: &'static str,
    /// The topic.
    pub topic: String,
    /// Records sent (acknowledged) or read.
    pub records: u64,
    /// Records that failed (produce) or never arrived (e2e).
    pub errors: u64,
    /// Bytes of record values.
    pub bytes: u64,
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
    /// Records per second.
    pub records_per_s: f64,
    /// Value megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// What the latency measures: `delivery` (send to ack), `poll`, or `end_to_end` (send
    /// to arrival at the consumer).
    pub latency_of: &'static str,
    /// Latency percentiles in milliseconds.
    pub latency_ms: Latency,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn record_latency(h: &mut Histogram<u64>, took: Duration) {
    let us = (took.as_micros() as u64).clamp(1, MAX_LATENCY_US);
    h.saturating_record(us);
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} {per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// What one producer of `bench produce` counted.
struct Tally {
    latency: Histogram<u64>,
    acked: u64,
    errors: u64,
    first_error: Option<keel_client::Error>,
}

/// `keel bench produce`.
pub async fn produce(
    bootstrap: &[String],
    args: &BenchProduceArgs,
) -> Result<BenchResult, CliError> {
    let options = ProducerOptions {
        acks: args.acks.into(),
        compression: args.compression,
        batch_size: args.batch_size as usize,
        linger: std::time::Duration::from_millis(args.linger_ms),
        ..ProducerOptions::default()
    };
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        let p = Producer::connect(bootstrap, options.clone()).await?;
        p.partitions(&args.topic).await?;
        producers.push(p);
    }
    let bar = Arc::new(progress(args.records));
    // Bytes that do not compress to nothing, so that codecs are measured on some work.
    let value: Bytes = (0..args.record_size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect::<Vec<u8>>()
        .into();
    let share = args.records / args.producers;
    let start = Instant::now();
    let mut runs = Vec::new();
    for (i, producer) in producers.into_iter().enumerate() {
        let count = share
            + if i == 0 {
                args.records % args.producers
            } else {
                0
            };
        let interval = args
            .rate
            .map(|r| Duration::from_secs_f64(args.producers as f64 / r as f64));
        let topic = args.topic.clone();
        let (value, bar) = (value.clone(), bar.clone());
        runs.push(tokio::spawn(async move {
            let tally = run_producer(&producer, &topic, count, value, interval, &bar).await;
            producer.close().await;
            tally
        }));
    }
    let mut latency = histogram();
    let (mut acked, mut errors, mut first_error) = (0, 0, None);
    for run in runs {
        let tally = run
            .await
            .map_err(|e| CliError::Io(format!("a producer task failed: {e}")))?;
        latency
            .add(&tally.latency)
            .map_err(|e| CliError::Io(e.to_string()))?;
        acked += tally.acked;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    if acked == 0 {
        if let Some(e) = first_error {
            return Err(e.into());
        }
    }
    Ok(result(
        "produce",
        &args.topic,
        (acked, errors, acked * args.record_size as u64),
        elapsed,
        "delivery",
        &latency,
    ))
}

/// Sends `count` records, one per `interval` at most, while a collector awaits deliveries.
async fn run_producer(
    producer: &Producer,
    topic: &str,
    count: u64,
    value: Bytes,
    interval: Option<Duration>,
    bar: &ProgressBar,
) -> Tally {
    let (queue, deliveries) = mpsc::unbounded_channel::<(Instant, DeliveryFuture)>();
    let collector = tokio::spawn(collect(deliveries, bar.clone()));
    let start = tokio::time::Instant::now();
    let mut send_error = None;
    for i in 0..count {
        if let Some(interval) = interval {
            tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        }
        let sent = Instant::now();
        match producer
            .send(ProducerRecord::new(topic, value.clone()))
            .await
        {
            Ok(delivery) => {
                // The collector outlives the queue: it stops only when the queue closes.
                let _ = queue.send((sent, delivery));
            }
            Err(e) => {
                send_error = Some(e);
                break;
            }
        }
    }
    drop(queue);
    let mut tally = collector.await.unwrap_or_else(|_| Tally {
        latency: histogram(),
        acked: 0,
        errors: count,
        first_error: None,
    });
    if let Some(e) = send_error {
        tally.first_error.get_or_insert(e);
    }
    tally
}

/// Awaits deliveries as they complete, recording each one's latency.
async fn collect(
    mut queue: mpsc::UnboundedReceiver<(Instant, DeliveryFuture)>,
    bar: ProgressBar,
) -> Tally {
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
                Some((sent, delivery)) => waiting.push(async move { (delivery.await, sent.elapsed()) }),
                None => open = false,
            },
            Some((outcome, took)) = waiting.next(), if !waiting.is_empty() => {
                match outcome {
                    Ok(_) => {
                        tally.acked += 1;
                        record_latency(&mut tally.latency, took);
                    }
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert(e);
                    }
                }
                bar.inc(1);
            }
        }
    }
    tally
}

/// `keel bench consume`.
pub async fn consume(
    bootstrap: &[String],
    args: &BenchConsumeArgs,
) -> Result<BenchResult, CliError> {
    let options = ConsumerOptions {
        partition_max_bytes: args.partition_max_bytes,
        ..ConsumerOptions::default()
    };
    let mut consumer = Consumer::connect(bootstrap, options).await?;
    let target = match args.records {
        Some(n) => n,
        None => consumer
            .list_offsets(&args.topic)
            .await?
            .iter()
            .map(|p| (p.latest - p.earliest) as u64)
            .sum(),
    };
    consumer.assign_topic(&args.topic).await?;
    consumer.seek_all(Position::Beginning);
    let bar = progress(target);
    let idle_limit = Duration::from_millis(args.timeout_ms);
    let mut latency = histogram();
    let (mut records, mut bytes) = (0, 0);
    let start = Instant::now();
    let mut last_record = Instant::now();
    while records < target && last_record.elapsed() < idle_limit {
        let polled = Instant::now();
        let batch = consumer.poll(Duration::from_millis(500)).await?;
        if batch.is_empty() {
            continue;
        }
        last_record = Instant::now();
        record_latency(&mut latency, polled.elapsed());
        records += batch.len() as u64;
        bytes += batch
            .iter()
            .map(|r| r.value.as_ref().map_or(0, Bytes::len) as u64)
            .sum::<u64>();
        bar.set_position(records.min(target));
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(result(
        "consume",
        &args.topic,
        (records, 0, bytes),
        elapsed,
        "poll",
        &latency,
    ))
}

/// Microseconds since the Unix epoch: the send time carried in an e2e record's first bytes
/// (producer and consumer run in this one process, so their clocks agree).
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `keel bench e2e`: one producer at a fixed rate and one consumer reading the new records;
/// each record's latency is its arrival time at the consumer minus its send time.
pub async fn e2e(bootstrap: &[String], args: &BenchE2eArgs) -> Result<BenchResult, CliError> {
    let mut consumer = Consumer::connect(bootstrap, ConsumerOptions::default()).await?;
    consumer.assign_topic(&args.topic).await?;
    consumer.seek_all(Position::End);
    // Resolve the end positions before anything is sent, so every sent record is read.
    consumer.poll(Duration::from_millis(1)).await?;
    let options = ProducerOptions {
        acks: args.acks.into(),
        linger: Duration::from_millis(args.linger_ms),
        ..ProducerOptions::default()
    };
    let producer = Producer::connect(bootstrap, options).await?;
    producer.partitions(&args.topic).await?;
    let (topic, count, size) = (args.topic.clone(), args.records, args.record_size as usize);
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let sender = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for i in 0..count {
            tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
            let mut value = vec![0u8; size];
            value[..8].copy_from_slice(&now_us().to_be_bytes());
            if let Err(e) = producer.send(ProducerRecord::new(&topic, value)).await {
                producer.close().await;
                return Err(e);
            }
        }
        producer.close().await;
        Ok(())
    });
    let bar = progress(args.records);
    let idle_limit = Duration::from_millis(args.timeout_ms);
    let mut latency = histogram();
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut last_record = Instant::now();
    while records < args.records && last_record.elapsed() < idle_limit {
        let batch = consumer.poll(Duration::from_millis(100)).await?;
        let arrived = now_us();
        for r in &batch {
            let Some(v) = r.value.as_ref().filter(|v| v.len() >= 8) else {
                continue;
            };
            let sent = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
            record_latency(
                &mut latency,
                Duration::from_micros(arrived.saturating_sub(sent)),
            );
            records += 1;
            bytes += v.len() as u64;
            last_record = Instant::now();
        }
        bar.set_position(records.min(args.records));
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    sender
        .await
        .map_err(|e| CliError::Io(format!("the producer task failed: {e}")))??;
    Ok(result(
        "e2e",
        &args.topic,
        (records, args.records.saturating_sub(records), bytes),
        elapsed,
        "end_to_end",
        &latency,
    ))
}

fn result(
    kind: &'static str,
    topic: &str,
    (records, errors, bytes): (u64, u64, u64),
    elapsed: Duration,
    latency_of: &'static str,
    latency: &Histogram<u64>,
) -> BenchResult {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    BenchResult {
        kind,
        topic: topic.to_string(),
        records,
        errors,
        bytes,
        elapsed_s: seconds,
        records_per_s: records as f64 / seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds,
        latency_of,
        latency_ms: Latency::of(latency),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_compute_rates_and_percentiles() {
        let mut h = histogram();
        for ms in 1..=1000u64 {
            record_latency(&mut h, Duration::from_millis(ms));
        }
        let r = result(
            "produce",
            "t",
            (2000, 1, 4_000_000),
            Duration::from_secs(2),
            "delivery",
            &h,
        );
        assert_eq!(r.records_per_s, 1000.0);
        assert_eq!(r.mb_per_s, 2.0);
        // hdrhistogram keeps 3 significant digits.
        assert!((r.latency_ms.p50 - 500.0).abs() < 1.0, "{:?}", r.latency_ms);
        assert!((r.latency_ms.p95 - 950.0).abs() < 1.0, "{:?}", r.latency_ms);
        assert!((r.latency_ms.p99 - 990.0).abs() < 1.0, "{:?}", r.latency_ms);
        assert!(
            (r.latency_ms.p999 - 999.0).abs() < 1.0,
            "{:?}",
            r.latency_ms
        );
        assert!(
            (r.latency_ms.max - 1000.0).abs() < 1.0,
            "{:?}",
            r.latency_ms
        );
    }

    #[test]
    fn latencies_outside_the_range_are_clamped() {
        let mut h = histogram();
        record_latency(&mut h, Duration::ZERO);
        record_latency(&mut h, Duration::from_secs(10_000));
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_LATENCY_US);
        assert_eq!(h.len(), 2);
    }
}
