//! The node's configuration: one TOML file, every key overridable by a `KEEL_<KEY>`
//! environment variable, and a few by flags (file < environment < flags).
//!
//! Keys (TOML name; environment `KEEL_` + upper case; flag `--` + dashes):
//! `node_id`, `roles` (`broker`, `controller` or `broker,controller`), `listen` (client gRPC),
//! `internal_listen` (Raft, controller and replication traffic), `http_listen` (metrics and
//! health), `data_dir`, `controller_voters` (`1@host:port,2@host:port,...`),
//! `controller_join`, `rack`,
//! `broker_session_timeout_ms`, `broker_heartbeat_interval_ms`, `replica_lag_time_max_ms`,
//! `advertised_host`, `producer_id_expiration_ms`, `group_session_timeout_ms`,
//! `group_heartbeat_interval_ms`, `offsets_topic_num_partitions`,
//! `offsets_topic_replication_factor`, `offsets_snapshot_bytes`; cluster defaults for new
//! topics (applied by the active controller, see [`crate::topic_defaults`]):
//! `num_partitions`, `default_replication_factor`, `min_insync_replicas`,
//! `log_retention_ms`, `log_segment_bytes`, `auto_create_topics_enable`; replica moves and
//! leader balance: `reassignment_throttle_bytes_per_sec`, `auto_leader_rebalance_enable`,
//! `leader_imbalance_check_interval_ms`, `leader_imbalance_per_broker_percentage`; bounds on
//! what clients may hold: `max_connections`, `request_memory_bytes`.
//!
//! Library code never reads the environment: the binary hands [`Config::load`] the environment
//! provider ([`Config::env`]), and tests hand it whatever they like.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::{Deserialize, Serialize};

/// Every key of the config, as written in TOML (and, upper-cased, after `KEEL_`).
pub const KEYS: [&str; 31] = [
    "node_id",
    "roles",
    "listen",
    "internal_listen",
    "http_listen",
    "data_dir",
    "controller_voters",
    "controller_join",
    "rack",
    "broker_session_timeout_ms",
    "broker_heartbeat_interval_ms",
    "replica_lag_time_max_ms",
    "advertised_host",
    "producer_id_expiration_ms",
    "group_session_timeout_ms",
    "group_heartbeat_interval_ms",
    "offsets_topic_num_partitions",
    "offsets_topic_replication_factor",
    "offsets_snapshot_bytes",
    "num_partitions",
    "default_replication_factor",
    "min_insync_replicas",
    "log_retention_ms",
    "log_segment_bytes",
    "auto_create_topics_enable",
    "reassignment_throttle_bytes_per_sec",
    "auto_leader_rebalance_enable",
    "leader_imbalance_check_interval_ms",
    "leader_imbalance_per_broker_percentage",
    "max_connections",
    "request_memory_bytes",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Unique id of this node in the cluster.
    pub node_id: u32,
    pub roles: Roles,
    /// Client gRPC listener.
    pub listen: SocketAddr,
    /// Raft, controller and replication listener.
    pub internal_listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub http_listen: SocketAddr,
    /// Where segment files, the index and the metadata log live.
    pub data_dir: PathBuf,
    /// The controller quorum's voters and their internal addresses.
    pub controller_voters: Voters,
    /// A controller that is not among `controller_voters`: it starts empty and waits until
    /// `keel quorum add-voter` adds it (KIP-853's new controller).
    pub controller_join: bool,
    /// Rack (or zone) for rack-aware replica placement.
    pub rack: Option<String>,
    /// A broker without a heartbeat for this long is fenced (Kafka's
    /// `broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// How often a broker heartbeats to the active controller (Kafka's
    /// `broker.heartbeat.interval.ms`).
    pub broker_heartbeat_interval_ms: u64,
    /// A follower that has not caught up with its leader for this long leaves the ISR
    /// (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// The host name or address other brokers and clients use to reach this node (Kafka's
    /// `advertised.listeners`, one host for both listeners, with their ports). Unset: the
    /// listeners' own addresses, which must then not be unspecified (`0.0.0.0`, `::`).
    pub advertised_host: Option<String>,
    /// A producer whose latest batch in a partition is older than this loses its
    /// deduplication state there (Kafka's `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
    /// A group member without a heartbeat for this long is removed and its partitions move
    /// (Kafka's `group.consumer.session.timeout.ms`).
    pub group_session_timeout_ms: u64,
    /// How often group members heartbeat (Kafka's `group.consumer.heartbeat.interval.ms`).
    pub group_heartbeat_interval_ms: u64,
    /// Partitions of `__consumer_offsets` when it is created (Kafka's
    /// `offsets.topic.num.partitions`); fixed afterwards.
    pub offsets_topic_num_partitions: u32,
    /// Replicas of `__consumer_offsets` when it is created, capped at the live brokers then
    /// (Kafka's `offsets.topic.replication.factor`).
    pub offsets_topic_replication_factor: u32,
    /// Bytes a coordinator appends to a `__consumer_offsets` partition before it writes a
    /// snapshot of its groups and deletes the segments before it (Keel's bound on the topic,
    /// where Kafka compacts).
    pub offsets_snapshot_bytes: u64,
    /// Partitions of a topic created without a count (Kafka's `num.partitions`).
    pub num_partitions: u32,
    /// Replicas of a topic created without a factor (Kafka's `default.replication.factor`).
    pub default_replication_factor: u32,
    /// `min.insync.replicas` of a topic created without one, capped at its replication
    /// factor (Kafka's broker-level `min.insync.replicas`).
    pub min_insync_replicas: u32,
    /// `retention.ms` of a topic created without one; -1 keeps records forever (Kafka's
    /// `log.retention.ms`).
    pub log_retention_ms: i64,
    /// `segment.bytes` of a topic created without one (Kafka's `log.segment.bytes`).
    pub log_segment_bytes: u64,
    /// Produce or metadata requests naming an unknown topic create it with the defaults
    /// above (Kafka's `auto.create.topics.enable`, but off by default).
    pub auto_create_topics_enable: bool,
    /// Bytes per second a leader sends to all the replicas that a reassignment is adding
    /// together (Kafka's `leader.replication.throttled.rate`); 0: unlimited.
    pub reassignment_throttle_bytes_per_sec: u64,
    /// The active controller gives leaderships back to preferred replicas on its own (Kafka's
    /// `auto.leader.rebalance.enable`).
    pub auto_leader_rebalance_enable: bool,
    /// How often it checks (Kafka's `leader.imbalance.check.interval.seconds`, in ms).
    pub leader_imbalance_check_interval_ms: u64,
    /// A broker's share, in percent, of the partitions it prefers to lead that others lead,
    /// above which they go back to it (Kafka's `leader.imbalance.per.broker.percentage`).
    pub leader_imbalance_per_broker_percentage: u32,
    /// Client connections open at once; one more is closed at once (Kafka's
    /// `max.connections`).
    pub max_connections: u32,
    /// Bytes that client requests in flight may hold in all: the messages being received or
    /// handled and the data fetches read (Kafka's `queued.max.request.bytes`, but bounded by
    /// default). Requests beyond it wait; a message larger than it is refused.
    pub request_memory_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            roles: Roles::Combined,
            listen: SocketAddr::from(([127, 0, 0, 1], 9292)),
            internal_listen: SocketAddr::from(([127, 0, 0, 1], 9293)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9294)),
            data_dir: PathBuf::from("data"),
            controller_voters: Voters::default(),
            controller_join: false,
            rack: None,
            broker_session_timeout_ms: 9000,
            broker_heartbeat_interval_ms: 2000,
            replica_lag_time_max_ms: 30_000,
            advertised_host: None,
            producer_id_expiration_ms: 86_400_000,
            group_session_timeout_ms: 45_000,
            group_heartbeat_interval_ms: 5_000,
            offsets_topic_num_partitions: 16,
            offsets_topic_replication_factor: 3,
            offsets_snapshot_bytes: 8 << 20,
            num_partitions: 1,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_segment_bytes: 1 << 30,
            auto_create_topics_enable: false,
            reassignment_throttle_bytes_per_sec: 50 << 20,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            leader_imbalance_per_broker_percentage: 10,
            max_connections: 4096,
            request_memory_bytes: 256 << 20,
        }
    }
}

/// What a node does: serve partitions, vote in the controller quorum, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Roles {
    Broker,
    Controller,
    Combined,
}

impl Roles {
    pub fn is_broker(self) -> bool {
        matches!(self, Roles::Broker | Roles::Combined)
    }

    pub fn is_controller(self) -> bool {
        matches!(self, Roles::Controller | Roles::Combined)
    }
}

impl FromStr for Roles {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Roles, ConfigError> {
        let mut broker = false;
        let mut controller = false;
        for role in s.split(',').map(str::trim) {
            match role {
                "broker" => broker = true,
                "controller" => controller = true,
                _ => {
                    return Err(ConfigError::UnknownRole {
                        role: role.to_owned(),
                    })
                }
            }
        }
        Ok(match (broker, controller) {
            (true, true) => Roles::Combined,
            (true, false) => Roles::Broker,
            _ => Roles::Controller,
        })
    }
}

impl TryFrom<String> for Roles {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Roles, ConfigError> {
        s.parse()
    }
}

impl From<Roles> for String {
    fn from(r: Roles) -> String {
        r.to_string()
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Roles::Broker => "broker",
            Roles::Controller => "controller",
            Roles::Combined => "broker,controller",
        })
    }
}

/// The controller voters, `id@host:port` separated by commas, by node id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Voters(pub BTreeMap<u32, String>);

impl FromStr for Voters {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Voters, ConfigError> {
        let mut voters = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || ConfigError::BadVoter {
                entry: entry.to_owned(),
            };
            let (id, addr) = entry.split_once('@').ok_or_else(bad)?;
            let id: u32 = id.parse().map_err(|_| bad())?;
            let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad());
            }
            if voters.insert(id, addr.to_owned()).is_some() {
                return Err(ConfigError::DuplicateVoter { id });
            }
        }
        Ok(Voters(voters))
    }
}

impl TryFrom<String> for Voters {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Voters, ConfigError> {
        s.parse()
    }
}

impl From<Voters> for String {
    fn from(v: Voters) -> String {
        v.to_string()
    }
}

impl fmt::Display for Voters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self.0.iter().map(|(id, a)| format!("{id}@{a}")).collect();
        f.write_str(&entries.join(","))
    }
}

/// Values given as command-line flags; they win over the file and the environment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_voters: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// A config that cannot be used; each names the key at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("roles: unknown role {role:?} (use broker, controller or broker,controller)")]
    UnknownRole { role: String },
    #[error("controller_voters: {entry:?} is not id@host:port")]
    BadVoter { entry: String },
    #[error("controller_voters: node {id} is listed twice")]
    DuplicateVoter { id: u32 },
    #[error("controller_voters: must name at least one voter (id@host:port)")]
    NoVoters,
    #[error(
        "controller_voters: node {node_id} has the controller role but is not a voter; set \
         controller_join = true to start it as a new controller that waits for \
         `keel quorum add-voter`"
    )]
    ControllerNotVoter { node_id: u32 },
    #[error("controller_join: node {node_id} is among controller_voters already")]
    JoinButVoter { node_id: u32 },
    #[error("data_dir: must not be empty")]
    EmptyDataDir,
    #[error("{a} and {b} must differ, both are {addr}")]
    SameListener {
        a: &'static str,
        b: &'static str,
        addr: SocketAddr,
    },
    #[error("rack: {rack:?} must be 1 to 64 letters, digits, '.', '_' or '-'")]
    BadRack { rack: String },
    #[error(
        "broker_heartbeat_interval_ms ({interval}) must be above 0 and below \
         broker_session_timeout_ms ({timeout})"
    )]
    BadHeartbeat { interval: u64, timeout: u64 },
    #[error(
        "advertised_host: {0:?} must be a host name or address (letters, digits, '.', '-', ':')"
    )]
    BadAdvertisedHost(String),
    #[error(
        "advertised_host: required when {key} listens on the unspecified address {addr}: \
         other nodes cannot reach that"
    )]
    UnreachableListener { key: &'static str, addr: SocketAddr },
    #[error("replica_lag_time_max_ms: must be at least 100, got {0}")]
    BadReplicaLag(u64),
    #[error("producer_id_expiration_ms: must be at least 1000, got {0}")]
    BadProducerIdExpiration(u64),
    #[error(
        "group_heartbeat_interval_ms ({interval}) must be positive and below \
         group_session_timeout_ms ({timeout})"
    )]
    BadGroupHeartbeat { interval: u64, timeout: u64 },
    #[error("{key}: must be {range}, got {value}")]
    OutOfRange {
        key: &'static str,
        range: &'static str,
        value: u64,
    },
    #[error("log_retention_ms: must be -1 (keep forever) or positive, got {0}")]
    BadRetention(i64),
    #[error("config file {path}: not found")]
    MissingFile { path: PathBuf },
    #[error("{0}")]
    Invalid(Box<figment::Error>),
}

impl Config {
    /// The one-node development cluster of `keeld --dev`: both roles, its own single voter,
    /// data under `.keel-dev/`.
    pub fn dev() -> Config {
        let defaults = Config::default();
        let voters = format!("1@{}", defaults.internal_listen);
        Config {
            data_dir: PathBuf::from(".keel-dev/data"),
            controller_voters: voters.parse().expect("the dev voter string is well formed"),
            ..defaults
        }
    }

    /// The `KEEL_<KEY>` environment variables, for the binary to pass to [`Config::load`].
    pub fn env() -> Env {
        Env::prefixed("KEEL_").only(&KEYS)
    }

    /// Builds the config from `base` (defaults or [`Config::dev`]), then the TOML `file`, then
    /// `env`, then `flags`, and validates it.
    pub fn load(
        base: Config,
        file: Option<&Path>,
        env: impl Provider,
        flags: Flags,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(base));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile {
                    path: path.to_owned(),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The effective config as TOML lines, each with where its value came from (`flag`,
    /// `environment`, `file`, or `default`), for `keeld --print-config`. Loads (and so checks)
    /// the config the same way as [`Config::load`].
    pub fn describe(
        base: Config,
        file: Option<&Path>,
        env: impl Provider + Clone,
        flags: Flags,
    ) -> Result<String, ConfigError> {
        let config = Config::load(base, file, env.clone(), flags.clone())?;
        let has = |figment: Figment, key: &str| figment.find_value(key).is_ok();
        let values = serde_json::to_value(&config).unwrap_or_default();
        let mut out = String::new();
        for key in KEYS {
            let source = if has(Figment::from(Serialized::defaults(&flags)), key) {
                "flag"
            } else if has(Figment::from(env.clone()), key) {
                "environment"
            } else if file.is_some_and(|f| has(Figment::from(Toml::file(f)), key)) {
                "file"
            } else {
                "default"
            };
            let value = match &values[key] {
                serde_json::Value::Null => format!("# {key} (unset)"),
                v => format!("{key} = {v}"),
            };
            out.push_str(&format!("{value:<60} # {source}\n"));
        }
        Ok(out)
    }

    /// Checks values and the rules between them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::EmptyDataDir);
        }
        if self.controller_voters.0.is_empty() {
            return Err(ConfigError::NoVoters);
        }
        let listed = self.controller_voters.0.contains_key(&self.node_id);
        if self.roles.is_controller() && !listed && !self.controller_join {
            return Err(ConfigError::ControllerNotVoter {
                node_id: self.node_id,
            });
        }
        if self.controller_join && listed {
            return Err(ConfigError::JoinButVoter {
                node_id: self.node_id,
            });
        }
        let listeners = [
            ("listen", self.listen),
            ("internal_listen", self.internal_listen),
            ("http_listen", self.http_listen),
        ];
        for (i, (a, addr_a)) in listeners.iter().enumerate() {
            for (b, addr_b) in &listeners[i + 1..] {
                if addr_a == addr_b && addr_a.port() != 0 {
                    return Err(ConfigError::SameListener {
                        a,
                        b,
                        addr: *addr_a,
                    });
                }
            }
        }
        let (interval, timeout) = (
            self.broker_heartbeat_interval_ms,
            self.broker_session_timeout_ms,
        );
        if interval == 0 || interval >= timeout {
            return Err(ConfigError::BadHeartbeat { interval, timeout });
        }
        if self.replica_lag_time_max_ms < 100 {
            return Err(ConfigError::BadReplicaLag(self.replica_lag_time_max_ms));
        }
        match &self.advertised_host {
            Some(host) => {
                let ok = !host.is_empty()
                    && host.len() <= 253
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
                if !ok {
                    return Err(ConfigError::BadAdvertisedHost(host.clone()));
                }
            }
            None => {
                for (key, addr) in [
                    ("listen", self.listen),
                    ("internal_listen", self.internal_listen),
                ] {
                    if addr.ip().is_unspecified() {
                        return Err(ConfigError::UnreachableListener { key, addr });
                    }
                }
            }
        }
        if self.producer_id_expiration_ms < 1000 {
            return Err(ConfigError::BadProducerIdExpiration(
                self.producer_id_expiration_ms,
            ));
        }
        self.validate_groups()?;
        self.validate_topic_defaults()?;
        check_ranges(&[
            (
                "leader_imbalance_check_interval_ms",
                "1000 to 86400000",
                self.leader_imbalance_check_interval_ms,
                1000..=86_400_000,
            ),
            (
                "leader_imbalance_per_broker_percentage",
                "0 to 100",
                u64::from(self.leader_imbalance_per_broker_percentage),
                0..=100,
            ),
            (
                "max_connections",
                "1 to 1000000",
                u64::from(self.max_connections),
                1..=1_000_000,
            ),
            (
                "request_memory_bytes",
                "65536 to 1099511627776",
                self.request_memory_bytes,
                65_536..=1 << 40,
            ),
        ])?;
        if let Some(rack) = &self.rack {
            let ok = (1..=64).contains(&rack.len())
                && rack
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(ConfigError::BadRack { rack: rack.clone() });
            }
        }
        Ok(())
    }
}

/// A key whose value must lie in a range: (key, the range in words, the value, the range).
type Ranged = (
    &'static str,
    &'static str,
    u64,
    std::ops::RangeInclusive<u64>,
);

fn check_ranges(ranges: &[Ranged]) -> Result<(), ConfigError> {
    for (key, range, value, ok) in ranges {
        if !ok.contains(value) {
            return Err(ConfigError::OutOfRange {
                key,
                range,
                value: *value,
            });
        }
    }
    Ok(())
}

impl Config {
    /// The cluster defaults for new topics follow the topic configs' own rules (the
    /// controller's `TOPIC_CONFIGS`): `segment.bytes` from 14 to 2^31-1, `retention.ms` -1 or
    /// positive. `min_insync_replicas` may exceed `default_replication_factor`: it is capped
    /// at each topic's factor when applied.
    fn validate_topic_defaults(&self) -> Result<(), ConfigError> {
        check_ranges(&[
            (
                "num_partitions",
                "1 to 10000",
                u64::from(self.num_partitions),
                1..=10_000,
            ),
            (
                "default_replication_factor",
                "1 to 16",
                u64::from(self.default_replication_factor),
                1..=16,
            ),
            (
                "min_insync_replicas",
                "1 to 16",
                u64::from(self.min_insync_replicas),
                1..=16,
            ),
            (
                "log_segment_bytes",
                "14 to 2147483647",
                self.log_segment_bytes,
                14..=i32::MAX as u64,
            ),
        ])?;
        if self.log_retention_ms == 0 || self.log_retention_ms < -1 {
            return Err(ConfigError::BadRetention(self.log_retention_ms));
        }
        Ok(())
    }

    fn validate_groups(&self) -> Result<(), ConfigError> {
        let (interval, timeout) = (
            self.group_heartbeat_interval_ms,
            self.group_session_timeout_ms,
        );
        if interval == 0 || interval >= timeout {
            return Err(ConfigError::BadGroupHeartbeat { interval, timeout });
        }
        check_ranges(&[
            (
                "offsets_topic_num_partitions",
                "1 to 1000",
                u64::from(self.offsets_topic_num_partitions),
                1..=1000,
            ),
            (
                "offsets_topic_replication_factor",
                "1 to 16",
                u64::from(self.offsets_topic_replication_factor),
                1..=16,
            ),
            (
                "offsets_snapshot_bytes",
                "at least 4096",
                self.offsets_snapshot_bytes,
                4096..=u64::MAX,
            ),
        ])
    }
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in(
        jail: &Jail,
        base: Config,
        file: Option<&str>,
        flags: Flags,
    ) -> Result<Config, ConfigError> {
        let path = file.map(|_| jail.directory().join("keeld.toml"));
        Config::load(base, path.as_deref(), Config::env(), flags)
    }

    #[test]
    fn dev_config_is_valid() {
        assert_eq!(Config::dev().validate(), Ok(()));
        assert_eq!(
            Config::dev().controller_voters.to_string(),
            "1@127.0.0.1:9293"
        );
    }

    #[test]
    fn file_then_environment_then_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "keeld.toml",
                r#"
                node_id = 2
                roles = "broker"
                data_dir = "/var/lib/keel"
                controller_voters = "1@10.0.0.1:9293,2@10.0.0.2:9293,3@10.0.0.3:9293"
                rack = "a"
                "#,
            )?;
            jail.set_env("KEEL_RACK", "b");
            jail.set_env("KEEL_NODE_ID", "3");
            jail.set_env("KEEL_BOOTSTRAP", "the CLI's variable, not ours");
            let flags = Flags {
                node_id: Some(4),
                ..Flags::default()
            };
            let config = load_in(jail, Config::default(), Some("keeld.toml"), flags).unwrap();
            assert_eq!(config.node_id, 4, "flag beats environment");
            assert_eq!(config.rack.as_deref(), Some("b"), "environment beats file");
            assert_eq!(config.roles, Roles::Broker);
            assert_eq!(config.data_dir, PathBuf::from("/var/lib/keel"));
            assert_eq!(config.controller_voters.0.len(), 3);
            assert_eq!(config.listen, Config::default().listen);
            Ok(())
        });
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        Jail::expect_with(|jail| {
            jail.create_file("keeld.toml", "node_id = 1\nretention = 5\n")?;
            let err =
                load_in(jail, Config::dev(), Some("keeld.toml"), Flags::default()).unwrap_err();
            assert!(err.to_string().contains("retention"), "{err}");

            jail.create_file("keeld.toml", "roles = \"brokr\"\n")?;
            let err =
                load_in(jail, Config::dev(), Some("keeld.toml"), Flags::default()).unwrap_err();
            assert!(err.to_string().contains("brokr"), "{err}");

            jail.create_file("keeld.toml", "listen = \"nowhere\"\n")?;
            let err =
                load_in(jail, Config::dev(), Some("keeld.toml"), Flags::default()).unwrap_err();
            assert!(err.to_string().contains("listen"), "{err}");

            jail.set_env("KEEL_AUTO_CREATE_TOPICS_ENABLE", "maybe");
            let err = load_in(jail, Config::dev(), None, Flags::default()).unwrap_err();
            let named = err.to_string().to_lowercase();
            assert!(named.contains("auto_create_topics_enable"), "{err}");
            jail.set_env("KEEL_AUTO_CREATE_TOPICS_ENABLE", "true");
            jail.set_env("KEEL_LOG_RETENTION_MS", "-1");
            let config = load_in(jail, Config::dev(), None, Flags::default()).unwrap();
            assert!(config.auto_create_topics_enable);
            assert_eq!(config.log_retention_ms, -1);

            jail.set_env("KEEL_NODE_ID", "minus one");
            let err = load_in(jail, Config::dev(), None, Flags::default()).unwrap_err();
            assert!(err.to_string().to_lowercase().contains("node_id"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn rules_between_keys() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    controller_voters: Voters::default(),
                    ..Config::dev()
                },
                "controller_voters",
            ),
            (
                Config {
                    node_id: 7,
                    ..Config::dev()
                },
                "not a voter",
            ),
            (
                Config {
                    controller_join: true,
                    ..Config::dev()
                },
                "among controller_voters already",
            ),
            (
                Config {
                    http_listen: Config::dev().listen,
                    ..Config::dev()
                },
                "must differ",
            ),
            (
                Config {
                    rack: Some("a b".into()),
                    ..Config::dev()
                },
                "rack",
            ),
            (
                Config {
                    data_dir: PathBuf::new(),
                    ..Config::dev()
                },
                "data_dir",
            ),
            (
                Config {
                    broker_heartbeat_interval_ms: 9000,
                    ..Config::dev()
                },
                "broker_heartbeat_interval_ms",
            ),
            (
                Config {
                    replica_lag_time_max_ms: 5,
                    ..Config::dev()
                },
                "replica_lag_time_max_ms",
            ),
            (
                Config {
                    listen: SocketAddr::from(([0, 0, 0, 0], 9292)),
                    ..Config::dev()
                },
                "advertised_host: required when listen",
            ),
            (
                Config {
                    advertised_host: Some("a host".into()),
                    ..Config::dev()
                },
                "advertised_host",
            ),
            (
                Config {
                    num_partitions: 0,
                    ..Config::dev()
                },
                "num_partitions: must be 1 to 10000, got 0",
            ),
            (
                Config {
                    default_replication_factor: 17,
                    ..Config::dev()
                },
                "default_replication_factor",
            ),
            (
                Config {
                    min_insync_replicas: 0,
                    ..Config::dev()
                },
                "min_insync_replicas",
            ),
            (
                Config {
                    log_retention_ms: 0,
                    ..Config::dev()
                },
                "log_retention_ms",
            ),
            (
                Config {
                    log_segment_bytes: 1 << 31,
                    ..Config::dev()
                },
                "log_segment_bytes",
            ),
        ];
        for (config, needle) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
        let broker_only = Config {
            node_id: 7,
            roles: Roles::Broker,
            ..Config::dev()
        };
        assert_eq!(
            broker_only.validate(),
            Ok(()),
            "a broker need not be a voter"
        );
        let in_a_container = Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9292)),
            internal_listen: SocketAddr::from(([0, 0, 0, 0], 9293)),
            advertised_host: Some("keel-0.keel".into()),
            ..Config::dev()
        };
        assert_eq!(in_a_container.validate(), Ok(()));
    }

    #[test]
    fn the_shipped_example_file_loads_and_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/keeld.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        for key in KEYS {
            assert!(
                text.contains(&format!("{key} =")),
                "{key} is not in the example"
            );
        }
        Jail::expect_with(|_| {
            let config = Config::load(
                Config::default(),
                Some(&path),
                Config::env(),
                Flags::default(),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(config.data_dir, PathBuf::from("/var/lib/keel"));
            Ok(())
        });
    }

    #[test]
    fn voters_and_roles_parse() {
        let voters: Voters = "1@a:1, 2@b:2".parse().unwrap();
        assert_eq!(voters.to_string(), "1@a:1,2@b:2");
        for bad in ["x@a:1", "1a:1", "1@a", "1@:9", "1@a:99999"] {
            assert!(bad.parse::<Voters>().is_err(), "{bad}");
        }
        assert_eq!(
            "1@a:1,1@b:2".parse::<Voters>(),
            Err(ConfigError::DuplicateVoter { id: 1 })
        );
        assert_eq!("controller, broker".parse::<Roles>(), Ok(Roles::Combined));
        assert!("leader".parse::<Roles>().is_err());
    }
}
