//! The node's Prometheus metrics, served as text on `/metrics` of the HTTP listener.
//!
//! Counters of events (ISR shrinks and expands, produce and fetch requests and bytes, request
//! latency histograms) live in a registry for the whole run. Gauges of state (per partition:
//! high watermark, log end, unflushed bytes, leadership, ISR size; per node: under-replicated
//! and offline partitions, the active controller, Raft term, commit and applied indexes,
//! resident memory; per group: committed offsets and lag) are computed at each scrape from the
//! partition manager, the metadata image and the group coordinator, so they never go stale
//! and cost nothing between scrapes. So is the leader-election counter, which the partition
//! manager keeps as a plain number.
//!
//! # Layout
//! - this file: [`Metrics`] (the run's registry), [`Sources`] (what a scrape reads) and the
//!   scrape-time gauges;
//! - [`requests`]: produce and fetch metrics per topic, with bounded cardinality.

pub mod requests;

use std::sync::Arc;

use keel_metadata::store::CommitIndex;
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::groups::coordinator::{Coordinator, GroupLag};
use crate::partitions::PartitionManager;
use crate::services::Shared;
pub use requests::{Kind, Requests};

/// Counters the node increments as things happen.
pub struct Metrics {
    registry: Registry,
    /// ISR changes this node (as a leader) got committed that removed members.
    pub isr_shrinks: IntCounter,
    /// ISR changes this node got committed that added members.
    pub isr_expands: IntCounter,
    /// Produce and fetch requests, bytes and latency per topic.
    pub requests: Requests,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        Metrics {
            isr_shrinks: counter(
                "keel_isr_shrinks_total",
                "ISR changes that removed replicas",
            ),
            isr_expands: counter("keel_isr_expands_total", "ISR changes that added replicas"),
            requests: Requests::new(&registry),
            registry,
        }
    }
}

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub shared: Arc<Shared>,
    pub partitions: Option<Arc<PartitionManager>>,
    /// The broker role's group coordinator (group lag).
    pub coordinator: Option<Arc<Coordinator>>,
    /// The controller role's committed Raft index.
    pub commit_index: Option<CommitIndex>,
}

impl Sources {
    /// The Prometheus text of every metric now.
    pub async fn render(&self) -> String {
        let lags = match &self.coordinator {
            Some(c) => c.lag().await,
            None => Vec::new(),
        };
        self.metrics.requests.prune(&self.shared.view.current());
        let now = Registry::new();
        self.partition_gauges(&now);
        self.node_gauges(&now);
        self.raft_gauges(&now);
        group_gauges(&now, &lags);
        let mut families = self.metrics.registry.gather();
        families.extend(now.gather());
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "metrics not encoded");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn partition_gauges(&self, r: &Registry) {
        let Some(partitions) = &self.partitions else {
            return;
        };
        let labels = ["topic", "partition"];
        let vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &labels).expect("valid gauge");
            r.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let hw = vec(
            "keel_partition_high_watermark",
            "Offset below which consumers read",
        );
        let leo = vec(
            "keel_partition_log_end_offset",
            "Offset the next record gets",
        );
        let unflushed = vec(
            "keel_partition_unflushed_bytes",
            "Bytes appended and not yet fsynced",
        );
        let leader = vec(
            "keel_partition_leader",
            "1 when this broker leads the partition",
        );
        let isr = vec(
            "keel_partition_isr_size",
            "In-sync replicas, as the image says",
        );
        let under = gauge(
            r,
            "keel_under_replicated_partitions",
            "Led partitions whose ISR is smaller than their replica set",
        );
        let image = self.shared.view.current();
        for p in partitions.all() {
            let topic = image
                .topics
                .get(&p.topic_id)
                .map_or_else(|| p.topic_id.to_string(), |t| t.name.clone());
            let index = p.index.to_string();
            let l = [topic.as_str(), index.as_str()];
            let role = p.role();
            if let Ok(o) = p.offsets() {
                hw.with_label_values(&l).set(o.high_watermark);
                leo.with_label_values(&l).set(o.log_end);
            }
            unflushed
                .with_label_values(&l)
                .set(p.unflushed_bytes() as i64);
            leader.with_label_values(&l).set(i64::from(role.leader));
            isr.with_label_values(&l).set(role.isr.len() as i64);
            if role.leader && role.isr.len() < role.replicas.len() {
                under.inc();
            }
        }
    }

    fn node_gauges(&self, r: &Registry) {
        let image = self.shared.view.current();
        let offline = gauge(
            r,
            "keel_offline_partitions",
            "Partitions without a leader, cluster-wide",
        );
        offline.set(
            image
                .partitions()
                .filter(|(_, _, p)| p.leader.is_none())
                .count() as i64,
        );
        gauge(
            r,
            "keel_metadata_offset",
            "Metadata log offset this node has applied",
        )
        .set(image.offset as i64);
        gauge(
            r,
            "keel_active_controller",
            "1 when this node is the active controller, else 0",
        )
        .set(i64::from(
            self.shared
                .controller
                .as_ref()
                .is_some_and(|c| c.is_active()),
        ));
        if let Some(p) = &self.partitions {
            let elections = IntCounter::new(
                "keel_leader_elections_total",
                "Times a partition hosted here got a new leader epoch with a leader, as this broker saw it",
            )
            .expect("valid counter");
            elections.inc_by(p.leader_changes());
            r.register(Box::new(elections)).expect("registered once");
        }
        if let Some(rss) = resident_bytes() {
            gauge(
                r,
                "keel_process_resident_memory_bytes",
                "Resident memory of keeld",
            )
            .set(rss);
        }
    }

    fn raft_gauges(&self, r: &Registry) {
        if let Some(c) = &self.shared.controller {
            let m = c.raft().metrics().borrow().clone();
            gauge(r, "keel_raft_term", "Current Raft term").set(m.current_term as i64);
            let index = |id: Option<openraft::LogId<u64>>| id.map_or(0, |l| l.index as i64);
            let last = m.last_log_index.unwrap_or(0) as i64;
            let applied = index(m.last_applied);
            gauge(r, "keel_raft_last_log_index", "Last index in the Raft log").set(last);
            gauge(
                r,
                "keel_raft_applied_index",
                "Last index applied to the image",
            )
            .set(applied);
            gauge(r, "keel_raft_apply_lag", "Log entries not yet applied").set(last - applied);
        }
        if let Some(committed) = self.commit_index.as_ref().and_then(CommitIndex::get) {
            gauge(
                r,
                "keel_raft_commit_index",
                "Last Raft log index this node knows is committed",
            )
            .set(committed as i64);
        }
    }
}

/// Committed offsets and lag of the groups this broker coordinates.
fn group_gauges(r: &Registry, lags: &[GroupLag]) {
    let labels = ["group", "topic", "partition"];
    let vec = |name: &str, help: &str| {
        let g = IntGaugeVec::new(Opts::new(name, help), &labels).expect("valid gauge");
        r.register(Box::new(g.clone())).expect("registered once");
        g
    };
    let committed = vec(
        "keel_consumer_group_committed_offset",
        "Committed offset of a group in a partition (groups coordinated here)",
    );
    let lag = vec(
        "keel_consumer_group_lag",
        "High watermark minus the committed offset (groups coordinated here)",
    );
    for l in lags {
        let index = l.partition.to_string();
        let labels = [l.group.as_str(), l.topic.as_str(), index.as_str()];
        committed.with_label_values(&labels).set(l.committed);
        if let Some(hw) = l.high_watermark {
            lag.with_label_values(&labels)
                .set((hw - l.committed).max(0));
        }
    }
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid gauge");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

/// Resident set size from `/proc/self/statm` (Linux), in bytes.
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
