//! A data directory: the partition logs under one folder and the one index store they share.
//!
//! # Layout
//! ```text
//! <root>/index/            RocksDB: offset index, time index, checkpoints of every log
//! <root>/logs/<name>/      one folder per log, segment files named by base offset
//! <root>/write-probe       briefly, while [`DataDir::probe_writes`] runs
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::LogConfig;
use crate::error::{IndexError, LogError, StorageError, Subject, Verb};
use crate::index::rocks::RocksIndex;
use crate::index::{IndexOp, OffsetIndex};
use crate::log::{validate_name, Clock, Log, RecoveryStats};

/// The file [`DataDir::probe_writes`] writes.
const PROBE_FILE: &str = "write-probe";
/// The index entries of [`DataDir::probe_writes`]: no partition log has this name (see
/// `validate_name` callers; partition logs are `<topic id>-<partition>`).
const PROBE_LOG: &str = "_write_probe";

pub struct DataDir {
    root: PathBuf,
    index: Arc<dyn OffsetIndex>,
    clock: Clock,
}

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("could not open the index in {path}: {source}")]
    Index { path: PathBuf, source: IndexError },
}

fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl DataDir {
    /// Opens (or creates) a data directory with its RocksDB index.
    pub fn open(root: &Path) -> Result<DataDir, OpenError> {
        let index_path = root.join("index");
        std::fs::create_dir_all(&index_path)
            .map_err(|e| StorageError::new(Subject::LogDir(root.to_owned()), Verb::Create, e))?;
        let index = RocksIndex::open(&index_path).map_err(|source| OpenError::Index {
            path: index_path,
            source,
        })?;
        Ok(Self::with_index(root, Arc::new(index)))
    }

    /// A data directory over any index implementation (tests use the in-memory one).
    pub fn with_index(root: &Path, index: Arc<dyn OffsetIndex>) -> DataDir {
        DataDir {
            root: root.to_owned(),
            index,
            clock: Arc::new(system_clock),
        }
    }

    /// Replaces the wall clock, so tests can age segments without waiting.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn log_dir(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(name)
    }

    /// Opens the log `name`, creating it if new, and recovers it if it was not closed cleanly.
    pub fn open_log(
        &self,
        name: &str,
        config: LogConfig,
    ) -> Result<(Log, RecoveryStats), LogError> {
        validate_name(name)?;
        Log::open(
            name,
            self.log_dir(name),
            config,
            self.index.clone(),
            self.clock.clone(),
        )
    }

    /// Deletes a log's files and index entries.
    pub fn delete_log(&self, log: Log) -> Result<(), LogError> {
        log.delete()
    }

    /// Checks that the directory takes writes (after a failure such as a full disk): writes,
    /// fsyncs and removes a 64 KiB file, then makes a durable index write. RocksDB stops
    /// writing after a write error and resumes on its own once space returns, so the index
    /// write fails until it has.
    pub fn probe_writes(&self) -> Result<(), LogError> {
        use std::io::Write;
        let path = self.root.join(PROBE_FILE);
        let written = std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&[0u8; 64 << 10]).and_then(|()| f.sync_all()));
        let _ = std::fs::remove_file(&path);
        written
            .map_err(|e| StorageError::new(Subject::LogDir(self.root.clone()), Verb::Write, e))?;
        let op = IndexOp::PutMeta {
            key: "written_ms".into(),
            value: (self.clock)().to_be_bytes().to_vec(),
        };
        self.index.apply(PROBE_LOG, &[op], true)?;
        Ok(())
    }

    /// Names of the logs in this directory, sorted.
    pub fn log_names(&self) -> Result<Vec<String>, StorageError> {
        let logs = self.root.join("logs");
        let err = |e| StorageError::new(Subject::LogDir(logs.clone()), Verb::List, e);
        let entries = match std::fs::read_dir(&logs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            if let Some(name) = entry.map_err(err)?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}
