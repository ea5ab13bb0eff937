//! The periodic upkeep of every hosted partition: the fsync of `flush.mode=interval` topics
//! once `flush.ms` has passed, retention (whole segments past `retention.ms` or
//! `retention.bytes`, only below the high watermark, leaders and followers alike), and the
//! producer state: idle producers expire (`producer_id_expiration_ms`) and a snapshot is
//! saved, so a start after a crash reads only the batch headers written since.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::PartitionManager;

/// How often the pass looks for due fsyncs.
const TICK: Duration = Duration::from_millis(100);
/// Retention runs every this many ticks (Kafka checks every `log.retention.check.interval.ms`,
/// 5 minutes by default; segments are deleted whole, so a tighter check costs little).
const RETENTION_EVERY: u32 = 100;

/// Runs until `stop` turns true.
pub async fn run(
    partitions: Arc<PartitionManager>,
    producer_id_expiration_ms: i64,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        ticks = ticks.wrapping_add(1);
        let all = partitions.all();
        let due: Vec<_> = all
            .iter()
            .filter_map(|p| Some((p.clone(), p.interval_flush_due()?)))
            .collect();
        let flushes = due.iter().map(|(p, end)| p.flush_to(*end));
        for (result, (p, _)) in futures_util::future::join_all(flushes)
            .await
            .iter()
            .zip(&due)
        {
            if let Err(e) = result {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e,
                    "interval fsync failed");
            }
        }
        if ticks % RETENTION_EVERY == 0 {
            let _ = crate::spawn_blocking(move || {
                for p in &all {
                    p.apply_retention();
                    p.producer_upkeep(producer_id_expiration_ms);
                }
            })
            .await;
        }
    }
}
