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
//! - [`network`] — the gRPC Raft transport (`keel.v1.Raft`): openraft's network client and
//!   the server that hands messages to the local Raft node;
//! - [`node`] — [`ControllerNode`](node::ControllerNode): a voter at run time, with the
//!   active controller's write path, broker sessions and fencing timer;
//! - [`store`] — openraft's [`TypeConfig`](store::TypeConfig), the RocksDB log store, the state
//!   machine holding the image with its snapshots, [`MetadataView`](store::MetadataView), and
//!   [`store::start`] to run a node;
//! - [`testing`] — an in-process Raft transport ([`Router`](testing::Router)) for tests.

pub mod controller;
pub mod image;
pub mod network;
pub mod node;
pub mod records;
pub mod store;
pub mod testing;
