//! Keel's metadata quorum: metadata records and the metadata image, the openraft log store and
//! state machine, and the controller logic (placement, fencing, ISR and leader changes).
//!
//! # Layout
//! - [`records`] — the typed records of the metadata log (brokers, topics, partitions,
//!   configs, producer-id blocks);
//! - [`image`] — [`MetadataImage`](image::MetadataImage), built by applying records in log
//!   order, deterministically;
//! - [`controller`] — pure functions that turn requests into records or typed errors
//!   (topic validation, replica placement, fencing, controlled shutdown, AlterPartition);
//! - [`reassign`] — pure functions for replica moves (KIP-455 reassignment), broker
//!   decommissioning and the preferred-leader balance check;
//! - [`network`] — the production Raft transport over gRPC (`keel.v1.Raft`):
//!   [`GrpcNetwork`](network::GrpcNetwork) for openraft, [`raft_server`](network::raft_server)
//!   for the node's internal listener, [`request_election`](network::request_election) for
//!   leadership hand-over;
//! - [`node`] — [`ControllerNode`](node::ControllerNode): a voter at run time, with the
//!   active controller's write path, broker sessions and fencing timer;
//! - [`store`] — openraft's [`TypeConfig`](store::TypeConfig), the RocksDB log store, the state
//!   machine holding the image with its snapshots, [`MetadataView`](store::MetadataView), and
//!   [`store::start`] to run a node;
//! - [`testing`] — an in-process Raft transport ([`Router`](testing::Router)) for tests;
//! - `test_support.rs` — helpers shared by the multi-node tests (config, waits, writes).

pub mod controller;
pub mod image;
pub mod network;
pub mod node;
pub mod reassign;
pub mod records;
pub mod store;
pub mod testing;

#[cfg(test)]
mod test_support;
