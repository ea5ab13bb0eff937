//! Record types of the data path: what a producer sends ([`ProducerRecord`]), where it was
//! written ([`RecordMetadata`]), what a consumer reads ([`ConsumerRecord`]), and the shared
//! [`Header`], [`TopicPartition`] and [`Acks`].

use bytes::Bytes;
use keel_proto::v1 as pb;
use serde::Serialize;

/// A record header: a key with an optional value (`None` is a null value, not an empty one).
/// Keys need not be unique; order is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value; `None` for null.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a value.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// Partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// How many replicas must have a record before the broker answers (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// acks=0: the broker answers before writing; no offsets come back.
    None,
    /// acks=1: the leader has appended the records.
    Leader,
    /// acks=all: every in-sync replica has them (the durable default).
    #[default]
    All,
}

impl Acks {
    pub(crate) fn to_wire(self) -> pb::Acks {
        match self {
            Acks::None => pb::Acks::None,
            Acks::Leader => pb::Acks::Leader,
            Acks::All => pb::Acks::All,
        }
    }
}

/// A record to send.
///
/// ```
/// use keel_client::ProducerRecord;
/// let r = ProducerRecord::new("orders", "paid").key("order-17").header("source", "web");
/// assert_eq!(r.partition, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic name.
    pub topic: String,
    /// Explicit partition; `None`: chosen by the key (murmur2) or, without a key, sticky.
    pub partition: Option<i32>,
    /// Record key; `None` for a null key.
    pub key: Option<Bytes>,
    /// Record value; `None` for a null value (a tombstone with a key).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Create time in ms since the Unix epoch; `None`: the producer's clock when sent.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with `value` and nothing else set.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to `partition`, bypassing the partitioner.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the create time (ms since the Unix epoch).
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// The bytes this record adds to a batch, before compression: its fields plus Kafka's
    /// worst-case record overhead (21 bytes of varints and attributes), and per header its
    /// two length varints.
    pub(crate) fn estimated_size(&self) -> usize {
        const RECORD_OVERHEAD: usize = 21;
        const HEADER_OVERHEAD: usize = 10;
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
        RECORD_OVERHEAD
            + len(&self.key)
            + len(&self.value)
            + self
                .headers
                .iter()
                .map(|h| HEADER_OVERHEAD + h.key.len() + len(&h.value))
                .sum::<usize>()
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordMetadata {
    /// Topic name.
    pub topic: String,
    /// The partition it went to.
    pub partition: i32,
    /// Its offset; `None` with acks=0, where the broker reports none.
    pub offset: Option<i64>,
    /// Its timestamp: the create time, or the append time when the topic uses LogAppendTime.
    pub timestamp: i64,
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Timestamp in ms since the Unix epoch (create or append time).
    pub timestamp: i64,
    /// Record key; `None` for null.
    pub key: Option<Bytes>,
    /// Record value; `None` for null.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Leader epoch of the batch holding the record.
    pub leader_epoch: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets_fields_and_size_counts_them() {
        let r = ProducerRecord::new("t", "value")
            .key("k")
            .partition(2)
            .header("h", "v")
            .timestamp(7);
        assert_eq!(r.partition, Some(2));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.headers, vec![Header::new("h", "v")]);
        assert_eq!(r.timestamp, Some(7));
        assert_eq!(r.estimated_size(), 21 + 1 + 5 + 10 + 1 + 1);
    }

    #[test]
    fn acks_map_to_the_wire() {
        assert_eq!(Acks::default(), Acks::All);
        assert_eq!(Acks::None.to_wire(), pb::Acks::None);
        assert_eq!(Acks::Leader.to_wire(), pb::Acks::Leader);
        assert_eq!(Acks::All.to_wire(), pb::Acks::All);
    }
}
