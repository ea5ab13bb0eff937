//! Topic messages ↔ [`NewTopic`], [`CreatedTopic`], [`DeletedTopic`], [`TopicMetadata`] and
//! [`PartitionMetadata`].

use keel_proto::v1 as pb;

use super::{api_error, topic_id};
use crate::{CreatedTopic, DeletedTopic, Error, NewTopic, PartitionMetadata, TopicMetadata};

/// The wire form of a topic to create (the controller places the replicas).
pub(crate) fn new_topic(topic: &NewTopic) -> pb::CreatableTopic {
    pb::CreatableTopic {
        name: topic.name.clone(),
        num_partitions: topic.num_partitions,
        replication_factor: topic.replication_factor,
        assignments: Vec::new(),
        configs: topic
            .configs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

impl TryFrom<pb::CreatedTopic> for CreatedTopic {
    type Error = Error;

    fn try_from(t: pb::CreatedTopic) -> Result<Self, Error> {
        Ok(Self {
            topic_id: topic_id("Admin.CreateTopics", &t.topic_id)?,
            error: api_error(t.error),
            name: t.name,
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            configs: t.configs.into_iter().collect(),
        })
    }
}

impl TryFrom<pb::DeletedTopic> for DeletedTopic {
    type Error = Error;

    fn try_from(t: pb::DeletedTopic) -> Result<Self, Error> {
        Ok(Self {
            topic_id: topic_id("Admin.DeleteTopics", &t.topic_id)?,
            error: api_error(t.error),
            name: t.name,
        })
    }
}

impl TryFrom<pb::TopicMetadata> for TopicMetadata {
    type Error = Error;

    fn try_from(t: pb::TopicMetadata) -> Result<Self, Error> {
        Ok(Self {
            topic_id: topic_id("Cluster.Metadata", &t.topic_id)?,
            error: api_error(t.error),
            name: t.name,
            internal: t.is_internal,
            partitions: t.partitions.into_iter().map(Into::into).collect(),
            configs: t.configs.into_iter().collect(),
        })
    }
}

impl From<pb::PartitionMetadata> for PartitionMetadata {
    fn from(p: pb::PartitionMetadata) -> Self {
        Self {
            partition: p.partition,
            error: api_error(p.error),
            leader: p.leader_id,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            replicas: p.replicas,
            isr: p.isr,
            offline_replicas: p.offline_replicas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TopicId;

    const ID: [u8; 16] = [
        0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40,
        0x00,
    ];

    #[test]
    fn new_topic_keeps_unset_counts_unset() {
        let wire = new_topic(&NewTopic::new("t"));
        assert_eq!(wire.name, "t");
        assert_eq!(wire.num_partitions, None);
        assert_eq!(wire.replication_factor, None);
        assert!(wire.assignments.is_empty());

        let wire = new_topic(
            &NewTopic::new("orders")
                .partitions(6)
                .replication_factor(3)
                .config("retention.ms", "1000"),
        );
        assert_eq!(wire.num_partitions, Some(6));
        assert_eq!(wire.replication_factor, Some(3));
        assert_eq!(
            wire.configs.get("retention.ms").map(String::as_str),
            Some("1000")
        );
    }

    #[test]
    fn created_topic_success_and_failure() {
        let ok = CreatedTopic::try_from(pb::CreatedTopic {
            name: "orders".into(),
            error: None,
            topic_id: ID.to_vec().into(),
            num_partitions: 6,
            replication_factor: 3,
            configs: [("cleanup.policy".to_string(), "delete".to_string())].into(),
        })
        .unwrap();
        assert_eq!(ok.error, None);
        assert_eq!(ok.topic_id, Some(TopicId(ID)));
        assert_eq!(
            ok.topic_id.unwrap().to_string(),
            "123e4567-e89b-12d3-a456-426614174000"
        );
        assert_eq!(ok.configs["cleanup.policy"], "delete");

        let refused = CreatedTopic::try_from(pb::CreatedTopic {
            name: "orders".into(),
            error: Some(pb::Error::new(pb::ErrorCode::TopicAlreadyExists, "exists")),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(refused.topic_id, None);
        assert_eq!(refused.error.unwrap().code_name(), "TOPIC_ALREADY_EXISTS");
    }

    #[test]
    fn malformed_topic_id_is_an_invalid_response() {
        let err = DeletedTopic::try_from(pb::DeletedTopic {
            name: "t".into(),
            topic_id: vec![1; 15].into(),
            error: None,
        })
        .unwrap_err();
        assert_eq!(err.code_name(), "INVALID_RESPONSE");
        assert!(err.to_string().contains("Admin.DeleteTopics"), "{err}");
    }

    #[test]
    fn topic_metadata_with_partitions() {
        let t = TopicMetadata::try_from(pb::TopicMetadata {
            error: None,
            name: "orders".into(),
            topic_id: ID.to_vec().into(),
            is_internal: false,
            partitions: vec![
                pb::PartitionMetadata {
                    error: None,
                    partition: 0,
                    leader_id: Some(1),
                    leader_epoch: 4,
                    partition_epoch: 7,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2],
                    offline_replicas: vec![3],
                },
                pb::PartitionMetadata {
                    error: Some(pb::Error::new(pb::ErrorCode::LeaderNotAvailable, "")),
                    partition: 1,
                    leader_id: None,
                    replicas: vec![2, 3, 1],
                    ..Default::default()
                },
            ],
            configs: [("retention.ms".to_string(), "1000".to_string())].into(),
        })
        .unwrap();
        assert_eq!(t.replication_factor(), 3);
        assert_eq!(t.partitions[0].leader, Some(1));
        assert_eq!(t.partitions[0].leader_epoch, 4);
        assert_eq!(t.partitions[0].isr, vec![1, 2]);
        assert_eq!(t.partitions[0].offline_replicas, vec![3]);
        assert_eq!(t.partitions[1].leader, None);
        assert_eq!(
            t.partitions[1].error.as_ref().map(|e| e.code_name()),
            Some("LEADER_NOT_AVAILABLE")
        );
        assert_eq!(t.configs["retention.ms"], "1000");
    }

    #[test]
    fn unknown_topic_in_metadata_keeps_its_error() {
        let t = TopicMetadata::try_from(pb::TopicMetadata {
            error: Some(pb::Error::new(
                pb::ErrorCode::UnknownTopicOrPartition,
                "no such topic",
            )),
            name: "nope".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.topic_id, None);
        assert_eq!(t.replication_factor(), 0);
        assert_eq!(t.error.unwrap().code_name(), "UNKNOWN_TOPIC_OR_PARTITION");
    }
}
