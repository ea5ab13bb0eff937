//! Keel's server, `keeld`: the client gRPC services, the partition manager, replica fetchers,
//! the group coordinator, config, and metrics and health endpoints.
//!
//! # Layout
//! - [`config`]: the node's settings and their validation.
//! - `src/main.rs`: the thin `keeld` binary; it parses flags and runs [`Node`].
//!
//! What exists today is the node's skeleton over the storage engine: it opens its data
//! directory (recovering every partition log found there) and stops cleanly on a signal. The
//! metadata quorum and the data plane fill it in (see ARCHITECTURE.md, "Status").

pub mod config;

use std::future::Future;

use keel_storage::{DataDir, LogConfig};

pub use config::{Config, ConfigError};

/// A running node.
pub struct Node {
    config: Config,
    data: DataDir,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not open data directory: {0}")]
    DataDir(#[from] keel_storage::data_dir::OpenError),
    #[error("could not recover log {name}: {source}")]
    Recovery {
        name: String,
        source: keel_storage::LogError,
    },
}

impl Node {
    /// Validates the config, opens the data directory and recovers every log in it.
    pub fn start(config: Config) -> Result<Node, StartError> {
        config.validate()?;
        let data = DataDir::open(&config.data_dir)?;
        let names = data.log_names().map_err(|e| StartError::Recovery {
            name: "*".into(),
            source: e.into(),
        })?;
        for name in names {
            let (log, stats) = data
                .open_log(&name, LogConfig::default())
                .map_err(|source| StartError::Recovery {
                    name: name.clone(),
                    source,
                })?;
            tracing::info!(log = %name, clean = stats.clean, bytes_scanned = stats.bytes_scanned,
                bytes_truncated = stats.bytes_truncated, "log recovered");
            log.close()
                .map_err(|source| StartError::Recovery { name, source })?;
        }
        tracing::info!(node_id = config.node_id, data_dir = %config.data_dir.display(), "node started");
        Ok(Node { config, data })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data
    }

    /// Runs until `shutdown` completes, then stops in order.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        tracing::info!(node_id = self.config.node_id, "node stopping");
    }
}
