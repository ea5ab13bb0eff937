//! `keel-client`'s producer and consumer against real `keeld` processes: routing to the
//! leaders of partitions spread over three brokers, a future per record with the right
//! partition and offset, keys on Kafka's murmur2 partition, order per partition with many
//! requests in flight, every codec through the broker and back, seeks (beginning, end, offset,
//! time), acks 0/1/all, the stream API, and refused input. Topics have one replica each
//! (replication for RF > 1 is being built separately).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use keel_client::{
    Acks, AdminClient, Compression, Consumer, ConsumerOptions, ConsumerRecord, Header, NewTopic,
    Position, Producer, ProducerOptions, ProducerRecord, TopicPartition,
};
use keel_tests::cluster::{Spec, TestCluster};

use crate::t10_quorum::{eventually, wait_unfenced, READY};

const POLL: Duration = Duration::from_secs(2);

pub(crate) fn bootstrap(c: &TestCluster) -> Vec<String> {
    c.ids()
        .iter()
        .map(|id| c.node(*id).client.to_string())
        .collect()
}

/// Creates `name` (RF 1) and waits until every partition's leader serves it.
pub(crate) async fn ready_topic(c: &TestCluster, name: &str, partitions: i32) {
    let admin = AdminClient::connect(&bootstrap(c)).await.expect("admin");
    let topic = NewTopic::new(name)
        .partitions(partitions)
        .replication_factor(1);
    eventually(READY, "topic created", async || {
        let created = admin
            .create_topics(std::slice::from_ref(&topic), false)
            .await
            .ok()?;
        match &created[0].error {
            None => Some(()),
            Some(e) if e.retriable || e.code_name() == "TOPIC_ALREADY_EXISTS" => None,
            Some(e) => panic!("{name}: {e}"),
        }
    })
    .await;
    let consumer = consumer(c, ConsumerOptions::default()).await;
    eventually(READY, "partitions served", async || {
        consumer.list_offsets(name).await.ok()
    })
    .await;
}

async fn producer(c: &TestCluster, options: ProducerOptions) -> Producer {
    Producer::connect(&bootstrap(c), options)
        .await
        .expect("producer connects")
}

async fn consumer(c: &TestCluster, options: ConsumerOptions) -> Consumer {
    Consumer::connect(&bootstrap(c), options)
        .await
        .expect("consumer connects")
}

/// Reads `n` records of `topic` from the beginning of every partition.
async fn read_all(c: &TestCluster, topic: &str, n: usize) -> Vec<ConsumerRecord> {
    let mut consumer = consumer(c, ConsumerOptions::default()).await;
    consumer.assign_topic(topic).await.expect("assign");
    consumer.seek_all(Position::Beginning);
    poll_n(&mut consumer, n).await
}

/// Polls until `n` records came (failing after a minute), then checks one more poll is empty.
async fn poll_n(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + READY;
    while got.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} records",
            got.len()
        );
        got.extend(consumer.poll(POLL).await.expect("poll"));
    }
    let extra = consumer
        .poll(Duration::from_millis(300))
        .await
        .expect("poll");
    assert!(extra.is_empty(), "more than {n} records: {extra:?}");
    got
}

fn by_partition(records: &[ConsumerRecord]) -> BTreeMap<i32, Vec<&ConsumerRecord>> {
    let mut map: BTreeMap<i32, Vec<&ConsumerRecord>> = BTreeMap::new();
    for r in records {
        map.entry(r.partition).or_default().push(r);
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_routes_to_leaders_keys_follow_murmur2_and_order_holds() {
    let c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    ready_topic(&c, "routes", 6).await;
    ready_topic(&c, "keyed", 7).await;
    ready_topic(&c, "ordered", 3).await;

    // The partitions of "routes" are led by more than one broker, so routing is exercised.
    let admin = AdminClient::connect(&bootstrap(&c)).await.unwrap();
    let meta = admin.metadata(&["routes".into()], false).await.unwrap();
    let leaders: BTreeSet<i32> = meta.topics[0]
        .partitions
        .iter()
        .filter_map(|p| p.leader)
        .collect();
    assert!(leaders.len() > 1, "leaders {leaders:?}");

    // Explicit partitions: every future names its partition and a dense offset.
    let p = producer(&c, ProducerOptions::default()).await;
    let mut deliveries = Vec::new();
    for i in 0..60 {
        let record = ProducerRecord::new("routes", format!("r{i}")).partition(i % 6);
        deliveries.push(p.send(record).await.expect("queued"));
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        let m = d.await.expect("delivered");
        assert_eq!(m.topic, "routes");
        assert_eq!(m.partition, i as i32 % 6);
        assert_eq!(m.offset, Some(i as i64 / 6), "record {i}");
    }
    let stored = read_all(&c, "routes", 60).await;
    for r in &stored {
        let i: i64 = String::from_utf8_lossy(r.value.as_deref().unwrap())[1..]
            .parse()
            .unwrap();
        assert_eq!((r.partition as i64, r.offset), (i % 6, i / 6));
    }

    // Keys land where Kafka's partitioner puts them: toPositive(murmur2(key)) % 7, with the
    // hashes from Kafka's UtilsTest.testMurmur2 (checked in client/src/partitioner.rs).
    let keys: [(&str, i32); 6] = [
        ("21", 3),
        ("foobar", 0),
        ("a-little-bit-long-string", 1),
        ("a-little-bit-longer-string", 0),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 3),
        ("abc", 4),
    ];
    let mut deliveries = Vec::new();
    for (key, _) in keys {
        let record = ProducerRecord::new("keyed", "v").key(key);
        deliveries.push(p.send(record).await.unwrap());
    }
    for ((key, want), d) in keys.iter().zip(deliveries) {
        assert_eq!(d.await.unwrap().partition, *want, "key {key}");
    }
    for r in read_all(&c, "keyed", keys.len()).await {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap()).into_owned();
        let want = keys.iter().find(|(k, _)| *k == key).unwrap().1;
        assert_eq!(r.partition, want, "stored partition of key {key}");
    }
    // Unkeyed records stick to one partition until a batch closes.
    let d = p
        .send(ProducerRecord::new("keyed", "no key"))
        .await
        .unwrap();
    assert!((0..7).contains(&d.await.unwrap().partition));
    p.close().await;

    // Order per partition with 5 requests in flight per broker and tiny batches: every
    // partition's records are stored in send order, at the offsets their futures named.
    let options = ProducerOptions {
        max_in_flight: 5,
        batch_size: 256,
        linger: Duration::ZERO,
        ..ProducerOptions::default()
    };
    let p = producer(&c, options).await;
    let mut deliveries = Vec::new();
    for i in 0..900u32 {
        let record = ProducerRecord::new("ordered", format!("{i:05}")).partition(i as i32 % 3);
        deliveries.push((i, p.send(record).await.unwrap()));
    }
    let mut offsets = BTreeMap::new();
    for (i, d) in deliveries {
        let m = d.await.unwrap();
        offsets.insert(i, (m.partition, m.offset.unwrap()));
    }
    p.close().await;
    let stored = read_all(&c, "ordered", 900).await;
    for (partition, records) in by_partition(&stored) {
        let values: Vec<u32> = records
            .iter()
            .map(|r| {
                String::from_utf8_lossy(r.value.as_deref().unwrap())
                    .parse()
                    .unwrap()
            })
            .collect();
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, sorted, "partition {partition} out of send order");
        assert_eq!(values.len(), 300);
        for r in records {
            let i: u32 = String::from_utf8_lossy(r.value.as_deref().unwrap())
                .parse()
                .unwrap();
            assert_eq!(offsets[&i], (r.partition, r.offset));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_and_the_consumer_seeks() {
    let c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;

    for codec in Compression::ALL {
        let topic = format!("codec-{codec}");
        ready_topic(&c, &topic, 2).await;
        let options = ProducerOptions {
            compression: codec,
            linger: Duration::from_millis(50),
            ..ProducerOptions::default()
        };
        let p = producer(&c, options).await;
        let mut sent = Vec::new();
        for i in 0..40 {
            let mut record = ProducerRecord::new(&topic, format!("{codec} value {i} ").repeat(20))
                .key(format!("k{i}"))
                .header("i", i.to_string())
                .timestamp(1_000_000 + i);
            record.headers.push(Header {
                key: "null".into(),
                value: None,
            });
            if i == 7 {
                record.value = None; // a tombstone
            }
            sent.push(record.clone());
            p.send(record).await.unwrap();
        }
        p.flush().await.unwrap();
        p.close().await;
        let got = read_all(&c, &topic, sent.len()).await;
        for r in &got {
            let i = String::from_utf8_lossy(&r.key.as_deref().unwrap()[1..])
                .parse::<usize>()
                .unwrap();
            let want = &sent[i];
            assert_eq!(r.value, want.value, "{codec} record {i}");
            assert_eq!(r.headers, want.headers, "{codec} record {i}");
            assert_eq!(r.timestamp, want.timestamp.unwrap());
        }
    }

    // Seeks on one partition holding ten records with timestamps 5000..5009.
    ready_topic(&c, "seeks", 1).await;
    let p = producer(&c, ProducerOptions::default()).await;
    for i in 0..10 {
        let record = ProducerRecord::new("seeks", format!("{i}")).timestamp(5000 + i);
        p.send(record).await.unwrap();
    }
    p.flush().await.unwrap();
    let tp = TopicPartition::new("seeks", 0);
    let mut reader = consumer(&c, ConsumerOptions::default()).await;
    reader.assign(std::slice::from_ref(&tp)).await.unwrap();
    let offsets = reader.list_offsets("seeks").await.unwrap();
    assert_eq!((offsets[0].earliest, offsets[0].latest), (0, 10));

    let first_offsets = async |consumer: &mut Consumer, position, n| {
        consumer.seek(&tp, position).unwrap();
        let got = poll_n(consumer, n).await;
        got.iter().map(|r| r.offset).collect::<Vec<_>>()
    };
    assert_eq!(
        first_offsets(&mut reader, Position::Beginning, 10).await,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        first_offsets(&mut reader, Position::Offset(4), 6).await,
        (4..10).collect::<Vec<_>>()
    );
    assert_eq!(
        first_offsets(&mut reader, Position::Timestamp(5007), 3).await,
        vec![7, 8, 9]
    );
    assert_eq!(reader.position(&tp), Some(10));
    // A time after every record, and the end: nothing now, then only new records.
    assert!(first_offsets(&mut reader, Position::Timestamp(99_999), 0)
        .await
        .is_empty());
    assert!(first_offsets(&mut reader, Position::End, 0)
        .await
        .is_empty());
    p.send(ProducerRecord::new("seeks", "late")).await.unwrap();
    p.flush().await.unwrap();
    let got = poll_n(&mut reader, 1).await;
    assert_eq!(got[0].offset, 10);
    assert_eq!(got[0].value.as_deref(), Some(&b"late"[..]));
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_streams_and_refusals_on_one_node() {
    let c = TestCluster::start(Spec {
        voters: 1,
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1]).await;
    ready_topic(&c, "acks", 1).await;

    for (acks, offset) in [
        (Acks::All, Some(0)),
        (Acks::Leader, Some(1)),
        (Acks::None, None),
    ] {
        let options = ProducerOptions {
            acks,
            ..ProducerOptions::default()
        };
        let p = producer(&c, options).await;
        let d = p.send(ProducerRecord::new("acks", "x")).await.unwrap();
        assert_eq!(d.await.unwrap().offset, offset, "{acks:?}");
        p.close().await;
    }

    // The stream yields every record, in order, then waits for more.
    let mut reader = consumer(&c, ConsumerOptions::default()).await;
    reader.assign_topic("acks").await.unwrap();
    reader.seek_all(Position::Beginning);
    let mut stream = Box::pin(reader.into_stream());
    for want in 0..3 {
        let r = stream.next().await.unwrap().unwrap();
        assert_eq!(r.offset, want);
    }
    let idle = tokio::time::timeout(Duration::from_millis(800), stream.next()).await;
    assert!(idle.is_err(), "no fourth record: {idle:?}");

    // Refused before anything is queued.
    let p = producer(&c, ProducerOptions::default()).await;
    let err = p
        .send(ProducerRecord::new("no-such-topic", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code_name(), "UNKNOWN_TOPIC_OR_PARTITION", "{err}");
    let err = p
        .send(ProducerRecord::new("acks", "x").partition(1))
        .await
        .unwrap_err();
    assert_eq!(err.code_name(), "INVALID_ARGUMENT", "{err}");
    // A record the broker refuses fails its own future, not the producer.
    let big = Bytes::from(vec![b'x'; 2 * 1024 * 1024]);
    let d = p.send(ProducerRecord::new("acks", big)).await.unwrap();
    let err = d.await.unwrap_err();
    assert_eq!(err.code_name(), "MESSAGE_TOO_LARGE", "{err}");
    let d = p.send(ProducerRecord::new("acks", "fine")).await.unwrap();
    assert_eq!(d.await.unwrap().offset, Some(3));
    p.close().await;

    let mut other = consumer(&c, ConsumerOptions::default()).await;
    let err = other.assign_topic("no-such-topic").await.unwrap_err();
    assert_eq!(err.code_name(), "UNKNOWN_TOPIC_OR_PARTITION");

    a_batch_corrupted_on_disk_fails_the_fetch_and_the_position_stays(&c).await;
}

/// The consumer checks the CRC of every batch it is served (the broker sends stored bytes as
/// they are): one byte flipped in a segment file reaches it as CORRUPT_RECORD, the other
/// partition's records still arrive, and the position does not move past the bad batch.
async fn a_batch_corrupted_on_disk_fails_the_fetch_and_the_position_stays(c: &TestCluster) {
    ready_topic(c, "crc", 2).await;
    let options = ProducerOptions {
        linger: Duration::from_millis(50),
        ..ProducerOptions::default()
    };
    let p = producer(c, options).await;
    for i in 0..10 {
        let record = ProducerRecord::new("crc", format!("value {i}")).partition(i % 2);
        p.send(record).await.unwrap();
    }
    p.flush().await.unwrap();
    p.close().await;

    let admin = AdminClient::connect(&bootstrap(c)).await.unwrap();
    let meta = admin.metadata(&["crc".into()], false).await.unwrap();
    let id = meta.topics[0].topic_id.expect("topic id");
    let hex: String = id.0.iter().map(|b| format!("{b:02x}")).collect();
    let segment = find_file(
        c.data_dir(1),
        &format!("{hex}-0"),
        "00000000000000000000.log",
    );
    // In place, as a failing disk would: the broker's open file sees the flipped byte.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let last = file.metadata().unwrap().len() - 1;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, last).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], last).unwrap();

    let mut reader = consumer(c, ConsumerOptions::default()).await;
    reader.assign_topic("crc").await.unwrap();
    reader.seek_all(Position::Beginning);
    let mut good = Vec::new();
    let err = loop {
        match reader.poll(POLL).await {
            Ok(records) => good.extend(records),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code_name(), "CORRUPT_RECORD", "{err}");
    assert!(err.to_string().contains("crc-0"), "{err}");
    let tp0 = TopicPartition::new("crc", 0);
    let before_bad = reader.position(&tp0).unwrap();
    assert!(
        before_bad < 5,
        "position {before_bad} moved past the bad batch"
    );
    assert!(good
        .iter()
        .all(|r| r.partition == 1 || r.offset < before_bad));
    // Asking again meets the same bad bytes: the error repeats and nothing moves.
    let again = loop {
        match reader.poll(POLL).await {
            Ok(records) => assert!(records.is_empty(), "{records:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(again.code_name(), "CORRUPT_RECORD", "{again}");
    assert_eq!(reader.position(&tp0), Some(before_bad));
    eventually(READY, "partition 1 read whole", async || {
        good.extend(
            reader
                .poll(Duration::from_millis(100))
                .await
                .unwrap_or_default(),
        );
        (good.iter().filter(|r| r.partition == 1).count() == 5).then_some(())
    })
    .await;
}

/// The path of the file `name` inside a folder called `folder`, anywhere below `root`.
fn find_file(root: &std::path::Path, folder: &str, name: &str) -> std::path::PathBuf {
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.ends_with(format!("{folder}/{name}")) {
                return path;
            }
        }
    }
    panic!("no {folder}/{name} below {}", root.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_leader_kill_with_client_retries() {
    let mut c = TestCluster::start(Spec::default());
    wait_unfenced(&c, 1, &[1, 2, 3]).await;
    let admin = AdminClient::connect(&bootstrap(&c)).await.expect("admin");
    let topic = NewTopic::new("retried").partitions(3).replication_factor(3);
    eventually(READY, "topic created", async || {
        let created = admin
            .create_topics(std::slice::from_ref(&topic), false)
            .await
            .ok()?;
        created[0].error.is_none().then_some(())
    })
    .await;
    let leader_of_0 = eventually(READY, "a leader of partition 0", async || {
        let m = admin.metadata(&["retried".into()], false).await.ok()?;
        m.topics[0]
            .partitions
            .iter()
            .find(|p| p.partition == 0)?
            .leader
    })
    .await as u32;

    // Sends continue while partition 0's leader is killed: the producer must refresh
    // metadata and retry on the new leader.
    let p = producer(&c, ProducerOptions::default()).await;
    let mut deliveries = Vec::new();
    for i in 0..600 {
        if i == 200 {
            c.kill(leader_of_0);
        }
        let record = ProducerRecord::new("retried", format!("v{i}")).partition(i % 3);
        deliveries.push((i, p.send(record).await.expect("queued")));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut acked = Vec::new();
    for (i, d) in deliveries {
        if let Ok(m) = d.await {
            acked.push((m.partition, m.offset.expect("offset"), format!("v{i}")));
        }
    }
    assert!(
        acked.len() >= 550,
        "only {} of 600 acknowledged",
        acked.len()
    );
    c.start_node(leader_of_0);

    // Everything below the high watermarks: the acknowledged records and any retried copies.
    let total: i64 = eventually(READY, "offsets of every partition", async || {
        let offsets = consumer(&c, ConsumerOptions::default())
            .await
            .list_offsets("retried")
            .await
            .ok()?;
        Some(offsets.iter().map(|p| p.latest - p.earliest).sum())
    })
    .await;
    let stored: BTreeMap<(i32, i64), String> = read_all(&c, "retried", total as usize)
        .await
        .into_iter()
        .map(|r| {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned();
            ((r.partition, r.offset), v)
        })
        .collect();
    for (partition, offset, value) in &acked {
        assert_eq!(
            stored.get(&(*partition, *offset)),
            Some(value),
            "acknowledged {value} at {partition}/{offset}"
        );
    }
    // Per partition, acknowledged records keep their send order.
    for part in 0..3 {
        let offsets: Vec<i64> = acked
            .iter()
            .filter(|(p, _, _)| *p == part)
            .map(|(_, o, _)| *o)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "partition {part}: {offsets:?}"
        );
    }
}

/// One broker leading six partitions with over 1 MiB each to give answers a fetch of more
/// than gRPC's default 4 MiB message limit: the consumer takes it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_answer_over_four_mib_from_one_broker_is_read() {
    let c = TestCluster::start(Spec {
        voters: 1,
        ..Spec::default()
    });
    wait_unfenced(&c, 1, &[1]).await;
    ready_topic(&c, "wide", 6).await;
    let p = producer(&c, ProducerOptions::default()).await;
    let value = Bytes::from(vec![b'v'; 60_000]);
    let mut deliveries = Vec::new();
    for partition in 0..6 {
        for _ in 0..20 {
            let record = ProducerRecord::new("wide", value.clone()).partition(partition);
            deliveries.push(p.send(record).await.expect("queued"));
        }
    }
    for d in deliveries {
        d.await.expect("written");
    }
    p.close().await;
    let records = read_all(&c, "wide", 120).await;
    let per_partition: Vec<usize> = by_partition(&records).values().map(Vec::len).collect();
    assert_eq!(per_partition, vec![20; 6]);
}
