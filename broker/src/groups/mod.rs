//! The group coordinator: consumer groups with server-side assignment (Kafka's KIP-848) and
//! committed offsets, stored in the internal topic `__consumer_offsets`.
//!
//! A group's coordinator is the leader of the `__consumer_offsets` partition its id hashes to
//! (Kafka's hash, [`coordinator::partition_for`]). That broker replays the partition when it
//! becomes leader and keeps the state of its groups in memory; every change is appended to
//! the partition and acknowledged once replicated, so the next leader rebuilds the same
//! state after a failover.
//!
//! # Layout
//! - [`group`]: one group's rules (membership, epochs, cooperative reconciliation, commits),
//!   pure;
//! - [`assignor`]: the `uniform` and `range` server-side assignors, pure;
//! - [`stored`]: group state as records of `__consumer_offsets` and back, snapshots;
//! - [`coordinator`]: the runtime: shards per led partition, loading, writes, session expiry,
//!   snapshots; the internal topic's creation.
//!
//! The gRPC side is [`crate::services::groups`].

pub mod assignor;
pub mod coordinator;
pub mod group;
pub mod stored;
