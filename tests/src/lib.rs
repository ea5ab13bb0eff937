//! Keel's multi-node and fault tests and the test-cluster harness.
//!
//! # Layout
//! - `tests/it/main.rs` (to come with the metadata quorum): one integration-test binary with
//!   modules per area, named `t10_` (basic) to `t90_` (regressions).
//! - `src/bin/keel-log-writer.rs`: a process that appends to a partition log until it is
//!   killed, used by the crash-recovery tests.
