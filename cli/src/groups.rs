//! `keel group ...`: consumer groups seen and changed from the admin side.
//!
//! `reset-offsets` works as Kafka's `kafka-consumer-groups.sh --reset-offsets`: it computes
//! the new offset of every partition of the topic (earliest, latest, an offset kept within
//! the partition's range, or the first record at a time), shows them next to the current
//! committed offsets, and only with `--execute` commits them (the admin form of
//! `Groups.OffsetCommit`, which the coordinator refuses while the group has members).

use keel_client::{
    AdminClient, Consumer, ConsumerOptions, ErrorCode, GroupDescription, GroupListing,
    TopicPartition,
};
use serde::Serialize;

use crate::args::{GroupCommand, ResetOffsetsArgs};
use crate::render::Report;
use crate::CliError;

/// One partition of a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffsetMove {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The committed offset before (none when nothing was committed).
    pub current: Option<i64>,
    /// The offset after.
    pub new: i64,
}

/// What `group reset-offsets` did or would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffsetsReset {
    /// The group.
    pub group: String,
    /// True when the offsets were committed; false for a dry run.
    pub executed: bool,
    /// Every partition of the topic.
    pub partitions: Vec<OffsetMove>,
}

/// The outcome of `group delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDeleted {
    /// The group.
    pub group: String,
}

/// Runs a `keel group` verb.
pub async fn run(bootstrap: &[String], command: &GroupCommand) -> Result<Report, CliError> {
    let admin = AdminClient::connect(bootstrap).await?;
    match command {
        GroupCommand::List => Ok(Report::GroupList(list(&admin).await?)),
        GroupCommand::Describe { group } => Ok(Report::GroupDescription(
            admin.describe_group(group, true).await?,
        )),
        GroupCommand::ResetOffsets(args) => {
            Ok(Report::OffsetsReset(reset(bootstrap, &admin, args).await?))
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(group).await?;
            Ok(Report::GroupDeleted(GroupDeleted {
                group: group.clone(),
            }))
        }
    }
}

async fn list(admin: &AdminClient) -> Result<Vec<GroupListing>, CliError> {
    Ok(admin.list_groups().await?)
}

/// The group's description, or `None` when it does not exist (yet).
async fn describe(admin: &AdminClient, group: &str) -> Result<Option<GroupDescription>, CliError> {
    match admin.describe_group(group, false).await {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.api_code() == Some(ErrorCode::GroupIdNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn reset(
    bootstrap: &[String],
    admin: &AdminClient,
    args: &ResetOffsetsArgs,
) -> Result<OffsetsReset, CliError> {
    if let Some(d) = describe(admin, &args.group).await? {
        if !d.members.is_empty() {
            return Err(CliError::InvalidArgument(format!(
                "group {} has {} active member(s); stop them before resetting its offsets",
                args.group,
                d.members.len()
            )));
        }
    }
    let targets = target_offsets(bootstrap, args).await?;
    let current = admin
        .group_offsets(&args.group)
        .await
        .or_else(|e| match e.api_code() {
            Some(ErrorCode::GroupIdNotFound) => Ok(vec![]),
            _ => Err(e),
        })?;
    let partitions: Vec<OffsetMove> = targets
        .iter()
        .map(|(p, new)| OffsetMove {
            topic: args.topic.clone(),
            partition: *p,
            current: current
                .iter()
                .find(|(tp, _)| tp.topic == args.topic && tp.partition == *p)
                .map(|(_, o)| *o),
            new: *new,
        })
        .collect();
    if args.execute {
        let offsets: Vec<(TopicPartition, i64)> = partitions
            .iter()
            .map(|m| (TopicPartition::new(&m.topic, m.partition), m.new))
            .collect();
        admin.alter_group_offsets(&args.group, &offsets).await?;
    }
    Ok(OffsetsReset {
        group: args.group.clone(),
        executed: args.execute,
        partitions,
    })
}

/// The new offset of every partition of the topic.
async fn target_offsets(
    bootstrap: &[String],
    args: &ResetOffsetsArgs,
) -> Result<Vec<(i32, i64)>, CliError> {
    let consumer = Consumer::connect(bootstrap, ConsumerOptions::default()).await?;
    if let Some(ts) = args.to_timestamp {
        return Ok(consumer.offsets_for_timestamp(&args.topic, ts).await?);
    }
    let ranges = consumer.list_offsets(&args.topic).await?;
    Ok(ranges
        .iter()
        .map(|r| {
            let new = match (args.to_earliest, args.to_latest, args.to_offset) {
                (true, _, _) => r.earliest,
                (_, true, _) => r.latest,
                (_, _, Some(o)) => o.clamp(r.earliest, r.latest),
                _ => r.latest,
            };
            (r.partition, new)
        })
        .collect())
}
