//! Partition replication on the broker side that runs on its own: the follower fetchers and
//! the leader's ISR upkeep. (The leader's answers to fetches are the `Replication` service
//! in [`crate::services::replication`]; the per-partition logic is in
//! [`crate::partitions::partition`].)
//!
//! - [`fetcher`]: one task per leader broker this broker follows partitions from, started by
//!   [`run`] as the image assigns partitions and ending when none is left.
//! - [`isr`]: a periodic pass over the partitions this broker leads: ISR changes go to the
//!   controller as AlterPartition requests; high watermarks are checkpointed.
//! - [`throttle`]: the token bucket that limits what a leader sends to replicas being added
//!   by a reassignment.

pub mod fetcher;
pub mod isr;
pub mod throttle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keel_metadata::records::BrokerId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::lifecycle::Status;
use crate::partitions::PartitionManager;
use crate::services::Shared;

/// What the replication tasks share.
pub struct Context {
    pub me: BrokerId,
    pub shared: Arc<Shared>,
    pub partitions: Arc<PartitionManager>,
    /// The broker's registration (its epoch goes into every fetch and ISR request).
    pub status: watch::Receiver<Status>,
    pub stop: watch::Receiver<bool>,
    /// Counters (ISR changes).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Keeps one fetcher running per leader broker this broker follows partitions from, until
/// `stop`; then waits for the fetchers to end.
pub async fn run(ctx: Arc<Context>) {
    let mut fetchers: HashMap<BrokerId, JoinHandle<()>> = HashMap::new();
    let mut roles = ctx.partitions.reconciled();
    let mut stop = ctx.stop.clone();
    loop {
        fetchers.retain(|_, h| !h.is_finished());
        for leader in ctx.partitions.followed().into_keys() {
            fetchers
                .entry(leader)
                .or_insert_with(|| crate::spawn(fetcher::run(ctx.clone(), leader)));
        }
        // A fetcher that found nothing left to follow ends on its own; look again soon in
        // case the image gave it something back meanwhile.
        tokio::select! {
            _ = roles.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (_, h) in fetchers {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
}
