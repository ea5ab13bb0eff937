//! Topic types of the admin client: what to create, what came back, topic and partition
//! metadata, configuration entries and changes.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::ApiError;

/// A topic id: 16 bytes, a UUID in RFC 4122 byte order. Shown (and serialized) as UUID text,
/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    /// The id in `bytes`, or `None` when `bytes` is not 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(TopicId)
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for TopicId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A topic to create.
///
/// ```
/// use keel_client::NewTopic;
/// let t = NewTopic::new("orders").partitions(6).replication_factor(3).config("retention.ms", "86400000");
/// assert_eq!(t.num_partitions, Some(6));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Number of partitions; `None`: the broker default (`num.partitions`).
    pub num_partitions: Option<i32>,
    /// Replicas per partition; `None`: the broker default (`default.replication.factor`).
    pub replication_factor: Option<i32>,
    /// Configuration overrides (`retention.ms`, `cleanup.policy`, ...).
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic named `name` with the broker's defaults for everything else.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            num_partitions: None,
            replication_factor: None,
            configs: BTreeMap::new(),
        }
    }

    /// Sets the partition count.
    pub fn partitions(mut self, n: i32) -> Self {
        self.num_partitions = Some(n);
        self
    }

    /// Sets the replication factor.
    pub fn replication_factor(mut self, r: i32) -> Self {
        self.replication_factor = Some(r);
        self
    }

    /// Adds one configuration override.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// The outcome of creating one topic of a `create_topics` batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedTopic {
    /// Topic name.
    pub name: String,
    /// `None` on success; why this topic was refused otherwise.
    pub error: Option<ApiError>,
    /// The new topic's id; `None` on error and with `validate_only`.
    pub topic_id: Option<TopicId>,
    /// The topic's partition count.
    pub num_partitions: i32,
    /// The topic's replication factor.
    pub replication_factor: i32,
    /// The topic's full effective configuration, defaults included.
    pub configs: BTreeMap<String, String>,
}

/// The outcome of deleting one topic of a `delete_topics` batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedTopic {
    /// Topic name.
    pub name: String,
    /// The topic's id, when the server reported it.
    pub topic_id: Option<TopicId>,
    /// `None` on success; why this topic was not deleted otherwise.
    pub error: Option<ApiError>,
}

/// Metadata of one topic, as the answering node's metadata image holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// `None` on success; `UNKNOWN_TOPIC_OR_PARTITION` or `INVALID_TOPIC` otherwise.
    pub error: Option<ApiError>,
    /// Topic id; `None` when the topic is unknown.
    pub topic_id: Option<TopicId>,
    /// True for Keel's internal topics (such as `__consumer_offsets`).
    pub internal: bool,
    /// The partitions, in partition order.
    pub partitions: Vec<PartitionMetadata>,
    /// Configuration overrides; empty unless asked for (`include_configs`).
    pub configs: BTreeMap<String, String>,
}

impl TopicMetadata {
    /// The replication factor: the replica count of the first partition (all partitions of a
    /// topic have the same count), 0 for a topic without partitions.
    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }
}

/// Metadata of one partition.
//
// Log start offset, log end offset and high watermark are not here: `Cluster.Metadata` does not
// carry them. They come with the data plane (`Consumer.ListOffsets`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: i32,
    /// `None` on success; `LEADER_NOT_AVAILABLE` when the partition has no leader.
    pub error: Option<ApiError>,
    /// Broker id of the leader; `None` when there is none.
    pub leader: Option<i32>,
    /// Incremented at every leader change.
    pub leader_epoch: i32,
    /// Incremented at every change of leader, ISR or replicas.
    pub partition_epoch: i32,
    /// Broker ids of all replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// Broker ids of the in-sync replicas.
    pub isr: Vec<i32>,
    /// Broker ids of replicas whose broker is fenced or whose log directory failed.
    pub offline_replicas: Vec<i32>,
}

/// Where a configuration value comes from, most specific first (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConfigSource {
    /// An override set on the topic.
    DynamicTopicConfig,
    /// An override set on this broker.
    DynamicBrokerConfig,
    /// A cluster-wide broker default set through AlterConfigs.
    DynamicDefaultBrokerConfig,
    /// The broker's configuration file, environment or command line.
    StaticBrokerConfig,
    /// Keel's built-in default.
    DefaultConfig,
    /// A source this client does not know (a newer server), or none given.
    Unknown,
}

impl ConfigSource {
    /// Kafka's name for the source, such as `DYNAMIC_TOPIC_CONFIG`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigSource::DynamicTopicConfig => "DYNAMIC_TOPIC_CONFIG",
            ConfigSource::DynamicBrokerConfig => "DYNAMIC_BROKER_CONFIG",
            ConfigSource::DynamicDefaultBrokerConfig => "DYNAMIC_DEFAULT_BROKER_CONFIG",
            ConfigSource::StaticBrokerConfig => "STATIC_BROKER_CONFIG",
            ConfigSource::DefaultConfig => "DEFAULT_CONFIG",
            ConfigSource::Unknown => "UNKNOWN",
        }
    }
}

/// One configuration key of a topic and its effective value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigEntry {
    /// The key, such as `retention.ms`.
    pub name: String,
    /// The effective value; `None` when the value is sensitive or there is none.
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// True when AlterConfigs cannot change the key.
    pub read_only: bool,
    /// True when the value is a secret and never returned.
    pub sensitive: bool,
}

/// One change of an incremental `alter_configs`: keys not named keep their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ConfigChange {
    /// Set the key to the value.
    Set {
        /// The key.
        name: String,
        /// The new value.
        value: String,
    },
    /// Remove the topic's override, so the key falls back to the broker's value.
    Delete {
        /// The key.
        name: String,
    },
}

impl ConfigChange {
    /// The key the change is about.
    pub fn name(&self) -> &str {
        match self {
            ConfigChange::Set { name, .. } | ConfigChange::Delete { name } => name,
        }
    }
}

/// Which leader election to run (`keel leader elect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Election {
    /// Make each partition's preferred replica (the first listed) its leader, if it is an
    /// unfenced ISR member.
    Preferred,
    /// Give a leaderless partition a live replica even from outside the ISR. Records only the
    /// lost ISR held are lost: for when availability matters more.
    Unclean,
}

/// The outcome of an election on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElectionResult {
    /// Topic name.
    pub topic: String,
    /// Partition index (-1 when the topic itself is unknown).
    pub partition: i32,
    /// `None` when a new leader was elected; otherwise why not (`ELECTION_NOT_NEEDED`, ...).
    pub error: Option<ApiError>,
}
