//! The typed records of the metadata log.
//!
//! Every change to cluster metadata is one of these records, committed through Raft and then
//! applied, in log order, to the [`MetadataImage`](crate::image::MetadataImage) on every node.
//! A record carries everything its application needs — including any timestamp — so that
//! applying it is a pure function of the image and the record (no clock, no randomness).
//!
//! # Layout
//! - ids and epochs: [`BrokerId`], [`TopicId`], [`IncarnationId`], the epoch aliases;
//! - [`Endpoint`], [`BrokerEndpoints`]: where a broker listens;
//! - [`Record`] — the enum of all records, one variant per kind of change;
//! - one struct per record kind carrying its fields.
//!
//! Encoding: records are serialized with serde (JSON in the log, see `store`). New fields must
//! be added with `#[serde(default)]` so that older entries still decode.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A broker's node id (Kafka's `node.id`; `int32` on the wire).
pub type BrokerId = i32;
/// A partition index within its topic (`int32` on the wire).
pub type PartitionIndex = i32;
/// The leader epoch of a partition: bumped at every leader change.
pub type LeaderEpoch = i32;
/// The partition epoch: bumped at every change of the partition's state (ISR, leader,
/// replicas), the version AlterPartition requests are checked against.
pub type PartitionEpoch = i32;
/// A broker epoch: the metadata offset (Raft log index) of its registration record.
pub type BrokerEpoch = u64;
/// A metadata offset: a Raft log index.
pub type MetadataOffset = u64;

/// A 16-byte id in RFC 4122 byte order, held as a big-endian `u128`.
///
/// Serialized as 32 lowercase hex digits so that it can key JSON maps and reads well in logs.
macro_rules! uuid_like {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u128);

        impl $name {
            /// The id from its 16 bytes (RFC 4122 order), `None` if `b` is not 16 bytes long.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                let arr: [u8; 16] = b.try_into().ok()?;
                Some(Self(u128::from_be_bytes(arr)))
            }

            /// The id's 16 bytes in RFC 4122 order.
            pub fn to_bytes(self) -> [u8; 16] {
                self.0.to_be_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:032x})", stringify!($name), self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&format!("{:032x}", self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                if s.len() != 32 {
                    return Err(serde::de::Error::invalid_length(s.len(), &"32 hex digits"));
                }
                u128::from_str_radix(&s, 16)
                    .map(Self)
                    .map_err(|_| serde::de::Error::invalid_value(
                        serde::de::Unexpected::Str(&s),
                        &"32 hex digits",
                    ))
            }
        }
    };
}

uuid_like!(
    /// A topic's id. A topic deleted and created again under the same name gets a new id.
    TopicId
);
uuid_like!(
    /// A random id a broker creates at every start, so that a restarted broker is told apart
    /// from a stale registration of the same node id.
    IncarnationId
);

/// A network endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Host name or address, as others should reach it.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A broker's listeners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoints {
    /// Advertised to clients (the Metadata answer).
    pub client: Endpoint,
    /// Internal traffic: replication fetches and, for controllers, Raft.
    pub internal: Endpoint,
}

/// One metadata change. See each payload struct for its meaning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A broker (re-)registers; it starts fenced.
    RegisterBroker(RegisterBroker),
    /// A broker is removed from the cluster.
    UnregisterBroker(UnregisterBroker),
    /// A broker may no longer lead or be in ISRs (its session expired).
    FenceBroker(FenceBroker),
    /// A broker has caught up and may serve again.
    UnfenceBroker(UnfenceBroker),
    /// A broker asked to shut down; its leaderships are being moved away.
    BeginControlledShutdown(BeginControlledShutdown),
    /// A topic is created (its partitions follow as [`PartitionRecord`]s in the same entry).
    CreateTopic(CreateTopic),
    /// A partition is created with its full initial state.
    Partition(PartitionRecord),
    /// A partition's ISR, leader or replicas change.
    PartitionChange(PartitionChange),
    /// A topic and all its partitions are removed.
    RemoveTopic(RemoveTopic),
    /// Topic configuration overrides change.
    ConfigChange(ConfigChange),
    /// The next block of producer ids is handed to a broker.
    ProducerIdsBlock(ProducerIdsBlock),
    /// The cluster gets its id (written once, by the first active controller).
    ClusterId(ClusterIdRecord),
    /// A broker starts or stops being decommissioned.
    Decommission(DecommissionRecord),
}

/// Registration of a broker. Its broker epoch is the log index of the entry holding this
/// record, assigned when the record is applied (the controller cannot know it before).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBroker {
    /// The broker's node id.
    pub broker_id: BrokerId,
    /// The incarnation that registers.
    pub incarnation_id: IncarnationId,
    /// Where the broker listens.
    pub endpoints: BrokerEndpoints,
    /// `broker.rack`, if configured.
    pub rack: Option<String>,
    /// Controller's wall clock when it accepted the registration (ms since the Unix epoch).
    pub timestamp_ms: i64,
}

/// Removes a broker from the image. It must hold no leaderships (the controller fences it
/// first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisterBroker {
    /// The broker.
    pub broker_id: BrokerId,
    /// The registration being removed; a newer registration is left alone.
    pub broker_epoch: BrokerEpoch,
    /// The end of a decommission: the id may not register again.
    #[serde(default)]
    pub decommissioned: bool,
}

/// Fences a broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceBroker {
    /// The broker.
    pub broker_id: BrokerId,
    /// The registration being fenced.
    pub broker_epoch: BrokerEpoch,
    /// Controller's wall clock when it decided (ms since the Unix epoch).
    pub timestamp_ms: i64,
}

/// Unfences a broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfenceBroker {
    /// The broker.
    pub broker_id: BrokerId,
    /// The registration being unfenced.
    pub broker_epoch: BrokerEpoch,
}

/// Starts controlled shutdown of a broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeginControlledShutdown {
    /// The broker.
    pub broker_id: BrokerId,
    /// The registration shutting down.
    pub broker_epoch: BrokerEpoch,
}

/// Creates a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopic {
    /// Topic name.
    pub name: String,
    /// Topic id, chosen by the controller before proposing.
    pub topic_id: TopicId,
    /// Configuration overrides (validated by the controller).
    pub configs: BTreeMap<String, String>,
    /// Number of partitions; exactly this many [`PartitionRecord`]s follow.
    pub partitions: i32,
    /// Controller's wall clock at creation (ms since the Unix epoch).
    pub timestamp_ms: i64,
}

/// The full state of a new partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The topic.
    pub topic_id: TopicId,
    /// The partition index.
    pub partition: PartitionIndex,
    /// Replicas, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas.
    pub isr: Vec<BrokerId>,
    /// The leader; `None` when no ISR member can lead.
    pub leader: Option<BrokerId>,
    /// Leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// Partition epoch.
    pub partition_epoch: PartitionEpoch,
}

/// A change to one partition. Fields left `None` stay as they are. Applying it bumps the
/// partition epoch by one, and the leader epoch by one when `leader` is set (even to the same
/// leader, which is how an ISR-shrink due to fencing still invalidates stale requests).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionChange {
    /// The topic.
    pub topic_id: TopicId,
    /// The partition index.
    pub partition: PartitionIndex,
    /// The new ISR, if it changes.
    pub isr: Option<Vec<BrokerId>>,
    /// The new leader (`Some(None)`: no leader), if it changes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub leader: Option<Option<BrokerId>>,
    /// The new replica list, if it changes (reassignment).
    pub replicas: Option<Vec<BrokerId>>,
    /// Replicas being added by a reassignment, if that changes (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adding_replicas: Option<Vec<BrokerId>>,
    /// Replicas a reassignment removes once the adding ones are in sync, if that changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removing_replicas: Option<Vec<BrokerId>>,
}

/// Removes a topic and its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveTopic {
    /// The topic.
    pub topic_id: TopicId,
}

/// Changes topic configuration overrides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The topic.
    pub topic_id: TopicId,
    /// Keys set to a value (`Some`) or removed to fall back to the default (`None`).
    pub changes: BTreeMap<String, Option<String>>,
}

/// Hands `[first_producer_id, first_producer_id + size)` to a broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdsBlock {
    /// The broker the block goes to.
    pub broker_id: BrokerId,
    /// The broker's epoch when it asked.
    pub broker_epoch: BrokerEpoch,
    /// First id of the block; must equal the image's next producer id.
    pub first_producer_id: i64,
    /// Number of ids in the block.
    pub size: i32,
}

/// Names the cluster. The first active controller writes it; it never changes afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdRecord {
    /// The cluster id (a UUID in text form).
    pub cluster_id: String,
}

/// Starts (`cancel: false`) or cancels a broker's decommission. While it lasts, the controller
/// moves the broker's replicas to other brokers and places no new replica on it; when it holds
/// none, the controller unregisters it for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecommissionRecord {
    /// The broker.
    pub broker_id: BrokerId,
    /// Stop decommissioning instead (moves already finished stay).
    pub cancel: bool,
}

/// Serde for `Option<Option<T>>` that keeps "absent" (field missing) apart from "set to
/// none" (`null`), which plain serde merges.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            // Skipped by `skip_serializing_if`; written as null only if used elsewhere.
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_json_as_hex() {
        let id = TopicId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let json = serde_json::to_string(&id).expect("encode");
        assert_eq!(json, "\"0123456789abcdef0011223344556677\"");
        let back: TopicId = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, id);
        assert!(serde_json::from_str::<TopicId>("\"12\"").is_err());
        assert!(serde_json::from_str::<TopicId>("\"zz23456789abcdef0011223344556677\"").is_err());
        assert_eq!(TopicId::from_slice(&id.to_bytes()), Some(id));
        assert_eq!(TopicId::from_slice(&[1, 2, 3]), None);
    }

    #[test]
    fn records_round_trip_through_json() {
        let recs: Vec<Record> = vec![
            Record::RegisterBroker(RegisterBroker {
                broker_id: 1,
                incarnation_id: IncarnationId(7),
                endpoints: BrokerEndpoints {
                    client: Endpoint {
                        host: "h".into(),
                        port: 9292,
                    },
                    internal: Endpoint {
                        host: "h".into(),
                        port: 9293,
                    },
                },
                rack: Some("r1".into()),
                timestamp_ms: 5,
            }),
            Record::PartitionChange(PartitionChange {
                topic_id: TopicId(3),
                partition: 0,
                isr: Some(vec![1, 2]),
                leader: Some(None),
                replicas: None,
                ..Default::default()
            }),
            Record::ConfigChange(ConfigChange {
                topic_id: TopicId(3),
                changes: BTreeMap::from([("retention.ms".into(), None)]),
            }),
        ];
        let json = serde_json::to_vec(&recs).expect("encode");
        let back: Vec<Record> = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, recs);
    }
}
