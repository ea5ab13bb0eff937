use bytes::Bytes;
use proptest::prelude::*;

use super::*;

/// Parses hex digits, ignoring whitespace.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

/// Rewrites batchLength and the CRC after a test edited a batch on purpose.
fn reseal(buf: &mut [u8]) {
    let len = (buf.len() - LOG_OVERHEAD) as i32;
    buf[BATCH_LENGTH_POS..PARTITION_LEADER_EPOCH_POS].copy_from_slice(&len.to_be_bytes());
    write_crc(buf);
}

/// A sealed batch around an arbitrary records section.
fn batch_around(attributes: i16, record_count: i32, records: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; HEADER_LEN];
    buf.extend_from_slice(records);
    let header = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: MAGIC_V2,
        crc: 0,
        attributes,
        last_offset_delta: record_count - 1,
        base_timestamp: 1_000,
        max_timestamp: 1_000,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count,
    };
    header.write(&mut buf);
    reseal(&mut buf);
    buf
}

fn text(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Known byte vectors
// ---------------------------------------------------------------------------------------------

/// Two records from an idempotent producer, written out by hand from the published v2 layout
/// (kafka.apache.org/documentation/#recordbatch and DefaultRecordBatch/DefaultRecord).
///
/// The CRC was computed outside this code base with a bitwise CRC-32C (reflected polynomial
/// 0x82F63B78, init and xorout 0xFFFFFFFF; it gives 0xE3069283 for "123456789", the standard
/// check value) over bytes 21..82, i.e. from attributes to the end:
///
/// ```python
/// def crc32c(data):
///     crc = 0xFFFFFFFF
///     for b in data:
///         crc ^= b
///         for _ in range(8):
///             crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
///     return crc ^ 0xFFFFFFFF
/// crc32c(bytes.fromhex("0000 00000001 0000018bcfe56800 0000018bcfe56805 000000000000002a"
///                      "0003 00000011 00000002 100000000104686900 16000a02026b010202610262"))
/// # -> 0xe23e1bfc.  Covering partitionLeaderEpoch and magic as well would give 0x948e61a9.
/// ```
fn keel_vector() -> Vec<u8> {
    hex(concat!(
        "0000000000000000", // baseOffset 0
        "00000046",         // batchLength 70 = 82 - 12
        "ffffffff",         // partitionLeaderEpoch -1 (not yet assigned)
        "02",               // magic 2
        "e23e1bfc",         // crc, see above
        "0000",             // attributes: no codec, CreateTime, not transactional, not control
        "00000001",         // lastOffsetDelta 1
        "0000018bcfe56800", // baseTimestamp 1_700_000_000_000
        "0000018bcfe56805", // maxTimestamp 1_700_000_000_005
        "000000000000002a", // producerId 42
        "0003",             // producerEpoch 3
        "00000011",         // baseSequence 17
        "00000002",         // recordCount 2
        // record 0
        "10",   // length 8 (zigzag 16)
        "00",   // attributes
        "00",   // timestampDelta 0
        "00",   // offsetDelta 0
        "01",   // keyLength -1: null key
        "04",   // valueLength 2
        "6869", // value "hi"
        "00",   // header count 0
        // record 1
        "16", // length 11 (zigzag 22)
        "00", // attributes
        "0a", // timestampDelta 5 (zigzag 10)
        "02", // offsetDelta 1
        "02", // keyLength 1
        "6b", // key "k"
        "01", // valueLength -1: null value
        "02", // header count 1
        "02", // header key length 1
        "61", // header key "a"
        "02", // header value length 1
        "62", // header value "b"
    ))
}

fn keel_vector_input() -> (BatchParams, Vec<NewRecord>) {
    let params = BatchParams {
        producer_id: 42,
        producer_epoch: 3,
        base_sequence: 17,
        ..BatchParams::default()
    };
    let records = vec![
        NewRecord {
            timestamp: 1_700_000_000_000,
            key: None,
            value: text("hi"),
            headers: vec![],
        },
        NewRecord {
            timestamp: 1_700_000_000_005,
            key: text("k"),
            value: None,
            headers: vec![Header {
                key: "a".to_owned(),
                value: text("b"),
            }],
        },
    ];
    (params, records)
}

#[test]
fn encode_matches_hand_written_vector() {
    let (params, records) = keel_vector_input();
    let encoded = encode(&params, &records).expect("encode");
    assert_eq!(encoded.len(), 82);
    assert_eq!(&encoded[..], &keel_vector()[..]);
}

#[test]
fn decode_reads_hand_written_vector() {
    let buf = keel_vector();
    let header = validate(&buf, 1 << 20).expect("valid");
    assert_eq!(
        header,
        BatchHeader {
            base_offset: 0,
            batch_length: 70,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0xe23e_1bfc,
            attributes: 0,
            last_offset_delta: 1,
            base_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_005,
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 17,
            record_count: 2,
        }
    );
    let decoded = decode(&buf).expect("decode");
    assert_eq!(decoded.header, header);
    assert_eq!(
        decoded.records,
        vec![
            Record {
                offset: 0,
                timestamp: 1_700_000_000_000,
                key: None,
                value: text("hi"),
                headers: vec![],
            },
            Record {
                offset: 1,
                timestamp: 1_700_000_000_005,
                key: text("k"),
                value: None,
                headers: vec![Header {
                    key: "a".to_owned(),
                    value: text("b"),
                }],
            },
        ]
    );
}

/// A batch written by a real Kafka 3.x broker: the first batch of a KRaft
/// `__cluster_metadata-0/00000000000000000000.log` (a FeatureLevelRecord setting
/// metadata.version to 20), as dumped in CodeCrafters' "Build your own Kafka" material
/// (github.com/codecrafters-io/build-your-own-kafka). Independently of this code, the bitwise
/// CRC-32C above over its bytes 21..91 gives 0xb069457c, the stored value.
fn kafka_vector() -> Vec<u8> {
    hex(concat!(
        "0000000000000000",                 // baseOffset 0
        "0000004f",                         // batchLength 79 = 91 - 12
        "00000001",                         // partitionLeaderEpoch 1
        "02",                               // magic 2
        "b069457c",                         // crc
        "0000",                             // attributes
        "00000000",                         // lastOffsetDelta 0
        "00000191e05af818",                 // baseTimestamp 1_726_045_943_832
        "00000191e05af818",                 // maxTimestamp
        "ffffffffffffffff",                 // producerId -1
        "ffff",                             // producerEpoch -1
        "ffffffff",                         // baseSequence -1
        "00000001",                         // recordCount 1
        "3a",                               // record length 29
        "00",                               // attributes
        "00",                               // timestampDelta 0
        "00",                               // offsetDelta 0
        "01",                               // keyLength -1: null key
        "2e",                               // valueLength 23
        "010c0011", // value: frame version 1, type 12, version 0, name length 16 + 1
        "6d657461646174612e76657273696f6e", // "metadata.version"
        "001400",   // feature level 20, no tagged fields
        "00",       // header count 0
    ))
}

fn kafka_vector_value() -> Bytes {
    let mut v = hex("010c0011");
    v.extend_from_slice(b"metadata.version");
    v.extend_from_slice(&hex("001400"));
    Bytes::from(v)
}

#[test]
fn decode_reads_kafka_written_batch() {
    let buf = kafka_vector();
    let header = validate(&buf, 1 << 20).expect("valid");
    assert_eq!(header.partition_leader_epoch, 1);
    assert_eq!(header.crc, 0xb069_457c);
    assert_eq!(header.base_timestamp, 1_726_045_943_832);
    assert!(!header.has_producer_id());
    let decoded = decode(&buf).expect("decode");
    assert_eq!(
        decoded.records,
        vec![Record {
            offset: 0,
            timestamp: 1_726_045_943_832,
            key: None,
            value: Some(kafka_vector_value()),
            headers: vec![],
        }]
    );
}

#[test]
fn encode_reproduces_kafka_written_batch() {
    let params = BatchParams {
        partition_leader_epoch: 1,
        ..BatchParams::default()
    };
    let records = [NewRecord {
        timestamp: 1_726_045_943_832,
        key: None,
        value: Some(kafka_vector_value()),
        headers: vec![],
    }];
    let encoded = encode(&params, &records).expect("encode");
    assert_eq!(&encoded[..], &kafka_vector()[..]);
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

fn opt_bytes(max: usize) -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from))
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(NO_TIMESTAMP),
        Just(0i64),
        Just(i64::MAX),
        1_600_000_000_000i64..1_800_000_000_000,
        0i64..i64::MAX,
    ]
}

fn new_record() -> impl Strategy<Value = NewRecord> {
    let header = ("\\PC{0,12}", opt_bytes(24)).prop_map(|(key, value)| Header { key, value });
    (
        timestamp(),
        opt_bytes(80),
        opt_bytes(200),
        proptest::collection::vec(header, 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| NewRecord {
            timestamp,
            key,
            value,
            headers,
        })
}

fn producer() -> impl Strategy<Value = (i64, i16, i32)> {
    prop_oneof![
        Just((-1i64, -1i16, -1i32)),
        (0i64..=i64::MAX, 0i16..=i16::MAX, 0i32..=i32::MAX),
    ]
}

fn params() -> impl Strategy<Value = BatchParams> {
    (
        any::<i64>(),
        any::<i32>(),
        proptest::sample::select(Compression::ALL.to_vec()),
        any::<bool>(),
        producer(),
        any::<bool>(),
    )
        .prop_map(
            |(base_offset, epoch, compression, log_append, (pid, pepoch, seq), txn)| BatchParams {
                base_offset,
                partition_leader_epoch: epoch,
                compression,
                timestamp_type: if log_append {
                    TimestampType::LogAppendTime
                } else {
                    TimestampType::CreateTime
                },
                producer_id: pid,
                producer_epoch: pepoch,
                base_sequence: seq,
                is_transactional: txn,
                is_control: false,
            },
        )
}

fn check_round_trip(
    params: &BatchParams,
    input: &[NewRecord],
    buf: &[u8],
) -> Result<(), TestCaseError> {
    let header = validate(buf, buf.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(header.base_offset, params.base_offset);
    prop_assert_eq!(header.partition_leader_epoch, params.partition_leader_epoch);
    prop_assert_eq!(header.compression().ok(), Some(params.compression));
    prop_assert_eq!(header.timestamp_type(), params.timestamp_type);
    prop_assert_eq!(header.is_transactional(), params.is_transactional);
    prop_assert!(!header.is_control());
    prop_assert_eq!(header.producer_id, params.producer_id);
    prop_assert_eq!(header.producer_epoch, params.producer_epoch);
    prop_assert_eq!(header.base_sequence, params.base_sequence);
    prop_assert_eq!(header.record_count as usize, input.len());
    prop_assert_eq!(header.last_offset_delta as usize, input.len() - 1);
    prop_assert_eq!(header.base_timestamp, input[0].timestamp);
    let max = input
        .iter()
        .map(|r| r.timestamp)
        .max()
        .unwrap_or(NO_TIMESTAMP);
    prop_assert_eq!(header.max_timestamp, max);
    prop_assert_eq!(header.total_len(), buf.len());

    let decoded = decode(buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let shared = decode_shared(&Bytes::copy_from_slice(buf))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&shared, &decoded, "decode_shared reads what decode reads");
    prop_assert_eq!(decoded.header, header);
    prop_assert_eq!(decoded.records.len(), input.len());
    for (i, (got, want)) in decoded.records.iter().zip(input).enumerate() {
        prop_assert_eq!(got.offset, params.base_offset.wrapping_add(i as i64));
        let timestamp = match params.timestamp_type {
            TimestampType::CreateTime => want.timestamp,
            TimestampType::LogAppendTime => max,
        };
        prop_assert_eq!(got.timestamp, timestamp);
        prop_assert_eq!(&got.key, &want.key);
        prop_assert_eq!(&got.value, &want.value);
        prop_assert_eq!(&got.headers, &want.headers);
    }
    Ok(())
}

proptest! {
    #[test]
    fn round_trip(
        params in params(),
        records in proptest::collection::vec(new_record(), 1..8),
    ) {
        let buf = encode(&params, &records).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_round_trip(&params, &records, &buf)?;
    }

    #[test]
    fn stamping_changes_only_the_stamped_fields(
        params in params(),
        records in proptest::collection::vec(new_record(), 1..4),
        base_offset in any::<i64>(),
        epoch in any::<i32>(),
    ) {
        let mut buf = encode(&params, &records).map_err(|e| TestCaseError::fail(e.to_string()))?.to_vec();
        let before = validate(&buf, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        set_base_offset(&mut buf, base_offset).map_err(|e| TestCaseError::fail(e.to_string()))?;
        set_partition_leader_epoch(&mut buf, epoch).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let after = validate(&buf, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(after, BatchHeader { base_offset, partition_leader_epoch: epoch, ..before });
        let stamped = BatchParams { base_offset, partition_leader_epoch: epoch, ..params };
        check_round_trip(&stamped, &records, &buf)?;
    }

    #[test]
    fn log_append_time_stamps_every_record(
        params in params(),
        records in proptest::collection::vec(new_record(), 1..4),
        append_time in 0i64..=i64::MAX,
    ) {
        let mut buf = encode(&params, &records).map_err(|e| TestCaseError::fail(e.to_string()))?.to_vec();
        let before = validate(&buf, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        set_log_append_time(&mut buf, append_time).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let after = validate(&buf, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(after.timestamp_type(), TimestampType::LogAppendTime);
        prop_assert_eq!(
            after,
            BatchHeader {
                attributes: before.attributes | 0x08,
                max_timestamp: append_time,
                crc: after.crc,
                ..before
            }
        );
        let decoded = decode(&buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(decoded.records.iter().all(|r| r.timestamp == append_time));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = BatchHeader::parse(&bytes);
        let _ = validate(&bytes, usize::MAX);
        let _ = decode(&bytes);
    }

    /// Sealed with a valid header, arbitrary bytes get past the CRC into the codecs and the
    /// record parser.
    #[test]
    fn decode_never_panics_on_sealed_garbage(
        codec in 0i16..8,
        flags in any::<i16>(),
        count in -2i32..6,
        records in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let buf = batch_around((flags & !0x07) | codec, count, &records);
        let _ = validate(&buf, usize::MAX);
        let _ = decode_with_limit(&buf, 1 << 16);
    }

    /// Corrupting a real compressed stream reaches deeper into each decompressor than random
    /// bytes do.
    #[test]
    fn decode_never_panics_on_corrupted_streams(
        params in params(),
        records in proptest::collection::vec(new_record(), 1..4),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut buf = encode(&params, &records).map_err(|e| TestCaseError::fail(e.to_string()))?.to_vec();
        let body = buf.len() - HEADER_LEN;
        for (at, xor) in flips {
            buf[HEADER_LEN + at.index(body)] ^= xor;
        }
        reseal(&mut buf);
        let _ = decode_with_limit(&buf, 1 << 16);
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn every_flipped_byte_under_the_crc_is_caught() {
    let good = keel_vector();
    for pos in CRC_POS..good.len() {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        assert!(
            matches!(validate(&bad, 1 << 20), Err(BatchError::CrcMismatch { .. })),
            "flip at {pos}"
        );
        assert!(matches!(decode(&bad), Err(BatchError::CrcMismatch { .. })));
    }
    // The fields the broker stamps are outside the CRC by design.
    for pos in (BASE_OFFSET_POS..BATCH_LENGTH_POS).chain(PARTITION_LEADER_EPOCH_POS..MAGIC_POS) {
        let mut stamped = good.clone();
        stamped[pos] ^= 0x01;
        assert!(validate(&stamped, 1 << 20).is_ok(), "flip at {pos}");
    }
    let mut bad = good.clone();
    bad[MAGIC_POS] = 1;
    assert!(matches!(
        validate(&bad, 1 << 20),
        Err(BatchError::BadMagic { magic: 1 })
    ));
}

#[test]
fn crc_mismatch_message_names_both_values() {
    let mut bad = keel_vector();
    bad[HEADER_LEN] ^= 0xff;
    let err = validate(&bad, 1 << 20).expect_err("corrupt");
    let computed = crc32c::crc32c(&bad[ATTRIBUTES_POS..]);
    assert_eq!(
        err.to_string(),
        format!("record batch CRC mismatch: stored 0xe23e1bfc, computed {computed:#010x}")
    );
}

#[test]
fn truncated_or_extended_buffers_are_refused() {
    let good = keel_vector();
    for len in 0..HEADER_LEN {
        assert!(matches!(
            validate(&good[..len], 1 << 20),
            Err(BatchError::TooShort { len: l }) if l == len
        ));
        assert!(matches!(
            decode(&good[..len]),
            Err(BatchError::TooShort { .. })
        ));
    }
    for len in HEADER_LEN..good.len() {
        assert!(matches!(
            validate(&good[..len], 1 << 20),
            Err(BatchError::LengthMismatch { declared: 82, actual }) if actual == len
        ));
        assert!(matches!(
            decode(&good[..len]),
            Err(BatchError::LengthMismatch { .. })
        ));
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(
        validate(&longer, 1 << 20),
        Err(BatchError::LengthMismatch {
            declared: 82,
            actual: 83
        })
    ));
    let mut negative = good.clone();
    negative[BATCH_LENGTH_POS..PARTITION_LEADER_EPOCH_POS].copy_from_slice(&(-5i32).to_be_bytes());
    assert!(matches!(
        BatchHeader::parse(&negative),
        Err(BatchError::BadBatchLength { batch_length: -5 })
    ));
}

#[test]
fn unknown_codecs_are_refused() {
    for code in 5..=7u8 {
        let mut buf = keel_vector();
        buf[ATTRIBUTES_POS + 1] |= code;
        reseal(&mut buf);
        assert!(matches!(
            validate(&buf, 1 << 20),
            Err(BatchError::UnknownCompression { code: c }) if c == code
        ));
        assert!(matches!(
            decode(&buf),
            Err(BatchError::UnknownCompression { code: c }) if c == code
        ));
        // parse() stays usable for walking a segment; the accessor reports the problem.
        let header = BatchHeader::parse(&buf).expect("header");
        assert!(header.compression().is_err());
    }
}

#[test]
fn too_large_batches_are_refused() {
    let buf = keel_vector();
    assert!(validate(&buf, buf.len()).is_ok());
    let err = validate(&buf, buf.len() - 1).expect_err("too large");
    assert!(matches!(err, BatchError::TooLarge { size: 82, max: 81 }));
    assert_eq!(
        err.to_string(),
        "record batch of 82 bytes exceeds the maximum of 81 bytes (max.message.bytes)"
    );
}

#[test]
fn empty_batches() {
    assert!(matches!(
        encode(&BatchParams::default(), &[]),
        Err(BatchError::EmptyBatch)
    ));
    // What compaction can leave behind: a header with no records.
    let empty = batch_around(0, 0, &[]);
    assert!(matches!(
        validate(&empty, 1 << 20),
        Err(BatchError::EmptyBatch)
    ));
    let decoded = decode(&empty).expect("a compacted log may hold empty batches");
    assert!(decoded.records.is_empty());
    let empty_zstd = batch_around(Compression::Zstd.code().into(), 0, &[]);
    assert!(decode(&empty_zstd).expect("empty").records.is_empty());

    let negative = batch_around(0, -1, &[]);
    assert!(matches!(
        validate(&negative, 1 << 20),
        Err(BatchError::NegativeRecordCount { record_count: -1 })
    ));
    assert!(matches!(
        decode(&negative),
        Err(BatchError::NegativeRecordCount { record_count: -1 })
    ));
}

#[test]
fn produce_checks_mirror_kafka_client_checks() {
    let mut buf = keel_vector();
    buf[LAST_OFFSET_DELTA_POS..BASE_TIMESTAMP_POS].copy_from_slice(&5i32.to_be_bytes());
    reseal(&mut buf);
    assert!(matches!(
        validate(&buf, 1 << 20),
        Err(BatchError::OffsetDeltaMismatch {
            record_count: 2,
            last_offset_delta: 5
        })
    ));
    // A compacted batch may keep a lastOffsetDelta beyond its records; decode accepts it.
    assert!(decode(&buf).is_ok());

    let (params, records) = keel_vector_input();
    let control = encode(
        &BatchParams {
            is_control: true,
            ..params
        },
        &records,
    )
    .expect("encode");
    assert!(matches!(
        validate(&control, 1 << 20),
        Err(BatchError::ControlBatch)
    ));
    assert!(decode(&control).expect("decode").header.is_control());

    let no_sequence = encode(
        &BatchParams {
            base_sequence: -1,
            ..params
        },
        &records,
    )
    .expect("encode");
    assert!(matches!(
        validate(&no_sequence, 1 << 20),
        Err(BatchError::InvalidSequence {
            producer_id: 42,
            base_sequence: -1
        })
    ));
}

#[test]
fn timestamps_below_minus_one_are_refused_by_encode() {
    let record = |timestamp| NewRecord {
        timestamp,
        ..NewRecord::default()
    };
    assert!(matches!(
        encode(&BatchParams::default(), &[record(5), record(-2)]),
        Err(BatchError::InvalidTimestamp { timestamp: -2 })
    ));
    let buf = encode(&BatchParams::default(), &[record(5), record(-1)]).expect("-1 is none");
    let decoded = decode(&buf).expect("decode");
    assert_eq!(decoded.header.max_timestamp, 5);
    assert_eq!(decoded.records[1].timestamp, -1);
}

#[test]
fn garbage_inside_a_compressed_payload_is_an_error() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let buf = batch_around(codec.code().into(), 1, &[0x13; 40]);
        // validate() does not decompress: garbage under a sound CRC passes it.
        assert!(validate(&buf, 1 << 20).is_ok());
        assert!(
            matches!(
                decode(&buf),
                Err(BatchError::Decompression { codec: c, .. }) if c == codec
            ),
            "{codec}"
        );
    }
}

#[test]
fn decompression_is_capped() {
    let records = [NewRecord {
        timestamp: 0,
        value: Some(Bytes::from(vec![0u8; 1 << 20])),
        ..NewRecord::default()
    }];
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let params = BatchParams {
            compression: codec,
            ..BatchParams::default()
        };
        let buf = encode(&params, &records).expect("encode");
        assert!(buf.len() < 64 * 1024, "{codec}: {} bytes", buf.len());
        assert!(matches!(
            decode_with_limit(&buf, 64 * 1024),
            Err(BatchError::DecompressedTooLarge { limit: 65536, .. })
        ));
        assert_eq!(
            decode(&buf).expect("decode").records[0].value,
            records[0].value
        );
    }
}

/// In the hand-written vector record 0 starts at byte 61 and record 1 at byte 70.
const RECORD1_POS: usize = HEADER_LEN + 9;

#[test]
fn record_framing_is_checked() {
    let good = keel_vector();

    let mut longer = good.clone();
    longer[HEADER_LEN] = 0x12; // record 0 claims 9 bytes; its fields take 8
    reseal(&mut longer);
    assert!(matches!(
        decode(&longer),
        Err(BatchError::RecordLengthMismatch {
            index: 0,
            declared: 9,
            actual: 8
        })
    ));

    let mut shorter = good.clone();
    shorter[HEADER_LEN] = 0x0e; // record 0 claims 7 bytes: the header count falls outside
    reseal(&mut shorter);
    assert!(matches!(
        decode(&shorter),
        Err(BatchError::Truncated {
            field: "record header count"
        })
    ));

    let mut too_long = good.clone();
    too_long[RECORD1_POS] = 0x7e; // record 1 claims 63 bytes, more than the batch holds
    reseal(&mut too_long);
    assert!(matches!(
        decode(&too_long),
        Err(BatchError::BadLength {
            field: "record",
            len: 63
        })
    ));

    let mut trailing = good.clone();
    trailing.push(0);
    reseal(&mut trailing);
    assert!(matches!(
        decode(&trailing),
        Err(BatchError::TrailingBytes { len: 1 })
    ));

    let mut more = good.clone();
    more[RECORD_COUNT_POS..HEADER_LEN].copy_from_slice(&3i32.to_be_bytes());
    reseal(&mut more);
    assert!(matches!(
        decode(&more),
        Err(BatchError::RecordCountMismatch {
            declared: 3,
            actual: 2
        })
    ));

    let mut fewer = good.clone();
    fewer[RECORD_COUNT_POS..HEADER_LEN].copy_from_slice(&1i32.to_be_bytes());
    reseal(&mut fewer);
    assert!(matches!(
        decode(&fewer),
        Err(BatchError::TrailingBytes { len: 12 })
    ));
}

#[test]
fn record_fields_are_checked() {
    let good = keel_vector();

    let mut bad_key = good.clone();
    bad_key[RECORD1_POS + 4] = 0x03; // keyLength -2
    reseal(&mut bad_key);
    assert!(matches!(
        decode(&bad_key),
        Err(BatchError::BadLength {
            field: "record key length",
            len: -2
        })
    ));

    let mut not_utf8 = good.clone();
    not_utf8[RECORD1_POS + 9] = 0xff; // header key "a" becomes a lone 0xff
    reseal(&mut not_utf8);
    let err = decode(&not_utf8).expect_err("not UTF-8");
    assert!(matches!(err, BatchError::HeaderKeyNotUtf8 { index: 1, .. }));
    assert!(std::error::Error::source(&err).is_some());

    // Record: length 12, attributes, then a timestampDelta of eleven continuation bytes.
    let mut overlong = vec![0x18, 0x00];
    overlong.extend_from_slice(&[0xff; 11]);
    let buf = batch_around(0, 1, &overlong);
    assert!(matches!(
        decode(&buf),
        Err(BatchError::BadVarint {
            field: "record timestampDelta"
        })
    ));

    // A header count far beyond the bytes left must not size an allocation.
    let mut huge_count = vec![0x10, 0x00, 0x00, 0x00, 0x01, 0x01];
    huge_count.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]); // i32::MAX headers
    huge_count[0] = ((huge_count.len() - 1) * 2) as u8;
    let buf = batch_around(0, 1, &huge_count);
    assert!(matches!(
        decode(&buf),
        Err(BatchError::BadLength {
            field: "record header count",
            ..
        })
    ));

    // Likewise a record count of i32::MAX over a two-record section.
    let mut many = good.clone();
    many[RECORD_COUNT_POS..HEADER_LEN].copy_from_slice(&i32::MAX.to_be_bytes());
    reseal(&mut many);
    assert!(matches!(
        decode(&many),
        Err(BatchError::RecordCountMismatch { actual: 2, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Stamping and walking
// ---------------------------------------------------------------------------------------------

#[test]
fn stamping_needs_a_header() {
    let mut short = [0u8; HEADER_LEN - 1];
    assert!(matches!(
        set_base_offset(&mut short, 1),
        Err(BatchError::TooShort { .. })
    ));
    assert!(matches!(
        set_partition_leader_epoch(&mut short, 1),
        Err(BatchError::TooShort { .. })
    ));
    assert!(matches!(
        set_log_append_time(&mut short, 1),
        Err(BatchError::TooShort { .. })
    ));
}

#[test]
fn log_append_time_refuses_to_launder_a_corrupt_batch() {
    let mut bad = keel_vector();
    bad[HEADER_LEN + 7] ^= 0x20; // "hi" -> "hI"
    assert!(matches!(
        set_log_append_time(&mut bad, 7),
        Err(BatchError::CrcMismatch { .. })
    ));
    assert!(matches!(
        validate(&bad, 1 << 20),
        Err(BatchError::CrcMismatch { .. })
    ));
}

#[test]
fn log_append_time_keeps_other_attributes() {
    let (params, records) = keel_vector_input();
    let params = BatchParams {
        compression: Compression::Lz4,
        is_transactional: true,
        ..params
    };
    let mut buf = encode(&params, &records).expect("encode").to_vec();
    set_log_append_time(&mut buf, 1_700_000_000_999).expect("stamp");
    let header = validate(&buf, 1 << 20).expect("valid");
    assert_eq!(header.compression().ok(), Some(Compression::Lz4));
    assert!(header.is_transactional());
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(header.base_timestamp, 1_700_000_000_000);
    assert_eq!(header.max_timestamp, 1_700_000_000_999);
}

#[test]
fn headers_walk_a_segment_of_concatenated_batches() {
    let (params, records) = keel_vector_input();
    let mut segment = Vec::new();
    let mut next = 0i64;
    for codec in Compression::ALL {
        let mut batch = encode(
            &BatchParams {
                compression: codec,
                ..params
            },
            &records,
        )
        .expect("encode")
        .to_vec();
        set_base_offset(&mut batch, next).expect("stamp");
        next += records.len() as i64;
        segment.extend_from_slice(&batch);
    }
    let mut rest = &segment[..];
    let mut offsets = Vec::new();
    while !rest.is_empty() {
        let header = BatchHeader::parse(rest).expect("header");
        let (batch, tail) = rest.split_at(header.total_len());
        validate(batch, 1 << 20).expect("valid");
        offsets.push((header.base_offset, header.last_offset()));
        rest = tail;
    }
    assert_eq!(offsets, [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]);
}

#[test]
fn split_yields_each_batch_and_flags_a_torn_last_one() {
    let mut joined = keel_vector();
    joined.extend_from_slice(&kafka_vector());
    let parts: Vec<&[u8]> = split(&joined).map(Result::unwrap).collect();
    assert_eq!(parts, vec![&keel_vector()[..], &kafka_vector()[..]]);
    let torn = &joined[..joined.len() - 1];
    let results: Vec<_> = split(torn).collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(BatchError::LengthMismatch { .. })));
    assert_eq!(split(&[]).count(), 0);
}
