//! The metadata image: the cluster metadata as of one offset of the metadata log.
//!
//! Every node builds the same image by applying the committed records in log order with
//! [`MetadataImage::apply`]. Applying is deterministic: it reads only the image, the record and
//! the record's log index (never a clock or a random source), and every map is a `BTreeMap`, so
//! iteration order — and therefore the serialized snapshot — is the same on every node.
//!
//! A record that does not fit the image (an unknown topic, a stale broker epoch, a leader
//! outside the ISR) is refused with an [`ApplyError`] and changes nothing; every node refuses
//! it the same way, so the images stay equal. The controller validates requests against the
//! image before proposing, so a refusal at apply time means two proposals raced.
//!
//! # Layout
//! - [`MetadataImage`] — brokers, topics by id and by name, partitions, next producer id, and
//!   the offset of the last applied entry;
//! - [`BrokerRegistration`], [`BrokerState`], [`TopicImage`], [`PartitionState`];
//! - [`ApplyError`] — why a record was refused;
//! - tests at the bottom: worked examples, one per record kind.

use std::collections::BTreeMap;

// Persistent maps: the state machine copies the image at every applied entry while readers
// hold the previous one, and copying these is O(1) rather than O(topics).
use imbl::{OrdMap, OrdSet};

use serde::{Deserialize, Serialize};

use crate::records::*;

/// Whether a broker may serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerState {
    /// Registered but not (or no longer) allowed to lead or join ISRs.
    Fenced,
    /// Serving.
    Unfenced,
    /// Moving its leaderships away before it stops; may not gain new ones.
    ShuttingDown,
}

/// A registered broker as the image knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// Node id.
    pub broker_id: BrokerId,
    /// The incarnation that registered.
    pub incarnation_id: IncarnationId,
    /// The broker epoch: log index of the registration record.
    pub broker_epoch: BrokerEpoch,
    /// Listeners.
    pub endpoints: BrokerEndpoints,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// Serving state.
    pub state: BrokerState,
    /// When the registration was accepted (controller clock, ms since the Unix epoch).
    pub registered_at_ms: i64,
}

/// One partition's replication state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Replicas, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas.
    pub isr: Vec<BrokerId>,
    /// Current leader, if any.
    pub leader: Option<BrokerId>,
    /// Leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// Partition epoch.
    pub partition_epoch: PartitionEpoch,
    /// Replicas a reassignment in progress adds (KIP-455): they are in `replicas` and catch up
    /// outside the ISR. Empty when no reassignment runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<BrokerId>,
    /// Replicas a reassignment in progress removes once every target replica is in the ISR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<BrokerId>,
}

impl PartitionState {
    /// Whether a reassignment is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition ends up with: all of them but the ones being removed.
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replicas before the reassignment in progress: all of them but the ones being added.
    pub fn original_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }
}

/// A topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    /// Name.
    pub name: String,
    /// Id.
    pub topic_id: TopicId,
    /// Configuration overrides.
    pub configs: BTreeMap<String, String>,
    /// Partitions by index.
    pub partitions: BTreeMap<PartitionIndex, PartitionState>,
    /// When it was created (controller clock, ms since the Unix epoch).
    pub created_at_ms: i64,
}

impl TopicImage {
    /// The replication factor: the replica count of partition 0 (all partitions have the same).
    pub fn replication_factor(&self) -> usize {
        self.partitions
            .values()
            .next()
            .map_or(0, |p| p.replicas.len())
    }
}

/// The cluster metadata at one offset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Log index of the last applied entry (0 before any).
    pub offset: MetadataOffset,
    /// The cluster id; empty until the first active controller has written it.
    #[serde(default)]
    pub cluster_id: String,
    /// Registered brokers by id.
    pub brokers: OrdMap<BrokerId, BrokerRegistration>,
    /// Topics by id.
    pub topics: OrdMap<TopicId, TopicImage>,
    /// Topic ids by name.
    pub topic_ids: OrdMap<String, TopicId>,
    /// The first producer id of the next block to hand out.
    pub next_producer_id: i64,
    /// Brokers being decommissioned: their replicas move away and they get no new ones.
    #[serde(default)]
    pub decommissioning: OrdSet<BrokerId>,
    /// Ids of brokers whose decommission finished: they may not register again.
    #[serde(default)]
    pub decommissioned: OrdSet<BrokerId>,
}

/// Why a record was refused at apply time. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    /// The broker is not registered.
    #[error("broker {broker_id} is not registered")]
    UnknownBroker {
        /// The broker.
        broker_id: BrokerId,
    },
    /// The record names a registration other than the current one.
    #[error("broker {broker_id}: epoch {given} is not the current epoch {current}")]
    StaleBrokerEpoch {
        /// The broker.
        broker_id: BrokerId,
        /// The epoch in the record.
        given: BrokerEpoch,
        /// The current registration's epoch.
        current: BrokerEpoch,
    },
    /// The broker is shutting down and cannot be unfenced.
    #[error("broker {broker_id} is shutting down")]
    BrokerShuttingDown {
        /// The broker.
        broker_id: BrokerId,
    },
    /// A topic of this name exists.
    #[error("topic {name} already exists")]
    TopicExists {
        /// The name.
        name: String,
    },
    /// A topic with this id exists.
    #[error("topic id {topic_id} already exists")]
    TopicIdExists {
        /// The id.
        topic_id: TopicId,
    },
    /// No topic has this id.
    #[error("unknown topic id {topic_id}")]
    UnknownTopic {
        /// The id.
        topic_id: TopicId,
    },
    /// The partition does not exist.
    #[error("unknown partition {topic_id}/{partition}")]
    UnknownPartition {
        /// Topic.
        topic_id: TopicId,
        /// Partition.
        partition: PartitionIndex,
    },
    /// The partition exists already.
    #[error("partition {topic_id}/{partition} already exists")]
    PartitionExists {
        /// Topic.
        topic_id: TopicId,
        /// Partition.
        partition: PartitionIndex,
    },
    /// Partition state that breaks an invariant (leader outside the ISR, ISR member that is not
    /// a replica, a replica listed twice, no replicas).
    #[error("invalid state for partition {topic_id}/{partition}")]
    InvalidPartitionState {
        /// Topic.
        topic_id: TopicId,
        /// Partition.
        partition: PartitionIndex,
    },
    /// The cluster has another id already.
    #[error("the cluster id is {current} already")]
    ClusterIdSet {
        /// The id in force.
        current: String,
    },
    /// The broker id was decommissioned and may not register again.
    #[error("broker {broker_id} was decommissioned")]
    BrokerDecommissioned {
        /// The broker.
        broker_id: BrokerId,
    },
    /// A producer id block that does not start at the next free id.
    #[error("producer id block starts at {given}, expected {expected}")]
    ProducerIdMismatch {
        /// The block's first id.
        given: i64,
        /// The next free id.
        expected: i64,
    },
}

fn valid_partition(p: &PartitionState) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    !p.replicas.is_empty()
        && p.replicas.iter().all(|r| seen.insert(*r))
        && p.isr.iter().all(|r| p.replicas.contains(r))
        && {
            let mut isr_seen = std::collections::BTreeSet::new();
            p.isr.iter().all(|r| isr_seen.insert(*r))
        }
        && p.leader.is_none_or(|l| p.isr.contains(&l))
        && p.adding_replicas.iter().all(|r| p.replicas.contains(r))
        && p.removing_replicas.iter().all(|r| p.replicas.contains(r))
        && p.adding_replicas
            .iter()
            .all(|r| !p.removing_replicas.contains(r))
}

impl MetadataImage {
    /// Applies `record`, found in the log entry at `index`. On error nothing changes.
    ///
    /// The image's [`offset`](Self::offset) is not moved here: an entry holds several records,
    /// and the caller moves it once per entry with [`set_offset`](Self::set_offset).
    pub fn apply(&mut self, index: MetadataOffset, record: &Record) -> Result<(), ApplyError> {
        match record {
            Record::RegisterBroker(r) => {
                if self.decommissioned.contains(&r.broker_id) {
                    return Err(ApplyError::BrokerDecommissioned {
                        broker_id: r.broker_id,
                    });
                }
                // A re-registration replaces the old one; the controller decided it may.
                self.brokers.insert(
                    r.broker_id,
                    BrokerRegistration {
                        broker_id: r.broker_id,
                        incarnation_id: r.incarnation_id,
                        broker_epoch: index,
                        endpoints: r.endpoints.clone(),
                        rack: r.rack.clone(),
                        state: BrokerState::Fenced,
                        registered_at_ms: r.timestamp_ms,
                    },
                );
            }
            Record::UnregisterBroker(r) => {
                self.broker_mut(r.broker_id, r.broker_epoch)?;
                self.brokers.remove(&r.broker_id);
                if r.decommissioned {
                    self.decommissioning.remove(&r.broker_id);
                    self.decommissioned.insert(r.broker_id);
                }
            }
            Record::Decommission(r) => {
                if !self.brokers.contains_key(&r.broker_id) {
                    return Err(ApplyError::UnknownBroker {
                        broker_id: r.broker_id,
                    });
                }
                if r.cancel {
                    self.decommissioning.remove(&r.broker_id);
                } else {
                    self.decommissioning.insert(r.broker_id);
                }
            }
            Record::FenceBroker(r) => {
                self.broker_mut(r.broker_id, r.broker_epoch)?.state = BrokerState::Fenced;
            }
            Record::UnfenceBroker(r) => {
                let b = self.broker_mut(r.broker_id, r.broker_epoch)?;
                if b.state == BrokerState::ShuttingDown {
                    return Err(ApplyError::BrokerShuttingDown {
                        broker_id: r.broker_id,
                    });
                }
                b.state = BrokerState::Unfenced;
            }
            Record::BeginControlledShutdown(r) => {
                self.broker_mut(r.broker_id, r.broker_epoch)?.state = BrokerState::ShuttingDown;
            }
            Record::CreateTopic(r) => {
                if self.topic_ids.contains_key(&r.name) {
                    return Err(ApplyError::TopicExists {
                        name: r.name.clone(),
                    });
                }
                if self.topics.contains_key(&r.topic_id) {
                    return Err(ApplyError::TopicIdExists {
                        topic_id: r.topic_id,
                    });
                }
                self.topic_ids.insert(r.name.clone(), r.topic_id);
                self.topics.insert(
                    r.topic_id,
                    TopicImage {
                        name: r.name.clone(),
                        topic_id: r.topic_id,
                        configs: r.configs.clone(),
                        partitions: BTreeMap::new(),
                        created_at_ms: r.timestamp_ms,
                    },
                );
            }
            Record::Partition(r) => {
                let topic = self
                    .topics
                    .get_mut(&r.topic_id)
                    .ok_or(ApplyError::UnknownTopic {
                        topic_id: r.topic_id,
                    })?;
                if topic.partitions.contains_key(&r.partition) {
                    return Err(ApplyError::PartitionExists {
                        topic_id: r.topic_id,
                        partition: r.partition,
                    });
                }
                let state = PartitionState {
                    replicas: r.replicas.clone(),
                    isr: r.isr.clone(),
                    leader: r.leader,
                    leader_epoch: r.leader_epoch,
                    partition_epoch: r.partition_epoch,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                };
                if r.partition < 0 || !valid_partition(&state) {
                    return Err(ApplyError::InvalidPartitionState {
                        topic_id: r.topic_id,
                        partition: r.partition,
                    });
                }
                topic.partitions.insert(r.partition, state);
            }
            Record::PartitionChange(r) => {
                let p = self.partition_mut(r.topic_id, r.partition)?;
                let mut next = p.clone();
                if let Some(isr) = &r.isr {
                    next.isr = isr.clone();
                }
                if let Some(replicas) = &r.replicas {
                    next.replicas = replicas.clone();
                }
                if let Some(adding) = &r.adding_replicas {
                    next.adding_replicas = adding.clone();
                }
                if let Some(removing) = &r.removing_replicas {
                    next.removing_replicas = removing.clone();
                }
                if let Some(leader) = r.leader {
                    next.leader = leader;
                    next.leader_epoch += 1;
                }
                next.partition_epoch += 1;
                if !valid_partition(&next) {
                    return Err(ApplyError::InvalidPartitionState {
                        topic_id: r.topic_id,
                        partition: r.partition,
                    });
                }
                *p = next;
            }
            Record::RemoveTopic(r) => {
                let topic = self
                    .topics
                    .remove(&r.topic_id)
                    .ok_or(ApplyError::UnknownTopic {
                        topic_id: r.topic_id,
                    })?;
                self.topic_ids.remove(&topic.name);
            }
            Record::ConfigChange(r) => {
                let topic = self
                    .topics
                    .get_mut(&r.topic_id)
                    .ok_or(ApplyError::UnknownTopic {
                        topic_id: r.topic_id,
                    })?;
                for (k, v) in &r.changes {
                    match v {
                        Some(v) => topic.configs.insert(k.clone(), v.clone()),
                        None => topic.configs.remove(k),
                    };
                }
            }
            Record::ProducerIdsBlock(r) => {
                self.broker_mut(r.broker_id, r.broker_epoch)?;
                if r.first_producer_id != self.next_producer_id || r.size <= 0 {
                    return Err(ApplyError::ProducerIdMismatch {
                        given: r.first_producer_id,
                        expected: self.next_producer_id,
                    });
                }
                self.next_producer_id += i64::from(r.size);
            }
            Record::ClusterId(r) => {
                if !self.cluster_id.is_empty() && self.cluster_id != r.cluster_id {
                    return Err(ApplyError::ClusterIdSet {
                        current: self.cluster_id.clone(),
                    });
                }
                self.cluster_id = r.cluster_id.clone();
            }
        }
        Ok(())
    }

    /// Records that the entry at `index` has been applied.
    pub fn set_offset(&mut self, index: MetadataOffset) {
        self.offset = index;
    }

    /// The topic named `name`.
    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    /// One partition's state.
    pub fn partition(
        &self,
        topic_id: TopicId,
        partition: PartitionIndex,
    ) -> Option<&PartitionState> {
        self.topics.get(&topic_id)?.partitions.get(&partition)
    }

    /// Unfenced brokers that may receive new replicas (not being decommissioned), in id order.
    pub fn placeable_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.unfenced_brokers()
            .filter(|b| !self.decommissioning.contains(&b.broker_id))
    }

    /// Brokers that may lead and join ISRs, in id order.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers
            .values()
            .filter(|b| b.state == BrokerState::Unfenced)
    }

    /// Whether `broker` is registered and unfenced.
    pub fn is_unfenced(&self, broker: BrokerId) -> bool {
        self.brokers
            .get(&broker)
            .is_some_and(|b| b.state == BrokerState::Unfenced)
    }

    /// Every partition, in (topic id, index) order.
    pub fn partitions(&self) -> impl Iterator<Item = (TopicId, PartitionIndex, &PartitionState)> {
        self.topics
            .iter()
            .flat_map(|(id, t)| t.partitions.iter().map(move |(i, p)| (*id, *i, p)))
    }

    fn broker_mut(
        &mut self,
        broker_id: BrokerId,
        epoch: BrokerEpoch,
    ) -> Result<&mut BrokerRegistration, ApplyError> {
        let b = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(ApplyError::UnknownBroker { broker_id })?;
        if b.broker_epoch != epoch {
            return Err(ApplyError::StaleBrokerEpoch {
                broker_id,
                given: epoch,
                current: b.broker_epoch,
            });
        }
        Ok(b)
    }

    fn partition_mut(
        &mut self,
        topic_id: TopicId,
        partition: PartitionIndex,
    ) -> Result<&mut PartitionState, ApplyError> {
        self.topics
            .get_mut(&topic_id)
            .ok_or(ApplyError::UnknownTopic { topic_id })?
            .partitions
            .get_mut(&partition)
            .ok_or(ApplyError::UnknownPartition {
                topic_id,
                partition,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn endpoints(id: BrokerId) -> BrokerEndpoints {
        BrokerEndpoints {
            client: Endpoint {
                host: format!("b{id}"),
                port: 9292,
            },
            internal: Endpoint {
                host: format!("b{id}"),
                port: 9293,
            },
        }
    }

    fn register(id: BrokerId) -> Record {
        Record::RegisterBroker(RegisterBroker {
            broker_id: id,
            incarnation_id: IncarnationId(id as u128 + 100),
            endpoints: endpoints(id),
            rack: None,
            timestamp_ms: 1_000,
        })
    }

    const T: TopicId = TopicId(42);

    /// Image with brokers 1..=3 registered at indexes 1..=3 and unfenced, and topic "t" (id 42)
    /// with one partition: replicas [1,2,3], ISR [1,2,3], leader 1, epochs 0.
    fn base() -> MetadataImage {
        let mut img = MetadataImage::default();
        for id in 1..=3 {
            img.apply(id as u64, &register(id)).unwrap();
            img.apply(
                4,
                &Record::UnfenceBroker(UnfenceBroker {
                    broker_id: id,
                    broker_epoch: id as u64,
                }),
            )
            .unwrap();
        }
        let recs = [
            Record::CreateTopic(CreateTopic {
                name: "t".into(),
                topic_id: T,
                configs: BTreeMap::new(),
                partitions: 1,
                timestamp_ms: 2_000,
            }),
            Record::Partition(PartitionRecord {
                topic_id: T,
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: Some(1),
                leader_epoch: 0,
                partition_epoch: 0,
            }),
        ];
        for r in &recs {
            img.apply(5, r).unwrap();
        }
        img.set_offset(5);
        img
    }

    #[test]
    fn registration_sets_epoch_to_log_index_and_starts_fenced() {
        let mut img = MetadataImage::default();
        img.apply(17, &register(4)).unwrap();
        let b = &img.brokers[&4];
        assert_eq!(b.broker_epoch, 17);
        assert_eq!(b.state, BrokerState::Fenced);
        // Re-registration replaces it with the new epoch, fenced again.
        img.apply(
            30,
            &Record::UnfenceBroker(UnfenceBroker {
                broker_id: 4,
                broker_epoch: 17,
            }),
        )
        .unwrap();
        assert!(img.is_unfenced(4));
        img.apply(31, &register(4)).unwrap();
        assert_eq!(img.brokers[&4].broker_epoch, 31);
        assert!(!img.is_unfenced(4));
    }

    #[test]
    fn broker_state_changes_check_the_epoch() {
        // (record, expected result, expected state of broker 2 afterwards)
        let cases: Vec<(Record, Result<(), ApplyError>, Option<BrokerState>)> = vec![
            (
                Record::FenceBroker(FenceBroker {
                    broker_id: 2,
                    broker_epoch: 2,
                    timestamp_ms: 9,
                }),
                Ok(()),
                Some(BrokerState::Fenced),
            ),
            (
                Record::FenceBroker(FenceBroker {
                    broker_id: 2,
                    broker_epoch: 1,
                    timestamp_ms: 9,
                }),
                Err(ApplyError::StaleBrokerEpoch {
                    broker_id: 2,
                    given: 1,
                    current: 2,
                }),
                Some(BrokerState::Unfenced),
            ),
            (
                Record::BeginControlledShutdown(BeginControlledShutdown {
                    broker_id: 2,
                    broker_epoch: 2,
                }),
                Ok(()),
                Some(BrokerState::ShuttingDown),
            ),
            (
                Record::UnregisterBroker(UnregisterBroker {
                    broker_id: 2,
                    broker_epoch: 2,
                    decommissioned: false,
                }),
                Ok(()),
                None,
            ),
            (
                Record::UnfenceBroker(UnfenceBroker {
                    broker_id: 9,
                    broker_epoch: 2,
                }),
                Err(ApplyError::UnknownBroker { broker_id: 9 }),
                Some(BrokerState::Unfenced),
            ),
        ];
        for (rec, want, state) in cases {
            let mut img = base();
            assert_eq!(img.apply(6, &rec), want, "{rec:?}");
            assert_eq!(img.brokers.get(&2).map(|b| b.state), state, "{rec:?}");
        }
    }

    #[test]
    fn shutting_down_broker_cannot_be_unfenced() {
        let mut img = base();
        img.apply(
            6,
            &Record::BeginControlledShutdown(BeginControlledShutdown {
                broker_id: 3,
                broker_epoch: 3,
            }),
        )
        .unwrap();
        let err = img.apply(
            7,
            &Record::UnfenceBroker(UnfenceBroker {
                broker_id: 3,
                broker_epoch: 3,
            }),
        );
        assert_eq!(err, Err(ApplyError::BrokerShuttingDown { broker_id: 3 }));
    }

    #[test]
    fn topics_are_indexed_by_name_and_id_and_removed_from_both() {
        let mut img = base();
        assert_eq!(img.topic_by_name("t").map(|t| t.topic_id), Some(T));
        assert_eq!(img.topics[&T].replication_factor(), 3);
        let dup = Record::CreateTopic(CreateTopic {
            name: "t".into(),
            topic_id: TopicId(43),
            configs: BTreeMap::new(),
            partitions: 1,
            timestamp_ms: 0,
        });
        let before = img.clone();
        assert_eq!(
            img.apply(6, &dup),
            Err(ApplyError::TopicExists { name: "t".into() })
        );
        assert_eq!(img, before, "a refused record changes nothing");
        img.apply(7, &Record::RemoveTopic(RemoveTopic { topic_id: T }))
            .unwrap();
        assert!(img.topic_by_name("t").is_none());
        assert!(img.topics.is_empty());
        assert_eq!(
            img.apply(8, &Record::RemoveTopic(RemoveTopic { topic_id: T })),
            Err(ApplyError::UnknownTopic { topic_id: T })
        );
    }

    /// Worked example: leader 1 of [1,2,3] is fenced. The controller sends
    /// `isr=[2,3], leader=2`: leader epoch 0 → 1, partition epoch 0 → 1. Then an ISR-only change
    /// `isr=[2]` bumps the partition epoch only (1 → 2).
    #[test]
    fn partition_change_bumps_epochs() {
        let mut img = base();
        let change = |isr: Option<Vec<BrokerId>>, leader: Option<Option<BrokerId>>| {
            Record::PartitionChange(PartitionChange {
                topic_id: T,
                partition: 0,
                isr,
                leader,
                replicas: None,
                ..Default::default()
            })
        };
        img.apply(6, &change(Some(vec![2, 3]), Some(Some(2))))
            .unwrap();
        let p = img.partition(T, 0).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch, p.partition_epoch),
            (Some(2), 1, 1)
        );
        assert_eq!(p.isr, vec![2, 3]);
        img.apply(7, &change(Some(vec![2]), None)).unwrap();
        let p = img.partition(T, 0).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch, p.partition_epoch),
            (Some(2), 1, 2)
        );

        // Refused: leader outside the ISR, ISR member that is not a replica, unknown partition.
        let refused = [
            (
                change(None, Some(Some(3))),
                ApplyError::InvalidPartitionState {
                    topic_id: T,
                    partition: 0,
                },
            ),
            (
                change(Some(vec![2, 9]), None),
                ApplyError::InvalidPartitionState {
                    topic_id: T,
                    partition: 0,
                },
            ),
            (
                Record::PartitionChange(PartitionChange {
                    topic_id: T,
                    partition: 5,
                    isr: None,
                    leader: None,
                    replicas: None,
                    ..Default::default()
                }),
                ApplyError::UnknownPartition {
                    topic_id: T,
                    partition: 5,
                },
            ),
        ];
        for (rec, want) in refused {
            let before = img.clone();
            assert_eq!(img.apply(8, &rec), Err(want), "{rec:?}");
            assert_eq!(img, before);
        }
        // No leader at all is allowed (every ISR member gone).
        img.apply(9, &change(Some(vec![]), Some(None))).unwrap();
        assert_eq!(img.partition(T, 0).unwrap().leader, None);
        assert_eq!(img.partition(T, 0).unwrap().leader_epoch, 2);
    }

    #[test]
    fn config_changes_set_and_remove_keys() {
        let mut img = base();
        let set = Record::ConfigChange(ConfigChange {
            topic_id: T,
            changes: BTreeMap::from([("retention.ms".into(), Some("1000".into()))]),
        });
        img.apply(6, &set).unwrap();
        assert_eq!(
            img.topics[&T]
                .configs
                .get("retention.ms")
                .map(String::as_str),
            Some("1000")
        );
        let del = Record::ConfigChange(ConfigChange {
            topic_id: T,
            changes: BTreeMap::from([("retention.ms".into(), None)]),
        });
        img.apply(7, &del).unwrap();
        assert!(img.topics[&T].configs.is_empty());
    }

    #[test]
    fn cluster_id_is_set_once() {
        let mut img = base();
        let id = |s: &str| {
            Record::ClusterId(ClusterIdRecord {
                cluster_id: s.into(),
            })
        };
        img.apply(6, &id("a")).unwrap();
        img.apply(7, &id("a")).unwrap();
        let before = img.clone();
        assert_eq!(
            img.apply(8, &id("b")),
            Err(ApplyError::ClusterIdSet {
                current: "a".into()
            })
        );
        assert_eq!(img, before);
    }

    #[test]
    fn producer_id_blocks_are_contiguous() {
        let mut img = base();
        let block = |first, size| {
            Record::ProducerIdsBlock(ProducerIdsBlock {
                broker_id: 1,
                broker_epoch: 1,
                first_producer_id: first,
                size,
            })
        };
        img.apply(6, &block(0, 1000)).unwrap();
        assert_eq!(img.next_producer_id, 1000);
        assert_eq!(
            img.apply(7, &block(0, 1000)),
            Err(ApplyError::ProducerIdMismatch {
                given: 0,
                expected: 1000
            })
        );
        img.apply(8, &block(1000, 10)).unwrap();
        assert_eq!(img.next_producer_id, 1010);
    }

    #[test]
    fn same_records_give_byte_identical_snapshots() {
        let a = serde_json::to_vec(&base()).unwrap();
        let b = serde_json::to_vec(&base()).unwrap();
        assert_eq!(a, b);
        let back: MetadataImage = serde_json::from_slice(&a).unwrap();
        assert_eq!(back, base());
    }
}
