//! Helpers on the wire error types: the retriability table of [`ErrorCode`] and a constructor
//! for [`Error`].

use crate::v1::{Error, ErrorCode};

impl ErrorCode {
    /// Whether a request that failed with this code may succeed when retried unchanged,
    /// possibly after refreshing metadata or following the leader hint of the [`Error`].
    ///
    /// This is the one table of retriability for wire codes; it follows Kafka's split between
    /// retriable and non-retriable exceptions. Servers copy it into [`Error::retriable`], so
    /// that clients built before a code existed can still decide. `OK` is not an error and is
    /// not retriable.
    pub fn is_retriable(&self) -> bool {
        use ErrorCode::*;
        // No wildcard arm: a new code does not compile until it is classified here.
        match self {
            Ok => false,

            UnknownServerError => false,
            InvalidRequest => false,
            CorruptRecord => true,
            InvalidRecord => false,
            MessageTooLarge => false,
            RecordListTooLarge => false,
            InvalidTimestamp => false,
            UnsupportedCompression => false,
            InvalidRequiredAcks => false,
            UnknownTopicOrPartition => true,
            UnknownTopicId => true,
            InconsistentTopicId => true,
            TopicAlreadyExists => false,
            InvalidTopic => false,
            InvalidPartitions => false,
            InvalidReplicationFactor => false,
            InvalidReplicaAssignment => false,
            InvalidConfig => false,
            PolicyViolation => false,
            RequestTimedOut => true,
            StorageError => true,
            ResourceNotFound => false,

            NotLeader => true,
            LeaderNotAvailable => true,
            NotEnoughReplicas => true,
            NotEnoughReplicasAfterAppend => true,
            OffsetOutOfRange => false,
            FencedLeaderEpoch => true,
            UnknownLeaderEpoch => true,
            ReplicaNotAvailable => true,
            OffsetNotAvailable => true,
            OutOfOrderSequence => false,
            DuplicateSequence => false,
            InvalidProducerEpoch => false,
            ProducerFenced => false,
            UnknownProducerId => false,
            ReassignmentInProgress => false,
            NoReassignmentInProgress => false,
            ElectionNotNeeded => false,
            PreferredLeaderNotAvailable => true,
            EligibleLeadersNotAvailable => true,

            NotController => true,
            StaleBrokerEpoch => false,
            BrokerNotAvailable => false,
            BrokerFenced => true,
            InvalidPartitionEpoch => false,
            IneligibleReplica => false,
            InconsistentClusterId => false,
            DuplicateBrokerRegistration => true,
            BrokerIdNotRegistered => false,
            DuplicateVoter => false,
            VoterNotFound => false,
            ReconfigurationInProgress => true,
            BrokerDecommissioned => false,

            CoordinatorNotAvailable => true,
            NotCoordinator => true,
            CoordinatorLoadInProgress => true,
            InvalidGroupId => false,
            GroupIdNotFound => false,
            UnknownMemberId => false,
            FencedMemberEpoch => false,
            StaleMemberEpoch => false,
            IllegalGeneration => false,
            UnreleasedInstanceId => false,
            FencedInstanceId => false,
            GroupNotEmpty => false,
            GroupMaxSizeReached => false,
            UnsupportedAssignor => false,
            InvalidRegularExpression => false,
            OffsetMetadataTooLarge => false,
            GroupSubscribedToTopic => false,
        }
    }
}

impl Error {
    /// An error with `code`, a human-readable `message`, `retriable` taken from
    /// [`ErrorCode::is_retriable`], and no leader hints.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
            retriable: code.is_retriable(),
            leader_id: None,
            leader_endpoint: None,
            leader_epoch: None,
        }
    }
}
