//! Decoding of fetched record batches. The consumer asks the broker for
//! `RECORD_FORMAT_RECORD_BATCHES`, so the broker sends the stored bytes as they are (one
//! `pread`, no per-record work) and the consumer does what Kafka's consumer does with them:
//! check each batch's CRC, decompress, walk the records, leave out control batches and the
//! records before the fetch offset (a batch is never split, so the first one may start
//! earlier). Record keys and values of uncompressed batches share the received buffer.

use bytes::Bytes;
use keel_batch::{self as batch, TimestampType};

use crate::{ApiError, ConsumerRecord, ErrorCode, Header};

/// Appends the records at or after `from` held in `data` (whole v2 batches back to back) to
/// `out`. A batch that fails its CRC or cannot be decoded fails the whole answer with
/// `CORRUPT_RECORD`, so the caller's position stays before it.
pub(crate) fn decode_into(
    topic: &str,
    partition: i32,
    data: &Bytes,
    from: i64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<(), ApiError> {
    let start = out.len();
    for one in batch::split(data) {
        let decoded = one
            .and_then(|b| batch::decode_shared(&data.slice_ref(b)))
            .map_err(|e| {
                out.truncate(start);
                corrupt(topic, partition, from, &e)
            })?;
        if decoded.header.is_control() {
            continue;
        }
        let append_time = decoded.header.timestamp_type() == TimestampType::LogAppendTime;
        let epoch = decoded.header.partition_leader_epoch;
        out.extend(
            decoded
                .records
                .into_iter()
                .filter(|r| r.offset >= from)
                .map(|r| ConsumerRecord {
                    topic: topic.to_string(),
                    partition,
                    offset: r.offset,
                    timestamp: match append_time {
                        true => decoded.header.max_timestamp,
                        false => r.timestamp,
                    },
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| Header {
                            key: h.key,
                            value: h.value,
                        })
                        .collect(),
                    leader_epoch: epoch,
                }),
        );
    }
    Ok(())
}

/// The smallest record a v2 batch can hold: a length, attributes, timestamp and offset
/// deltas, key and value lengths and a header count, one byte each.
const MIN_RECORD: usize = 7;

/// About how many records `data` holds, from its batch headers, for sizing the vector they
/// are decoded into (growing it record by record moved every record again and again). A
/// header's count is believed only as far as its batch's bytes could hold that many records,
/// so a corrupt or compressed batch cannot make the caller reserve more than `data` suggests.
pub(crate) fn record_count(data: &[u8]) -> usize {
    batch::split(data)
        .map_while(Result::ok)
        .filter_map(|one| {
            let header = batch::BatchHeader::parse(one).ok()?;
            let count = usize::try_from(header.record_count).ok()?;
            Some(count.min(one.len() / MIN_RECORD))
        })
        .sum()
}

fn corrupt(topic: &str, partition: i32, from: i64, e: &batch::BatchError) -> ApiError {
    ApiError::new(
        ErrorCode::CorruptRecord,
        format!("a record batch of {topic}-{partition} fetched from offset {from} is invalid: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use batch::{BatchParams, Compression, NewRecord};

    fn stored(base: i64, values: &[&str], codec: Compression) -> Vec<u8> {
        let records: Vec<NewRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                timestamp: 1_000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                headers: vec![batch::Header {
                    key: "h".into(),
                    value: None,
                }],
            })
            .collect();
        let params = BatchParams {
            compression: codec,
            ..BatchParams::default()
        };
        let mut b = batch::encode(&params, &records).unwrap().to_vec();
        batch::set_base_offset(&mut b, base).unwrap();
        batch::set_partition_leader_epoch(&mut b, 7).unwrap();
        b
    }

    fn values(out: &[ConsumerRecord]) -> Vec<(i64, String)> {
        out.iter()
            .map(|r| {
                let v = r.value.as_deref().unwrap_or_default();
                (r.offset, String::from_utf8_lossy(v).into_owned())
            })
            .collect()
    }

    #[test]
    fn records_before_the_fetch_offset_are_left_out_in_every_codec() {
        for codec in Compression::ALL {
            let mut data = stored(10, &["a", "b", "c"], codec);
            data.extend(stored(13, &["d"], codec));
            let mut out = Vec::new();
            decode_into("t", 2, &Bytes::from(data), 11, &mut out).unwrap();
            assert_eq!(
                values(&out),
                vec![(11, "b".into()), (12, "c".into()), (13, "d".into())],
                "{codec}"
            );
            let r = &out[0];
            assert_eq!((r.topic.as_str(), r.partition, r.leader_epoch), ("t", 2, 7));
            assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(r.timestamp, 1_001);
            assert_eq!(
                r.headers,
                vec![Header {
                    key: "h".into(),
                    value: None
                }]
            );
        }
    }

    #[test]
    fn record_count_sums_the_headers_but_not_past_what_the_bytes_could_hold() {
        let mut data = stored(0, &["a", "b", "c"], Compression::None);
        data.extend(stored(3, &["d", "e"], Compression::None));
        assert_eq!(record_count(&data), 5);
        // A header claiming a million records in a batch of a few dozen bytes.
        let mut lying = stored(5, &["f"], Compression::None);
        let count_at = 57;
        lying[count_at..count_at + 4].copy_from_slice(&1_000_000i32.to_be_bytes());
        let len = lying.len();
        data.extend(lying);
        assert_eq!(record_count(&data), 5 + len / MIN_RECORD);
        // A truncated tail adds nothing.
        assert_eq!(record_count(&data[..data.len() - 1]), 5);
    }

    #[test]
    fn control_batches_are_left_out() {
        let control = BatchParams {
            base_offset: 1,
            is_control: true,
            is_transactional: true,
            producer_id: 5,
            producer_epoch: 0,
            base_sequence: 0,
            ..BatchParams::default()
        };
        let marker = NewRecord {
            timestamp: 0,
            key: Some(Bytes::from_static(&[0, 0, 0, 0])),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            headers: vec![],
        };
        let mut data = stored(0, &["a"], Compression::None);
        data.extend(batch::encode(&control, &[marker]).unwrap());
        data.extend(stored(2, &["c"], Compression::None));
        let mut out = Vec::new();
        decode_into("t", 0, &Bytes::from(data), 0, &mut out).unwrap();
        assert_eq!(values(&out), vec![(0, "a".into()), (2, "c".into())]);
    }

    #[test]
    fn log_append_time_batches_give_every_record_the_append_time() {
        let mut b = stored(0, &["a", "b"], Compression::None);
        batch::set_log_append_time(&mut b, 99_000).unwrap();
        let mut out = Vec::new();
        decode_into("t", 0, &Bytes::from(b), 0, &mut out).unwrap();
        assert!(out.iter().all(|r| r.timestamp == 99_000), "{out:?}");
    }

    #[test]
    fn a_corrupt_batch_fails_the_answer_and_adds_nothing() {
        let mut data = stored(0, &["a"], Compression::None);
        let mut bad = stored(1, &["b"], Compression::None);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        data.extend(bad);
        let mut out = Vec::new();
        let e = decode_into("t", 0, &Bytes::from(data), 0, &mut out).unwrap_err();
        assert_eq!(e.code, ErrorCode::CorruptRecord);
        assert!(e.message.contains("t-0"), "{e}");
        assert!(out.is_empty());
    }
}
