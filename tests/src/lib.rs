//! Keel's multi-node and fault tests and the test-cluster harness.
//!
//! # Layout
//! - [`cluster`]: [`TestCluster`](cluster::TestCluster), real `keeld` processes on loopback
//!   that a test starts, kills, stops, pauses and restarts.
//! - [`disk`]: a small tmpfs as a node's data directory, and a filler that makes it full.
//! - [`netns`]: network namespaces per node, and silent one-way cuts between them.
//! - [`prom`]: a strict reader of the Prometheus text format, for `/metrics` tests.
//! - [`proxy`]: a TCP proxy that can swallow answers (requests arrive, answers are lost),
//!   also in front of a node's advertised address.
//! - [`workload`]: producers that keep a history, reading back a cluster's partitions (over
//!   the API or from a stopped node's files), and the checker comparing the two.
//! - `tests/it/main.rs`: one integration-test binary with modules per area, named `t10_`
//!   (metadata quorum) to `t90_` (regressions).
//! - `src/bin/keel-log-writer.rs`: a process that appends to a partition log until it is
//!   killed, used by the crash-recovery tests.

pub mod cluster;
pub mod disk;
pub mod netns;
pub mod prom;
pub mod proxy;
pub mod workload;
