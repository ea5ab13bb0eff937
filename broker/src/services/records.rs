//! Records between the wire and the record-batch codec: structured produce records into one v2
//! batch, raw produced bytes into checked batches, and stored batches into consumer records.

use bytes::{Bytes, BytesMut};
use keel_proto::v1 as pb;
use keel_storage::batch::{self, BatchParams, DecodedBatch, Header, NewRecord, TimestampType};
use keel_storage::Offset;

use crate::partitions::{PartitionError, TopicSettings};

/// One v2 batch from structured records. Records without a timestamp get `now`; with
/// LogAppendTime every record gets `now`, as Kafka's broker does. `idempotent_producer`
/// goes into the batch header (producer id, epoch, base sequence).
pub fn build_batch(
    records: &pb::ProducerRecords,
    settings: &TopicSettings,
    now: i64,
) -> Result<Bytes, PartitionError> {
    if records.records.is_empty() {
        return Err(PartitionError::InvalidRequest("records must not be empty"));
    }
    let new: Vec<NewRecord> = records
        .records
        .iter()
        .map(|r| new_record(r, settings.log_append_time, now))
        .collect();
    let params = BatchParams {
        timestamp_type: match settings.log_append_time {
            true => TimestampType::LogAppendTime,
            false => TimestampType::CreateTime,
        },
        ..BatchParams::default()
    };
    let params = match &records.idempotent_producer {
        None => params,
        Some(p) => BatchParams {
            producer_id: p.producer_id,
            producer_epoch: i16::try_from(p.producer_epoch)
                .map_err(|_| PartitionError::InvalidRequest("producer_epoch must be 0 to 32767"))?,
            base_sequence: p.base_sequence,
            ..params
        },
    };
    let built = batch::encode(&params, &new)?;
    // The same rules as for a raw batch (a producer id needs a base sequence, ...).
    batch::validate(&built, usize::MAX)?;
    Ok(built)
}

fn new_record(r: &pb::ProducerRecord, log_append_time: bool, now: i64) -> NewRecord {
    NewRecord {
        timestamp: match log_append_time {
            true => now,
            false => r.timestamp.unwrap_or(now),
        },
        key: r.key.clone(),
        value: r.value.clone(),
        headers: r
            .headers
            .iter()
            .map(|h| Header {
                key: h.key.clone(),
                value: h.value.clone(),
            })
            .collect(),
    }
}

/// Splits produced raw bytes into batches and checks every one (CRC, sizes, codec,
/// `max.message.bytes`) before any is appended, so a bad batch anywhere changes nothing.
/// A batch with a producer id must be the only one (Kafka's rule since produce v3): its
/// sequence check and its append are one step, which several batches would break.
pub fn check_raw(raw: &Bytes, max_message_bytes: usize) -> Result<Vec<Bytes>, PartitionError> {
    if raw.is_empty() {
        return Err(PartitionError::InvalidRequest("record_batches is empty"));
    }
    let mut out = Vec::new();
    let mut idempotent = false;
    for one in batch::split(raw) {
        let one = one?;
        let header = batch::validate(one, max_message_bytes)?;
        idempotent |= header.has_producer_id();
        out.push(raw.slice_ref(one));
    }
    if idempotent && out.len() > 1 {
        return Err(PartitionError::InvalidRequest(
            "a batch with a producer id must be the only batch of its partition",
        ));
    }
    Ok(out)
}

/// Gives checked raw batches the append time (topics with LogAppendTime); recomputes their
/// CRC, as Kafka does.
pub fn stamp_append_time(batches: Vec<Bytes>, now: i64) -> Result<Vec<Bytes>, PartitionError> {
    batches
        .into_iter()
        .map(|b| {
            let mut buf = BytesMut::from(&b[..]);
            batch::set_log_append_time(&mut buf, now)?;
            Ok(buf.freeze())
        })
        .collect()
}

/// Stored batches as structured records at or after `from`: control batches are left out, a
/// LogAppendTime batch's records carry its append time. Returns the records and the offset
/// after the last batch.
pub fn consumer_records(
    stored: &Bytes,
    from: Offset,
) -> Result<(Vec<pb::ConsumerRecord>, Option<Offset>), PartitionError> {
    let mut records = Vec::new();
    let mut next = None;
    for one in batch::split(stored) {
        // Record values share the read buffer instead of being copied out of it.
        let decoded = batch::decode_shared(&stored.slice_ref(one?))?;
        next = Some(decoded.header.last_offset() + 1);
        if decoded.header.is_control() {
            continue;
        }
        append_records(&mut records, &decoded, from);
    }
    Ok((records, next))
}

fn append_records(out: &mut Vec<pb::ConsumerRecord>, b: &DecodedBatch, from: Offset) {
    let timestamp_type = match b.header.timestamp_type() {
        TimestampType::LogAppendTime => pb::TimestampType::LogAppendTime,
        TimestampType::CreateTime => pb::TimestampType::CreateTime,
    };
    for r in b.records.iter().filter(|r| r.offset >= from) {
        out.push(pb::ConsumerRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            timestamp_type: timestamp_type as i32,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|h| pb::RecordHeader {
                    key: h.key.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            leader_epoch: b.header.partition_leader_epoch,
        });
    }
}

/// The offset after the last of stored batches, if any.
pub fn next_offset(stored: &[u8]) -> Option<Offset> {
    batch::split(stored)
        .filter_map(Result::ok)
        .filter_map(|b| batch::BatchHeader::parse(b).ok())
        .map(|h| h.last_offset() + 1)
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::v1::ErrorCode;

    fn record(key: &str, value: Option<&str>, ts: Option<i64>) -> pb::ProducerRecord {
        pb::ProducerRecord {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![
                pb::RecordHeader {
                    key: "h".into(),
                    value: Some(Bytes::from_static(b"1")),
                },
                pb::RecordHeader {
                    key: "null".into(),
                    value: None,
                },
            ],
            timestamp: ts,
        }
    }

    fn settings() -> TopicSettings {
        TopicSettings::from_configs(&Default::default())
    }

    #[test]
    fn structured_records_round_trip_through_a_batch() {
        let recs = pb::ProducerRecords {
            records: vec![record("a", Some("x"), Some(5)), record("b", None, None)],
            idempotent_producer: None,
        };
        let built = build_batch(&recs, &settings(), 99).unwrap();
        batch::validate(&built, 1 << 20).unwrap();
        let (out, next) = consumer_records(&built, 0).unwrap();
        assert_eq!(next, Some(2));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].key.as_deref(), Some(&b"a"[..]));
        assert_eq!(out[0].value.as_deref(), Some(&b"x"[..]));
        assert_eq!(out[0].timestamp, 5);
        assert_eq!(out[0].headers.len(), 2);
        assert_eq!(out[0].headers[1].value, None);
        assert_eq!(out[1].value, None, "a null value stays null");
        assert_eq!(
            out[1].timestamp, 99,
            "a missing timestamp is the broker's now"
        );
        assert_eq!(out[1].offset, 1);
        assert_eq!(out[1].timestamp_type, pb::TimestampType::CreateTime as i32);
        // Records before `from` are skipped; the batch still moves the next offset.
        let (tail, _) = consumer_records(&built, 1).unwrap();
        assert_eq!(tail.len(), 1);
    }

    #[test]
    fn log_append_time_replaces_producer_timestamps() {
        let mut s = settings();
        s.log_append_time = true;
        let recs = pb::ProducerRecords {
            records: vec![record("a", Some("x"), Some(5))],
            idempotent_producer: None,
        };
        let (out, _) = consumer_records(&build_batch(&recs, &s, 1234).unwrap(), 0).unwrap();
        assert_eq!(out[0].timestamp, 1234);
        assert_eq!(
            out[0].timestamp_type,
            pb::TimestampType::LogAppendTime as i32
        );
    }

    #[test]
    fn empty_structured_produces_are_refused() {
        let empty = pb::ProducerRecords::default();
        let e = build_batch(&empty, &settings(), 0).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRequest);
    }

    #[test]
    fn structured_idempotent_produces_carry_the_producer_fields() {
        let mut idem = pb::ProducerRecords {
            records: vec![record("a", None, None), record("b", None, None)],
            idempotent_producer: Some(pb::IdempotentProducer {
                producer_id: 7,
                producer_epoch: 3,
                base_sequence: 40,
            }),
        };
        let h = batch::validate(&build_batch(&idem, &settings(), 0).unwrap(), 1 << 20).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 3, 40)
        );
        idem.idempotent_producer = Some(pb::IdempotentProducer {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: -1,
        });
        let e = build_batch(&idem, &settings(), 0).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRecord);
    }

    fn raw(n: usize) -> Bytes {
        let recs = pb::ProducerRecords {
            records: (0..n)
                .map(|i| record(&i.to_string(), Some("v"), Some(1)))
                .collect(),
            idempotent_producer: None,
        };
        build_batch(&recs, &settings(), 0).unwrap()
    }

    #[test]
    fn raw_batches_are_split_and_each_is_checked() {
        let two = [raw(2), raw(3)].concat();
        let checked = check_raw(&Bytes::from(two.clone()), 1 << 20).unwrap();
        assert_eq!(checked.len(), 2);
        assert_eq!(
            next_offset(&two),
            Some(3),
            "second batch's own offsets: 0..3"
        );

        let mut corrupt = two.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let e = check_raw(&Bytes::from(corrupt), 1 << 20).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CorruptRecord);

        let cut = Bytes::from(two[..two.len() - 3].to_vec());
        assert_eq!(
            check_raw(&cut, 1 << 20).unwrap_err().code(),
            ErrorCode::CorruptRecord
        );

        let e = check_raw(&raw(1), 20).unwrap_err();
        assert_eq!(e.code(), ErrorCode::MessageTooLarge);
        assert_eq!(
            check_raw(&Bytes::new(), 100).unwrap_err().code(),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn stamping_append_time_keeps_the_batch_valid() {
        let stamped = stamp_append_time(vec![raw(2)], 777).unwrap();
        batch::validate(&stamped[0], 1 << 20).unwrap();
        let (out, _) = consumer_records(&stamped[0], 0).unwrap();
        assert!(out.iter().all(|r| r.timestamp == 777));
    }
}
