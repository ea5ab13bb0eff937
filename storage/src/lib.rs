//! Keel's storage engine: everything a broker keeps on disk for its partitions.
//!
//! It owns the record-batch format ([`batch`], Kafka's v2 RecordBatch, stored byte for byte as
//! produced), segment files, the sparse offset and time indexes with the per-log checkpoints
//! ([`index`], one RocksDB per data directory), the partition log ([`Log`]: append, read,
//! truncate, flush with group commit, retention) and crash recovery.
//!
//! This crate is a leaf: it knows nothing of gRPC, Raft or the metadata image. The broker
//! decides what to append and when; the log only keeps the bytes safe and finds them again.
//!
//! # Layout
//! - [`batch`]: encode, decode and validate record batches; stamp offsets and epochs.
//! - [`data_dir`]: a data directory, its shared index, and opening logs in it.
//! - [`log`]: one partition log; the module doc follows a batch through it.
//! - [`epochs`]: the leader-epoch cache (where each leader epoch starts in a log).
//! - [`producers`]: idempotent producers' state (epochs, sequences of their last batches).
//! - `segment`: one segment file (private); `mapped`: its large reads of cached data as
//!   mappings of the page cache (private).
//! - [`index`]: the [`index::OffsetIndex`] trait, with RocksDB and in-memory implementations.
//! - [`testing`]: the conformance suite every `OffsetIndex` passes.
//! - [`config`], [`error`].

pub use keel_batch as batch;
pub mod config;
pub mod data_dir;
pub mod epochs;
pub mod error;
pub mod index;
pub mod log;
mod mapped;
pub mod producers;
mod segment;
pub mod testing;

pub use config::LogConfig;
pub use data_dir::DataDir;
pub use error::{LogError, StorageError};
pub use log::{AppendInfo, FlushJob, Log, RecoveryStats, RetentionOutcome};

/// A record's position in its partition, as in Kafka: dense, starting at 0, never reused.
pub type Offset = i64;
