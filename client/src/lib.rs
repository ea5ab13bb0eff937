//! Keel's Rust client: producer, consumer and admin client over the `keel.v1` gRPC API.
//!
//! # Layout
//! Empty until the client issue lands. The client depends only on `keel-proto`: it knows
//! nothing of the broker's internals.
