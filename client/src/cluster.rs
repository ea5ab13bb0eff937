//! Cluster types of the admin client: brokers, cluster metadata and description, and the
//! state of the metadata quorum.

use serde::Serialize;

use crate::TopicMetadata;

/// The state of a registered broker, as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerState {
    /// Registered but not serving (catching up with the metadata log, or its session expired).
    Fenced,
    /// Registered, heartbeating and serving.
    Unfenced,
    /// Moving leadership away before it stops.
    ControlledShutdown,
    /// A state this client does not know (a newer server), or none given.
    Unknown,
}

impl BrokerState {
    /// Lower-case name: `fenced`, `unfenced`, `controlled_shutdown`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerState::Fenced => "fenced",
            BrokerState::Unfenced => "unfenced",
            BrokerState::ControlledShutdown => "controlled_shutdown",
            BrokerState::Unknown => "unknown",
        }
    }
}

/// A broker and its client endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerInfo {
    /// The broker's node id.
    pub id: i32,
    /// Host name or address of its client endpoint.
    pub host: String,
    /// Port of its client endpoint.
    pub port: i32,
    /// Its rack (`broker.rack`), when configured.
    pub rack: Option<String>,
    /// Its state.
    pub state: BrokerState,
    /// Whether it is being decommissioned (from `describe_cluster` only).
    pub decommissioning: bool,
    /// Replicas assigned to it, moves in progress counted as done (from `describe_cluster`
    /// only).
    pub replica_count: i32,
}

impl BrokerInfo {
    /// The client endpoint as `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Brokers and topics as the answering node's metadata image holds them (`Cluster.Metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterMetadata {
    /// The cluster id.
    pub cluster_id: String,
    /// Node id of the active controller, when known.
    pub controller_id: Option<i32>,
    /// The registered, unfenced brokers.
    pub brokers: Vec<BrokerInfo>,
    /// The topics asked for (every topic when none was named), each with its own error.
    pub topics: Vec<TopicMetadata>,
    /// The metadata offset (Raft log index) of the image that answered.
    pub metadata_offset: u64,
}

/// The cluster, its active controller and every registered broker, fenced ones included
/// (`Cluster.DescribeCluster`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterDescription {
    /// The cluster id.
    pub cluster_id: String,
    /// Node id of the active controller, when known.
    pub controller_id: Option<i32>,
    /// Every registered broker.
    pub brokers: Vec<BrokerInfo>,
    /// The metadata offset (Raft log index) of the image that answered.
    pub metadata_offset: u64,
}

/// The metadata quorum as the active controller sees it (`Cluster.DescribeQuorum`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumDescription {
    /// Node id of the Raft leader (the active controller), when known.
    pub leader_id: Option<i32>,
    /// The current Raft term.
    pub term: u64,
    /// Index of the last committed entry of the metadata log.
    pub commit_index: u64,
    /// The voters, the leader included.
    pub voters: Vec<QuorumMember>,
    /// Nodes that replicate the log without voting.
    pub learners: Vec<QuorumMember>,
}

/// One node of the metadata quorum and its replication progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumMember {
    /// The node's id.
    pub node_id: i32,
    /// Its controller endpoint as `host:port`.
    pub endpoint: String,
    /// The last log index the leader knows it holds; `None` when not heard from yet.
    pub last_log_index: Option<u64>,
    /// Entries behind the leader's last log index; `None` with `last_log_index`.
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard from it; `None` when never, 0 for the leader.
    pub last_contact_ms: Option<i64>,
}
