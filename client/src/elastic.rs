//! Moving replicas and changing membership from the admin side: partition reassignments
//! (start, cancel, list with copy progress), broker decommissioning, and the voters of the
//! metadata quorum.

use keel_proto::v1 as pb;
use keel_proto::v1::admin_client::AdminClient as AdminRpc;
use keel_proto::v1::cluster_client::ClusterClient as ClusterRpc;
use serde::Serialize;

use crate::pb_conv::api_error;
use crate::{AdminClient, ApiError, Error};

/// A partition being reassigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reassignment {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// All replicas now: the target ones first, then those being removed.
    pub replicas: Vec<i32>,
    /// Replicas being added (copying outside the ISR until they catch up).
    pub adding: Vec<i32>,
    /// Replicas removed once every target replica is in sync.
    pub removing: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// The leader's log end offset, when the answering node leads the partition.
    pub leader_log_end: Option<i64>,
    /// Each adding replica's log end offset as the leader last saw it (leader's answer only).
    pub progress: Vec<(i32, Option<i64>)>,
}

impl Reassignment {
    /// The target replicas: all but the ones being removed.
    pub fn target(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing.contains(b))
            .collect()
    }

    /// How far the copy is, from 0 to 1: the least-advanced adding replica's share of the
    /// leader's log, or the share of target replicas in sync when the leader did not answer.
    pub fn fraction_done(&self) -> f64 {
        let behind = self.adding.iter().filter(|b| !self.isr.contains(b));
        match self.leader_log_end {
            Some(end) if end > 0 => behind
                .map(|b| {
                    let leo = self
                        .progress
                        .iter()
                        .find(|(id, _)| id == b)
                        .and_then(|(_, leo)| *leo)
                        .unwrap_or(0);
                    (leo as f64 / end as f64).min(1.0)
                })
                .fold(1.0, f64::min),
            _ => {
                let target = self.target();
                let in_sync = target.iter().filter(|b| self.isr.contains(b)).count();
                in_sync as f64 / target.len().max(1) as f64
            }
        }
    }
}

/// The outcome of a request on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionOutcome {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// `None` on success.
    pub error: Option<ApiError>,
}

/// A reassignment to start (`target: Some`) or cancel (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignRequest {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Target replicas, preferred leader first; `None` cancels.
    pub target: Option<Vec<i32>>,
}

impl AdminClient {
    /// Starts or cancels reassignments (Kafka's AlterPartitionReassignments); each partition
    /// succeeds or fails on its own. Returns once the change is committed; the copy goes on
    /// in the background.
    pub async fn alter_partition_reassignments(
        &self,
        moves: &[ReassignRequest],
    ) -> Result<Vec<PartitionOutcome>, Error> {
        let mut topics: Vec<pb::ReassignableTopic> = Vec::new();
        for m in moves {
            let partition = pb::ReassignablePartition {
                partition: m.partition,
                target: m.target.as_ref().map(|ids| pb::TargetReplicas {
                    broker_ids: ids.clone(),
                }),
            };
            match topics.iter_mut().find(|t| t.name == m.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(pb::ReassignableTopic {
                    name: m.topic.clone(),
                    partitions: vec![partition],
                }),
            }
        }
        let request = pb::AlterPartitionReassignmentsRequest {
            topics,
            timeout_ms: 0,
        };
        let response = self
            .call("Admin.AlterPartitionReassignments", |ch| {
                let request = request.clone();
                async move {
                    AdminRpc::new(ch)
                        .alter_partition_reassignments(request)
                        .await
                }
            })
            .await?;
        Ok(response
            .results
            .into_iter()
            .map(|r| PartitionOutcome {
                topic: r.topic,
                partition: r.partition,
                error: api_error(r.error),
            })
            .collect())
    }

    /// The reassignments in progress among `partitions` (all when empty), from the answering
    /// node's image. A node that leads a partition adds its copy progress.
    pub async fn list_partition_reassignments(
        &self,
        partitions: &[(String, Vec<i32>)],
    ) -> Result<Vec<Reassignment>, Error> {
        let request = pb::ListPartitionReassignmentsRequest {
            partitions: crate::admin::topic_partitions(partitions),
        };
        let response = self
            .call("Admin.ListPartitionReassignments", |ch| {
                let request = request.clone();
                async move {
                    AdminRpc::new(ch)
                        .list_partition_reassignments(request)
                        .await
                }
            })
            .await?;
        Ok(response
            .reassignments
            .into_iter()
            .map(|r| Reassignment {
                topic: r.topic,
                partition: r.partition,
                replicas: r.replicas,
                adding: r.adding_replicas,
                removing: r.removing_replicas,
                isr: r.isr,
                leader_log_end: r.leader_log_end_offset,
                progress: r
                    .progress
                    .into_iter()
                    .map(|p| (p.broker_id, p.log_end_offset))
                    .collect(),
            })
            .collect())
    }

    /// Starts (or with `cancel`, stops) decommissioning a broker: its replicas move to other
    /// brokers, then it is unregistered for good. [`describe_cluster`](Self::describe_cluster)
    /// shows the progress.
    pub async fn decommission_broker(&self, broker_id: i32, cancel: bool) -> Result<(), Error> {
        self.call("Cluster.DecommissionBroker", |ch| async move {
            ClusterRpc::new(ch)
                .decommission_broker(pb::DecommissionBrokerRequest { broker_id, cancel })
                .await
        })
        .await
        .map(|_| ())
    }

    /// Adds a running controller node to the voters of the metadata quorum; returns the voters
    /// after the change.
    pub async fn add_voter(&self, node_id: i32, endpoint: &str) -> Result<Vec<i32>, Error> {
        let request = pb::AddVoterRequest {
            node_id,
            endpoint: endpoint.to_owned(),
            timeout_ms: 0,
        };
        let response = self
            .call("Cluster.AddVoter", |ch| {
                let request = request.clone();
                async move { ClusterRpc::new(ch).add_voter(request).await }
            })
            .await?;
        Ok(response.voters)
    }

    /// Removes a node from the voters; returns the voters after the change.
    pub async fn remove_voter(&self, node_id: i32) -> Result<Vec<i32>, Error> {
        let response = self
            .call("Cluster.RemoveVoter", |ch| async move {
                ClusterRpc::new(ch)
                    .remove_voter(pb::RemoveVoterRequest {
                        node_id,
                        timeout_ms: 0,
                    })
                    .await
            })
            .await?;
        Ok(response.voters)
    }
}
