//! The fixed 61-byte header of a v2 record batch.

use bytes::{Buf, BufMut};

use super::compression::Compression;
use super::error::BatchError;
use super::{BATCH_LENGTH_POS, HEADER_LEN, LOG_OVERHEAD, MAGIC_POS, MAGIC_V2};

pub(crate) const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
pub(crate) const TRANSACTIONAL_FLAG: i16 = 0x10;
pub(crate) const CONTROL_FLAG: i16 = 0x20;
pub(crate) const DELETE_HORIZON_FLAG: i16 = 0x40;

/// Which clock the batch timestamps come from: attribute bit 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    /// Set by the producer, per record.
    #[default]
    CreateTime,
    /// Set by the broker on append: one timestamp (maxTimestamp) for the whole batch.
    LogAppendTime,
}

impl TimestampType {
    pub fn from_attributes(attributes: i16) -> TimestampType {
        if attributes & TIMESTAMP_TYPE_FLAG != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Kafka's name, as used by `message.timestamp.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

/// The header fields of a v2 record batch, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after this field: the batch's total size minus [`LOG_OVERHEAD`].
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    /// CRC-32C of everything from `attributes` to the end of the batch.
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    /// Timestamp of the first record (Kafka's `baseTimestamp`, a.k.a. `firstTimestamp`).
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    /// -1 when the producer is not idempotent.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the header from the first [`HEADER_LEN`] bytes of `buf`; later bytes are ignored.
    ///
    /// Checks only what is needed to trust `total_len()` for walking a segment (magic and a
    /// batch length that covers the header); no CRC, no codec check. Use [`validate`] or
    /// [`decode`] for those.
    ///
    /// [`validate`]: super::validate
    /// [`decode`]: super::decode
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::TooShort { len: buf.len() });
        }
        // Kafka readers look at the magic before anything else: the bytes around it mean
        // something else in older formats.
        let magic = buf[MAGIC_POS] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic { magic });
        }
        let mut b = &buf[..HEADER_LEN];
        let header = BatchHeader {
            base_offset: b.get_i64(),
            batch_length: b.get_i32(),
            partition_leader_epoch: b.get_i32(),
            magic: b.get_i8(),
            crc: b.get_u32(),
            attributes: b.get_i16(),
            last_offset_delta: b.get_i32(),
            base_timestamp: b.get_i64(),
            max_timestamp: b.get_i64(),
            producer_id: b.get_i64(),
            producer_epoch: b.get_i16(),
            base_sequence: b.get_i32(),
            record_count: b.get_i32(),
        };
        if (header.batch_length as i64) < (HEADER_LEN - BATCH_LENGTH_POS - 4) as i64 {
            return Err(BatchError::BadBatchLength {
                batch_length: header.batch_length,
            });
        }
        Ok(header)
    }

    /// Writes every field, `crc` included as it stands, into `out[..HEADER_LEN]`.
    pub(crate) fn write(&self, out: &mut [u8]) {
        let mut w = &mut out[..HEADER_LEN];
        w.put_i64(self.base_offset);
        w.put_i32(self.batch_length);
        w.put_i32(self.partition_leader_epoch);
        w.put_i8(self.magic);
        w.put_u32(self.crc);
        w.put_i16(self.attributes);
        w.put_i32(self.last_offset_delta);
        w.put_i64(self.base_timestamp);
        w.put_i64(self.max_timestamp);
        w.put_i64(self.producer_id);
        w.put_i16(self.producer_epoch);
        w.put_i32(self.base_sequence);
        w.put_i32(self.record_count);
    }

    /// The codec of the records section; codes 5-7 are an error.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        TimestampType::from_attributes(self.attributes)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// Set by log compaction (KIP-534): `base_timestamp` then holds the delete horizon.
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON_FLAG != 0
    }

    /// Whether the batch comes from an idempotent or transactional producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Offset of the last record, which compaction preserves even if that record is gone.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// Size of the whole batch in bytes: `batch_length` + [`LOG_OVERHEAD`]. Zero for a
    /// negative `batch_length`, which [`BatchHeader::parse`] never returns.
    pub fn total_len(&self) -> usize {
        usize::try_from(i64::from(self.batch_length) + LOG_OVERHEAD as i64).unwrap_or(0)
    }
}
