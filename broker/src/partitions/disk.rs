//! Whether this broker's data directory takes writes, and what the broker does when it stops.
//!
//! A partition write that fails on the disk (a segment write, an index write, an fsync; not a
//! refused batch) marks the directory failing ([`DiskHealth::note`]). The write itself
//! changed nothing (see `keel_storage::Log`) and its caller got `STORAGE_ERROR`, which is
//! retriable. While the directory fails, the broker heartbeats with `want_fence`
//! (`crate::lifecycle`): the controller fences it, its leaderships move to ISR members on
//! healthy disks and it leaves every ISR, so `min.insync.replicas` decides what stays
//! writable. [`watch`] probes the directory every [`PROBE_EVERY`]; once a probe succeeds and no
//! log is poisoned, the directory is healthy again, the broker stops asking, is unfenced,
//! catches up as a follower and rejoins the ISRs, all without a restart. A poisoned log (a
//! failed fsync, or a failure that left files and index disagreeing) keeps the broker fenced
//! until a restart recovers the log from its files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_storage::LogError;
use tokio::sync::watch;

use super::{PartitionError, PartitionManager};

/// How often a failing directory is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The data directory's state: `Some(first error)` while it refuses writes.
pub struct DiskHealth {
    failing: watch::Sender<Option<String>>,
}

impl Default for DiskHealth {
    fn default() -> Self {
        DiskHealth {
            failing: watch::channel(None).0,
        }
    }
}

/// Whether `e` says the disk failed (rather than the request being refused).
pub fn is_disk_failure(e: &PartitionError) -> bool {
    matches!(
        e,
        PartitionError::Storage(
            LogError::Storage(_) | LogError::Index(_) | LogError::Poisoned { .. }
        )
    )
}

impl DiskHealth {
    /// Marks the directory failing if `e` is a disk failure (the first one is kept and logged).
    pub fn note(&self, e: &PartitionError) {
        if !is_disk_failure(e) {
            return;
        }
        self.failing.send_if_modified(|failing| {
            if failing.is_some() {
                return false;
            }
            tracing::warn!(error = %e,
                "the data directory refuses writes; asking to be fenced until it takes them again");
            *failing = Some(e.to_string());
            true
        });
    }

    /// The first error while the directory fails.
    pub fn failing(&self) -> Option<String> {
        self.failing.borrow().clone()
    }

    /// A receiver of the state, woken on every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.failing.subscribe()
    }

    fn clear(&self, failed_for: Duration) {
        tracing::info!(
            failed_for_ms = failed_for.as_millis() as u64,
            "the data directory takes writes again"
        );
        self.failing.send_replace(None);
    }
}

/// Probes the data directory while it fails, until `stop` turns true.
pub async fn watch(partitions: Arc<PartitionManager>, mut stop: watch::Receiver<bool>) {
    let mut state = partitions.disk().subscribe();
    loop {
        tokio::select! {
            r = state.wait_for(|f| f.is_some()) => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let since = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PROBE_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let p = partitions.clone();
            let healthy = crate::spawn_blocking(move || p.probe_disk())
                .await
                .unwrap_or(false);
            if healthy {
                partitions.disk().clear(since.elapsed());
                break;
            }
        }
    }
}

impl PartitionManager {
    /// Whether the data directory takes writes and no hosted log is poisoned. Blocking.
    fn probe_disk(&self) -> bool {
        if let Some(p) = self.all().iter().find(|p| p.is_poisoned()) {
            tracing::debug!(topic = %p.topic, partition = p.index,
                "a poisoned log keeps the broker fenced until a restart");
            return false;
        }
        match self.data.probe_writes() {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "the data directory still refuses writes");
                false
            }
        }
    }
}
