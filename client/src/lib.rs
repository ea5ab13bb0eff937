//! Keel's Rust client over the `keel.v1` gRPC API.
//!
//! This crate owns what a program needs to talk to a Keel cluster without knowing its
//! internals: today the admin client ([`AdminClient`]: topics, configs, partitions, cluster and
//! quorum description); the producer and consumer come with the data plane. It owns its own
//! plain result types (serializable with `serde`, so tools can print them as JSON), their
//! conversions from the wire messages, and one error type, [`Error`], whose every value has a
//! code name, a message and a retriability flag. It depends only on `keel-proto`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keel_client::Error> {
//! use keel_client::{AdminClient, NewTopic};
//! let admin = AdminClient::connect(&["127.0.0.1:9292".to_string()]).await?;
//! for t in admin.create_topics(&[NewTopic::new("orders").partitions(6)], false).await? {
//!     match t.error {
//!         None => println!("created {} ({:?})", t.name, t.topic_id),
//!         Some(e) => eprintln!("{}: {e}", t.name),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `admin.rs` — [`AdminClient`], [`AdminOptions`]; bootstrap failover, retries and backoff.
//! - `topic.rs` — [`TopicId`], [`NewTopic`], [`CreatedTopic`], [`DeletedTopic`],
//!   [`TopicMetadata`], [`PartitionMetadata`], [`ConfigEntry`], [`ConfigSource`],
//!   [`ConfigChange`].
//! - `cluster.rs` — [`BrokerInfo`], [`BrokerState`], [`ClusterMetadata`],
//!   [`ClusterDescription`], [`QuorumDescription`], [`QuorumMember`].
//! - `error.rs` — [`Error`] and [`ApiError`] (a wire `keel.v1.Error`).
//! - `pb_conv/` — conversions between wire messages and the types above, one file per family,
//!   each with its unit tests.

mod admin;
mod cluster;
mod error;
mod pb_conv;
mod topic;

pub use admin::{AdminClient, AdminOptions};
pub use cluster::{
    BrokerInfo, BrokerState, ClusterDescription, ClusterMetadata, QuorumDescription, QuorumMember,
};
pub use error::{grpc_code_name, ApiError, Error};
/// The wire error code, re-exported so callers can match on [`ApiError::code`].
pub use keel_proto::v1::ErrorCode;
pub use topic::{
    ConfigChange, ConfigEntry, ConfigSource, CreatedTopic, DeletedTopic, NewTopic,
    PartitionMetadata, TopicId, TopicMetadata,
};
