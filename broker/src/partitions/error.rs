//! What can go wrong with one partition of a produce, fetch or offset lookup, and its one
//! mapping to the wire (`From<&PartitionError> for pb::Error`), which fills in leader hints
//! and the retriable flag.

use std::sync::Arc;

use keel_metadata::records::{BrokerId, LeaderEpoch};
use keel_proto::v1 as pb;
use keel_proto::v1::ErrorCode;
use keel_storage::batch::BatchError;
use keel_storage::producers::SequenceError;
use keel_storage::{LogError, Offset};

/// A per-partition failure. API errors the client can act on; [`PartitionError::Storage`]
/// is the local node's fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionError {
    #[error("this broker does not host this topic-partition")]
    UnknownTopicOrPartition,
    #[error("the topic id does not match the topic's current id: it was deleted and re-created")]
    InconsistentTopicId,
    #[error("this broker does not lead the partition")]
    NotLeader {
        leader: Option<BrokerId>,
        /// The leader's client endpoint, `host:port`.
        endpoint: Option<String>,
        leader_epoch: LeaderEpoch,
    },
    #[error("the partition's leader is not ready on this broker yet; retry")]
    LeaderNotAvailable,
    #[error(
        "the ISR has {isr} replicas, fewer than min.insync.replicas={min}; nothing was written"
    )]
    NotEnoughReplicas { isr: usize, min: usize },
    #[error("{0}")]
    InvalidBatch(Arc<BatchError>),
    #[error("offset {offset} is out of range: valid offsets are {log_start} to {high_watermark}")]
    OffsetOutOfRange {
        offset: Offset,
        log_start: Offset,
        high_watermark: Offset,
    },
    #[error("leader epoch {requested} is older than the current {current}")]
    FencedLeaderEpoch {
        requested: LeaderEpoch,
        current: LeaderEpoch,
    },
    #[error("leader epoch {requested} is newer than the current {current}")]
    UnknownLeaderEpoch {
        requested: LeaderEpoch,
        current: LeaderEpoch,
    },
    #[error(
        "not replicated to the ISR within the request timeout; the records may still be written"
    )]
    TimedOut,
    /// An idempotent producer's batch does not continue its sequence, or comes from an
    /// older producer epoch; nothing was written.
    #[error("{0}")]
    Sequence(SequenceError),
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    #[error("storage: {0}")]
    Storage(LogError),
}

impl From<BatchError> for PartitionError {
    fn from(e: BatchError) -> Self {
        PartitionError::InvalidBatch(Arc::new(e))
    }
}

impl From<LogError> for PartitionError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::InvalidBatch(b) => PartitionError::InvalidBatch(b),
            LogError::Sequence(s) => PartitionError::Sequence(s),
            LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            } => PartitionError::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark: log_end,
            },
            other => PartitionError::Storage(other),
        }
    }
}

/// The wire code of a refused batch: too large, a rule a client broke (Kafka's
/// INVALID_RECORD), or bytes that are not what they claim (CORRUPT_MESSAGE).
fn batch_code(e: &BatchError) -> ErrorCode {
    match e {
        BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        BatchError::ControlBatch
        | BatchError::InvalidSequence { .. }
        | BatchError::EmptyBatch
        | BatchError::InvalidTimestamp { .. } => ErrorCode::InvalidRecord,
        _ => ErrorCode::CorruptRecord,
    }
}

impl PartitionError {
    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            PartitionError::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
            PartitionError::InconsistentTopicId => ErrorCode::InconsistentTopicId,
            PartitionError::NotLeader { .. } => ErrorCode::NotLeader,
            PartitionError::LeaderNotAvailable => ErrorCode::LeaderNotAvailable,
            PartitionError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            PartitionError::InvalidBatch(b) => batch_code(b),
            PartitionError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            PartitionError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            PartitionError::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
            PartitionError::TimedOut => ErrorCode::RequestTimedOut,
            PartitionError::Sequence(SequenceError::OutOfOrder { .. }) => {
                ErrorCode::OutOfOrderSequence
            }
            // A newer epoch of the same producer id exists: this instance is fenced and must
            // stop (the contract; Kafka 2.7+ says INVALID_PRODUCER_EPOCH here, with the
            // same meaning for a non-transactional producer).
            PartitionError::Sequence(SequenceError::StaleEpoch { .. }) => ErrorCode::ProducerFenced,
            PartitionError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            PartitionError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

impl From<&PartitionError> for pb::Error {
    fn from(e: &PartitionError) -> Self {
        let mut out = pb::Error::new(e.code(), e.to_string());
        if let PartitionError::NotLeader {
            leader,
            endpoint,
            leader_epoch,
        } = e
        {
            out.leader_id = *leader;
            out.leader_endpoint = endpoint.clone();
            out.leader_epoch = Some(*leader_epoch);
        }
        if let PartitionError::FencedLeaderEpoch { current, .. }
        | PartitionError::UnknownLeaderEpoch { current, .. } = e
        {
            out.leader_epoch = Some(*current);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_carries_the_hint_and_is_retriable() {
        let e = pb::Error::from(&PartitionError::NotLeader {
            leader: Some(2),
            endpoint: Some("127.0.0.1:9292".into()),
            leader_epoch: 7,
        });
        assert_eq!(e.code, ErrorCode::NotLeader as i32);
        assert!(e.retriable);
        assert_eq!(e.leader_id, Some(2));
        assert_eq!(e.leader_endpoint.as_deref(), Some("127.0.0.1:9292"));
        assert_eq!(e.leader_epoch, Some(7));
    }

    #[test]
    fn batch_errors_map_to_kafka_codes() {
        let cases = [
            (
                BatchError::TooLarge { size: 9, max: 1 },
                ErrorCode::MessageTooLarge,
            ),
            (
                BatchError::CrcMismatch {
                    stored: 1,
                    computed: 2,
                },
                ErrorCode::CorruptRecord,
            ),
            (BatchError::TooShort { len: 3 }, ErrorCode::CorruptRecord),
            (BatchError::ControlBatch, ErrorCode::InvalidRecord),
            (BatchError::EmptyBatch, ErrorCode::InvalidRecord),
        ];
        for (batch, code) in cases {
            assert_eq!(PartitionError::from(batch).code(), code);
        }
    }

    #[test]
    fn sequence_errors_map_to_kafka_codes() {
        let gap = LogError::Sequence(SequenceError::OutOfOrder {
            producer_id: 1,
            epoch: 0,
            expected: 5,
            got: 7,
        });
        assert_eq!(
            PartitionError::from(gap).code(),
            ErrorCode::OutOfOrderSequence
        );
        let stale = LogError::Sequence(SequenceError::StaleEpoch {
            producer_id: 1,
            epoch: 0,
            current: 1,
        });
        assert_eq!(
            PartitionError::from(stale).code(),
            ErrorCode::ProducerFenced
        );
    }

    #[test]
    fn log_range_errors_become_offset_out_of_range() {
        let e = PartitionError::from(LogError::OffsetOutOfRange {
            offset: 9,
            log_start: 0,
            log_end: 5,
        });
        assert_eq!(e.code(), ErrorCode::OffsetOutOfRange);
        assert!(e.to_string().contains("0 to 5"), "{e}");
    }
}
