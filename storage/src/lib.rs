//! Keel's storage engine.

pub mod batch;
