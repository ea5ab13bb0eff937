//! The command line: global flags, verbs and their flags (clap derive), and the parsers of
//! flag values clap cannot check by type (`KEY=VALUE`, config keys).

use clap::{value_parser, ArgAction, Parser, Subcommand, ValueEnum};
use keel_client::{Acks, Compression};

/// `keel`: Keel's admin and console tool.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(name = "keel", version, about = "Keel's admin and console tool")]
pub struct Args {
    /// Nodes to bootstrap from, host:port[,host:port]; tried in order.
    #[arg(
        long,
        env = "KEEL_BOOTSTRAP",
        default_value = "127.0.0.1:9292",
        value_delimiter = ',',
        value_name = "HOST:PORT",
        global = true
    )]
    pub bootstrap: Vec<String>,

    /// How to print results: aligned columns, or one JSON document for scripts.
    #[arg(
        long,
        short = 'o',
        value_enum,
        default_value_t = OutputFormat::Table,
        global = true
    )]
    pub output: OutputFormat,

    /// Log what the tool does (connections, retries) on stderr; -vv for more.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns with a header row.
    Table,
    /// One JSON document.
    Json,
}

/// The verbs.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create, list, describe, delete and change topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Describe the cluster's brokers and active controller.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Describe the metadata quorum (Raft).
    #[command(subcommand)]
    Quorum(QuorumCommand),
    /// Write records to a topic: one per line of standard input.
    Produce(ProduceArgs),
    /// Print records of a topic, one per line.
    Consume(ConsumeArgs),
    /// Show the earliest and latest offset of each partition of a topic.
    Offsets {
        /// Topic name.
        topic: String,
    },
    /// Measure produce or consume throughput and latency.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run partition leader elections.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Consumer groups: list, describe (members, offsets, lag), reset offsets, delete.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Move partition replicas between brokers (reassignment).
    #[command(subcommand)]
    Partition(PartitionCommand),
    /// List brokers with their load; decommission one.
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// Print a shell completion script (`keel completions bash > /etc/bash_completion.d/keel`).
    Completions(CompletionsArgs),
}

/// `keel leader ...`
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum LeaderCommand {
    /// Elect partition leaders: the preferred replica, or (explicitly) an unclean leader.
    Elect {
        /// Make each partition's preferred replica its leader when it is in the ISR.
        #[arg(long, conflicts_with = "unclean", required_unless_present = "unclean")]
        preferred: bool,
        /// Give a leaderless partition a live replica from outside the ISR. Acknowledged
        /// records that only the lost ISR held are LOST. Needs --topic.
        #[arg(long, requires = "topic")]
        unclean: bool,
        /// Only this topic (every topic for --preferred when absent).
        #[arg(long)]
        topic: Option<String>,
        /// Only these partitions of the topic (comma-separated).
        #[arg(long, requires = "topic", value_delimiter = ',', value_parser = value_parser!(i32).range(0..))]
        partition: Vec<i32>,
    },
}

/// `keel group ...`
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum GroupCommand {
    /// List every consumer group with its state and coordinator.
    List,
    /// Show a group's members and partitions, committed offsets and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets of a topic (a dry run unless --execute). Refused
    /// while the group has active members.
    ResetOffsets(ResetOffsetsArgs),
    /// Delete a group that has no active members, with its committed offsets.
    Delete {
        /// Group id.
        group: String,
    },
}

/// `keel group reset-offsets GROUP --topic T --to-...`
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(group(clap::ArgGroup::new("to").required(true)
    .args(["to_earliest", "to_latest", "to_offset", "to_timestamp"])))]
pub struct ResetOffsetsArgs {
    /// Group id.
    pub group: String,
    /// The topic whose partitions move.
    #[arg(long)]
    pub topic: String,
    /// To each partition's first stored record.
    #[arg(long)]
    pub to_earliest: bool,
    /// To each partition's end (only new records are read).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset in every partition (kept between earliest and latest).
    #[arg(long, value_name = "N", value_parser = value_parser!(i64).range(0..))]
    pub to_offset: Option<i64>,
    /// To the first record at or after this time, in ms since the Unix epoch.
    #[arg(long, value_name = "MS")]
    pub to_timestamp: Option<i64>,
    /// Apply the change (without it, only show what would change).
    #[arg(long)]
    pub execute: bool,
}

/// `keel produce TOPIC`
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ProduceArgs {
    /// Topic name.
    pub topic: String,
    /// The key of every record.
    #[arg(long, conflicts_with = "key_separator")]
    pub key: Option<String>,
    /// Split each line at the first SEP: the key before it, the value after it.
    #[arg(long, value_name = "SEP", value_parser = parse_separator)]
    pub key_separator: Option<String>,
    /// A header for every record, such as source=cli; repeatable.
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Write to this partition instead of choosing by key (murmur2) or sticky.
    #[arg(long, short = 'p', value_parser = value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Replicas that must have a record before it counts as written.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// Compression codec of the batches.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
}

/// `--acks`: Kafka's spellings.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksArg {
    /// The broker answers before writing; no offsets come back.
    #[value(name = "0")]
    None,
    /// The leader has written the record.
    #[value(name = "1")]
    Leader,
    /// Every in-sync replica has it.
    #[value(name = "all", alias = "-1")]
    All,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Acks {
        match a {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

/// `keel consume TOPIC`
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ConsumeArgs {
    /// Topic name.
    pub topic: String,
    /// Start at the first stored record (default: only new records). With --group: where
    /// partitions without a committed offset start.
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    pub from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, value_parser = value_parser!(i64).range(0..), conflicts_with = "from_timestamp")]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time, in ms since the Unix epoch.
    #[arg(long, value_name = "MS")]
    pub from_timestamp: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(long, short = 'p', value_parser = value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Read as a member of this consumer group: the group assigns the partitions, reading
    /// starts at its committed offsets, and what is printed is committed.
    #[arg(long, short = 'g', conflicts_with_all = ["offset", "from_timestamp", "partition"])]
    pub group: Option<String>,
    /// Exit after this many records.
    #[arg(long, short = 'n', value_name = "N")]
    pub max_messages: Option<u64>,
    /// Exit when no record came for this long (default: follow forever).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// How to print each record.
    #[arg(long, value_enum, default_value_t = RecordFormat::Text)]
    pub format: RecordFormat,
}

/// How `keel consume` prints records.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// The value alone (`null` for a null value).
    Text,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

/// `keel bench ...`
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum BenchCommand {
    /// Send records as fast as allowed and report throughput and delivery latency.
    Produce(BenchProduceArgs),
    /// Read a topic from the beginning and report throughput and poll latency.
    Consume(BenchConsumeArgs),
    /// Produce and consume at once and report the produce-to-consume latency of each record.
    E2e(BenchE2eArgs),
}

/// `keel bench e2e`
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct BenchE2eArgs {
    /// Topic to write to and read from (it must exist).
    #[arg(long)]
    pub topic: String,
    /// Records to send and receive.
    #[arg(long, default_value_t = 10_000, value_parser = value_parser!(u64).range(1..))]
    pub records: u64,
    /// Value size of each record, in bytes (at least 8: the send time travels in the value).
    #[arg(long, default_value_t = 100, value_parser = value_parser!(u64).range(8..))]
    pub record_size: u64,
    /// Records per second (default 1,000: latency is measured below saturation).
    #[arg(long, default_value_t = 1_000, value_parser = value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Replicas that must have a record before it counts as written.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// Longest wait for a batch to fill, in milliseconds (Kafka's linger.ms; the producer's
    /// default, as in `bench produce`).
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Give up when no record arrived for this long, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// `keel completions SHELL`
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    pub shell: clap_complete::Shell,
}

/// `keel bench produce`
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct BenchProduceArgs {
    /// Topic to write to (it must exist).
    #[arg(long)]
    pub topic: String,
    /// Records to send in all.
    #[arg(long, default_value_t = 100_000, value_parser = value_parser!(u64).range(1..))]
    pub records: u64,
    /// Value size of each record, in bytes.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Replicas that must have a record before it counts as written.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// Most records per second in all (default: no limit).
    #[arg(long, value_parser = value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Producers sending at once, each with its own connections.
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u64).range(1..=64))]
    pub producers: u64,
    /// Compression codec of the batches.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Most bytes per batch (Kafka's batch.size; the producer's default is 16384).
    #[arg(long, default_value_t = 16 * 1024, value_parser = value_parser!(u64).range(1..=(64 << 20)))]
    pub batch_size: u64,
    /// Longest wait for a batch to fill, in milliseconds (Kafka's linger.ms).
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
}

/// `keel bench consume`
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct BenchConsumeArgs {
    /// Topic to read.
    #[arg(long)]
    pub topic: String,
    /// Records to read (default: all the topic holds when the run starts).
    #[arg(long, value_parser = value_parser!(u64).range(1..))]
    pub records: Option<u64>,
    /// Give up when no record came for this long.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Most record data a fetch asks of one partition (Kafka's max.partition.fetch.bytes).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES",
          value_parser = value_parser!(i32).range(1..))]
    pub partition_max_bytes: i32,
}

/// `keel topic ...`
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name: 1 to 249 characters from a-z A-Z 0-9 . _ -
        name: String,
        /// Number of partitions. Default: the broker's num.partitions.
        #[arg(short = 'p', long, value_parser = value_parser!(i32).range(1..))]
        partitions: Option<i32>,
        /// Replicas per partition. Default: the broker's default.replication.factor.
        #[arg(short = 'r', long, value_parser = value_parser!(i32).range(1..))]
        replication_factor: Option<i32>,
        /// A topic config override, such as retention.ms=86400000; repeatable.
        #[arg(
            short = 'c',
            long = "config",
            value_name = "KEY=VALUE",
            value_parser = parse_key_value
        )]
        configs: Vec<(String, String)>,
        /// Check the request on the server without creating the topic.
        #[arg(long)]
        validate_only: bool,
    },
    /// List topics.
    List,
    /// Show a topic's id, config overrides and partitions.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and all its records.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Set or remove topic config overrides; keys not named keep their values.
    Alter {
        /// Topic name.
        name: String,
        /// A config override to set, such as retention.ms=86400000; repeatable.
        #[arg(
            short = 'c',
            long = "config",
            value_name = "KEY=VALUE",
            value_parser = parse_key_value,
            required_unless_present = "delete_configs"
        )]
        configs: Vec<(String, String)>,
        /// A config override to remove (back to the broker's value); repeatable.
        #[arg(long = "delete-config", value_name = "KEY", value_parser = parse_config_key)]
        delete_configs: Vec<String>,
    },
    /// Raise a topic's partition count.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new total number of partitions (as kafka-topics --partitions).
        #[arg(short = 'p', long, value_parser = value_parser!(i32).range(1..))]
        partitions: i32,
    },
}

/// `keel cluster ...`
#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCommand {
    /// Show the cluster id, the active controller and every broker with its state.
    Describe,
}

/// `keel quorum ...`
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum QuorumCommand {
    /// Show the quorum's leader, term, commit index and each member's progress.
    Describe,
    /// Add a running controller node to the voters: it catches up as a learner first.
    AddVoter {
        /// The node as ID@HOST:PORT (its internal listener).
        #[arg(value_name = "ID@HOST:PORT", value_parser = parse_voter)]
        voter: (i32, String),
    },
    /// Remove a node from the voters (the active controller steps down if it is the one).
    RemoveVoter {
        /// The node id.
        #[arg(value_parser = value_parser!(i32).range(1..))]
        id: i32,
    },
}

/// `keel partition ...`
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum PartitionCommand {
    /// Propose, start, follow or cancel replica moves (Kafka's kafka-reassign-partitions).
    Reassign(ReassignArgs),
}

/// `keel partition reassign --generate|--execute|--status|--cancel`
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(group(clap::ArgGroup::new("action").required(true)
    .args(["generate", "execute", "status", "cancel"])))]
pub struct ReassignArgs {
    /// Print a balanced plan (JSON) over --brokers, moving as few replicas as possible; a
    /// summary goes to stderr. Save it and pass it to --execute.
    #[arg(long, requires = "brokers")]
    pub generate: bool,
    /// The brokers that should hold the replicas (--generate).
    #[arg(long, value_delimiter = ',', value_parser = value_parser!(i32).range(0..))]
    pub brokers: Vec<i32>,
    /// Only these topics (--generate; default: every topic but internal ones).
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Start the moves of a plan file.
    #[arg(long, value_name = "PLAN.json")]
    pub execute: Option<std::path::PathBuf>,
    /// Show the moves in progress with how far each has copied; with a plan file, also
    /// whether each planned partition has its target replicas.
    #[arg(long, value_name = "PLAN.json", num_args = 0..=1, default_missing_value = "")]
    pub status: Option<String>,
    /// With --status or --execute: follow the moves with progress bars until they finish.
    #[arg(long)]
    pub wait: bool,
    /// Cancel the moves in progress (those of a plan file, or all) and return to the
    /// original replicas.
    #[arg(long, value_name = "PLAN.json", num_args = 0..=1, default_missing_value = "")]
    pub cancel: Option<String>,
}

/// `keel broker ...`
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum BrokerCommand {
    /// Every registered broker: state, replicas held, whether it is being decommissioned.
    List,
    /// Move every replica off a broker, then unregister it for good (stop its process
    /// afterwards).
    Decommission {
        /// The broker id.
        #[arg(value_parser = value_parser!(i32).range(0..))]
        id: i32,
        /// Stop decommissioning instead; finished moves stay.
        #[arg(long)]
        cancel: bool,
        /// Follow the moves with a progress bar until the broker is gone.
        #[arg(long)]
        wait: bool,
    },
}

/// Parses `ID@HOST:PORT`.
pub fn parse_voter(s: &str) -> Result<(i32, String), String> {
    let bad = || format!("{s:?} is not ID@HOST:PORT");
    let (id, addr) = s.split_once('@').ok_or_else(bad)?;
    let id: i32 = id.parse().ok().filter(|i| *i > 0).ok_or_else(bad)?;
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok((id, addr.to_owned()))
}

/// Parses `KEY=VALUE` at the first `=`. The value may be empty or contain `=`; the key must be
/// a valid config key (see [`parse_config_key`]).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| "expected KEY=VALUE, found no '='".to_string())?;
    let key = parse_config_key(key)?;
    Ok((key, value.to_string()))
}

/// Parses a record header `KEY=VALUE` at the first `=`; the key must not be empty, the value
/// may be.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| "expected KEY=VALUE, found no '='".to_string())?;
    if key.is_empty() {
        return Err("the header key is empty".to_string());
    }
    Ok((key.to_string(), value.to_string()))
}

/// A key separator must not be empty.
pub fn parse_separator(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the key separator is empty".to_string());
    }
    Ok(s.to_string())
}

/// A codec name as Kafka spells it.
pub fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
}

/// Checks a config key: not empty, no whitespace and no `=`.
pub fn parse_config_key(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the config key is empty".to_string());
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!("the config key '{s}' contains whitespace"));
    }
    if s.contains('=') {
        return Err(format!("the config key '{s}' contains '='"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("keel").chain(argv.iter().copied()))
    }

    #[test]
    fn topic_create_with_everything() {
        let args = parse(&[
            "--bootstrap",
            "n1:9292,n2:9292",
            "--output",
            "json",
            "topic",
            "create",
            "orders",
            "-p",
            "6",
            "-r",
            "3",
            "--config",
            "retention.ms=1000",
            "-c",
            "cleanup.policy=compact",
            "--validate-only",
        ])
        .unwrap();
        assert_eq!(args.bootstrap, ["n1:9292", "n2:9292"]);
        assert_eq!(args.output, OutputFormat::Json);
        assert_eq!(args.verbose, 0);
        assert_eq!(
            args.command,
            Command::Topic(TopicCommand::Create {
                name: "orders".into(),
                partitions: Some(6),
                replication_factor: Some(3),
                configs: vec![
                    ("retention.ms".into(), "1000".into()),
                    ("cleanup.policy".into(), "compact".into())
                ],
                validate_only: true,
            })
        );
    }

    #[test]
    fn defaults_and_global_flags_after_the_verb() {
        let args = parse(&["topic", "list", "-o", "json", "-vv"]).unwrap();
        if std::env::var_os("KEEL_BOOTSTRAP").is_none() {
            assert_eq!(args.bootstrap, ["127.0.0.1:9292"]);
        }
        assert_eq!(args.output, OutputFormat::Json);
        assert_eq!(args.verbose, 2);
        assert_eq!(args.command, Command::Topic(TopicCommand::List));

        let args = parse(&["topic", "create", "t"]).unwrap();
        assert_eq!(args.output, OutputFormat::Table);
        let Command::Topic(TopicCommand::Create {
            partitions,
            replication_factor,
            configs,
            validate_only,
            ..
        }) = args.command
        else {
            panic!("not a create: {:?}", args.command);
        };
        assert_eq!((partitions, replication_factor), (None, None));
        assert!(configs.is_empty());
        assert!(!validate_only);
    }

    #[test]
    fn every_verb_parses() {
        let cases: [(&[&str], Command); 7] = [
            (
                &["topic", "describe", "t"],
                Command::Topic(TopicCommand::Describe { name: "t".into() }),
            ),
            (
                &["topic", "delete", "t"],
                Command::Topic(TopicCommand::Delete { name: "t".into() }),
            ),
            (
                &[
                    "topic",
                    "alter",
                    "t",
                    "--config",
                    "a=1",
                    "--delete-config",
                    "b",
                ],
                Command::Topic(TopicCommand::Alter {
                    name: "t".into(),
                    configs: vec![("a".into(), "1".into())],
                    delete_configs: vec!["b".into()],
                }),
            ),
            (
                &["topic", "alter", "t", "--delete-config", "b"],
                Command::Topic(TopicCommand::Alter {
                    name: "t".into(),
                    configs: vec![],
                    delete_configs: vec!["b".into()],
                }),
            ),
            (
                &["topic", "add-partitions", "t", "-p", "12"],
                Command::Topic(TopicCommand::AddPartitions {
                    name: "t".into(),
                    partitions: 12,
                }),
            ),
            (
                &["cluster", "describe"],
                Command::Cluster(ClusterCommand::Describe),
            ),
            (
                &["quorum", "describe"],
                Command::Quorum(QuorumCommand::Describe),
            ),
        ];
        for (argv, want) in cases {
            assert_eq!(parse(argv).unwrap().command, want, "{argv:?}");
        }
    }

    #[test]
    fn bad_flag_values_are_refused() {
        use clap::error::ErrorKind;
        let cases: [(&[&str], ErrorKind); 8] = [
            (
                &["topic", "create", "t", "-p", "0"],
                ErrorKind::ValueValidation,
            ),
            (
                &["topic", "create", "t", "-p", "x"],
                ErrorKind::ValueValidation,
            ),
            (
                &["topic", "create", "t", "-r", "-1"],
                ErrorKind::UnknownArgument,
            ),
            (
                &["topic", "create", "t", "--config", "retention.ms"],
                ErrorKind::ValueValidation,
            ),
            (&["topic", "alter", "t"], ErrorKind::MissingRequiredArgument),
            (
                &["topic", "add-partitions", "t"],
                ErrorKind::MissingRequiredArgument,
            ),
            (
                &["topic", "create", "t", "-o", "yaml"],
                ErrorKind::InvalidValue,
            ),
            (&["topic", "frobnicate"], ErrorKind::InvalidSubcommand),
        ];
        for (argv, kind) in cases {
            let err = parse(argv).unwrap_err();
            assert_eq!(err.kind(), kind, "{argv:?}: {err}");
        }
    }

    #[test]
    fn key_value_parser() {
        assert_eq!(
            parse_key_value("retention.ms=1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        // Split at the first '='; the value may hold more, or be empty.
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("a="), Ok(("a".into(), String::new())));

        assert_eq!(
            parse_key_value("retention.ms"),
            Err("expected KEY=VALUE, found no '='".into())
        );
        assert_eq!(parse_key_value("=1"), Err("the config key is empty".into()));
        assert_eq!(
            parse_key_value("retention ms=1"),
            Err("the config key 'retention ms' contains whitespace".into())
        );
    }

    #[test]
    fn key_value_errors_reach_the_user_with_the_flag() {
        let err = parse(&["topic", "create", "t", "--config", "oops"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("'oops'"), "{text}");
        assert!(text.contains("--config <KEY=VALUE>"), "{text}");
        assert!(text.contains("expected KEY=VALUE, found no '='"), "{text}");
    }

    #[test]
    fn config_key_parser() {
        assert_eq!(
            parse_config_key("cleanup.policy"),
            Ok("cleanup.policy".into())
        );
        assert!(parse_config_key("").is_err());
        assert!(parse_config_key("a b").is_err());
        assert!(parse_config_key("a=b").is_err());
    }
}
