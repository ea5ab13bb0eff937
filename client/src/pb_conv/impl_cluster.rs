//! Cluster messages → [`BrokerInfo`], [`BrokerState`], [`ClusterMetadata`] and
//! [`ClusterDescription`].

use keel_proto::v1 as pb;

use crate::{BrokerInfo, BrokerState, ClusterDescription, ClusterMetadata, Error};

impl From<i32> for BrokerState {
    fn from(state: i32) -> Self {
        use pb::BrokerState as S;
        match S::try_from(state) {
            Ok(S::Fenced) => BrokerState::Fenced,
            Ok(S::Unfenced) => BrokerState::Unfenced,
            Ok(S::ControlledShutdown) => BrokerState::ControlledShutdown,
            Ok(S::Unspecified) | Err(_) => BrokerState::Unknown,
        }
    }
}

impl From<pb::Broker> for BrokerInfo {
    fn from(b: pb::Broker) -> Self {
        Self {
            id: b.broker_id,
            host: b.host,
            port: b.port,
            rack: b.rack,
            state: b.state.into(),
            decommissioning: b.decommissioning,
            replica_count: b.replica_count,
        }
    }
}

impl TryFrom<pb::MetadataResponse> for ClusterMetadata {
    type Error = Error;

    /// Fails with the response's request-level error, if any.
    fn try_from(r: pb::MetadataResponse) -> Result<Self, Error> {
        super::check(r.error)?;
        Ok(Self {
            cluster_id: r.cluster_id,
            controller_id: r.controller_id,
            brokers: r.brokers.into_iter().map(Into::into).collect(),
            topics: r
                .topics
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            metadata_offset: r.metadata_offset,
        })
    }
}

impl TryFrom<pb::DescribeClusterResponse> for ClusterDescription {
    type Error = Error;

    /// Fails with the response's request-level error, if any.
    fn try_from(r: pb::DescribeClusterResponse) -> Result<Self, Error> {
        super::check(r.error)?;
        Ok(Self {
            cluster_id: r.cluster_id,
            controller_id: r.controller_id,
            brokers: r.brokers.into_iter().map(Into::into).collect(),
            metadata_offset: r.metadata_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, state: pb::BrokerState, rack: Option<&str>) -> pb::Broker {
        pb::Broker {
            broker_id: id,
            host: format!("n{id}"),
            port: 9292,
            rack: rack.map(str::to_string),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn brokers_and_states() {
        let b = BrokerInfo::from(broker(2, pb::BrokerState::Fenced, Some("r1")));
        assert_eq!(b.id, 2);
        assert_eq!(b.address(), "n2:9292");
        assert_eq!(b.rack.as_deref(), Some("r1"));
        assert_eq!(b.state, BrokerState::Fenced);
        assert_eq!(BrokerState::from(0), BrokerState::Unknown);
        assert_eq!(BrokerState::from(77), BrokerState::Unknown);
        assert_eq!(
            BrokerState::from(pb::BrokerState::ControlledShutdown as i32).as_str(),
            "controlled_shutdown"
        );
    }

    #[test]
    fn describe_cluster_response() {
        let d = ClusterDescription::try_from(pb::DescribeClusterResponse {
            error: None,
            cluster_id: "kc-1".into(),
            controller_id: Some(1),
            brokers: vec![
                broker(1, pb::BrokerState::Unfenced, None),
                broker(2, pb::BrokerState::Fenced, Some("r2")),
            ],
            metadata_offset: 42,
        })
        .unwrap();
        assert_eq!(d.cluster_id, "kc-1");
        assert_eq!(d.controller_id, Some(1));
        assert_eq!(d.brokers.len(), 2);
        assert_eq!(d.brokers[1].state, BrokerState::Fenced);
        assert_eq!(d.metadata_offset, 42);
    }

    #[test]
    fn request_level_errors_fail_the_conversion() {
        let err = ClusterMetadata::try_from(pb::MetadataResponse {
            error: Some(pb::Error::new(pb::ErrorCode::UnknownServerError, "boom")),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "UNKNOWN_SERVER_ERROR: boom");
    }

    #[test]
    fn metadata_keeps_per_topic_errors() {
        let m = ClusterMetadata::try_from(pb::MetadataResponse {
            cluster_id: "kc".into(),
            controller_id: None,
            topics: vec![pb::TopicMetadata {
                error: Some(pb::Error::new(pb::ErrorCode::UnknownTopicOrPartition, "")),
                name: "gone".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.controller_id, None);
        assert_eq!(m.topics.len(), 1);
        assert!(m.topics[0].error.is_some());
    }
}
