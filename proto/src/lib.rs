//! Keel gRPC contract.
