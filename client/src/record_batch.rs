//! The producer's encoder of Kafka's v2 RecordBatch (magic 2), with the five codecs framed as
//! Kafka's Java client frames them, so the broker can store the bytes as they are.
//!
//! # Why the client has its own encoder
//!
//! The storage crate owns Keel's full batch codec (decode, validation, stamping), but the
//! crate map lets the client depend on `keel-proto` only: linking `keel-storage` would bring
//! RocksDB into every client program and into `keel`. The producer needs only the encoding
//! half, and compression needs pre-encoded batches, because the structured-records produce
//! path compresses with the topic's `compression.type`, not the producer's choice. So this
//! file writes batches; the broker's `batch::validate` (CRC, header, codec) checks every one
//! on arrival, and the integration tests round-trip every codec through a real broker.
//!
//! Layout (big-endian; see `batch/src/lib.rs` for the field table): baseOffset 0,
//! batchLength, partitionLeaderEpoch -1, magic 2, CRC-32C of everything after it, attributes
//! (codec in bits 0-2, CreateTime), lastOffsetDelta, base and max timestamps, producer id,
//! epoch and base sequence -1 (not idempotent), record count, then the records, compressed
//! as one block when a codec is set:
//!
//! ```text
//! length varint | attributes 0 | timestampDelta varlong | offsetDelta varint
//! keyLength varint (-1 null) | key | valueLength varint (-1 null) | value
//! headerCount varint | per header: keyLength varint | key | valueLength varint | value
//! ```
//!
//! Codec framings (what Kafka writes and reads): gzip stream; snappy in xerial's framing (a
//! 16-byte header, then 32 KiB chunks each prefixed by its big-endian length); an LZ4 frame
//! with independent 64 KiB blocks; a zstd frame at level 3.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use bytes::Bytes;

use crate::Header;

/// Compression codec of the batches a producer writes (Kafka's `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Uncompressed.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// snappy, in xerial framing.
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Every codec, in attribute-code order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Kafka's name: `none`, `gzip`, `snappy`, `lz4`, `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The codec's number in bits 0-2 of the batch attributes.
    fn code(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown codec {s}: expected none, gzip, snappy, lz4 or zstd"))
    }
}

/// One record to encode: what a batch needs of a `ProducerRecord`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchRecord {
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

const HEADER_LEN: usize = 61;
const LOG_OVERHEAD: usize = 12;
const MAGIC_V2: u8 = 2;
const CRC_POS: usize = 17;
const ATTRIBUTES_POS: usize = 21;
const ZSTD_LEVEL: i32 = 3;
const SNAPPY_CHUNK: usize = 32 * 1024;
/// xerial's magic, then version 1 and minimum compatible version 1 as big-endian i32.
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];

/// The producer fields of a batch header: id, epoch and base sequence of an idempotent
/// producer, or all -1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    /// A producer that is not idempotent.
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Encodes `records` (at least one) as one batch compressed with `codec`, without producer
/// fields.
#[cfg(test)]
pub(crate) fn encode(codec: Compression, records: &[BatchRecord]) -> io::Result<Bytes> {
    encode_with(codec, ProducerFields::NONE, records)
}

/// [`encode`] with the producer fields of an idempotent producer.
pub(crate) fn encode_with(
    codec: Compression,
    producer: ProducerFields,
    records: &[BatchRecord],
) -> io::Result<Bytes> {
    let first = records
        .first()
        .ok_or_else(|| io::Error::other("a batch needs at least one record"))?;
    let count = i32::try_from(records.len()).map_err(|_| io::Error::other("too many records"))?;
    let base_timestamp = first.timestamp;
    let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap_or(0);

    // Sized once, so that neither buffer grows (and copies itself) record by record.
    let estimate: usize = records.iter().map(estimated_len).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + estimate);
    out.resize(HEADER_LEN, 0);
    let write_all = |buf: &mut Vec<u8>| -> io::Result<()> {
        for (delta, r) in records.iter().enumerate() {
            write_record(buf, delta as i32, r.timestamp - base_timestamp, r)?;
        }
        Ok(())
    };
    if codec == Compression::None {
        // Uncompressed records go straight after the header: one copy of each value.
        write_all(&mut out)?;
    } else {
        let mut raw = Vec::with_capacity(estimate);
        write_all(&mut raw)?;
        compress(codec, &raw, &mut out)?;
    }
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD)
        .map_err(|_| io::Error::other("batch over 2 GiB"))?;

    let mut h = &mut out[..HEADER_LEN];
    put(&mut h, &0i64.to_be_bytes()); // base offset: the broker assigns it
    put(&mut h, &batch_length.to_be_bytes());
    put(&mut h, &(-1i32).to_be_bytes()); // partition leader epoch: the broker stamps it
    put(&mut h, &[MAGIC_V2]);
    put(&mut h, &0u32.to_be_bytes()); // CRC, below
    put(&mut h, &codec.code().to_be_bytes()); // attributes: codec, CreateTime
    put(&mut h, &(count - 1).to_be_bytes()); // last offset delta
    put(&mut h, &base_timestamp.to_be_bytes());
    put(&mut h, &max_timestamp.to_be_bytes());
    put(&mut h, &producer.producer_id.to_be_bytes());
    put(&mut h, &producer.producer_epoch.to_be_bytes());
    put(&mut h, &producer.base_sequence.to_be_bytes());
    put(&mut h, &count.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_POS..]);
    out[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(out))
}

/// Writes `bytes` at the front of `slot` and moves it past them.
fn put(slot: &mut &mut [u8], bytes: &[u8]) {
    let (head, tail) = std::mem::take(slot).split_at_mut(bytes.len());
    head.copy_from_slice(bytes);
    *slot = tail;
}

fn write_record(
    out: &mut Vec<u8>,
    offset_delta: i32,
    timestamp_delta: i64,
    r: &BatchRecord,
) -> io::Result<()> {
    // The length prefix comes first, so the body's length is computed rather than the body
    // built in a temporary buffer and copied (a copy of every value, and reallocations).
    let body_len = 1
        + varlong_len(timestamp_delta)
        + varlong_len(i64::from(offset_delta))
        + field_len(r.key.as_deref())
        + field_len(r.value.as_deref())
        + varlong_len(r.headers.len() as i64)
        + r.headers
            .iter()
            .map(|h| field_len(Some(h.key.as_bytes())) + field_len(h.value.as_deref()))
            .sum::<usize>();
    let len = i32::try_from(body_len).map_err(|_| io::Error::other("record over 2 GiB"))?;
    put_varlong(out, i64::from(len));
    let start = out.len();
    out.push(0); // record attributes: unused in v2
    put_varlong(out, timestamp_delta);
    put_varlong(out, i64::from(offset_delta));
    put_bytes_field(out, r.key.as_deref())?;
    put_bytes_field(out, r.value.as_deref())?;
    put_varlong(out, r.headers.len() as i64);
    for h in &r.headers {
        put_bytes_field(out, Some(h.key.as_bytes()))?;
        put_bytes_field(out, h.value.as_deref())?;
    }
    debug_assert_eq!(
        out.len() - start,
        body_len,
        "record length computed wrongly"
    );
    Ok(())
}

/// A record's encoded size give or take a few bytes: enough to size the batch buffer.
fn estimated_len(r: &BatchRecord) -> usize {
    let fields = r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len);
    let headers: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len) + 10)
        .sum();
    fields + headers + 24
}

/// Bytes of `put_varlong(v)`.
fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of `put_bytes_field(b)`.
fn field_len(b: Option<&[u8]>) -> usize {
    b.map_or(1, |b| varlong_len(b.len() as i64) + b.len())
}

/// A length-prefixed byte field: the length as a varint (-1 for null), then the bytes.
fn put_bytes_field(out: &mut Vec<u8>, b: Option<&[u8]>) -> io::Result<()> {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            let len = i32::try_from(b.len()).map_err(|_| io::Error::other("field over 2 GiB"))?;
            put_varlong(out, i64::from(len));
            out.extend_from_slice(b);
        }
    }
    Ok(())
}

/// A zigzag LEB128 varint (protobuf's `sint64`; Kafka's varint and varlong write the same
/// bytes for values that fit an i32).
fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends the compressed form of `raw` to `out`.
fn compress(codec: Compression, raw: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    match codec {
        Compression::None => out.extend_from_slice(raw),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            enc.write_all(raw)?;
            enc.finish()?;
        }
        Compression::Snappy => {
            out.extend_from_slice(&XERIAL_HEADER);
            let mut encoder = snap::raw::Encoder::new();
            for chunk in raw.chunks(SNAPPY_CHUNK) {
                let block = encoder.compress_vec(chunk).map_err(io::Error::other)?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
        }
        Compression::Lz4 => {
            // Kafka's reader refuses linked blocks.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(raw)?;
            enc.finish().map_err(io::Error::other)?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            enc.write_all(raw)?;
            enc.finish()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        ts: i64,
        key: Option<&str>,
        value: Option<&str>,
        headers: Vec<Header>,
    ) -> BatchRecord {
        BatchRecord {
            timestamp: ts,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers,
        }
    }

    #[test]
    fn varint_lengths_match_what_is_written() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            8192,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(varlong_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn varints_are_zigzag_leb128() {
        let enc = |v| {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(-1), [0x01]);
        assert_eq!(enc(1), [0x02]);
        assert_eq!(enc(63), [0x7e]);
        assert_eq!(enc(-64), [0x7f]);
        assert_eq!(enc(64), [0x80, 0x01]);
        assert_eq!(enc(300), [0xd8, 0x04]);
        assert_eq!(enc(i64::from(i32::MIN)), [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    /// The uncompressed encoding of one known record, byte for byte (the layout of Kafka's
    /// `DefaultRecord.writeTo` and `DefaultRecordBatch.writeHeader`).
    #[test]
    fn one_record_batch_byte_for_byte() {
        let batch = encode(
            Compression::None,
            &[record(
                1000,
                Some("k"),
                Some("vv"),
                vec![Header::new("h", "x")],
            )],
        )
        .unwrap();
        let records: &[u8] = &[
            0x1a, // length 13
            0x00, // attributes
            0x00, // timestamp delta 0
            0x00, // offset delta 0
            0x02, b'k', // key
            0x04, b'v', b'v', // value
            0x02, // one header
            0x02, b'h', 0x02, b'x',
        ];
        assert_eq!(&batch[HEADER_LEN..], records);
        let be_i64 = |at: usize| i64::from_be_bytes(batch[at..at + 8].try_into().unwrap());
        let be_i32 = |at: usize| i32::from_be_bytes(batch[at..at + 4].try_into().unwrap());
        assert_eq!(be_i64(0), 0);
        assert_eq!(be_i32(8) as usize, batch.len() - LOG_OVERHEAD);
        assert_eq!(be_i32(12), -1);
        assert_eq!(batch[16], 2);
        assert_eq!(
            u32::from_be_bytes(batch[17..21].try_into().unwrap()),
            crc32c::crc32c(&batch[21..])
        );
        assert_eq!(&batch[21..23], &[0, 0]);
        assert_eq!(be_i32(23), 0);
        assert_eq!(be_i64(27), 1000);
        assert_eq!(be_i64(35), 1000);
        assert_eq!(be_i64(43), -1);
        assert_eq!(&batch[51..53], &[0xff, 0xff]);
        assert_eq!(be_i32(53), -1);
        assert_eq!(be_i32(57), 1);
    }

    #[test]
    fn null_fields_and_timestamps_across_records() {
        let batch = encode(
            Compression::None,
            &[
                record(500, None, None, vec![]),
                record(400, Some(""), Some("a"), vec![]),
                record(900, None, Some("b"), vec![]),
            ],
        )
        .unwrap();
        let be_i64 = |at: usize| i64::from_be_bytes(batch[at..at + 8].try_into().unwrap());
        assert_eq!(be_i64(27), 500, "base timestamp is the first record's");
        assert_eq!(be_i64(35), 900, "max timestamp is the largest");
        assert_eq!(i32::from_be_bytes(batch[23..27].try_into().unwrap()), 2);
        // First record: null key and value are -1 (zigzag 0x01).
        assert_eq!(
            &batch[HEADER_LEN..HEADER_LEN + 7],
            &[0x0c, 0, 0, 0, 1, 1, 0]
        );
        // Second: timestamp delta -100 (zigzag 199 = 0xc7 0x01), offset delta 1, empty key.
        assert_eq!(
            &batch[HEADER_LEN + 7..HEADER_LEN + 16],
            &[0x10, 0, 0xc7, 0x01, 0x02, 0x00, 0x02, b'a', 0]
        );
    }

    #[test]
    fn codecs_set_the_attribute_and_compress_the_records() {
        let records: Vec<BatchRecord> = (0..200)
            .map(|i| record(i, Some("key"), Some("a fairly repetitive value"), vec![]))
            .collect();
        let plain = encode(Compression::None, &records).unwrap();
        for codec in Compression::ALL {
            let batch = encode(codec, &records).unwrap();
            assert_eq!(i16::from_be_bytes([batch[21], batch[22]]), codec.code());
            assert_eq!(
                u32::from_be_bytes(batch[17..21].try_into().unwrap()),
                crc32c::crc32c(&batch[21..]),
                "{codec}"
            );
            if codec != Compression::None {
                assert!(batch.len() < plain.len() / 2, "{codec}: {}", batch.len());
            }
        }
        let snappy = encode(Compression::Snappy, &records).unwrap();
        assert_eq!(&snappy[HEADER_LEN..HEADER_LEN + 16], &XERIAL_HEADER);
        let gzip = encode(Compression::Gzip, &records).unwrap();
        assert_eq!(&gzip[HEADER_LEN..HEADER_LEN + 2], &[0x1f, 0x8b]);
        let lz4 = encode(Compression::Lz4, &records).unwrap();
        assert_eq!(&lz4[HEADER_LEN..HEADER_LEN + 4], &[0x04, 0x22, 0x4d, 0x18]);
        let zstd = encode(Compression::Zstd, &records).unwrap();
        assert_eq!(&zstd[HEADER_LEN..HEADER_LEN + 4], &[0x28, 0xb5, 0x2f, 0xfd]);
    }

    #[test]
    fn an_empty_batch_is_refused() {
        assert!(encode(Compression::None, &[]).is_err());
    }

    #[test]
    fn codec_names_parse_as_kafka_spells_them() {
        for c in Compression::ALL {
            assert_eq!(c.as_str().parse::<Compression>(), Ok(c));
        }
        assert!("GZIP".parse::<Compression>().is_err());
        assert!("brotli".parse::<Compression>().is_err());
    }
}
