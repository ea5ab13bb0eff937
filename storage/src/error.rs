//! Errors of the storage engine.
//!
//! Two layers, as everywhere in Keel: [`StorageError`] says which I/O failed on what, and
//! [`LogError`] is what a caller of a partition log can act on. A failed fsync is not an
//! ordinary I/O error: it poisons the log ([`LogError::Poisoned`]), because after a failed
//! fsync the kernel may have dropped dirty pages and a retry would report success falsely.

use std::path::PathBuf;
use std::sync::Arc;

use crate::batch::BatchError;
use crate::producers::SequenceError;
use crate::Offset;

/// An I/O failure with what was being done and to what.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not {verb} {subject}: {source}")]
pub struct StorageError {
    pub subject: Subject,
    pub verb: Verb,
    #[source]
    pub source: Arc<std::io::Error>,
}

impl StorageError {
    pub fn new(subject: Subject, verb: Verb, source: std::io::Error) -> Self {
        StorageError {
            subject,
            verb,
            source: Arc::new(source),
        }
    }
}

/// What a storage operation was acting on.
#[derive(Debug, Clone)]
pub enum Subject {
    Segment(PathBuf),
    LogDir(PathBuf),
    Index(PathBuf),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Segment(p) => write!(f, "segment {}", p.display()),
            Subject::LogDir(p) => write!(f, "log directory {}", p.display()),
            Subject::Index(p) => write!(f, "index {}", p.display()),
        }
    }
}

/// What a storage operation was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Open,
    Create,
    Read,
    Write,
    Sync,
    Truncate,
    Delete,
    List,
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verb::Open => "open",
            Verb::Create => "create",
            Verb::Read => "read",
            Verb::Write => "write",
            Verb::Sync => "fsync",
            Verb::Truncate => "truncate",
            Verb::Delete => "delete",
            Verb::List => "list",
        })
    }
}

/// A failure of the offset/time index or checkpoint store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IndexError {
    #[error("index backend failed: {0}")]
    Backend(Arc<dyn std::error::Error + Send + Sync>),
    #[error("index entry for log {log} is corrupt: {what}")]
    Corrupt { log: String, what: &'static str },
}

/// Errors of a partition log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The batch was refused before anything was written.
    #[error("invalid record batch: {0}")]
    InvalidBatch(Arc<BatchError>),
    /// A replicated batch did not start at the log end offset.
    #[error("replicated batch starts at offset {got}, but the log ends at {expected}")]
    NonContiguous { expected: Offset, got: Offset },
    #[error("offset {offset} is out of range: the log holds [{log_start}, {log_end})")]
    OffsetOutOfRange {
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("invalid log name {name:?}: use letters, digits, '.', '_' and '-' only")]
    InvalidName { name: String },
    #[error("invalid log config: {0}")]
    InvalidConfig(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Index(#[from] IndexError),
    /// An fsync failed earlier: the log refuses all writes until the process restarts and
    /// recovers it from disk.
    #[error("log {log} is poisoned by an earlier fsync failure; restart to recover")]
    Poisoned { log: String },
    /// An idempotent producer's batch does not fit its producer state; nothing was written.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
}

/// A log config value outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value} is invalid: {rule}")]
pub struct ConfigError {
    pub key: &'static str,
    pub value: i64,
    pub rule: &'static str,
}

impl From<BatchError> for LogError {
    fn from(e: BatchError) -> Self {
        LogError::InvalidBatch(Arc::new(e))
    }
}
