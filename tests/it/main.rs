//! Keel's integration tests: real processes and real files.

mod t50_storage_crash;
