//! The node's configuration. Today: identity and data directory; the metadata-quorum issue
//! adds listeners, roles and voters, with TOML and `KEEL_*` environment overrides.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `node.id`: unique in the cluster.
    pub node_id: u32,
    /// `data.dir`: where segment files and the index live.
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("data.dir must not be empty")]
    EmptyDataDir,
}

impl Config {
    /// The one-node development setup of `keeld --dev`.
    pub fn dev() -> Config {
        Config {
            node_id: 1,
            data_dir: PathBuf::from(".keel-dev/data"),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::EmptyDataDir);
        }
        Ok(())
    }
}
