//! Keel's storage engine.
