//! Controller logic: pure functions from (image, request) to the records to commit, or to a
//! typed error that leaves the metadata unchanged.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: the caller (the active
//! controller's task) passes the current time, a fresh topic id and a placement start offset,
//! so that every decision can be replayed in a test. The caller must serialize its proposals
//! (one request at a time against the image that includes every proposal so far), otherwise
//! two requests validated against the same image can conflict; the image refuses the loser at
//! apply time.
//!
//! # Layout
//! - [`ControllerError`] and its wire mapping [`ControllerError::code`];
//! - topics: [`validate_topic_name`], [`validate_configs`], [`create_topic`],
//!   [`delete_topic`], [`alter_configs`], [`create_partitions`];
//! - placement: [`place_replicas`] (Kafka's rack-aware round robin);
//! - brokers: [`register_broker`], [`fence_broker`], [`unfence_broker`],
//!   [`begin_controlled_shutdown`], [`controlled_shutdown_done`], [`expired_brokers`];
//! - partitions: [`alter_partition`];
//! - tests in `controller_test.rs`.

use std::collections::{BTreeMap, BTreeSet};

use keel_proto::v1::ErrorCode;

use crate::image::{BrokerState, MetadataImage, PartitionState};
use crate::records::*;

/// Longest topic name, as Kafka (249, so that `<name>-<partition>` folder names fit in 255).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Which rule a topic name breaks. Displays as the rule, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameRule {
    /// Empty.
    #[error("a topic name must not be empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_NAME_LEN`].
    #[error("a topic name has at most 249 characters")]
    TooLong,
    /// `.` or `..`.
    #[error("a topic name may not be . or ..")]
    Dots,
    /// A character outside `[a-zA-Z0-9._-]`.
    #[error("a topic name uses only a-z A-Z 0-9 . _ -")]
    IllegalCharacter,
}

/// Which rule a configuration value breaks. Displays as the rule, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigRule {
    /// The key is not a known topic configuration.
    #[error("not a known topic config key")]
    UnknownKey,
    /// Not an integer.
    #[error("the value must be an integer")]
    NotANumber,
    /// An integer below the minimum.
    #[error("the value must be at least {0}")]
    BelowMinimum(i64),
    /// An integer above the maximum.
    #[error("the value must be at most {0}")]
    AboveMaximum(i64),
    /// Not one of the allowed words.
    #[error("the value is not one of the allowed words")]
    NotAllowed,
    /// `min.insync.replicas` is larger than the replication factor.
    #[error("min.insync.replicas may not exceed the replication factor {0}")]
    MinIsrAboveReplicationFactor(usize),
}

/// Why a request was refused. The metadata is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    /// The topic name breaks a naming rule.
    #[error("invalid topic name {name:?}: {rule}")]
    InvalidTopicName {
        /// The name.
        name: String,
        /// The rule.
        rule: TopicNameRule,
    },
    /// A topic of that name exists.
    #[error("topic {name} already exists")]
    TopicAlreadyExists {
        /// The name.
        name: String,
    },
    /// No topic of that name.
    #[error("unknown topic {name}")]
    UnknownTopic {
        /// The name.
        name: String,
    },
    /// No topic with that id.
    #[error("unknown topic id {topic_id}")]
    UnknownTopicId {
        /// The id.
        topic_id: TopicId,
    },
    /// No such partition.
    #[error("unknown partition {topic_id}/{partition}")]
    UnknownPartition {
        /// Topic.
        topic_id: TopicId,
        /// Partition.
        partition: PartitionIndex,
    },
    /// Partition count not positive, or not above the current count.
    #[error("invalid partition count {requested} (current {current:?})")]
    InvalidPartitions {
        /// Requested count.
        requested: i32,
        /// Current count, when adding partitions.
        current: Option<i32>,
    },
    /// Replication factor not positive or above the number of unfenced brokers.
    #[error("invalid replication factor {requested}: {available} brokers available")]
    InvalidReplicationFactor {
        /// Requested factor.
        requested: i32,
        /// Unfenced brokers.
        available: usize,
    },
    /// A configuration entry is refused.
    #[error("invalid config {key}{}: {rule}", value.as_deref().map(|v| format!("={v}")).unwrap_or_default())]
    InvalidConfig {
        /// The key.
        key: String,
        /// The value (`None` when a removal was refused).
        value: Option<String>,
        /// The rule.
        rule: ConfigRule,
    },
    /// The broker is not registered.
    #[error("broker {broker_id} is not registered")]
    BrokerNotRegistered {
        /// The broker.
        broker_id: BrokerId,
    },
    /// The broker epoch is not the current registration's.
    #[error("broker {broker_id}: stale epoch {given} (current {current})")]
    StaleBrokerEpoch {
        /// The broker.
        broker_id: BrokerId,
        /// Epoch sent.
        given: BrokerEpoch,
        /// Current epoch.
        current: BrokerEpoch,
    },
    /// Another incarnation holds the registration and its session is alive.
    #[error("broker {broker_id} is registered by another live incarnation")]
    DuplicateBrokerRegistration {
        /// The broker.
        broker_id: BrokerId,
    },
    /// The sending broker is fenced.
    #[error("broker {broker_id} is fenced")]
    BrokerFenced {
        /// The broker.
        broker_id: BrokerId,
    },
    /// The sender does not lead the partition.
    #[error("broker {broker_id} does not lead {topic_id}/{partition} (leader {leader:?})")]
    NotLeader {
        /// Sender.
        broker_id: BrokerId,
        /// Topic.
        topic_id: TopicId,
        /// Partition.
        partition: PartitionIndex,
        /// Current leader.
        leader: Option<BrokerId>,
        /// Current leader epoch.
        leader_epoch: LeaderEpoch,
    },
    /// The request's leader epoch is not the current one.
    #[error("leader epoch {given} is not current ({current})")]
    FencedLeaderEpoch {
        /// Sent.
        given: LeaderEpoch,
        /// Current.
        current: LeaderEpoch,
    },
    /// The request's partition epoch is not the current one (optimistic concurrency).
    #[error("partition epoch {given} is not current ({current})")]
    InvalidPartitionEpoch {
        /// Sent.
        given: PartitionEpoch,
        /// Current.
        current: PartitionEpoch,
    },
    /// A proposed ISR member may not join (fenced, shutting down, stale epoch, not a replica).
    #[error("broker {broker_id} may not be in the ISR")]
    IneligibleReplica {
        /// The member.
        broker_id: BrokerId,
    },
    /// The proposed ISR is malformed (misses the leader, repeats a member).
    #[error("invalid ISR proposal")]
    InvalidIsr,
    /// The partition already has the leader the election would give it.
    #[error("partition {partition} already has a suitable leader{}", leader.map_or(String::new(), |l| format!(" (broker {l})")))]
    ElectionNotNeeded {
        partition: PartitionIndex,
        leader: Option<BrokerId>,
    },
    /// The preferred replica is not in the ISR or not serving.
    #[error(
        "the preferred replica {preferred} of partition {partition} is not an unfenced ISR member"
    )]
    PreferredLeaderNotAvailable {
        partition: PartitionIndex,
        preferred: BrokerId,
    },
    /// No replica is serving.
    #[error("no replica of partition {partition} is unfenced")]
    EligibleLeadersNotAvailable { partition: PartitionIndex },
    /// A reassignment target that cannot be used.
    #[error("invalid replica assignment for partition {partition}: {reason}")]
    InvalidReplicaAssignment {
        partition: PartitionIndex,
        reason: String,
    },
    /// The partition is being reassigned already; cancel that first.
    #[error("partition {partition} is being reassigned already (cancel it first)")]
    ReassignmentInProgress { partition: PartitionIndex },
    /// A cancellation named a partition that is not being reassigned.
    #[error("partition {partition} is not being reassigned")]
    NoReassignmentInProgress { partition: PartitionIndex },
    /// Cancelling would leave the partition without an in-sync original replica.
    #[error("cannot cancel the reassignment of partition {partition}: no original replica is in sync; let it finish")]
    CancelWouldLoseIsr { partition: PartitionIndex },
    /// The broker id was decommissioned and may not register again.
    #[error("broker {broker_id} was decommissioned and may not register again")]
    BrokerDecommissioned { broker_id: BrokerId },
    /// The node is a voter of the metadata quorum already.
    #[error("node {node_id} is a voter already")]
    DuplicateVoter { node_id: u64 },
    /// The node is not a voter of the metadata quorum.
    #[error("node {node_id} is not a voter")]
    VoterNotFound { node_id: u64 },
    /// The quorum would have no voter left.
    #[error("node {node_id} is the last voter; add another one first")]
    LastVoter { node_id: u64 },
    /// Another voter change is still running.
    #[error("another change of the voters is in progress: {detail}")]
    ReconfigurationInProgress { detail: String },
    /// Decommissioning the broker would leave too few brokers for a partition's replicas.
    #[error("cannot decommission broker {broker_id}: {reason}")]
    CannotDecommission { broker_id: BrokerId, reason: String },
}

impl ControllerError {
    /// The wire code for this error (hints such as the leader are filled by the caller).
    pub fn code(&self) -> ErrorCode {
        use ControllerError::*;
        match self {
            InvalidTopicName { .. } => ErrorCode::InvalidTopic,
            TopicAlreadyExists { .. } => ErrorCode::TopicAlreadyExists,
            UnknownTopic { .. } | UnknownPartition { .. } => ErrorCode::UnknownTopicOrPartition,
            UnknownTopicId { .. } => ErrorCode::UnknownTopicId,
            InvalidPartitions { .. } => ErrorCode::InvalidPartitions,
            InvalidReplicationFactor { .. } => ErrorCode::InvalidReplicationFactor,
            InvalidConfig { .. } => ErrorCode::InvalidConfig,
            BrokerNotRegistered { .. } => ErrorCode::BrokerIdNotRegistered,
            StaleBrokerEpoch { .. } => ErrorCode::StaleBrokerEpoch,
            DuplicateBrokerRegistration { .. } => ErrorCode::DuplicateBrokerRegistration,
            BrokerFenced { .. } => ErrorCode::BrokerFenced,
            NotLeader { .. } => ErrorCode::NotLeader,
            FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            InvalidPartitionEpoch { .. } => ErrorCode::InvalidPartitionEpoch,
            IneligibleReplica { .. } => ErrorCode::IneligibleReplica,
            InvalidIsr => ErrorCode::InvalidRequest,
            ElectionNotNeeded { .. } => ErrorCode::ElectionNotNeeded,
            PreferredLeaderNotAvailable { .. } => ErrorCode::PreferredLeaderNotAvailable,
            EligibleLeadersNotAvailable { .. } => ErrorCode::EligibleLeadersNotAvailable,
            InvalidReplicaAssignment { .. } => ErrorCode::InvalidReplicaAssignment,
            ReassignmentInProgress { .. } => ErrorCode::ReassignmentInProgress,
            NoReassignmentInProgress { .. } => ErrorCode::NoReassignmentInProgress,
            CancelWouldLoseIsr { .. } | CannotDecommission { .. } => ErrorCode::InvalidRequest,
            BrokerDecommissioned { .. } => ErrorCode::BrokerDecommissioned,
            DuplicateVoter { .. } => ErrorCode::DuplicateVoter,
            VoterNotFound { .. } => ErrorCode::VoterNotFound,
            LastVoter { .. } => ErrorCode::InvalidRequest,
            ReconfigurationInProgress { .. } => ErrorCode::ReconfigurationInProgress,
        }
    }
}

pub(crate) type Result<T, E = ControllerError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------------------------

/// Checks Kafka's topic name rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let rule = if name.is_empty() {
        Some(TopicNameRule::Empty)
    } else if name.len() > MAX_TOPIC_NAME_LEN {
        Some(TopicNameRule::TooLong)
    } else if name == "." || name == ".." {
        Some(TopicNameRule::Dots)
    } else if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        Some(TopicNameRule::IllegalCharacter)
    } else {
        None
    };
    match rule {
        Some(rule) => Err(ControllerError::InvalidTopicName {
            name: name.to_owned(),
            rule,
        }),
        None => Ok(()),
    }
}

/// The value rules of one configuration key.
enum Kind {
    /// An integer in `[min, max]`.
    Int(i64, i64),
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// Topic configuration keys Keel knows, with their value rules. Ranges are Kafka's.
const TOPIC_CONFIGS: &[(&str, Kind)] = &[
    (
        "cleanup.policy",
        Kind::OneOf(&["delete", "compact", "compact,delete", "delete,compact"]),
    ),
    ("retention.ms", Kind::Int(-1, i64::MAX)),
    ("retention.bytes", Kind::Int(-1, i64::MAX)),
    ("segment.bytes", Kind::Int(14, i32::MAX as i64)),
    ("segment.ms", Kind::Int(1, i64::MAX)),
    ("max.message.bytes", Kind::Int(0, i32::MAX as i64)),
    ("min.insync.replicas", Kind::Int(1, i32::MAX as i64)),
    // Keel's own: fsync every acknowledged batch (default) or on an interval.
    ("flush.mode", Kind::OneOf(&["per-record", "interval"])),
    ("flush.ms", Kind::Int(0, i64::MAX)),
    (
        "message.timestamp.type",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
    ),
    ("index.interval.bytes", Kind::Int(0, i32::MAX as i64)),
];

/// The value each known key takes when a topic does not override it: Kafka's defaults, and
/// Keel's for its own keys. Kept beside [`TOPIC_CONFIGS`]; a test checks they name the same
/// keys and that every default passes its rule.
pub const TOPIC_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("retention.ms", "604800000"),
    ("retention.bytes", "-1"),
    ("segment.bytes", "1073741824"),
    ("segment.ms", "604800000"),
    ("max.message.bytes", "1048588"),
    ("min.insync.replicas", "1"),
    ("flush.mode", "per-record"),
    ("flush.ms", "1000"),
    ("message.timestamp.type", "CreateTime"),
    ("index.interval.bytes", "4096"),
];

/// Whether `key` is a known topic configuration key.
pub fn is_known_config(key: &str) -> bool {
    TOPIC_CONFIGS.iter().any(|(k, _)| *k == key)
}

fn validate_config(key: &str, value: &str, replication_factor: usize) -> Result<()> {
    let err = |rule| ControllerError::InvalidConfig {
        key: key.to_owned(),
        value: Some(value.to_owned()),
        rule,
    };
    let kind = TOPIC_CONFIGS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, kind)| kind)
        .ok_or_else(|| err(ConfigRule::UnknownKey))?;
    match kind {
        Kind::Int(min, max) => {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| err(ConfigRule::NotANumber))?;
            if v < *min {
                return Err(err(ConfigRule::BelowMinimum(*min)));
            }
            if v > *max {
                return Err(err(ConfigRule::AboveMaximum(*max)));
            }
            if key == "min.insync.replicas" && v as u64 > replication_factor as u64 {
                return Err(err(ConfigRule::MinIsrAboveReplicationFactor(
                    replication_factor,
                )));
            }
        }
        Kind::OneOf(words) => {
            if !words.contains(&value) {
                return Err(err(ConfigRule::NotAllowed));
            }
        }
    }
    Ok(())
}

/// Checks every key is known and every value fits its rule; `min.insync.replicas` may not
/// exceed `replication_factor`. Reports the first bad key in key order.
pub fn validate_configs(
    configs: &BTreeMap<String, String>,
    replication_factor: usize,
) -> Result<()> {
    configs
        .iter()
        .try_for_each(|(k, v)| validate_config(k, v, replication_factor))
}

/// A request to create a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTopicRequest {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Configuration overrides.
    pub configs: BTreeMap<String, String>,
}

/// Validates a topic creation and returns its records: `CreateTopic` then one `Partition`
/// record per partition, replicas placed by [`place_replicas`] from `placement_start`, every
/// replica in the ISR, the first replica leading at leader epoch 0.
pub fn create_topic(
    image: &MetadataImage,
    req: &CreateTopicRequest,
    topic_id: TopicId,
    placement_start: u64,
    now_ms: i64,
) -> Result<Vec<Record>> {
    validate_topic_name(&req.name)?;
    if image.topic_ids.contains_key(&req.name) {
        return Err(ControllerError::TopicAlreadyExists {
            name: req.name.clone(),
        });
    }
    if req.partitions < 1 {
        return Err(ControllerError::InvalidPartitions {
            requested: req.partitions,
            current: None,
        });
    }
    let brokers = placement_brokers(image);
    if req.replication_factor < 1 || req.replication_factor as usize > brokers.len() {
        return Err(ControllerError::InvalidReplicationFactor {
            requested: req.replication_factor,
            available: brokers.len(),
        });
    }
    let rf = req.replication_factor as usize;
    validate_configs(&req.configs, rf)?;
    let placement = place_replicas(&brokers, 0, req.partitions as usize, rf, placement_start);
    let mut out = vec![Record::CreateTopic(CreateTopic {
        name: req.name.clone(),
        topic_id,
        configs: req.configs.clone(),
        partitions: req.partitions,
        timestamp_ms: now_ms,
    })];
    out.extend(partition_records(topic_id, 0, placement));
    Ok(out)
}

fn partition_records(
    topic_id: TopicId,
    first: PartitionIndex,
    placement: Vec<Vec<BrokerId>>,
) -> Vec<Record> {
    placement
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| {
            Record::Partition(PartitionRecord {
                topic_id,
                partition: first + i as PartitionIndex,
                isr: replicas.clone(),
                leader: replicas.first().copied(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            })
        })
        .collect()
}

/// Deletes the topic named `name`.
pub fn delete_topic(image: &MetadataImage, name: &str) -> Result<Record> {
    let topic = image
        .topic_by_name(name)
        .ok_or_else(|| ControllerError::UnknownTopic {
            name: name.to_owned(),
        })?;
    Ok(Record::RemoveTopic(RemoveTopic {
        topic_id: topic.topic_id,
    }))
}

/// Sets (`Some`) or removes (`None`) configuration overrides of a topic. The resulting set is
/// validated as a whole.
pub fn alter_configs(
    image: &MetadataImage,
    name: &str,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<Record> {
    let topic = image
        .topic_by_name(name)
        .ok_or_else(|| ControllerError::UnknownTopic {
            name: name.to_owned(),
        })?;
    for (k, v) in changes {
        if v.is_none() && !is_known_config(k) {
            return Err(ControllerError::InvalidConfig {
                key: k.clone(),
                value: None,
                rule: ConfigRule::UnknownKey,
            });
        }
    }
    let mut merged = topic.configs.clone();
    for (k, v) in changes {
        match v {
            Some(v) => merged.insert(k.clone(), v.clone()),
            None => merged.remove(k),
        };
    }
    validate_configs(&merged, topic.replication_factor())?;
    Ok(Record::ConfigChange(ConfigChange {
        topic_id: topic.topic_id,
        changes: changes.clone(),
    }))
}

/// Grows a topic to `new_count` partitions, placing the new ones like [`create_topic`].
pub fn create_partitions(
    image: &MetadataImage,
    name: &str,
    new_count: i32,
    placement_start: u64,
) -> Result<Vec<Record>> {
    let topic = image
        .topic_by_name(name)
        .ok_or_else(|| ControllerError::UnknownTopic {
            name: name.to_owned(),
        })?;
    let current = topic.partitions.len() as i32;
    if new_count <= current {
        return Err(ControllerError::InvalidPartitions {
            requested: new_count,
            current: Some(current),
        });
    }
    let brokers = placement_brokers(image);
    let rf = topic.replication_factor();
    if rf > brokers.len() {
        return Err(ControllerError::InvalidReplicationFactor {
            requested: rf as i32,
            available: brokers.len(),
        });
    }
    let placement = place_replicas(
        &brokers,
        current as usize,
        (new_count - current) as usize,
        rf,
        placement_start,
    );
    Ok(partition_records(topic.topic_id, current, placement))
}

// ---------------------------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------------------------

/// Unfenced brokers that are not being decommissioned, with their racks, in id order: the
/// candidates for new replicas.
fn placement_brokers(image: &MetadataImage) -> Vec<(BrokerId, Option<String>)> {
    image
        .placeable_brokers()
        .map(|b| (b.broker_id, b.rack.clone()))
        .collect()
}

/// Places `count` partitions numbered from `first_partition` with `rf` replicas each over
/// `brokers` (id, rack), Kafka's way:
///
/// - brokers are ordered so that racks alternate (`r1:a, r2:b, r1:c, r2:d, ...`; brokers
///   without a rack form one rack of their own);
/// - partition `p`'s first replica (its preferred leader) is broker `(p + start) % n`, so
///   leaders go round the brokers;
/// - the other replicas follow at a shift that grows by one every `n` partitions, skipping a
///   broker whose rack already holds a replica (until every rack has one) or that already holds
///   one.
///
/// `start` replaces Kafka's random start so that the result is reproducible; pass something
/// that varies between topics (the log index, a hash of the name).
///
/// Worked example: brokers 1, 2, 3 (no racks), 3 partitions, rf 2, start 0 →
/// `[[1,2],[2,3],[3,1]]`: every broker leads once and holds two replicas.
pub fn place_replicas(
    brokers: &[(BrokerId, Option<String>)],
    first_partition: usize,
    count: usize,
    rf: usize,
    start: u64,
) -> Vec<Vec<BrokerId>> {
    let n = brokers.len();
    if n == 0 || rf == 0 {
        return vec![Vec::new(); count];
    }
    // The caller checks rf <= n; clamping keeps the walk below finite regardless.
    let rf = rf.min(n);
    // Racks in name order, each with its brokers in id order; interleave them.
    let mut by_rack: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack.entry(rack.as_deref()).or_default().push(*id);
    }
    let rack_of: BTreeMap<BrokerId, Option<&str>> =
        brokers.iter().map(|(id, r)| (*id, r.as_deref())).collect();
    let num_racks = by_rack.len();
    let mut order = Vec::with_capacity(n);
    let max_per_rack = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..max_per_rack {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(i) {
                order.push(*id);
            }
        }
    }
    let start_index = (start % n as u64) as usize;
    let mut shift = (start % n as u64) as usize;
    let mut out = Vec::with_capacity(count);
    for p in first_partition..first_partition + count {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (p + start_index) % n;
        let leader = order[first];
        let mut replicas = vec![leader];
        let mut racks: BTreeSet<Option<&str>> = BTreeSet::from([rack_of[&leader]]);
        let mut k = 0usize;
        // Walk candidates at the current shift. A broker is taken when its rack has no replica
        // yet (or every rack has one) and it holds none yet. The walk visits every broker
        // within n - 1 steps, so it ends once rf <= n.
        while replicas.len() < rf && n > 1 {
            let idx = (first + 1 + (shift * num_racks + k) % (n - 1)) % n;
            k += 1;
            let b = order[idx];
            let rack = rack_of[&b];
            if (racks.contains(&rack) && racks.len() < num_racks) || replicas.contains(&b) {
                continue;
            }
            racks.insert(rack);
            replicas.push(b);
        }
        out.push(replicas);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Brokers
// ---------------------------------------------------------------------------------------------

/// A broker's registration request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterBrokerRequest {
    /// Node id.
    pub broker_id: BrokerId,
    /// Incarnation of this start.
    pub incarnation_id: IncarnationId,
    /// Listeners.
    pub endpoints: BrokerEndpoints,
    /// Rack.
    pub rack: Option<String>,
}

/// What a registration leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The same incarnation is registered already (a retry): its epoch stays.
    Existing(BrokerEpoch),
    /// Commit these records; the broker epoch will be the entry's log index.
    Records(Vec<Record>),
}

/// Registers a broker. A new incarnation replaces the old one only when the old one's session
/// has expired (`old_session_expired`, from the controller's heartbeat tracker) or it is
/// fenced already. The old registration loses its leaderships and ISR places exactly as if it
/// were fenced.
pub fn register_broker(
    image: &MetadataImage,
    req: &RegisterBrokerRequest,
    old_session_expired: bool,
    now_ms: i64,
) -> Result<Registration> {
    if image.decommissioned.contains(&req.broker_id) {
        return Err(ControllerError::BrokerDecommissioned {
            broker_id: req.broker_id,
        });
    }
    let mut out = Vec::new();
    if let Some(old) = image.brokers.get(&req.broker_id) {
        if old.incarnation_id == req.incarnation_id {
            return Ok(Registration::Existing(old.broker_epoch));
        }
        if old.state != BrokerState::Fenced && !old_session_expired {
            return Err(ControllerError::DuplicateBrokerRegistration {
                broker_id: req.broker_id,
            });
        }
        out.extend(remove_from_partitions(image, req.broker_id, Removal::Fence));
    }
    out.push(Record::RegisterBroker(RegisterBroker {
        broker_id: req.broker_id,
        incarnation_id: req.incarnation_id,
        endpoints: req.endpoints.clone(),
        rack: req.rack.clone(),
        timestamp_ms: now_ms,
    }));
    Ok(Registration::Records(out))
}

/// The state of `broker_id`'s registration if `epoch` is its current one.
pub fn current_broker(
    image: &MetadataImage,
    broker_id: BrokerId,
    epoch: BrokerEpoch,
) -> Result<BrokerState> {
    let b = image
        .brokers
        .get(&broker_id)
        .ok_or(ControllerError::BrokerNotRegistered { broker_id })?;
    if b.broker_epoch != epoch {
        return Err(ControllerError::StaleBrokerEpoch {
            broker_id,
            given: epoch,
            current: b.broker_epoch,
        });
    }
    Ok(b.state)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// The broker is gone: leaderships move to another eligible ISR member, or to nobody.
    Fence,
    /// The broker is leaving on purpose: leaderships move when another eligible ISR member
    /// exists; otherwise it keeps leading until it stops (availability over a clean exit).
    Shutdown,
}

/// PartitionChange records that take `broker` out of every ISR and every leadership.
///
/// The new leader is the first replica, in replica order (preferred first), that is in the new
/// ISR and unfenced; a replica outside the ISR is never elected. When `broker` is the last ISR
/// member it stays in the ISR (KIP-841): it holds the only complete copy, and must be electable
/// when it returns; on fencing the partition is left without a leader.
fn remove_from_partitions(image: &MetadataImage, broker: BrokerId, how: Removal) -> Vec<Record> {
    let mut out = Vec::new();
    for (topic_id, partition, p) in image.partitions() {
        if !p.isr.contains(&broker) && p.leader != Some(broker) {
            continue;
        }
        let remaining: Vec<BrokerId> = p.isr.iter().copied().filter(|b| *b != broker).collect();
        let new_leader = p
            .replicas
            .iter()
            .copied()
            .find(|r| remaining.contains(r) && image.is_unfenced(*r));
        let (isr, leader) = match (how, remaining.is_empty()) {
            (Removal::Fence, true) => (
                p.isr.clone(),
                if p.leader.is_some() { Some(None) } else { None },
            ),
            (Removal::Shutdown, true) => continue,
            (_, false) if p.leader == Some(broker) => match (how, new_leader) {
                (_, Some(l)) => (remaining, Some(Some(l))),
                (Removal::Fence, None) => (remaining, Some(None)),
                // Nobody eligible to take over: keep leading until the broker stops.
                (Removal::Shutdown, None) => continue,
            },
            (_, false) => (remaining, None),
        };
        if isr == p.isr && leader.is_none() {
            continue;
        }
        out.push(Record::PartitionChange(PartitionChange {
            topic_id,
            partition,
            isr: (isr != p.isr).then_some(isr),
            leader,
            replicas: None,
            ..Default::default()
        }));
    }
    out
}

/// Fences `broker` (its session expired): `FenceBroker`, then the leadership and ISR changes of
/// [`remove_from_partitions`].
pub fn fence_broker(
    image: &MetadataImage,
    broker_id: BrokerId,
    now_ms: i64,
) -> Result<Vec<Record>> {
    let b = image
        .brokers
        .get(&broker_id)
        .ok_or(ControllerError::BrokerNotRegistered { broker_id })?;
    let mut out = vec![Record::FenceBroker(FenceBroker {
        broker_id,
        broker_epoch: b.broker_epoch,
        timestamp_ms: now_ms,
    })];
    out.extend(remove_from_partitions(image, broker_id, Removal::Fence));
    Ok(out)
}

/// Unfences a broker that has caught up, and gives it back the leadership of partitions that
/// are leaderless with it as the last ISR member.
pub fn unfence_broker(
    image: &MetadataImage,
    broker_id: BrokerId,
    epoch: BrokerEpoch,
) -> Result<Vec<Record>> {
    current_broker(image, broker_id, epoch)?;
    let mut out = vec![Record::UnfenceBroker(UnfenceBroker {
        broker_id,
        broker_epoch: epoch,
    })];
    for (topic_id, partition, p) in image.partitions() {
        if p.leader.is_none() && p.isr.contains(&broker_id) {
            out.push(Record::PartitionChange(PartitionChange {
                topic_id,
                partition,
                isr: None,
                leader: Some(Some(broker_id)),
                replicas: None,
                ..Default::default()
            }));
        }
    }
    Ok(out)
}

/// Starts controlled shutdown: marks the broker and moves its leaderships (and ISR places) to
/// other eligible ISR members first, so that clients see one clean leader change each.
pub fn begin_controlled_shutdown(
    image: &MetadataImage,
    broker_id: BrokerId,
    epoch: BrokerEpoch,
) -> Result<Vec<Record>> {
    current_broker(image, broker_id, epoch)?;
    let mut out = vec![Record::BeginControlledShutdown(BeginControlledShutdown {
        broker_id,
        broker_epoch: epoch,
    })];
    out.extend(remove_from_partitions(image, broker_id, Removal::Shutdown));
    Ok(out)
}

/// Whether a shutting-down broker leads nothing any more and may stop.
pub fn controlled_shutdown_done(image: &MetadataImage, broker_id: BrokerId) -> bool {
    image
        .partitions()
        .all(|(_, _, p)| p.leader != Some(broker_id))
}

/// Hands the next `size` producer ids to a broker with a current registration.
pub fn allocate_producer_ids(
    image: &MetadataImage,
    broker_id: BrokerId,
    epoch: BrokerEpoch,
    size: i32,
) -> Result<Record> {
    current_broker(image, broker_id, epoch)?;
    Ok(Record::ProducerIdsBlock(ProducerIdsBlock {
        broker_id,
        broker_epoch: epoch,
        first_producer_id: image.next_producer_id,
        size,
    }))
}

/// Brokers whose last heartbeat (`last_heartbeat_ms`, kept by the controller in memory) is more
/// than `session_timeout_ms` before `now_ms` and that are not fenced yet. A broker with no
/// heartbeat recorded counts from its registration time.
pub fn expired_brokers(
    image: &MetadataImage,
    last_heartbeat_ms: &BTreeMap<BrokerId, i64>,
    now_ms: i64,
    session_timeout_ms: i64,
) -> Vec<BrokerId> {
    image
        .brokers
        .values()
        .filter(|b| b.state != BrokerState::Fenced)
        .filter(|b| {
            let seen = last_heartbeat_ms
                .get(&b.broker_id)
                .copied()
                .unwrap_or(b.registered_at_ms);
            now_ms.saturating_sub(seen) > session_timeout_ms
        })
        .map(|b| b.broker_id)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Partitions
// ---------------------------------------------------------------------------------------------

/// An ISR member proposed by a leader, with the broker epoch it was seen under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsrMember {
    /// The replica.
    pub broker_id: BrokerId,
    /// Its broker epoch as the leader saw it.
    pub broker_epoch: BrokerEpoch,
}

/// A partition leader's ISR proposal (Kafka's AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    /// The leader sending it.
    pub broker_id: BrokerId,
    /// Its broker epoch.
    pub broker_epoch: BrokerEpoch,
    /// Topic.
    pub topic_id: TopicId,
    /// Partition.
    pub partition: PartitionIndex,
    /// The leader epoch it leads in.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch the proposal is based on.
    pub partition_epoch: PartitionEpoch,
    /// The proposed ISR, leader included.
    pub new_isr: Vec<IsrMember>,
}

/// Checks an ISR proposal and returns its `PartitionChange`. The partition epoch guards against
/// a proposal built on a state that has changed since (optimistic concurrency).
pub fn alter_partition(image: &MetadataImage, req: &AlterPartitionRequest) -> Result<Record> {
    let state = current_broker(image, req.broker_id, req.broker_epoch)?;
    if state == BrokerState::Fenced {
        return Err(ControllerError::BrokerFenced {
            broker_id: req.broker_id,
        });
    }
    if !image.topics.contains_key(&req.topic_id) {
        return Err(ControllerError::UnknownTopicId {
            topic_id: req.topic_id,
        });
    }
    let p: &PartitionState =
        image
            .partition(req.topic_id, req.partition)
            .ok_or(ControllerError::UnknownPartition {
                topic_id: req.topic_id,
                partition: req.partition,
            })?;
    if p.leader != Some(req.broker_id) {
        return Err(ControllerError::NotLeader {
            broker_id: req.broker_id,
            topic_id: req.topic_id,
            partition: req.partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
        });
    }
    if req.leader_epoch != p.leader_epoch {
        return Err(ControllerError::FencedLeaderEpoch {
            given: req.leader_epoch,
            current: p.leader_epoch,
        });
    }
    if req.partition_epoch != p.partition_epoch {
        return Err(ControllerError::InvalidPartitionEpoch {
            given: req.partition_epoch,
            current: p.partition_epoch,
        });
    }
    let mut seen = BTreeSet::new();
    if !req.new_isr.iter().all(|m| seen.insert(m.broker_id)) || !seen.contains(&req.broker_id) {
        return Err(ControllerError::InvalidIsr);
    }
    for m in &req.new_isr {
        let b = image.brokers.get(&m.broker_id);
        let eligible = p.replicas.contains(&m.broker_id)
            && b.is_some_and(|b| b.broker_epoch == m.broker_epoch)
            // A member already in the ISR may stay; a new one must be serving.
            && (p.isr.contains(&m.broker_id) || b.is_some_and(|b| b.state == BrokerState::Unfenced));
        if !eligible {
            return Err(ControllerError::IneligibleReplica {
                broker_id: m.broker_id,
            });
        }
    }
    Ok(Record::PartitionChange(PartitionChange {
        topic_id: req.topic_id,
        partition: req.partition,
        isr: Some(req.new_isr.iter().map(|m| m.broker_id).collect()),
        leader: None,
        replicas: None,
        ..Default::default()
    }))
}

// ---------------------------------------------------------------------------------------------
// Leader elections
// ---------------------------------------------------------------------------------------------

/// What kind of leader election to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Election {
    /// The preferred replica (first in the replica list) becomes leader if it is an unfenced
    /// ISR member.
    Preferred,
    /// A partition without a serving leader gets one: an unfenced ISR member if there is
    /// one, else the first unfenced replica outside the ISR, which becomes the whole ISR.
    /// Records only the lost ISR held are then lost; an operator asks for this explicitly.
    Unclean,
}

/// The `PartitionChange` an election makes on one partition, or why it makes none.
pub fn elect_leader(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: PartitionIndex,
    election: Election,
) -> Result<Record> {
    let p = image
        .partition(topic_id, partition)
        .ok_or(ControllerError::UnknownPartition {
            topic_id,
            partition,
        })?;
    let change = |leader: BrokerId, isr: Option<Vec<BrokerId>>| {
        Record::PartitionChange(PartitionChange {
            topic_id,
            partition,
            isr,
            leader: Some(Some(leader)),
            replicas: None,
            ..Default::default()
        })
    };
    let not_needed = ControllerError::ElectionNotNeeded {
        partition,
        leader: p.leader,
    };
    match election {
        Election::Preferred => {
            let preferred = p.replicas[0];
            if p.leader == Some(preferred) {
                return Err(not_needed);
            }
            if p.isr.contains(&preferred) && image.is_unfenced(preferred) {
                return Ok(change(preferred, None));
            }
            Err(ControllerError::PreferredLeaderNotAvailable {
                partition,
                preferred,
            })
        }
        Election::Unclean => {
            if p.leader.is_some_and(|l| image.is_unfenced(l)) {
                return Err(not_needed);
            }
            let live = |r: &&BrokerId| image.is_unfenced(**r);
            if let Some(r) = p.replicas.iter().filter(|r| p.isr.contains(r)).find(live) {
                return Ok(change(*r, None));
            }
            match p.replicas.iter().find(live) {
                Some(r) => Ok(change(*r, Some(vec![*r]))),
                None => Err(ControllerError::EligibleLeadersNotAvailable { partition }),
            }
        }
    }
}

#[cfg(test)]
#[path = "controller_test.rs"]
mod tests;
