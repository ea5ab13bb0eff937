//! The internal `Controller` service: broker registration and heartbeats, ISR changes and
//! producer-id blocks (answered by the active controller only; others reply `NOT_CONTROLLER`
//! with a hint), and the metadata stream (served by any controller node from its image).

use std::pin::Pin;

use keel_metadata::controller::{
    AlterPartitionRequest as IsrProposal, IsrMember as Member, RegisterBrokerRequest,
};
use keel_metadata::image::MetadataImage;
use keel_metadata::node::{ControllerNode, Heartbeat, WriteError};
use keel_metadata::records::{BrokerEndpoints, Endpoint, IncarnationId};
use keel_proto::v1::controller_server::Controller;
use keel_proto::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::{invalid, parse_topic_id, write_error};

/// Default size of one streamed snapshot chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// The `Controller` service of a controller node.
pub struct ControllerService {
    node: ControllerNode,
}

impl ControllerService {
    /// The service over a controller node.
    pub fn new(node: ControllerNode) -> Self {
        ControllerService { node }
    }

    /// `INCONSISTENT_CLUSTER_ID` when the broker names another cluster.
    fn check_cluster(&self, cluster_id: &str) -> Result<(), Error> {
        let ours = self.node.view().current().cluster_id.clone();
        if cluster_id.is_empty() || ours.is_empty() || cluster_id == ours {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::InconsistentClusterId,
            format!("this is cluster {ours}, not {cluster_id}"),
        ))
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn endpoint(e: &BrokerEndpoint) -> Result<Endpoint, Error> {
    let port = u16::try_from(e.port)
        .map_err(|_| invalid(format!("endpoint {}: bad port {}", e.name, e.port)))?;
    if e.host.is_empty() || port == 0 {
        return Err(invalid(format!(
            "endpoint {}: host and port are required",
            e.name
        )));
    }
    Ok(Endpoint {
        host: e.host.clone(),
        port,
    })
}

fn registration(req: &BrokerRegistrationRequest) -> Result<RegisterBrokerRequest, Error> {
    let incarnation = IncarnationId::from_slice(&req.incarnation_id)
        .ok_or_else(|| invalid("incarnation_id must be 16 bytes"))?;
    let find = |name| req.endpoints.iter().find(|e| e.name == name);
    let client = find("client").ok_or_else(|| invalid("the \"client\" endpoint is required"))?;
    let client = endpoint(client)?;
    let internal = match find("replication") {
        Some(e) => endpoint(e)?,
        None => client.clone(),
    };
    Ok(RegisterBrokerRequest {
        broker_id: req.broker_id,
        incarnation_id: incarnation,
        endpoints: BrokerEndpoints { client, internal },
        rack: req.rack.clone(),
    })
}

fn proposals(req: &AlterPartitionRequest) -> Vec<(bytes::Bytes, i32, Result<IsrProposal, Error>)> {
    let mut out = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let proposal = parse_topic_id(&t.topic_id)
                .ok_or_else(|| invalid("topic_id must be 16 bytes"))
                .map(|topic_id| IsrProposal {
                    broker_id: req.broker_id,
                    broker_epoch: req.broker_epoch,
                    topic_id,
                    partition: p.partition,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    new_isr: p
                        .new_isr
                        .iter()
                        .map(|m| Member {
                            broker_id: m.broker_id,
                            broker_epoch: m.broker_epoch,
                        })
                        .collect(),
                });
            out.push((t.topic_id.clone(), p.partition, proposal));
        }
    }
    out
}

/// Groups per-partition results by topic, keeping the request's order.
fn by_topic(
    results: Vec<(bytes::Bytes, AlterPartitionPartitionResponse)>,
) -> Vec<AlterPartitionTopicResponse> {
    let mut topics: Vec<AlterPartitionTopicResponse> = Vec::new();
    for (topic_id, p) in results {
        match topics.last_mut() {
            Some(t) if t.topic_id == topic_id => t.partitions.push(p),
            _ => topics.push(AlterPartitionTopicResponse {
                topic_id,
                partitions: vec![p],
            }),
        }
    }
    topics
}

/// The messages that carry `image` as a snapshot, in chunks of at most `max` bytes.
fn snapshot_messages(
    image: &MetadataImage,
    max: usize,
    controller_id: Option<i32>,
) -> Vec<FetchMetadataResponse> {
    let data = serde_json::to_vec(image).expect("the image serializes");
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(max).collect()
    };
    let last = chunks.len() - 1;
    let mut position = 0u64;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let msg = FetchMetadataResponse {
                error: None,
                committed_offset: image.offset,
                controller_id,
                data: Some(fetch_metadata_response::Data::SnapshotChunk(
                    MetadataSnapshotChunk {
                        last_included_offset: image.offset,
                        last_included_term: 0,
                        position,
                        data: bytes::Bytes::copy_from_slice(chunk),
                        done: i == last,
                    },
                )),
            };
            position += chunk.len() as u64;
            msg
        })
        .collect()
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn broker_registration(
        &self,
        req: Request<BrokerRegistrationRequest>,
    ) -> Reply<BrokerRegistrationResponse> {
        let req = req.into_inner();
        let result = async {
            self.check_cluster(&req.cluster_id)?;
            let reg = registration(&req)?;
            self.node.register_broker(reg).await.map_err(write_error)
        }
        .await;
        Ok(Response::new(match result {
            Ok(broker_epoch) => BrokerRegistrationResponse {
                error: None,
                broker_epoch,
            },
            Err(e) => BrokerRegistrationResponse {
                error: Some(e),
                broker_epoch: 0,
            },
        }))
    }

    async fn broker_heartbeat(
        &self,
        req: Request<BrokerHeartbeatRequest>,
    ) -> Reply<BrokerHeartbeatResponse> {
        let req = req.into_inner();
        let hb = Heartbeat {
            broker_id: req.broker_id,
            broker_epoch: req.broker_epoch,
            metadata_offset: req.current_metadata_offset,
            want_fence: req.want_fence,
            want_shutdown: req.want_shutdown,
        };
        Ok(Response::new(match self.node.heartbeat(hb).await {
            Ok(r) => BrokerHeartbeatResponse {
                error: None,
                is_caught_up: r.is_caught_up,
                is_fenced: r.is_fenced,
                should_shutdown: r.should_shutdown,
            },
            Err(e) => BrokerHeartbeatResponse {
                error: Some(write_error(e)),
                is_fenced: true,
                ..Default::default()
            },
        }))
    }

    type FetchMetadataStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<FetchMetadataResponse, Status>> + Send>>;

    async fn fetch_metadata(
        &self,
        req: Request<FetchMetadataRequest>,
    ) -> Reply<Self::FetchMetadataStream> {
        let req = req.into_inner();
        if let Err(e) = self.check_cluster(&req.cluster_id) {
            return Err(Status::failed_precondition(e.message));
        }
        let max = match usize::try_from(req.max_bytes) {
            Ok(0) | Err(_) => SNAPSHOT_CHUNK,
            Ok(n) => n,
        };
        let (tx, rx) = mpsc::channel(16);
        let node = self.node.clone();
        // The broker's image at next_offset - 1 equals ours at that offset: skip the first
        // snapshot when it is current.
        let mut sent = req.next_offset.checked_sub(1);
        crate::spawn(async move {
            let mut images = node.view().subscribe();
            loop {
                let image = images.borrow_and_update().clone();
                if sent != Some(image.offset) {
                    let controller_id = node.leader().map(|(id, _)| id as i32);
                    for msg in snapshot_messages(&image, max, controller_id) {
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                    sent = Some(image.offset);
                }
                tokio::select! {
                    changed = images.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn alter_partition(
        &self,
        req: Request<AlterPartitionRequest>,
    ) -> Reply<AlterPartitionResponse> {
        let req = req.into_inner();
        if !self.node.is_active() {
            return Ok(Response::new(AlterPartitionResponse {
                error: Some(write_error(WriteError::NotController {
                    leader: self.node.leader(),
                })),
                topics: vec![],
            }));
        }
        let mut results = Vec::new();
        for (topic_id, partition, proposal) in proposals(&req) {
            let result = match proposal {
                Err(e) => Err(e),
                Ok(p) => self.node.alter_partition(p).await.map_err(write_error),
            };
            let resp = match result {
                Ok(state) => AlterPartitionPartitionResponse {
                    partition,
                    error: None,
                    leader_id: state.leader,
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    isr: state.isr,
                },
                Err(e) => AlterPartitionPartitionResponse {
                    partition,
                    error: Some(e),
                    ..Default::default()
                },
            };
            results.push((topic_id, resp));
        }
        Ok(Response::new(AlterPartitionResponse {
            error: None,
            topics: by_topic(results),
        }))
    }

    async fn allocate_producer_ids(
        &self,
        req: Request<AllocateProducerIdsRequest>,
    ) -> Reply<AllocateProducerIdsResponse> {
        let req = req.into_inner();
        Ok(Response::new(
            match self
                .node
                .allocate_producer_ids(req.broker_id, req.broker_epoch)
                .await
            {
                Ok(start) => AllocateProducerIdsResponse {
                    error: None,
                    producer_id_start: start,
                    producer_id_len: keel_metadata::node::PRODUCER_ID_BLOCK,
                },
                Err(e) => AllocateProducerIdsResponse {
                    error: Some(write_error(e)),
                    ..Default::default()
                },
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_chunked_in_order_and_end_with_done() {
        let image = MetadataImage {
            cluster_id: "c".repeat(100),
            offset: 7,
            ..Default::default()
        };
        let msgs = snapshot_messages(&image, 16, Some(1));
        assert!(msgs.len() > 1);
        let mut data = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let Some(fetch_metadata_response::Data::SnapshotChunk(c)) = &m.data else {
                panic!("snapshot chunks only")
            };
            assert_eq!(c.position as usize, data.len());
            assert_eq!(c.done, i == msgs.len() - 1);
            assert_eq!(c.last_included_offset, 7);
            data.extend_from_slice(&c.data);
        }
        let back: MetadataImage = serde_json::from_slice(&data).unwrap();
        assert_eq!(back, image);
    }

    #[test]
    fn registrations_need_a_client_endpoint_and_a_16_byte_incarnation() {
        let ok = BrokerRegistrationRequest {
            cluster_id: String::new(),
            broker_id: 2,
            incarnation_id: bytes::Bytes::from(vec![7; 16]),
            endpoints: vec![BrokerEndpoint {
                name: "client".into(),
                host: "127.0.0.1".into(),
                port: 9392,
            }],
            rack: None,
        };
        let reg = registration(&ok).unwrap();
        assert_eq!(reg.endpoints.internal, reg.endpoints.client);
        let short = BrokerRegistrationRequest {
            incarnation_id: bytes::Bytes::from(vec![7; 3]),
            ..ok.clone()
        };
        assert!(registration(&short).is_err());
        let no_client = BrokerRegistrationRequest {
            endpoints: vec![],
            ..ok.clone()
        };
        assert!(registration(&no_client).is_err());
        let bad_port = BrokerRegistrationRequest {
            endpoints: vec![BrokerEndpoint {
                name: "client".into(),
                host: "h".into(),
                port: 70000,
            }],
            ..ok
        };
        assert!(registration(&bad_port).is_err());
    }
}
