//! What a command prints: the [`Report`] of each verb, as aligned columns (comfy-table) or as
//! one JSON document (serde_json).
//!
//! Tables have an upper-case header row and no borders, so they read like `kubectl` or `rpk`
//! output and survive `grep` and `awk`. A missing value is `-`; lists of broker ids are
//! comma-separated.

use std::collections::BTreeMap;

use comfy_table::{presets, Cell, Table};
use keel_client::{
    ClusterDescription, ConfigChange, CreatedTopic, DeletedTopic, ElectionResult, GroupDescription,
    GroupListing, PartitionOffsets, QuorumDescription, QuorumMember, TopicId, TopicMetadata,
    TopicPartition,
};
use serde::Serialize;

use crate::args::OutputFormat;
use crate::bench::BenchResult;
use crate::elastic::ElasticReport;
use crate::groups::{GroupDeleted, OffsetsReset};

/// The result of one command. Serialized as its content alone (no variant tag).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Report {
    /// `topic create`.
    TopicCreated(TopicCreated),
    /// `topic list`, sorted by name.
    TopicList(Vec<TopicSummary>),
    /// `topic describe`: the topic's metadata with its config overrides.
    TopicDescription(TopicMetadata),
    /// `topic delete`.
    TopicDeleted(DeletedTopic),
    /// `topic alter`.
    ConfigsAltered(ConfigsAltered),
    /// `topic add-partitions`.
    PartitionsAdded(PartitionsAdded),
    /// `cluster describe`.
    Cluster(ClusterDescription),
    /// `quorum describe`.
    Quorum(QuorumDescription),
    /// `offsets`.
    Offsets(TopicOffsets),
    /// `bench produce`, `bench consume`.
    Bench(BenchResult),
    /// `leader elect`: one row per partition.
    Elections(Vec<ElectionResult>),
    /// `group list`, sorted by group id.
    GroupList(Vec<GroupListing>),
    /// `group describe`.
    GroupDescription(GroupDescription),
    /// `group reset-offsets`.
    OffsetsReset(OffsetsReset),
    /// `group delete`.
    GroupDeleted(GroupDeleted),
    /// `partition reassign`, `broker`, `quorum add-voter|remove-voter`.
    Elastic(ElasticReport),
    /// Text printed as it is, whatever the output format (`completions`).
    Text(String),
    /// `produce`, `consume`: they printed as they went; nothing is left to print.
    Streamed,
}

/// The offsets of a topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicOffsets {
    /// The topic.
    pub topic: String,
    /// Earliest and latest offset of each partition, in partition order.
    pub partitions: Vec<PartitionOffsets>,
}

/// A created (or, with `--validate-only`, validated) topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicCreated {
    /// The server's answer.
    #[serde(flatten)]
    pub topic: CreatedTopic,
    /// True when the topic was only checked, not created.
    pub validate_only: bool,
}

/// One line of `topic list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Topic id.
    pub topic_id: Option<TopicId>,
    /// Partition count.
    pub partitions: usize,
    /// Replicas per partition.
    pub replication_factor: usize,
    /// True for internal topics.
    pub internal: bool,
}

impl From<&TopicMetadata> for TopicSummary {
    fn from(t: &TopicMetadata) -> Self {
        Self {
            name: t.name.clone(),
            topic_id: t.topic_id,
            partitions: t.partitions.len(),
            replication_factor: t.replication_factor(),
            internal: t.internal,
        }
    }
}

/// The config changes `topic alter` applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigsAltered {
    /// The topic.
    pub topic: String,
    /// The changes, as sent.
    pub changes: Vec<ConfigChange>,
}

/// The partition count after `topic add-partitions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionsAdded {
    /// The topic.
    pub topic: String,
    /// The new total.
    pub partitions: i32,
}

impl Report {
    /// The text to print on stdout, ending with a newline.
    pub fn render(&self, format: OutputFormat) -> String {
        if *self == Report::Streamed {
            return String::new();
        }
        if let Report::Text(text) = self {
            return text.clone();
        }
        match format {
            OutputFormat::Json => render_json(self),
            OutputFormat::Table => render_tables(self),
        }
    }
}

fn render_json(report: &Report) -> String {
    // Every type in a report serializes to JSON without failing (string keys, no
    // non-finite floats), so an error here is a bug worth a loud message.
    let mut text = serde_json::to_string_pretty(report)
        .unwrap_or_else(|e| format!(r#"{{"error":"cannot serialize the result: {e}"}}"#));
    text.push('\n');
    text
}

fn render_tables(report: &Report) -> String {
    let tables = match report {
        Report::TopicCreated(c) => vec![created_table(c)],
        Report::TopicList(topics) => vec![list_table(topics)],
        Report::TopicDescription(t) => describe_tables(t),
        Report::TopicDeleted(d) => vec![table(
            ["TOPIC", "TOPIC ID", "STATUS"],
            [[d.name.clone(), opt(d.topic_id), "deleted".to_string()]],
        )],
        Report::ConfigsAltered(a) => vec![altered_table(a)],
        Report::PartitionsAdded(p) => vec![table(
            ["TOPIC", "PARTITIONS"],
            [[p.topic.clone(), p.partitions.to_string()]],
        )],
        Report::Cluster(c) => cluster_tables(c),
        Report::Elastic(e) => e.tables(),
        Report::Quorum(q) => quorum_tables(q),
        Report::Offsets(o) => vec![offsets_table(o)],
        Report::Bench(b) => vec![bench_table(b)],
        Report::Elections(results) => vec![results_table(
            results
                .iter()
                .map(|r| (r.topic.as_str(), r.partition, r.error.as_ref())),
            "elected",
        )],
        Report::GroupList(groups) => vec![table(
            ["GROUP", "STATE", "COORDINATOR"],
            groups.iter().map(|g| {
                [
                    g.group_id.clone(),
                    g.state.clone(),
                    g.coordinator.to_string(),
                ]
            }),
        )],
        Report::GroupDescription(g) => group_tables(g),
        Report::OffsetsReset(r) => reset_tables(r),
        Report::GroupDeleted(d) => vec![table(
            ["GROUP", "STATUS"],
            [[d.group.clone(), "deleted".to_string()]],
        )],
        Report::Streamed | Report::Text(_) => vec![],
    };
    tables.join("\n")
}

/// Partitions as `topic-p` names, comma-separated.
fn partitions(tps: &[TopicPartition]) -> String {
    match tps.is_empty() {
        true => "-".to_string(),
        false => tps
            .iter()
            .map(|tp| format!("{}-{}", tp.topic, tp.partition))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The group line, its members, and its committed offsets with lag and owner.
fn group_tables(g: &GroupDescription) -> Vec<String> {
    let head = table(
        [
            "GROUP",
            "STATE",
            "EPOCH",
            "ASSIGNMENT EPOCH",
            "ASSIGNOR",
            "COORDINATOR",
            "MEMBERS",
        ],
        [[
            g.group_id.clone(),
            g.state.clone(),
            g.group_epoch.to_string(),
            g.assignment_epoch.to_string(),
            g.assignor.clone(),
            g.coordinator.to_string(),
            g.members.len().to_string(),
        ]],
    );
    let members = table(
        [
            "MEMBER",
            "INSTANCE",
            "EPOCH",
            "CLIENT",
            "HOST",
            "PARTITIONS",
        ],
        g.members.iter().map(|m| {
            [
                m.member_id.clone(),
                opt(m.instance_id.as_ref()),
                m.member_epoch.to_string(),
                m.client_id.clone(),
                m.client_host.clone(),
                partitions(&m.assignment),
            ]
        }),
    );
    let owner = |topic: &str, p: i32| {
        g.members
            .iter()
            .find(|m| {
                m.assignment
                    .iter()
                    .any(|tp| tp.topic == topic && tp.partition == p)
            })
            .map_or_else(|| "-".to_string(), |m| m.member_id.clone())
    };
    let offsets = table(
        [
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "HIGH WATERMARK",
            "LAG",
            "MEMBER",
        ],
        g.offsets.iter().map(|o| {
            [
                o.topic.clone(),
                o.partition.to_string(),
                o.committed_offset.to_string(),
                opt(o.high_watermark),
                opt(o.lag),
                owner(&o.topic, o.partition),
            ]
        }),
    );
    vec![head, members, offsets]
}

fn reset_tables(r: &OffsetsReset) -> Vec<String> {
    let status = match r.executed {
        true => "offsets committed".to_string(),
        false => "dry run: nothing changed (add --execute to apply)".to_string(),
    };
    vec![
        table(
            ["GROUP", "TOPIC", "PARTITION", "CURRENT", "NEW"],
            r.partitions.iter().map(|m| {
                [
                    r.group.clone(),
                    m.topic.clone(),
                    m.partition.to_string(),
                    opt(m.current),
                    m.new.to_string(),
                ]
            }),
        ),
        table(["STATUS"], [[status]]),
    ]
}

fn created_table(c: &TopicCreated) -> String {
    let t = &c.topic;
    let status = if c.validate_only {
        "valid (validate only: not created)"
    } else {
        "created"
    };
    table(
        [
            "TOPIC",
            "TOPIC ID",
            "PARTITIONS",
            "REPLICATION FACTOR",
            "STATUS",
        ],
        [[
            t.name.clone(),
            opt(t.topic_id),
            t.num_partitions.to_string(),
            t.replication_factor.to_string(),
            status.to_string(),
        ]],
    )
}

fn list_table(topics: &[TopicSummary]) -> String {
    table(
        [
            "TOPIC",
            "TOPIC ID",
            "PARTITIONS",
            "REPLICATION FACTOR",
            "INTERNAL",
        ],
        topics.iter().map(|t| {
            [
                t.name.clone(),
                opt(t.topic_id),
                t.partitions.to_string(),
                t.replication_factor.to_string(),
                t.internal.to_string(),
            ]
        }),
    )
}

/// The topic line, its config overrides (left out when there are none), and its partitions.
fn describe_tables(t: &TopicMetadata) -> Vec<String> {
    let mut tables = vec![table(
        [
            "TOPIC",
            "TOPIC ID",
            "PARTITIONS",
            "REPLICATION FACTOR",
            "INTERNAL",
        ],
        [[
            t.name.clone(),
            opt(t.topic_id),
            t.partitions.len().to_string(),
            t.replication_factor().to_string(),
            t.internal.to_string(),
        ]],
    )];
    if !t.configs.is_empty() {
        tables.push(configs_table(&t.configs));
    }
    // LOG START, LOG END and HIGH WATERMARK columns join these when the data plane serves
    // Consumer.ListOffsets; Cluster.Metadata does not carry them.
    tables.push(table(
        [
            "PARTITION",
            "LEADER",
            "LEADER EPOCH",
            "REPLICAS",
            "ISR",
            "OFFLINE REPLICAS",
        ],
        t.partitions.iter().map(|p| {
            [
                p.partition.to_string(),
                opt(p.leader),
                p.leader_epoch.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                ids(&p.offline_replicas),
            ]
        }),
    ));
    tables
}

fn configs_table(configs: &BTreeMap<String, String>) -> String {
    table(
        ["CONFIG", "VALUE"],
        configs.iter().map(|(k, v)| [k.clone(), v.clone()]),
    )
}

fn altered_table(a: &ConfigsAltered) -> String {
    table(
        ["TOPIC", "CONFIG", "ACTION", "VALUE"],
        a.changes.iter().map(|c| match c {
            ConfigChange::Set { name, value } => {
                [a.topic.clone(), name.clone(), "set".into(), value.clone()]
            }
            ConfigChange::Delete { name } => {
                [a.topic.clone(), name.clone(), "delete".into(), "-".into()]
            }
        }),
    )
}

fn cluster_tables(c: &ClusterDescription) -> Vec<String> {
    vec![
        table(
            ["CLUSTER ID", "CONTROLLER", "METADATA OFFSET"],
            [[
                c.cluster_id.clone(),
                opt(c.controller_id),
                c.metadata_offset.to_string(),
            ]],
        ),
        table(
            ["BROKER", "ADDRESS", "RACK", "STATE"],
            c.brokers.iter().map(|b| {
                [
                    b.id.to_string(),
                    b.address(),
                    opt(b.rack.as_ref()),
                    b.state.as_str().to_string(),
                ]
            }),
        ),
    ]
}

fn quorum_tables(q: &QuorumDescription) -> Vec<String> {
    let role = |m: &QuorumMember, voter: bool| match (voter, Some(m.node_id) == q.leader_id) {
        (true, true) => "leader",
        (true, false) => "voter",
        (false, _) => "learner",
    };
    let members = q
        .voters
        .iter()
        .map(|m| (m, true))
        .chain(q.learners.iter().map(|m| (m, false)));
    vec![
        table(
            ["LEADER", "TERM", "COMMIT INDEX"],
            [[
                opt(q.leader_id),
                q.term.to_string(),
                q.commit_index.to_string(),
            ]],
        ),
        table(
            [
                "NODE",
                "ROLE",
                "ENDPOINT",
                "LAST LOG INDEX",
                "LAG",
                "LAST CONTACT MS",
            ],
            members.map(|(m, voter)| {
                [
                    m.node_id.to_string(),
                    role(m, voter).to_string(),
                    m.endpoint.clone(),
                    opt(m.last_log_index),
                    opt(m.lag),
                    opt(m.last_contact_ms),
                ]
            }),
        ),
    ]
}

fn offsets_table(o: &TopicOffsets) -> String {
    table(
        ["TOPIC", "PARTITION", "EARLIEST", "LATEST", "RECORDS"],
        o.partitions.iter().map(|p| {
            [
                o.topic.clone(),
                p.partition.to_string(),
                p.earliest.to_string(),
                p.latest.to_string(),
                (p.latest - p.earliest).to_string(),
            ]
        }),
    )
}

fn bench_table(b: &BenchResult) -> String {
    let l = &b.latency_ms;
    table(
        [
            "BENCH",
            "TOPIC",
            "RECORDS",
            "ERRORS",
            "SECONDS",
            "RECORDS/S",
            "MB/S",
            "LATENCY OF",
            "P50 MS",
            "P95 MS",
            "P99 MS",
            "P999 MS",
            "MAX MS",
        ],
        [[
            b.kind.to_string(),
            b.topic.clone(),
            b.records.to_string(),
            b.errors.to_string(),
            format!("{:.2}", b.elapsed_s),
            format!("{:.0}", b.records_per_s),
            format!("{:.2}", b.mb_per_s),
            b.latency_of.to_string(),
            format!("{:.2}", l.p50),
            format!("{:.2}", l.p95),
            format!("{:.2}", l.p99),
            format!("{:.2}", l.p999),
            format!("{:.2}", l.max),
        ]],
    )
}

/// A borderless table with a header row; each line ends without trailing blanks and with a
/// newline.
pub(crate) fn table<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().map(|h| Cell::new(*h)));
    for row in rows {
        t.add_row(row);
    }
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut text = String::new();
    for line in t.to_string().lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// One row per partition: its topic, index, and `ok` or the error.
pub(crate) fn results_table<'a>(
    rows: impl Iterator<Item = (&'a str, i32, Option<&'a keel_client::ApiError>)>,
    ok: &str,
) -> String {
    table(
        ["TOPIC", "PARTITION", "RESULT"],
        rows.map(|(topic, partition, error)| {
            [
                topic.to_string(),
                partition.to_string(),
                error.map_or_else(|| ok.to_string(), |e| e.to_string()),
            ]
        }),
    )
}

/// The value, or `-` when absent.
fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Broker ids as `1,2,3`, or `-` when none.
pub(crate) fn ids(ids: &[i32]) -> String {
    if ids.is_empty() {
        return "-".to_string();
    }
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
#[path = "render_test.rs"]
mod tests;
