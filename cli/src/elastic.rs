//! `keel partition reassign`, `keel broker list|decommission` and `keel quorum
//! add-voter|remove-voter`: moving replicas and changing who is in the cluster.
//!
//! `--status` asks the bootstrap node which partitions are moving, then asks each moving
//! partition's leader how far its new replicas have copied (only a leader knows); `--wait`
//! redraws that as one progress bar per partition until every move has finished.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use keel_client::{AdminClient, BrokerInfo, PartitionOutcome, ReassignRequest, Reassignment};
use serde::Serialize;

use crate::args::{BrokerCommand, PartitionCommand, QuorumCommand, ReassignArgs};
use crate::reassign_plan::{self, PlannedPartition, ReassignPlan};
use crate::render::{ids, results_table, table, Report};
use crate::CliError;

/// What a verb of this module prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ElasticReport {
    /// `--execute`, `--cancel`: one row per partition.
    Outcomes(Vec<PartitionOutcome>),
    /// `--status`.
    Status(ReassignStatus),
    /// `broker list`.
    Brokers(Vec<BrokerInfo>),
    /// `broker decommission`.
    Decommission(DecommissionStarted),
    /// `quorum add-voter`, `quorum remove-voter`.
    Voters(VoterChange),
}

/// The moves in progress and, with a plan, which planned partitions are done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReassignStatus {
    /// Partitions still moving.
    pub in_progress: Vec<Reassignment>,
    /// With a plan file: planned partitions whose replicas are the plan's, in order.
    pub done: Vec<PlannedPartition>,
    /// With a plan file: planned partitions that are neither moving nor done.
    pub not_started: Vec<PlannedPartition>,
}

/// `broker decommission`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecommissionStarted {
    /// The broker.
    pub broker_id: i32,
    /// True when this stopped a decommission.
    pub cancelled: bool,
    /// True when `--wait` saw the broker leave the cluster.
    pub gone: bool,
}

/// The voters after `quorum add-voter` or `remove-voter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VoterChange {
    /// The voters now.
    pub voters: Vec<i32>,
}

impl ElasticReport {
    /// The tables of the report.
    pub fn tables(&self) -> Vec<String> {
        match self {
            ElasticReport::Outcomes(rows) => vec![results_table(
                rows.iter()
                    .map(|r| (r.topic.as_str(), r.partition, r.error.as_ref())),
                "ok",
            )],
            ElasticReport::Status(s) => status_tables(s),
            ElasticReport::Brokers(brokers) => vec![table(
                [
                    "ID",
                    "ADDRESS",
                    "RACK",
                    "STATE",
                    "REPLICAS",
                    "DECOMMISSIONING",
                ],
                brokers.iter().map(|b| {
                    [
                        b.id.to_string(),
                        b.address(),
                        b.rack.clone().unwrap_or_else(|| "-".into()),
                        b.state.as_str().to_string(),
                        b.replica_count.to_string(),
                        if b.decommissioning { "yes" } else { "-" }.to_string(),
                    ]
                }),
            )],
            ElasticReport::Decommission(d) => vec![table(
                ["BROKER", "DECOMMISSION"],
                [[
                    d.broker_id.to_string(),
                    match (d.cancelled, d.gone) {
                        (true, _) => "cancelled",
                        (false, true) => "done: the broker is gone",
                        (false, false) => "started (keel broker list shows progress)",
                    }
                    .to_string(),
                ]],
            )],
            ElasticReport::Voters(v) => vec![table(["VOTERS"], [[ids(&v.voters)]])],
        }
    }
}

fn status_tables(s: &ReassignStatus) -> Vec<String> {
    let mut out = vec![table(
        [
            "TOPIC",
            "PARTITION",
            "TARGET",
            "ADDING",
            "REMOVING",
            "ISR",
            "COPIED",
        ],
        s.in_progress.iter().map(|r| {
            [
                r.topic.clone(),
                r.partition.to_string(),
                ids(&r.target()),
                ids(&r.adding),
                ids(&r.removing),
                ids(&r.isr),
                format!("{:.0}%", r.fraction_done() * 100.0),
            ]
        }),
    )];
    if !s.done.is_empty() || !s.not_started.is_empty() {
        out.push(table(
            ["PLANNED", "DONE", "MOVING", "NOT STARTED"],
            [[
                (s.done.len() + s.in_progress.len() + s.not_started.len()).to_string(),
                s.done.len().to_string(),
                s.in_progress.len().to_string(),
                s.not_started.len().to_string(),
            ]],
        ));
    }
    out
}

/// Runs `keel partition ...`.
pub async fn partition(
    bootstrap: &[String],
    command: &PartitionCommand,
) -> Result<Report, CliError> {
    let PartitionCommand::Reassign(args) = command;
    let admin = AdminClient::connect(bootstrap).await?;
    if args.generate {
        return generate(&admin, args).await;
    }
    if let Some(path) = &args.execute {
        let plan = read_plan(path)?;
        let moves: Vec<ReassignRequest> = plan
            .partitions
            .iter()
            .map(|p| ReassignRequest {
                topic: p.topic.clone(),
                partition: p.partition,
                target: Some(p.replicas.clone()),
            })
            .collect();
        let outcomes = admin.alter_partition_reassignments(&moves).await?;
        if args.wait {
            follow(&admin).await?;
        }
        return Ok(Report::Elastic(ElasticReport::Outcomes(outcomes)));
    }
    if let Some(path) = &args.cancel {
        let plan = optional_plan(path)?;
        let moving = progress(&admin).await?;
        let moves: Vec<ReassignRequest> = moving
            .iter()
            .filter(|r| {
                plan.as_ref()
                    .is_none_or(|p| planned(p, &r.topic, r.partition).is_some())
            })
            .map(|r| ReassignRequest {
                topic: r.topic.clone(),
                partition: r.partition,
                target: None,
            })
            .collect();
        let outcomes = match moves.is_empty() {
            true => Vec::new(),
            false => admin.alter_partition_reassignments(&moves).await?,
        };
        return Ok(Report::Elastic(ElasticReport::Outcomes(outcomes)));
    }
    let plan = args
        .status
        .as_deref()
        .map(optional_plan)
        .transpose()?
        .flatten();
    if args.wait {
        follow(&admin).await?;
    }
    Ok(Report::Elastic(ElasticReport::Status(
        status(&admin, plan.as_ref()).await?,
    )))
}

/// `--generate`: the plan as JSON on stdout, a summary on stderr.
async fn generate(admin: &AdminClient, args: &ReassignArgs) -> Result<Report, CliError> {
    let described = admin.describe_cluster().await?;
    let brokers: Vec<reassign_plan::Candidate> = args
        .brokers
        .iter()
        .map(|id| {
            let b = described.brokers.iter().find(|b| b.id == *id);
            b.map(|b| (*id, b.rack.clone()))
                .ok_or_else(|| CliError::InvalidArgument(format!("broker {id} is not registered")))
        })
        .collect::<Result<_, _>>()?;
    let metadata = admin.metadata(&args.topics, false).await?;
    let mut current = Vec::new();
    for t in &metadata.topics {
        if let Some(e) = &t.error {
            return Err(CliError::InvalidArgument(format!("topic {}: {e}", t.name)));
        }
        if args.topics.is_empty() && t.internal {
            continue;
        }
        current.extend(t.partitions.iter().map(|p| PlannedPartition {
            topic: t.name.clone(),
            partition: p.partition,
            replicas: p.replicas.clone(),
        }));
    }
    let proposed = reassign_plan::propose(&current, &brokers);
    let moved = reassign_plan::moved_replicas(&current, &proposed);
    let changed: Vec<PlannedPartition> = proposed
        .into_iter()
        .zip(&current)
        .filter(|(new, old)| new.replicas != old.replicas)
        .map(|(new, _)| new)
        .collect();
    eprintln!(
        "{} of {} partitions change, {moved} replicas to copy; save the plan and run \
         keel partition reassign --execute PLAN.json",
        changed.len(),
        current.len()
    );
    let plan = ReassignPlan {
        version: 1,
        partitions: changed,
    };
    let mut json = serde_json::to_string_pretty(&plan).expect("a plan serializes");
    json.push('\n');
    Ok(Report::Text(json))
}

fn read_plan(path: &Path) -> Result<ReassignPlan, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::InvalidArgument(format!("{}: {e}", path.display())))?;
    let plan: ReassignPlan = serde_json::from_str(&text).map_err(|e| {
        CliError::InvalidArgument(format!("{}: not a reassignment plan: {e}", path.display()))
    })?;
    if plan.version != 1 {
        return Err(CliError::InvalidArgument(format!(
            "{}: plan version {} (expected 1)",
            path.display(),
            plan.version
        )));
    }
    Ok(plan)
}

/// The plan at `path`, or none for an empty path (the flag given without a file).
fn optional_plan(path: &str) -> Result<Option<ReassignPlan>, CliError> {
    match path.is_empty() {
        true => Ok(None),
        false => read_plan(Path::new(path)).map(Some),
    }
}

fn planned<'a>(
    plan: &'a ReassignPlan,
    topic: &str,
    partition: i32,
) -> Option<&'a PlannedPartition> {
    plan.partitions
        .iter()
        .find(|p| p.topic == topic && p.partition == partition)
}

/// The moves in progress, with copy progress from each partition's leader where it answers.
async fn progress(admin: &AdminClient) -> Result<Vec<Reassignment>, CliError> {
    let mut moving = admin.list_partition_reassignments(&[]).await?;
    if moving.is_empty() {
        return Ok(moving);
    }
    let metadata = admin.metadata(&[], false).await?;
    let address: BTreeMap<i32, String> = metadata
        .brokers
        .iter()
        .map(|b| (b.id, b.address()))
        .collect();
    let mut by_leader: BTreeMap<String, Vec<(String, Vec<i32>)>> = BTreeMap::new();
    for r in &moving {
        let leader = metadata
            .topics
            .iter()
            .find(|t| t.name == r.topic)
            .and_then(|t| t.partitions.iter().find(|p| p.partition == r.partition))
            .and_then(|p| p.leader)
            .and_then(|l| address.get(&l));
        if let Some(addr) = leader {
            by_leader
                .entry(addr.clone())
                .or_default()
                .push((r.topic.clone(), vec![r.partition]));
        }
    }
    for (addr, partitions) in by_leader {
        // A leader that cannot be reached only costs the detail of its partitions.
        let Ok(leader) = AdminClient::connect(std::slice::from_ref(&addr)).await else {
            continue;
        };
        let Ok(detail) = leader.list_partition_reassignments(&partitions).await else {
            continue;
        };
        for d in detail.into_iter().filter(|d| d.leader_log_end.is_some()) {
            if let Some(r) = moving
                .iter_mut()
                .find(|r| r.topic == d.topic && r.partition == d.partition)
            {
                *r = d;
            }
        }
    }
    Ok(moving)
}

async fn status(
    admin: &AdminClient,
    plan: Option<&ReassignPlan>,
) -> Result<ReassignStatus, CliError> {
    let in_progress = progress(admin).await?;
    let (mut done, mut not_started) = (Vec::new(), Vec::new());
    if let Some(plan) = plan {
        let metadata = admin.metadata(&[], false).await?;
        for p in &plan.partitions {
            if in_progress
                .iter()
                .any(|r| r.topic == p.topic && r.partition == p.partition)
            {
                continue;
            }
            let replicas = metadata
                .topics
                .iter()
                .find(|t| t.name == p.topic)
                .and_then(|t| t.partitions.iter().find(|q| q.partition == p.partition))
                .map(|q| q.replicas.clone());
            match replicas == Some(p.replicas.clone()) {
                true => done.push(p.clone()),
                false => not_started.push(p.clone()),
            }
        }
    }
    Ok(ReassignStatus {
        in_progress,
        done,
        not_started,
    })
}

/// Redraws one bar per moving partition until none is left.
async fn follow(admin: &AdminClient) -> Result<(), CliError> {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>24} [{bar:30}] {percent:>3}% {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let mut shown: BTreeMap<(String, i32), ProgressBar> = BTreeMap::new();
    loop {
        let moving = progress(admin).await?;
        for r in &moving {
            let bar = shown
                .entry((r.topic.clone(), r.partition))
                .or_insert_with(|| {
                    let bar = bars.add(ProgressBar::new(1000));
                    bar.set_style(style.clone());
                    bar.set_prefix(format!("{}-{}", r.topic, r.partition));
                    bar
                });
            bar.set_position((r.fraction_done() * 1000.0) as u64);
            bar.set_message(format!("adding {}", ids(&r.adding)));
        }
        for (key, bar) in &shown {
            if !moving
                .iter()
                .any(|r| (r.topic.clone(), r.partition) == *key)
            {
                bar.set_position(1000);
                bar.finish_with_message("done");
            }
        }
        if moving.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs `keel broker ...`.
pub async fn broker(bootstrap: &[String], command: &BrokerCommand) -> Result<Report, CliError> {
    let admin = AdminClient::connect(bootstrap).await?;
    match command {
        BrokerCommand::List => {
            let mut brokers = admin.describe_cluster().await?.brokers;
            brokers.sort_by_key(|b| b.id);
            Ok(Report::Elastic(ElasticReport::Brokers(brokers)))
        }
        BrokerCommand::Decommission { id, cancel, wait } => {
            admin.decommission_broker(*id, *cancel).await?;
            let gone = *wait && !*cancel && wait_until_gone(&admin, *id).await?;
            Ok(Report::Elastic(ElasticReport::Decommission(
                DecommissionStarted {
                    broker_id: *id,
                    cancelled: *cancel,
                    gone,
                },
            )))
        }
    }
}

/// Shows the replicas left on `id` as a progress bar until it is unregistered.
async fn wait_until_gone(admin: &AdminClient, id: i32) -> Result<bool, CliError> {
    let mut bar: Option<ProgressBar> = None;
    loop {
        let brokers = admin.describe_cluster().await?.brokers;
        let Some(b) = brokers.iter().find(|b| b.id == id) else {
            if let Some(bar) = &bar {
                bar.finish_with_message("gone");
            }
            return Ok(true);
        };
        let left = admin
            .metadata(&[], false)
            .await?
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.replicas.contains(&id))
            .count() as u64;
        let bar = bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(left.max(1));
            bar.set_style(
                ProgressStyle::with_template(
                    "broker {prefix}: [{bar:30}] {pos}/{len} replicas moved",
                )
                .expect("a valid template"),
            );
            bar.set_prefix(id.to_string());
            bar
        });
        bar.set_position(bar.length().unwrap_or(0).saturating_sub(left));
        if !b.decommissioning {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs `keel quorum add-voter|remove-voter`.
pub async fn quorum(bootstrap: &[String], command: &QuorumCommand) -> Result<Report, CliError> {
    let admin = AdminClient::connect(bootstrap).await?;
    let voters = match command {
        QuorumCommand::AddVoter { voter: (id, addr) } => admin.add_voter(*id, addr).await?,
        QuorumCommand::RemoveVoter { id } => admin.remove_voter(*id).await?,
        QuorumCommand::Describe => {
            return Err(CliError::InvalidArgument(
                "quorum describe is an admin verb".into(),
            ))
        }
    };
    Ok(Report::Elastic(ElasticReport::Voters(VoterChange {
        voters,
    })))
}
