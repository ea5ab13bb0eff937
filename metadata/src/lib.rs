//! Keel's metadata quorum: metadata records and the metadata image, the openraft log store and
//! state machine, and the controller logic (placement, fencing, ISR and leader changes).
//!
//! # Layout
//! Empty until the metadata-quorum issue lands; the crate exists so that the dependency
//! direction of the workspace (`broker` → `metadata` → `proto`) is fixed from the start.
