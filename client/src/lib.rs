//! Keel's Rust client over the `keel.v1` gRPC API.
//!
//! This crate owns what a program needs to talk to a Keel cluster without knowing its
//! internals: the [`Producer`] (batching, compression, Kafka's partitioner, retries, a future
//! per record), the [`Consumer`] (assigned partitions, seeks by offset or time, poll or
//! stream), the [`GroupConsumer`] (a consumer group member with committed offsets) and the
//! [`AdminClient`] (topics, configs, partitions, groups, cluster and quorum description).
//! Each learns the cluster from one or more bootstrap addresses. It owns its
//! own plain result types (serializable with `serde`, so tools can print them as JSON), their
//! conversions from the wire messages, and one error type, [`Error`], whose every value has a
//! code name, a message and a retriability flag. It depends only on `keel-proto` (and codec
//! crates): it encodes Kafka v2 record batches itself (see `record_batch.rs` for why).
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
//! - `producer/` — [`Producer`], [`ProducerOptions`], [`DeliveryFuture`], [`ProducerStats`]:
//!   the accumulator (batching), the driver task (dispatch, retries), the sender (one
//!   request) and the in-flight bookkeeping (up to five batches per partition in order,
//!   idempotent sequences and epochs).
//! - `consumer.rs` — [`Consumer`], [`ConsumerOptions`], [`Position`], [`OffsetReset`],
//!   [`PartitionOffsets`]: fetches under way between polls, positions, seeks.
//! - `fetch_call.rs` — `Consumer.Fetch` below tonic's generated client, so record data
//!   arrives as slices of the received HTTP/2 frames.
//! - `fetched.rs` — decoding of the raw batches a fetch returns (with `keel-batch`).
//! - `group_consumer.rs` — [`GroupConsumer`], [`GroupOptions`], [`Subscription`]: a consumer
//!   group member (heartbeats, cooperative reassignment, commits).
//! - `groups.rs` — group administration on [`AdminClient`] ([`GroupListing`],
//!   [`GroupDescription`]) and the coordinator connection.
//! - `elastic.rs` — replica moves and membership on [`AdminClient`]: reassignments
//!   ([`Reassignment`], [`ReassignRequest`], [`PartitionOutcome`]), decommissioning, voters.
//! - `topology.rs` — the data path's metadata cache: partitions, leaders, broker channels.
//! - `partitioner.rs` — Kafka's murmur2 partitioner ([`partition_for_key`]) and the sticky
//!   partitioner.
//! - `record_batch.rs` — the Kafka v2 batch encoder and [`Compression`].
//! - `record.rs` — [`ProducerRecord`], [`RecordMetadata`], [`ConsumerRecord`], [`Header`],
//!   [`TopicPartition`], [`Acks`].
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
mod consumer;
mod elastic;
mod error;
mod fetch_call;
mod fetched;
mod group_consumer;
mod groups;
mod partitioner;
mod pb_conv;
mod producer;
mod record;
mod record_batch;
mod topic;
mod topology;

pub use admin::{AdminClient, AdminOptions};
pub use cluster::{
    BrokerInfo, BrokerState, ClusterDescription, ClusterMetadata, QuorumDescription, QuorumMember,
};
pub use consumer::{Consumer, ConsumerOptions, OffsetReset, PartitionOffsets, Position};
pub use elastic::{PartitionOutcome, ReassignRequest, Reassignment};
pub use error::{grpc_code_name, ApiError, Error};
pub use group_consumer::{GroupConsumer, GroupOptions, Subscription};
pub use groups::{GroupDescription, GroupListing, GroupMemberInfo, GroupOffsetInfo};
/// The wire error code, re-exported so callers can match on [`ApiError::code`].
pub use keel_proto::v1::ErrorCode;
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{DeliveryFuture, Producer, ProducerOptions, ProducerStats};
pub use record::{Acks, ConsumerRecord, Header, ProducerRecord, RecordMetadata, TopicPartition};
pub use record_batch::Compression;
pub use topic::{
    ConfigChange, ConfigEntry, ConfigSource, CreatedTopic, DeletedTopic, Election, ElectionResult,
    NewTopic, PartitionMetadata, TopicId, TopicMetadata,
};
