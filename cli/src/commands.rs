//! What each verb does: [`plan`] turns the parsed command into a [`Plan`] (pure: checks what
//! clap cannot and builds the requests, before any connection), [`execute`] carries a plan out
//! with an [`AdminClient`] and returns the [`Report`] to print.

use std::collections::BTreeMap;

use keel_client::{AdminClient, ConfigChange, Election, NewTopic};

use crate::args::{ClusterCommand, Command, LeaderCommand, QuorumCommand, TopicCommand};
use crate::render::{ConfigsAltered, PartitionsAdded, Report, TopicCreated, TopicSummary};
use crate::CliError;

/// A checked command, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Create one topic.
    CreateTopic {
        /// The topic.
        topic: NewTopic,
        /// Check only.
        validate_only: bool,
    },
    /// List every topic.
    ListTopics,
    /// Describe one topic.
    DescribeTopic(String),
    /// Delete one topic.
    DeleteTopic(String),
    /// Change a topic's config overrides.
    AlterTopic {
        /// The topic.
        topic: String,
        /// Sets first, then deletes, each key once.
        changes: Vec<ConfigChange>,
    },
    /// Raise a topic's partition count to `total`.
    AddPartitions {
        /// The topic.
        topic: String,
        /// The new total.
        total: i32,
    },
    /// Describe the cluster.
    DescribeCluster,
    /// Describe the metadata quorum.
    DescribeQuorum,
    /// Run leader elections on topics' partitions (empty: all, preferred only).
    ElectLeaders {
        /// Preferred or unclean.
        election: Election,
        /// Topics with their partitions (empty list: every partition).
        topics: Vec<(String, Vec<i32>)>,
    },
}

/// Checks `command` and builds its requests. Fails with `INVALID_ARGUMENT` when a config key
/// is named twice.
pub fn plan(command: &Command) -> Result<Plan, CliError> {
    Ok(match command {
        Command::Topic(TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            validate_only,
        }) => Plan::CreateTopic {
            topic: NewTopic {
                name: name.clone(),
                num_partitions: *partitions,
                replication_factor: *replication_factor,
                configs: config_map(configs)?,
            },
            validate_only: *validate_only,
        },
        Command::Topic(TopicCommand::List) => Plan::ListTopics,
        Command::Topic(TopicCommand::Describe { name }) => Plan::DescribeTopic(name.clone()),
        Command::Topic(TopicCommand::Delete { name }) => Plan::DeleteTopic(name.clone()),
        Command::Topic(TopicCommand::Alter {
            name,
            configs,
            delete_configs,
        }) => Plan::AlterTopic {
            topic: name.clone(),
            changes: config_changes(configs, delete_configs)?,
        },
        Command::Topic(TopicCommand::AddPartitions { name, partitions }) => Plan::AddPartitions {
            topic: name.clone(),
            total: *partitions,
        },
        Command::Cluster(ClusterCommand::Describe) => Plan::DescribeCluster,
        Command::Quorum(QuorumCommand::Describe) => Plan::DescribeQuorum,
        Command::Leader(LeaderCommand::Elect {
            unclean,
            topic,
            partition,
            ..
        }) => Plan::ElectLeaders {
            election: if *unclean {
                Election::Unclean
            } else {
                Election::Preferred
            },
            topics: topic
                .iter()
                .map(|t| (t.clone(), partition.clone()))
                .collect(),
        },
        // `run` serves the data verbs itself; they have no admin plan.
        Command::Produce(_)
        | Command::Consume(_)
        | Command::Offsets { .. }
        | Command::Group(_)
        | Command::Partition(_)
        | Command::Broker(_)
        | Command::Quorum(_)
        | Command::Bench(_)
        | Command::Completions(_) => {
            return Err(CliError::InvalidArgument(
                "not an admin verb: run it with keel_cli::run".to_string(),
            ))
        }
    })
}

/// The `--config` pairs as a map; a key given twice is refused.
fn config_map(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>, CliError> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.insert(key.clone(), value.clone()).is_some() {
            return Err(duplicate(key));
        }
    }
    Ok(map)
}

/// The changes of `topic alter`: sets, then deletes; each key at most once in all.
fn config_changes(
    sets: &[(String, String)],
    deletes: &[String],
) -> Result<Vec<ConfigChange>, CliError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut changes = Vec::with_capacity(sets.len() + deletes.len());
    for (name, value) in sets {
        if !seen.insert(name.as_str()) {
            return Err(duplicate(name));
        }
        changes.push(ConfigChange::Set {
            name: name.clone(),
            value: value.clone(),
        });
    }
    for name in deletes {
        if !seen.insert(name.as_str()) {
            return Err(duplicate(name));
        }
        changes.push(ConfigChange::Delete { name: name.clone() });
    }
    Ok(changes)
}

fn duplicate(key: &str) -> CliError {
    CliError::InvalidArgument(format!("config key {key} is given more than once"))
}

/// Carries out `plan` and returns what to print. A topic the server refused becomes
/// [`CliError::Topic`].
pub async fn execute(admin: &AdminClient, plan: Plan) -> Result<Report, CliError> {
    match plan {
        Plan::CreateTopic {
            topic,
            validate_only,
        } => {
            let name = topic.name.clone();
            let results = admin.create_topics(&[topic], validate_only).await?;
            let created = for_topic("Admin.CreateTopics", results, &name, |t| &t.name)?;
            if let Some(error) = created.error {
                return Err(CliError::Topic { topic: name, error });
            }
            Ok(Report::TopicCreated(TopicCreated {
                topic: created,
                validate_only,
            }))
        }
        Plan::ListTopics => {
            let metadata = admin.metadata(&[], false).await?;
            let mut topics: Vec<TopicSummary> =
                metadata.topics.iter().map(TopicSummary::from).collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Report::TopicList(topics))
        }
        Plan::DescribeTopic(name) => {
            let metadata = admin.metadata(std::slice::from_ref(&name), true).await?;
            let topic = for_topic("Cluster.Metadata", metadata.topics, &name, |t| &t.name)?;
            if let Some(error) = topic.error {
                return Err(CliError::Topic { topic: name, error });
            }
            Ok(Report::TopicDescription(topic))
        }
        Plan::DeleteTopic(name) => {
            let results = admin.delete_topics(std::slice::from_ref(&name)).await?;
            let deleted = for_topic("Admin.DeleteTopics", results, &name, |t| &t.name)?;
            if let Some(error) = deleted.error {
                return Err(CliError::Topic { topic: name, error });
            }
            Ok(Report::TopicDeleted(deleted))
        }
        Plan::AlterTopic { topic, changes } => {
            admin
                .alter_configs(&topic, &changes)
                .await
                .map_err(|e| topic_error(&topic, e))?;
            Ok(Report::ConfigsAltered(ConfigsAltered { topic, changes }))
        }
        Plan::AddPartitions { topic, total } => {
            admin
                .create_partitions(&topic, total)
                .await
                .map_err(|e| topic_error(&topic, e))?;
            Ok(Report::PartitionsAdded(PartitionsAdded {
                topic,
                partitions: total,
            }))
        }
        Plan::DescribeCluster => Ok(Report::Cluster(admin.describe_cluster().await?)),
        Plan::DescribeQuorum => Ok(Report::Quorum(admin.describe_quorum().await?)),
        Plan::ElectLeaders { election, topics } => {
            let results = admin.elect_leaders(election, &topics).await?;
            Ok(Report::Elections(results))
        }
    }
}

/// The result for topic `name` among `results`; a missing one is a server bug.
fn for_topic<T>(
    rpc: &'static str,
    results: Vec<T>,
    name: &str,
    name_of: impl Fn(&T) -> &String,
) -> Result<T, CliError> {
    results
        .into_iter()
        .find(|t| name_of(t) == name)
        .ok_or_else(|| {
            CliError::Client(keel_client::Error::InvalidResponse {
                rpc,
                reason: format!("no result for topic {name}"),
            })
        })
}

/// A single-topic call's API error names the topic; other errors pass unchanged.
fn topic_error(topic: &str, err: keel_client::Error) -> CliError {
    match err {
        keel_client::Error::Api(error) => CliError::Topic {
            topic: topic.to_string(),
            error,
        },
        other => CliError::Client(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Args;
    use clap::Parser;
    use keel_client::{ApiError, ErrorCode};

    fn plan_of(argv: &[&str]) -> Result<Plan, CliError> {
        let args = Args::try_parse_from(std::iter::once("keel").chain(argv.iter().copied()))
            .expect("parses");
        plan(&args.command)
    }

    #[test]
    fn create_builds_the_new_topic() {
        let p = plan_of(&[
            "topic",
            "create",
            "orders",
            "-p",
            "3",
            "-c",
            "retention.ms=5",
        ])
        .unwrap();
        assert_eq!(
            p,
            Plan::CreateTopic {
                topic: NewTopic::new("orders")
                    .partitions(3)
                    .config("retention.ms", "5"),
                validate_only: false,
            }
        );
    }

    #[test]
    fn a_config_key_given_twice_is_refused_before_sending() {
        let err = plan_of(&["topic", "create", "t", "-c", "a=1", "-c", "a=2"]).unwrap_err();
        assert_eq!(
            err.error_line(),
            "error: INVALID_ARGUMENT: config key a is given more than once"
        );
        let err =
            plan_of(&["topic", "alter", "t", "-c", "a=1", "--delete-config", "a"]).unwrap_err();
        assert!(matches!(err, CliError::InvalidArgument(_)), "{err:?}");
        let err = plan_of(&[
            "topic",
            "alter",
            "t",
            "--delete-config",
            "a",
            "--delete-config",
            "a",
        ])
        .unwrap_err();
        assert!(matches!(err, CliError::InvalidArgument(_)), "{err:?}");
    }

    #[test]
    fn alter_sets_then_deletes() {
        let p = plan_of(&["topic", "alter", "t", "--delete-config", "b", "-c", "a=1"]).unwrap();
        assert_eq!(
            p,
            Plan::AlterTopic {
                topic: "t".into(),
                changes: vec![
                    ConfigChange::Set {
                        name: "a".into(),
                        value: "1".into()
                    },
                    ConfigChange::Delete { name: "b".into() },
                ],
            }
        );
    }

    #[test]
    fn other_verbs() {
        assert_eq!(plan_of(&["topic", "list"]).unwrap(), Plan::ListTopics);
        assert_eq!(
            plan_of(&["topic", "add-partitions", "t", "-p", "8"]).unwrap(),
            Plan::AddPartitions {
                topic: "t".into(),
                total: 8
            }
        );
        assert_eq!(
            plan_of(&["quorum", "describe"]).unwrap(),
            Plan::DescribeQuorum
        );
    }

    #[test]
    fn api_errors_of_single_topic_calls_name_the_topic() {
        let err = topic_error(
            "t",
            keel_client::Error::Api(ApiError::new(ErrorCode::InvalidPartitions, "3 < 6")),
        );
        assert_eq!(
            err.error_line(),
            "error: INVALID_PARTITIONS: topic t: 3 < 6"
        );
        let err = topic_error(
            "t",
            keel_client::Error::InvalidArgument {
                argument: "x".into(),
                reason: "y",
            },
        );
        assert!(matches!(err, CliError::Client(_)));
    }

    #[test]
    fn a_missing_topic_result_is_an_invalid_response() {
        let err = for_topic("Admin.DeleteTopics", Vec::<String>::new(), "t", |s| s).unwrap_err();
        assert_eq!(
            err.error_line(),
            "error: INVALID_RESPONSE: Admin.DeleteTopics: no result for topic t"
        );
    }
}
