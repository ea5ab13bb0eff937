//! The data verbs: `produce` (lines of input → records), `consume` (records → lines of
//! output) and `offsets` (earliest and latest offset per partition).
//!
//! `produce` and `consume` stream: they write as they go instead of returning a
//! [`Report`](crate::Report), so `consume` can follow a topic forever and `produce` can take
//! an endless pipe. Both take their input and output as parameters so that tests can drive
//! them without a terminal.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use keel_client::{
    Consumer, ConsumerOptions, ConsumerRecord, DeliveryFuture, GroupConsumer, GroupOptions, Header,
    OffsetReset, Position, Producer, ProducerOptions, ProducerRecord, Subscription, TopicPartition,
};
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::args::{ConsumeArgs, ProduceArgs, RecordFormat};
use crate::render::{Report, TopicOffsets};
use crate::CliError;

/// Deliveries awaited at most at once by `produce`; past it, reading waits for the oldest.
/// Bounds the memory of an endless pipe (the producer's buffer bounds the records).
const MAX_PENDING: usize = 10_000;

/// Longest single poll of `consume`, so that `--timeout-ms` and `--max-messages` are checked
/// often.
const POLL: Duration = Duration::from_millis(500);

/// `keel produce`: one record per line of `input` (line ends removed). With `verbose`, each
/// record's partition and offset go to `log`. Fails with the first refused record, naming its
/// line.
pub async fn produce<R: AsyncBufRead + Unpin>(
    bootstrap: &[String],
    args: &ProduceArgs,
    verbose: bool,
    input: R,
    log: &mut impl Write,
) -> Result<(), CliError> {
    let options = ProducerOptions {
        acks: args.acks.into(),
        compression: args.compression,
        ..ProducerOptions::default()
    };
    let producer = Producer::connect(bootstrap, options).await?;
    // The topic (and partition) are checked before any input is read.
    let partitions = producer.partitions(&args.topic).await?;
    if let Some(p) = args.partition.filter(|p| *p >= partitions) {
        return Err(CliError::InvalidArgument(format!(
            "--partition {p}: topic {} has {partitions} partitions",
            args.topic
        )));
    }
    let result = send_lines(&producer, args, verbose, input, log).await;
    producer.close().await;
    result
}

async fn send_lines<R: AsyncBufRead + Unpin>(
    producer: &Producer,
    args: &ProduceArgs,
    verbose: bool,
    input: R,
    log: &mut impl Write,
) -> Result<(), CliError> {
    let mut lines = input.lines();
    let mut pending: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
    let mut number = 0;
    while let Some(line) = lines.next_line().await.map_err(io_error)? {
        number += 1;
        let record = record_of(args, number, &line)?;
        let delivery = producer
            .send(record)
            .await
            .map_err(|error| CliError::Record {
                line: number,
                error,
            })?;
        pending.push_back((number, delivery));
        if pending.len() >= MAX_PENDING {
            let (line, delivery) = pending.pop_front().expect("not empty");
            report(line, delivery, verbose, log).await?;
        }
    }
    for (line, delivery) in pending {
        report(line, delivery, verbose, log).await?;
    }
    Ok(())
}

/// The record of input line `number`.
fn record_of(args: &ProduceArgs, number: u64, line: &str) -> Result<ProducerRecord, CliError> {
    let (key, value) = match (&args.key, &args.key_separator) {
        (Some(key), _) => (Some(key.as_str()), line),
        (None, Some(sep)) => {
            let (key, value) = line.split_once(sep.as_str()).ok_or_else(|| {
                CliError::InvalidArgument(format!("line {number}: no key separator '{sep}'"))
            })?;
            (Some(key), value)
        }
        (None, None) => (None, line),
    };
    let mut record = ProducerRecord::new(&args.topic, value.to_string());
    record.key = key.map(|k| k.to_string().into());
    record.partition = args.partition;
    record.headers = args
        .headers
        .iter()
        .map(|(k, v)| Header::new(k.clone(), v.clone()))
        .collect();
    Ok(record)
}

/// Waits for one delivery; with `verbose`, logs where it went.
async fn report(
    line: u64,
    delivery: DeliveryFuture,
    verbose: bool,
    log: &mut impl Write,
) -> Result<(), CliError> {
    let written = delivery
        .await
        .map_err(|error| CliError::Record { line, error })?;
    if verbose {
        let offset = written
            .offset
            .map_or_else(|| "-".to_string(), |o| o.to_string());
        writeln!(
            log,
            "line {line}: {}/{} offset {offset}",
            written.topic, written.partition
        )
        .map_err(io_error)?;
    }
    Ok(())
}

/// `keel consume`: prints records to `out` until `--max-messages`, until `--timeout-ms`
/// passes without a record, or forever. A closed output (`| head`) ends it quietly.
pub async fn consume(
    bootstrap: &[String],
    args: &ConsumeArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if let Some(group) = &args.group {
        return consume_in_group(bootstrap, group, args, out).await;
    }
    let mut consumer = Consumer::connect(bootstrap, ConsumerOptions::default()).await?;
    match args.partition {
        Some(p) => {
            consumer
                .assign(&[TopicPartition::new(&args.topic, p)])
                .await?
        }
        None => {
            consumer.assign_topic(&args.topic).await?;
        }
    }
    if let Some(position) = start_position(args) {
        consumer.seek_all(position);
    }
    print_loop(&mut consumer, args, out).await
}

/// `consume --group`: the group assigns the partitions; after each printed batch the
/// offsets after the printed records are committed, so a restart goes on from there.
async fn consume_in_group(
    bootstrap: &[String],
    group: &str,
    args: &ConsumeArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut options = GroupOptions::new(group);
    options.auto_commit = false;
    options.client_id = "keel-cli".into();
    if args.from_beginning {
        options.consumer.auto_offset_reset = OffsetReset::Earliest;
    }
    let mut consumer = GroupConsumer::connect(bootstrap, options).await?;
    consumer.subscribe(Subscription::Topics(vec![args.topic.clone()]));
    let outcome = print_loop(&mut consumer, args, out).await;
    let closed = consumer.close().await;
    outcome.and(closed.map_err(CliError::from))
}

/// Where `consume` reads from: a plain consumer or a group member, which commits what was
/// printed.
trait Source {
    async fn poll(&mut self, wait: Duration) -> Result<Vec<ConsumerRecord>, keel_client::Error>;
    async fn printed(&mut self, records: &[ConsumerRecord]) -> Result<(), keel_client::Error>;
}

impl Source for Consumer {
    async fn poll(&mut self, wait: Duration) -> Result<Vec<ConsumerRecord>, keel_client::Error> {
        Consumer::poll(self, wait).await
    }

    async fn printed(&mut self, _: &[ConsumerRecord]) -> Result<(), keel_client::Error> {
        Ok(())
    }
}

impl Source for GroupConsumer {
    async fn poll(&mut self, wait: Duration) -> Result<Vec<ConsumerRecord>, keel_client::Error> {
        GroupConsumer::poll(self, wait).await
    }

    async fn printed(&mut self, records: &[ConsumerRecord]) -> Result<(), keel_client::Error> {
        self.commit_offsets(&next_offsets(records)).await
    }
}

/// Prints records until `--max-messages` or `--timeout-ms` says stop (or the reader of
/// stdout went away).
async fn print_loop(
    source: &mut impl Source,
    args: &ConsumeArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut printed = 0;
    let mut last_record = Instant::now();
    loop {
        let left = args.max_messages.map(|max| max - printed);
        if left == Some(0) || idle_limit.is_some_and(|limit| last_record.elapsed() >= limit) {
            return Ok(());
        }
        let wait = idle_limit.map_or(POLL, |limit| {
            limit.saturating_sub(last_record.elapsed()).min(POLL)
        });
        let records = source.poll(wait).await?;
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        let take = left.map_or(records.len(), |l| records.len().min(l as usize));
        match print_records(&records[..take], args.format, out) {
            Ok(()) => printed += take as u64,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(io_error(e)),
        }
        source.printed(&records[..take]).await?;
    }
}

/// For each partition among `records`, the offset after its last one.
fn next_offsets(records: &[ConsumerRecord]) -> Vec<(TopicPartition, i64)> {
    let mut next: std::collections::BTreeMap<TopicPartition, i64> = Default::default();
    for r in records {
        next.insert(TopicPartition::new(&r.topic, r.partition), r.offset + 1);
    }
    next.into_iter().collect()
}

/// Where `consume` starts; `None`: at the end (new records only), the consumer's default.
fn start_position(args: &ConsumeArgs) -> Option<Position> {
    if args.from_beginning {
        Some(Position::Beginning)
    } else if let Some(offset) = args.offset {
        Some(Position::Offset(offset))
    } else {
        args.from_timestamp.map(Position::Timestamp)
    }
}

fn print_records(
    records: &[ConsumerRecord],
    format: RecordFormat,
    out: &mut impl Write,
) -> io::Result<()> {
    for r in records {
        match format {
            RecordFormat::Text => writeln!(out, "{}", text(r.value.as_deref()))?,
            RecordFormat::Json => writeln!(out, "{}", record_json(r))?,
        }
    }
    out.flush()
}

/// Bytes as text: invalid UTF-8 becomes U+FFFD; a null is `null`, as Kafka's console
/// consumer prints it.
fn text(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(
        || "null".to_string(),
        |b| String::from_utf8_lossy(b).into_owned(),
    )
}

/// One record as a JSON object; key, value and header values are text (invalid UTF-8
/// replaced) or null.
fn record_json(r: &ConsumerRecord) -> serde_json::Value {
    let lossy = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": lossy(r.key.as_deref()),
        "value": lossy(r.value.as_deref()),
        "headers": r.headers.iter().map(|h| json!({
            "key": h.key,
            "value": lossy(h.value.as_deref()),
        })).collect::<Vec<_>>(),
    })
}

/// `keel offsets`.
pub async fn offsets(bootstrap: &[String], topic: &str) -> Result<Report, CliError> {
    let consumer = Consumer::connect(bootstrap, ConsumerOptions::default()).await?;
    let partitions = consumer.list_offsets(topic).await?;
    Ok(Report::Offsets(TopicOffsets {
        topic: topic.to_string(),
        partitions,
    }))
}

fn io_error(e: io::Error) -> CliError {
    CliError::Io(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{AcksArg, Args, Command};
    use bytes::Bytes;
    use clap::Parser;
    use keel_client::Compression;

    fn produce_args(argv: &[&str]) -> ProduceArgs {
        let args = Args::try_parse_from(["keel", "produce", "t"].iter().chain(argv)).unwrap();
        match args.command {
            Command::Produce(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_become_records_with_keys_headers_and_partition() {
        let args = produce_args(&["--key-separator", "::", "--header", "a=1", "-p", "2"]);
        assert_eq!(args.acks, AcksArg::All);
        assert_eq!(args.compression, Compression::None);
        let r = record_of(&args, 1, "k1::v::1").unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v::1"[..]));
        assert_eq!(r.partition, Some(2));
        assert_eq!(r.headers, vec![Header::new("a", "1")]);
        let err = record_of(&args, 7, "no separator").unwrap_err();
        assert_eq!(
            err.error_line(),
            "error: INVALID_ARGUMENT: line 7: no key separator '::'"
        );

        let args = produce_args(&["--key", "fixed"]);
        let r = record_of(&args, 1, "a=b").unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"fixed"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"a=b"[..]));
        let r = record_of(&produce_args(&[]), 1, "plain").unwrap();
        assert_eq!((r.key, r.partition), (None, None));
    }

    #[test]
    fn consumed_records_print_as_text_or_json() {
        let r = ConsumerRecord {
            topic: "t".into(),
            partition: 1,
            offset: 5,
            timestamp: 99,
            key: None,
            value: Some(Bytes::from_static(b"hi")),
            headers: vec![
                Header::new("h", "x"),
                Header {
                    key: "n".into(),
                    value: None,
                },
            ],
            leader_epoch: 0,
        };
        let mut out = Vec::new();
        print_records(std::slice::from_ref(&r), RecordFormat::Text, &mut out).unwrap();
        print_records(&[r], RecordFormat::Json, &mut out).unwrap();
        let printed = String::from_utf8(out).unwrap();
        let mut lines = printed.lines();
        assert_eq!(lines.next(), Some("hi"));
        let json: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(
            json,
            json!({"topic": "t", "partition": 1, "offset": 5, "timestamp": 99, "key": null,
                   "value": "hi", "headers": [{"key": "h", "value": "x"}, {"key": "n", "value": null}]})
        );
        assert_eq!(text(None), "null");
        assert_eq!(text(Some(&[0x66, 0xff])), "f\u{fffd}");
    }

    #[test]
    fn the_start_position_follows_the_flags() {
        let parse = |argv: &[&str]| {
            let args = Args::try_parse_from(["keel", "consume", "t"].iter().chain(argv)).unwrap();
            match args.command {
                Command::Consume(c) => start_position(&c),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&["--from-beginning"]), Some(Position::Beginning));
        assert_eq!(parse(&["--offset", "7"]), Some(Position::Offset(7)));
        assert_eq!(
            parse(&["--from-timestamp", "1700000000000"]),
            Some(Position::Timestamp(1_700_000_000_000))
        );
    }
}
