//! The records section: the variable-length records that follow the header (after
//! decompression, when the batch is compressed).

use bytes::Bytes;

use super::error::BatchError;
use super::header::{BatchHeader, TimestampType};
use super::varint::{
    put_varint, put_varlong, read_varint, read_varlong, varint_len, varlong_len, VarintError,
};

/// A record header: a UTF-8 key and an optional value. Keys may repeat within a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// A record to put in a new batch; offsets come from its position in the batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    /// Milliseconds since the epoch, or -1 for none.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// A record read from a batch, with absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// base_offset + offsetDelta.
    pub offset: i64,
    /// base_timestamp + timestampDelta, or the batch's maxTimestamp for LogAppendTime batches.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Smallest encoded record: length, attributes, timestampDelta, offsetDelta, keyLength,
/// valueLength and header count, one byte each. Bounds every preallocation by the input size.
const MIN_RECORD_LEN: usize = 7;
/// Smallest encoded header: key length and value length.
const MIN_HEADER_LEN: usize = 2;

fn overflow(field: &'static str) -> BatchError {
    BatchError::FieldOverflow { field }
}

fn wire_len(len: usize, field: &'static str) -> Result<i32, BatchError> {
    i32::try_from(len).map_err(|_| overflow(field))
}

fn bytes_field_len(b: Option<&Bytes>, field: &'static str) -> Result<usize, BatchError> {
    Ok(match b {
        None => varint_len(-1),
        Some(b) => varint_len(wire_len(b.len(), field)?) + b.len(),
    })
}

/// Size of the record after its length prefix.
pub(crate) fn body_len(
    offset_delta: i32,
    timestamp_delta: i64,
    r: &NewRecord,
) -> Result<usize, BatchError> {
    let add = |n: usize, more: usize| n.checked_add(more).ok_or_else(|| overflow("record length"));
    let mut n = 1 // attributes
        + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + varint_len(wire_len(r.headers.len(), "record header count")?);
    n = add(n, bytes_field_len(r.key.as_ref(), "record key length")?)?;
    n = add(n, bytes_field_len(r.value.as_ref(), "record value length")?)?;
    for h in &r.headers {
        let key = varint_len(wire_len(h.key.len(), "header key length")?) + h.key.len();
        n = add(n, key)?;
        n = add(n, bytes_field_len(h.value.as_ref(), "header value length")?)?;
    }
    wire_len(n, "record length")?;
    Ok(n)
}

fn put_bytes_field(out: &mut Vec<u8>, b: Option<&Bytes>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            // body_len() checked that every length fits an i32.
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

/// Appends one record; `body_len` must come from [`body_len`] for the same arguments.
pub(crate) fn write_record(
    out: &mut Vec<u8>,
    body_len: usize,
    offset_delta: i32,
    timestamp_delta: i64,
    r: &NewRecord,
) {
    put_varint(out, body_len as i32);
    out.push(0); // record attributes: unused in v2
    put_varlong(out, timestamp_delta);
    put_varint(out, offset_delta);
    put_bytes_field(out, r.key.as_ref());
    put_bytes_field(out, r.value.as_ref());
    put_varint(out, r.headers.len() as i32);
    for h in &r.headers {
        put_varint(out, h.key.len() as i32);
        out.extend_from_slice(h.key.as_bytes());
        put_bytes_field(out, h.value.as_ref());
    }
}

/// A cursor over `data[pos..end]` that names the field it failed on.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn varint_error(e: VarintError, field: &'static str) -> BatchError {
        match e {
            VarintError::Truncated => BatchError::Truncated { field },
            VarintError::Overlong => BatchError::BadVarint { field },
        }
    }

    fn varint(&mut self, field: &'static str) -> Result<i32, BatchError> {
        let (v, n) = read_varint(&self.data[self.pos..self.end])
            .map_err(|e| Self::varint_error(e, field))?;
        self.pos += n;
        Ok(v)
    }

    fn varlong(&mut self, field: &'static str) -> Result<i64, BatchError> {
        let (v, n) = read_varlong(&self.data[self.pos..self.end])
            .map_err(|e| Self::varint_error(e, field))?;
        self.pos += n;
        Ok(v)
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, BatchError> {
        if self.pos == self.end {
            return Err(BatchError::Truncated { field });
        }
        self.pos += 1;
        Ok(self.data[self.pos - 1])
    }

    /// The byte range of the next `len` bytes.
    fn take(&mut self, len: usize, field: &'static str) -> Result<(usize, usize), BatchError> {
        if len > self.remaining() {
            return Err(BatchError::Truncated { field });
        }
        let start = self.pos;
        self.pos += len;
        Ok((start, self.pos))
    }

    /// A length-prefixed byte field where -1 means null.
    fn nullable(
        &mut self,
        data: &Bytes,
        len_field: &'static str,
        field: &'static str,
    ) -> Result<Option<Bytes>, BatchError> {
        let len = self.varint(len_field)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| BatchError::BadLength {
            field: len_field,
            len: i64::from(len),
        })?;
        let (start, end) = self.take(len, field)?;
        Ok(Some(data.slice(start..end)))
    }
}

/// Parses the records section of a batch whose header is `h`.
///
/// `data` is the (decompressed) records section; keys and values are slices of it, so the
/// whole batch costs one allocation plus the header keys.
pub(crate) fn decode_records(data: &Bytes, h: &BatchHeader) -> Result<Vec<Record>, BatchError> {
    let declared = h.record_count;
    let count = usize::try_from(declared).map_err(|_| BatchError::NegativeRecordCount {
        record_count: declared,
    })?;
    let log_append_time = match h.timestamp_type() {
        TimestampType::LogAppendTime => Some(h.max_timestamp),
        TimestampType::CreateTime => None,
    };
    let mut records = Vec::with_capacity(count.min(data.len() / MIN_RECORD_LEN));
    let mut r = Reader {
        data,
        pos: 0,
        end: data.len(),
    };
    for index in 0..count {
        if r.remaining() == 0 {
            return Err(BatchError::RecordCountMismatch {
                declared,
                actual: index,
            });
        }
        let len = r.varint("record length")?;
        let body = usize::try_from(len)
            .ok()
            .filter(|&n| n <= r.remaining())
            .ok_or(BatchError::BadLength {
                field: "record",
                len: i64::from(len),
            })?;
        let start = r.pos;
        // Fields are read within the declared length only, so a lying length surfaces here
        // and not as garbage in the next record.
        let mut b = Reader {
            data,
            pos: start,
            end: start + body,
        };
        let record = decode_body(&mut b, data, index, h, log_append_time)?;
        if b.pos != b.end {
            return Err(BatchError::RecordLengthMismatch {
                index,
                declared: body,
                actual: b.pos - start,
            });
        }
        r.pos = b.end;
        records.push(record);
    }
    if r.remaining() != 0 {
        return Err(BatchError::TrailingBytes { len: r.remaining() });
    }
    Ok(records)
}

fn decode_body(
    b: &mut Reader<'_>,
    data: &Bytes,
    index: usize,
    h: &BatchHeader,
    log_append_time: Option<i64>,
) -> Result<Record, BatchError> {
    let _attributes = b.byte("record attributes")?;
    let timestamp_delta = b.varlong("record timestampDelta")?;
    let offset_delta = b.varint("record offsetDelta")?;
    let key = b.nullable(data, "record key length", "record key")?;
    let value = b.nullable(data, "record value length", "record value")?;
    let header_count = b.varint("record header count")?;
    let header_count = usize::try_from(header_count)
        .ok()
        .filter(|&n| n <= b.remaining())
        .ok_or(BatchError::BadLength {
            field: "record header count",
            len: i64::from(header_count),
        })?;
    let mut headers = Vec::with_capacity(header_count.min(b.remaining() / MIN_HEADER_LEN));
    for _ in 0..header_count {
        let key_len = b.varint("header key length")?;
        let key_len = usize::try_from(key_len).map_err(|_| BatchError::BadLength {
            field: "header key",
            len: i64::from(key_len),
        })?;
        let (start, end) = b.take(key_len, "header key")?;
        let key = std::str::from_utf8(&data[start..end])
            .map_err(|source| BatchError::HeaderKeyNotUtf8 { index, source })?
            .to_owned();
        let value = b.nullable(data, "header value length", "header value")?;
        headers.push(Header { key, value });
    }
    // Java longs wrap; so do we, so that every batch Kafka accepts decodes the same here.
    Ok(Record {
        offset: h.base_offset.wrapping_add(i64::from(offset_delta)),
        timestamp: log_append_time.unwrap_or(h.base_timestamp.wrapping_add(timestamp_delta)),
        key,
        value,
        headers,
    })
}
