//! Kafka's v2 record batch (magic 2), byte for byte: the unit Keel receives, stores, replicates
//! and serves.
//!
//! # Why produced bytes are kept as they are
//!
//! The broker stores a produced batch exactly as the producer encoded it and fetch serves those
//! same bytes. This keeps the producer's CRC valid end to end: it covers the data from the
//! producer's memory to the consumer's, so a bad disk, a bad NIC or a broker bug shows up as a
//! CRC mismatch instead of silently altered records. It also makes fetch a copy of file bytes
//! (no re-encoding), and keeps the bytes a Kafka client would accept.
//!
//! The broker still has to assign offsets and a leader epoch. The format puts those two fields
//! *before* the CRC and outside its coverage, so [`set_base_offset`] and
//! [`set_partition_leader_epoch`] stamp them in place for free. Only topics with
//! `message.timestamp.type=LogAppendTime` need the CRC recomputed ([`set_log_append_time`]), as
//! in Kafka. On the produce path the broker calls [`validate`] (a CRC pass and header checks, no
//! decompression), then stamps, then appends.
//!
//! # Layout
//!
//! Header, 61 bytes, big-endian ([`BatchHeader`]):
//!
//! ```text
//! pos len field
//!   0   8 baseOffset            offset of the first record         \ not covered by the CRC:
//!   8   4 batchLength           bytes after this field             | set by the broker
//!  12   4 partitionLeaderEpoch                                     /
//!  16   1 magic                 2
//!  17   4 crc                   CRC-32C (Castagnoli) of bytes 21..end
//!  21   2 attributes            bits 0-2 codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd),
//!                               3 LogAppendTime, 4 transactional, 5 control,
//!                               6 hasDeleteHorizonMs
//!  23   4 lastOffsetDelta       recordCount - 1 unless compacted
//!  27   8 baseTimestamp         timestamp of the first record
//!  35   8 maxTimestamp          largest record timestamp (the append time for LogAppendTime)
//!  43   8 producerId            -1 if not idempotent
//!  51   2 producerEpoch         -1
//!  53   4 baseSequence          -1
//!  57   4 recordCount           outside the compressed block
//!  61   … records               compressed as one block when a codec is set
//! ```
//!
//! Each record (varints are zigzag LEB128, as in protobuf's `sint32`/`sint64`):
//!
//! ```text
//! length varint (bytes after this field) | attributes i8 (unused, 0)
//! timestampDelta varlong | offsetDelta varint
//! keyLength varint (-1 null) | key | valueLength varint (-1 null) | value
//! headerCount varint | headers: keyLength varint | UTF-8 key | valueLength varint (-1 null) | value
//! ```
//!
//! Code layout: `header.rs` (the fixed header), `record.rs` (the records section),
//! `compression.rs` (codecs and their Kafka framings), `varint.rs`, `error.rs`; tests in
//! `batch_test.rs`.
//!
//! # Limits
//!
//! Nothing read from a batch sizes an allocation on its own: vectors are bounded by the bytes
//! present, and decompression stops at a limit ([`DEFAULT_MAX_DECOMPRESSED_LEN`] for
//! [`decode`], or the caller's with [`decode_with_limit`]) because a few kilobytes of zstd can
//! expand to gigabytes.

mod compression;
mod error;
mod header;
mod record;
mod varint;

#[cfg(test)]
mod batch_test;

use bytes::Bytes;

pub use compression::{Compression, ParseCompressionError};
pub use error::BatchError;
pub use header::{BatchHeader, TimestampType};
pub use record::{Header, NewRecord, Record};

use header::{CONTROL_FLAG, TIMESTAMP_TYPE_FLAG, TRANSACTIONAL_FLAG};

/// Size of the v2 batch header; the records start here.
pub const HEADER_LEN: usize = 61;
/// The only batch format Keel reads or writes.
pub const MAGIC_V2: i8 = 2;
/// Bytes not counted in batchLength: baseOffset and batchLength itself (Kafka's `LOG_OVERHEAD`).
pub const LOG_OVERHEAD: usize = 12;

/// Byte positions of the header fields within a batch.
pub const BASE_OFFSET_POS: usize = 0;
pub const BATCH_LENGTH_POS: usize = 8;
pub const PARTITION_LEADER_EPOCH_POS: usize = 12;
pub const MAGIC_POS: usize = 16;
pub const CRC_POS: usize = 17;
/// Start of the CRC-covered bytes.
pub const ATTRIBUTES_POS: usize = 21;
pub const LAST_OFFSET_DELTA_POS: usize = 23;
pub const BASE_TIMESTAMP_POS: usize = 27;
pub const MAX_TIMESTAMP_POS: usize = 35;
pub const PRODUCER_ID_POS: usize = 43;
pub const PRODUCER_EPOCH_POS: usize = 51;
pub const BASE_SEQUENCE_POS: usize = 53;
pub const RECORD_COUNT_POS: usize = 57;

/// Decompression limit of [`decode`]: 64 MiB, 64 times Kafka's default `max.message.bytes`
/// (1 MiB), enough for any realistic ratio while bounding what one batch can cost in memory.
pub const DEFAULT_MAX_DECOMPRESSED_LEN: usize = 64 * 1024 * 1024;

/// Timestamp meaning "none" (Kafka's `NO_TIMESTAMP`).
pub const NO_TIMESTAMP: i64 = -1;

/// A fully decoded batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Vec<Record>,
}

/// The batch-level fields of a batch to [`encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchParams {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub compression: Compression,
    pub timestamp_type: TimestampType,
    /// -1 when not idempotent.
    pub producer_id: i64,
    /// -1 when not idempotent.
    pub producer_epoch: i16,
    /// -1 when not idempotent.
    pub base_sequence: i32,
    pub is_transactional: bool,
    pub is_control: bool,
}

impl Default for BatchParams {
    /// What Kafka's non-idempotent producer writes: offset 0, no leader epoch (-1), no
    /// compression, CreateTime, no producer id/epoch/sequence (-1).
    fn default() -> Self {
        BatchParams {
            base_offset: 0,
            partition_leader_epoch: -1,
            compression: Compression::None,
            timestamp_type: TimestampType::CreateTime,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            is_transactional: false,
            is_control: false,
        }
    }
}

/// Parses the header of a buffer that must hold exactly one batch.
fn parse_exact(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    if header.total_len() != buf.len() {
        return Err(BatchError::LengthMismatch {
            declared: i64::from(header.batch_length) + LOG_OVERHEAD as i64,
            actual: buf.len(),
        });
    }
    Ok(header)
}

fn check_crc(buf: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let computed = crc32c::crc32c(&buf[ATTRIBUTES_POS..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Checks a produced batch before the broker changes anything, without decompressing it.
///
/// `buf` must hold exactly one batch of at most `max_message_bytes` bytes, with magic 2, a
/// matching CRC, a known codec, at least one record and `lastOffsetDelta == recordCount - 1`.
/// Like Kafka for client writes, it also refuses control batches and idempotent batches
/// (producerId >= 0) without a base sequence.
///
/// The records themselves are not walked: the CRC proves the bytes are the producer's, not that
/// the producer framed its records well. [`decode`] checks those.
pub fn validate(buf: &[u8], max_message_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = parse_exact(buf)?;
    // Size before CRC, as Kafka does: no reason to checksum a batch we refuse anyway.
    if buf.len() > max_message_bytes {
        return Err(BatchError::TooLarge {
            size: buf.len(),
            max: max_message_bytes,
        });
    }
    check_crc(buf, &header)?;
    header.compression()?;
    if header.record_count < 0 {
        return Err(BatchError::NegativeRecordCount {
            record_count: header.record_count,
        });
    }
    if header.record_count == 0 {
        return Err(BatchError::EmptyBatch);
    }
    if i64::from(header.last_offset_delta) != i64::from(header.record_count) - 1 {
        return Err(BatchError::OffsetDeltaMismatch {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if header.is_control() {
        return Err(BatchError::ControlBatch);
    }
    if header.has_producer_id() && header.base_sequence < 0 {
        return Err(BatchError::InvalidSequence {
            producer_id: header.producer_id,
            base_sequence: header.base_sequence,
        });
    }
    Ok(header)
}

/// Decodes a whole batch, with [`DEFAULT_MAX_DECOMPRESSED_LEN`] as decompression limit.
pub fn decode(buf: &[u8]) -> Result<DecodedBatch, BatchError> {
    decode_with_limit(buf, DEFAULT_MAX_DECOMPRESSED_LEN)
}

/// Decodes a whole batch: CRC, decompression (refusing more than `max_decompressed_len`
/// bytes), then every record, which must number exactly recordCount, fill exactly their
/// declared lengths and leave no trailing bytes.
///
/// Unlike [`validate`], this accepts what a log may legitimately hold after compaction: empty
/// batches, offset gaps, control batches.
pub fn decode_with_limit(
    buf: &[u8],
    max_decompressed_len: usize,
) -> Result<DecodedBatch, BatchError> {
    decode_from(buf, max_decompressed_len, || {
        Bytes::copy_from_slice(&buf[HEADER_LEN..])
    })
}

/// [`decode`] of a batch held in shared bytes: the records of an uncompressed batch point
/// into `buf` instead of into a copy of it. The fetch path decodes every batch it serves as
/// structured records, and that copy took about 8% of the brokers' CPU time while serving a
/// consumer (BENCHMARKS.md, issue 12).
pub fn decode_shared(buf: &Bytes) -> Result<DecodedBatch, BatchError> {
    decode_from(buf, DEFAULT_MAX_DECOMPRESSED_LEN, || {
        buf.slice(HEADER_LEN..)
    })
}

/// The body of [`decode_with_limit`] and [`decode_shared`]: `uncompressed` gives the payload
/// of an uncompressed batch (after the header has been checked) as shared bytes.
fn decode_from(
    buf: &[u8],
    max_decompressed_len: usize,
    uncompressed: impl FnOnce() -> Bytes,
) -> Result<DecodedBatch, BatchError> {
    let header = parse_exact(buf)?;
    check_crc(buf, &header)?;
    let codec = header.compression()?;
    let payload = &buf[HEADER_LEN..];
    let data = match codec {
        Compression::None => uncompressed(),
        // Kafka writes records-less batches (left by compaction) uncompressed, but an empty
        // payload under a codec means the same and is no stream to decompress.
        _ if payload.is_empty() => Bytes::new(),
        _ => Bytes::from(compression::decompress(
            codec,
            payload,
            max_decompressed_len,
        )?),
    };
    let records = record::decode_records(&data, &header)?;
    Ok(DecodedBatch { header, records })
}

/// Encodes `records` as one batch.
///
/// baseTimestamp is the first record's timestamp and maxTimestamp the largest; offset deltas
/// run 0..n-1. For a LogAppendTime batch maxTimestamp is also the largest record timestamp, so
/// give every record the append time, or encode as CreateTime and call [`set_log_append_time`].
///
/// Refuses an empty `records` (Kafka never writes a produced batch without records) and
/// timestamps below -1, as Kafka's producer does.
/// Splits back-to-back batches (a fetch response, a stretch of a segment) into single batches,
/// without checking CRCs. Ends with an error at a header that cannot be read or a batch that
/// runs past the end of `buf`.
pub fn split(buf: &[u8]) -> impl Iterator<Item = Result<&[u8], BatchError>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let total = match BatchHeader::parse(rest) {
            Ok(header) => header.total_len(),
            Err(e) => {
                rest = &[];
                return Some(Err(e));
            }
        };
        if total > rest.len() {
            let declared = total as i64 - LOG_OVERHEAD as i64;
            let actual = rest.len();
            rest = &[];
            return Some(Err(BatchError::LengthMismatch { declared, actual }));
        }
        let (one, tail) = rest.split_at(total);
        rest = tail;
        Some(Ok(one))
    })
}

pub fn encode(params: &BatchParams, records: &[NewRecord]) -> Result<Bytes, BatchError> {
    let first = records.first().ok_or(BatchError::EmptyBatch)?;
    let record_count = i32::try_from(records.len()).map_err(|_| BatchError::FieldOverflow {
        field: "record count",
    })?;
    let base_timestamp = first.timestamp;
    let mut max_timestamp = base_timestamp;
    // First pass: exact size, so the buffer is allocated once.
    let mut raw_len = 0usize;
    for (i, r) in records.iter().enumerate() {
        if r.timestamp < NO_TIMESTAMP {
            return Err(BatchError::InvalidTimestamp {
                timestamp: r.timestamp,
            });
        }
        max_timestamp = max_timestamp.max(r.timestamp);
        let body = record::body_len(i as i32, r.timestamp.wrapping_sub(base_timestamp), r)?;
        raw_len = raw_len
            .checked_add(varint::varint_len(body as i32) + body)
            .ok_or(BatchError::FieldOverflow {
                field: "batch length",
            })?;
    }
    let write_records = |out: &mut Vec<u8>| -> Result<(), BatchError> {
        for (i, r) in records.iter().enumerate() {
            let delta = r.timestamp.wrapping_sub(base_timestamp);
            let body = record::body_len(i as i32, delta, r)?;
            record::write_record(out, body, i as i32, delta, r);
        }
        Ok(())
    };

    let codec = params.compression;
    let mut out;
    if codec == Compression::None {
        out = Vec::with_capacity(HEADER_LEN + raw_len);
        out.resize(HEADER_LEN, 0);
        write_records(&mut out)?;
    } else {
        let mut raw = Vec::with_capacity(raw_len);
        write_records(&mut raw)?;
        out = Vec::with_capacity(HEADER_LEN + compression::compressed_len_hint(raw_len));
        out.resize(HEADER_LEN, 0);
        compression::compress(codec, &raw, &mut out)?;
        // The hint assumed incompressible data; give back what compression saved.
        if out.capacity() - out.len() > out.len() / 8 {
            out.shrink_to_fit();
        }
    }

    let batch_length =
        i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| BatchError::FieldOverflow {
            field: "batch length",
        })?;
    let mut attributes = i16::from(codec.code());
    if params.timestamp_type == TimestampType::LogAppendTime {
        attributes |= TIMESTAMP_TYPE_FLAG;
    }
    if params.is_transactional {
        attributes |= TRANSACTIONAL_FLAG;
    }
    if params.is_control {
        attributes |= CONTROL_FLAG;
    }
    let header = BatchHeader {
        base_offset: params.base_offset,
        batch_length,
        partition_leader_epoch: params.partition_leader_epoch,
        magic: MAGIC_V2,
        crc: 0,
        attributes,
        last_offset_delta: record_count - 1,
        base_timestamp,
        max_timestamp,
        producer_id: params.producer_id,
        producer_epoch: params.producer_epoch,
        base_sequence: params.base_sequence,
        record_count,
    };
    header.write(&mut out);
    write_crc(&mut out);
    Ok(Bytes::from(out))
}

fn write_crc(buf: &mut [u8]) {
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_POS..]);
    buf[CRC_POS..ATTRIBUTES_POS].copy_from_slice(&crc.to_be_bytes());
}

fn require_header(buf: &[u8]) -> Result<(), BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::TooShort { len: buf.len() });
    }
    Ok(())
}

/// Sets baseOffset in place. It lies outside the CRC, so the batch stays valid; record offsets
/// are deltas and move with it.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    require_header(buf)?;
    buf[BASE_OFFSET_POS..BATCH_LENGTH_POS].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Sets partitionLeaderEpoch in place. It lies outside the CRC, so the batch stays valid.
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    require_header(buf)?;
    buf[PARTITION_LEADER_EPOCH_POS..MAGIC_POS].copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Marks the batch LogAppendTime with `timestamp` as maxTimestamp, as Kafka's broker does for
/// topics with `message.timestamp.type=LogAppendTime`; every record then reads as `timestamp`.
///
/// Both fields are under the CRC, so it is recomputed, after checking the old one: stamping
/// must never turn a corrupt batch into one that looks sound. Other attribute bits are kept.
pub fn set_log_append_time(buf: &mut [u8], timestamp: i64) -> Result<(), BatchError> {
    let header = parse_exact(buf)?;
    check_crc(buf, &header)?;
    let attributes = header.attributes | TIMESTAMP_TYPE_FLAG;
    if attributes == header.attributes && header.max_timestamp == timestamp {
        return Ok(());
    }
    buf[ATTRIBUTES_POS..LAST_OFFSET_DELTA_POS].copy_from_slice(&attributes.to_be_bytes());
    buf[MAX_TIMESTAMP_POS..PRODUCER_ID_POS].copy_from_slice(&timestamp.to_be_bytes());
    write_crc(buf);
    Ok(())
}
