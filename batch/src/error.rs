use super::{Compression, HEADER_LEN};

/// Why a record batch was refused, or could not be built.
///
/// Every variant means the batch bytes (or the records given to [`encode`](super::encode)) are
/// at fault, never the local node: callers answer the client with an error and change nothing.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("record batch too short: {len} bytes, a v2 batch header alone takes {HEADER_LEN}")]
    TooShort { len: usize },

    /// `declared` is batchLength + 12, the size the header claims for the whole batch.
    #[error(
        "record batch length mismatch: header declares {declared} bytes in total, buffer holds {actual}"
    )]
    LengthMismatch { declared: i64, actual: usize },

    #[error(
        "record batch length field {batch_length} is below the 49 bytes a v2 header needs after it"
    )]
    BadBatchLength { batch_length: i32 },

    #[error("unsupported record batch magic {magic}: only v2 (magic 2) batches are supported")]
    BadMagic { magic: i8 },

    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },

    #[error(
        "unknown compression codec {code} in record batch attributes \
         (known: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)"
    )]
    UnknownCompression { code: u8 },

    #[error("record batch of {size} bytes exceeds the maximum of {max} bytes (max.message.bytes)")]
    TooLarge { size: usize, max: usize },

    #[error("record batch holds no records")]
    EmptyBatch,

    #[error("record batch declares a negative record count {record_count}")]
    NegativeRecordCount { record_count: i32 },

    #[error(
        "record batch offsets are inconsistent: recordCount {record_count} but lastOffsetDelta \
         {last_offset_delta} (expected recordCount - 1)"
    )]
    OffsetDeltaMismatch {
        record_count: i32,
        last_offset_delta: i32,
    },

    #[error("clients may not write control batches")]
    ControlBatch,

    #[error(
        "record batch with producerId {producer_id} has invalid base sequence {base_sequence}"
    )]
    InvalidSequence {
        producer_id: i64,
        base_sequence: i32,
    },

    #[error("record batch declares {declared} records but holds {actual}")]
    RecordCountMismatch { declared: i32, actual: usize },

    #[error("record {index} of the batch declares {declared} bytes but its fields take {actual}")]
    RecordLengthMismatch {
        index: usize,
        declared: usize,
        actual: usize,
    },

    #[error("record batch has {len} trailing bytes after its last record")]
    TrailingBytes { len: usize },

    #[error("record batch truncated while reading {field}")]
    Truncated { field: &'static str },

    #[error("invalid varint in {field}: longer than its type allows or out of range")]
    BadVarint { field: &'static str },

    #[error("invalid {field} length {len} in record batch")]
    BadLength { field: &'static str, len: i64 },

    #[error("header key in record {index} of the batch is not valid UTF-8")]
    HeaderKeyNotUtf8 {
        index: usize,
        #[source]
        source: std::str::Utf8Error,
    },

    #[error("invalid record timestamp {timestamp}: must be >= 0, or -1 for none")]
    InvalidTimestamp { timestamp: i64 },

    #[error("record batch too large to encode: {field} does not fit its wire type")]
    FieldOverflow { field: &'static str },

    #[error("{codec} record data decompresses to more than the {limit}-byte limit")]
    DecompressedTooLarge { codec: Compression, limit: usize },

    #[error("{codec} compression of record batch failed")]
    Compression {
        codec: Compression,
        #[source]
        source: std::io::Error,
    },

    #[error("{codec} decompression of record batch failed")]
    Decompression {
        codec: Compression,
        #[source]
        source: std::io::Error,
    },
}
