//! Conversions between the metadata crate's types and proto messages.

use bytes::Bytes;
use keel_metadata::image::{BrokerRegistration, BrokerState, MetadataImage, TopicImage};
use keel_metadata::node::WriteError;
use keel_metadata::records::TopicId;
use keel_metadata::store::NodeId;
use keel_proto::v1 as pb;
use keel_proto::v1::{Error, ErrorCode};

/// `NOT_CONTROLLER` with the leader's id and internal address as the hint, when known.
pub fn not_controller(leader: Option<(NodeId, String)>) -> Error {
    let mut e = Error::new(
        ErrorCode::NotController,
        match &leader {
            Some((id, _)) => format!("node {id} is the active controller"),
            None => "no active controller is known; retry".to_owned(),
        },
    );
    if let Some((id, addr)) = leader {
        e.leader_id = Some(id as i32);
        e.leader_endpoint = Some(addr);
    }
    e
}

/// `INVALID_REQUEST` with `msg`: a request that breaks the contract.
pub fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidRequest, msg)
}

/// The wire error for a failed metadata write.
pub fn write_error(e: WriteError) -> Error {
    match e {
        WriteError::NotController { leader } => not_controller(leader),
        other => Error::new(other.code(), other.to_string()),
    }
}

/// A topic id as the 16 bytes of the wire.
pub fn topic_id_bytes(id: TopicId) -> Bytes {
    Bytes::copy_from_slice(&id.to_bytes())
}

/// A topic id from the wire, if it is 16 bytes.
pub fn parse_topic_id(b: &[u8]) -> Option<TopicId> {
    TopicId::from_slice(b)
}

fn broker_state(s: BrokerState) -> pb::BrokerState {
    match s {
        BrokerState::Fenced => pb::BrokerState::Fenced,
        BrokerState::Unfenced => pb::BrokerState::Unfenced,
        BrokerState::ShuttingDown => pb::BrokerState::ControlledShutdown,
    }
}

/// A registered broker with its client endpoint.
pub fn broker(b: &BrokerRegistration) -> pb::Broker {
    pb::Broker {
        broker_id: b.broker_id,
        host: b.endpoints.client.host.clone(),
        port: i32::from(b.endpoints.client.port),
        rack: b.rack.clone(),
        state: broker_state(b.state) as i32,
        ..Default::default()
    }
}

/// Every registered broker with whether it is being decommissioned and how many replicas it
/// holds (moves in progress counted as done), for DescribeCluster.
pub fn brokers_with_load(image: &MetadataImage) -> Vec<pb::Broker> {
    let mut counts: std::collections::BTreeMap<i32, i32> = Default::default();
    for (_, _, p) in image.partitions() {
        for b in p.target_replicas() {
            *counts.entry(b).or_default() += 1;
        }
    }
    image
        .brokers
        .values()
        .map(|b| pb::Broker {
            decommissioning: image.decommissioning.contains(&b.broker_id),
            replica_count: counts.get(&b.broker_id).copied().unwrap_or(0),
            ..broker(b)
        })
        .collect()
}

/// A topic's metadata; `include_configs` adds its overrides.
pub fn topic(image: &MetadataImage, t: &TopicImage, include_configs: bool) -> pb::TopicMetadata {
    let partitions =
        t.partitions
            .iter()
            .map(|(index, p)| pb::PartitionMetadata {
                error: p.leader.is_none().then(|| {
                    Error::new(ErrorCode::LeaderNotAvailable, "the partition has no leader")
                }),
                partition: *index,
                leader_id: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                offline_replicas: p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !image.is_unfenced(*r))
                    .collect(),
            })
            .collect();
    pb::TopicMetadata {
        error: None,
        name: t.name.clone(),
        topic_id: topic_id_bytes(t.topic_id),
        is_internal: t.name.starts_with("__"),
        partitions,
        configs: if include_configs {
            t.configs.clone().into_iter().collect()
        } else {
            Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_round_trip_and_bad_lengths_are_refused() {
        let id = TopicId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        assert_eq!(parse_topic_id(&topic_id_bytes(id)), Some(id));
        assert_eq!(parse_topic_id(&[1, 2, 3]), None);
    }

    #[test]
    fn not_controller_carries_the_hint() {
        let e = not_controller(Some((3, "127.0.0.1:9393".into())));
        assert_eq!(e.code, ErrorCode::NotController as i32);
        assert!(e.retriable);
        assert_eq!(e.leader_id, Some(3));
        assert_eq!(e.leader_endpoint.as_deref(), Some("127.0.0.1:9393"));
        assert_eq!(not_controller(None).leader_id, None);
    }
}
