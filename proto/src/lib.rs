//! Keel's gRPC contract: the `.proto` files of package `keel.v1` and the Rust code that
//! prost and tonic generate from them.
//!
//! This crate owns the wire format of every Keel API — the client services (`Producer`,
//! `Consumer`, `Groups`, `Admin`, `Cluster`) and the internal ones between nodes (`Raft`,
//! `Controller`, `Replication`) — and the one wire error enum, [`v1::ErrorCode`], with its
//! retriability table. It holds no domain logic: conversions between these messages and
//! domain types live in the crates that own the domain types.
//!
//! The `.proto` files are the API reference for users of every language; each service, rpc,
//! message, field and enum value is documented there, and the generated Rust items carry those
//! comments.
//!
//! # Layout
//!
//! - `proto/keel/v1/errors.proto` — `ErrorCode` (numbered in ranges, never reused) and the
//!   `Error` message with its leader hints.
//! - `proto/keel/v1/common.proto` — records, headers, isolation level, record format, and the
//!   conventions every file follows (names, units, topic ids, raw record batches).
//! - `proto/keel/v1/producer.proto` — service `Producer`: Produce, InitProducerId.
//! - `proto/keel/v1/consumer.proto` — service `Consumer`: Fetch, Subscribe, ListOffsets.
//! - `proto/keel/v1/groups.proto` — service `Groups`: KIP-848 consumer groups and offsets.
//! - `proto/keel/v1/admin.proto` — service `Admin`: topics, configs, partitions, elections,
//!   reassignments.
//! - `proto/keel/v1/cluster.proto` — service `Cluster`: metadata, cluster and quorum
//!   description, voter and broker membership.
//! - `proto/keel/v1/internal.proto` — internal services `Raft`, `Controller` and
//!   `Replication`; clients must not use them.
//! - `build.rs` — compiles the files with protox (no system `protoc`) and generates the code
//!   with tonic-prost-build; `bytes` fields become [`bytes::Bytes`].
//! - `src/error.rs` — [`v1::ErrorCode::is_retriable`] and [`v1::Error::new`].
//! - `docs/error-codes.md` (repository root) — the table of error codes, generated from
//!   `errors.proto` and checked against the enum by this crate's tests. After changing
//!   `errors.proto`, regenerate it with `KEEL_BLESS=1 cargo test -p keel-proto`.

mod error;

/// Generated messages, enums, clients (`*_client`) and servers (`*_server`) of package
/// `keel.v1`.
pub mod v1 {
    tonic::include_proto!("keel.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of package `keel.v1`, with source comments,
/// for gRPC server reflection and for tools that inspect the contract.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keel_v1_descriptor.bin"));

#[cfg(test)]
mod contract_test;
#[cfg(test)]
mod error_test;
