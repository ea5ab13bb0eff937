//! Cluster defaults for new topics, from the broker config, and whether unknown topics are
//! created on first use.
//!
//! The active controller applies its own node's defaults when a CreateTopics request leaves a
//! setting unset ([`TopicDefaults::apply`], a pure function): the partition count, the
//! replication factor, and the `min.insync.replicas`, `retention.ms` and `segment.bytes`
//! topic configs. A config default is written into the topic's overrides only when it differs
//! from the topic config's built-in default (Kafka's), so a cluster left at Kafka's values
//! creates topics exactly as before, and `DescribeConfigs` still shows those keys as
//! defaults. Writing the values at creation (rather than reading broker defaults at run
//! time, as Kafka does) keeps every broker in agreement whatever its own config says.
//!
//! With `auto_create_topics_enable`, a broker that receives a Metadata or Produce request
//! naming an unknown topic asks the active controller to create it with these defaults
//! (`services::admin::auto_create_topics`), as Kafka does.
//!
//! Worked example: defaults `num_partitions = 6`, `default_replication_factor = 3`,
//! `min_insync_replicas = 2`, `log_retention_ms = 86400000`, Kafka's `segment.bytes`.
//! - `create t` → 6 partitions, RF 3, `min.insync.replicas=2`, `retention.ms=86400000`;
//! - `create t -p 2 -r 1` → 2 partitions, RF 1, `min.insync.replicas=1` (capped at the
//!   factor), `retention.ms=86400000`;
//! - `create t --config retention.ms=-1` → keeps `-1`: a setting given is never replaced.

use std::collections::BTreeMap;

use keel_metadata::controller::TOPIC_CONFIG_DEFAULTS;

use crate::config::Config;

/// The defaults a new topic gets for what its creation leaves unset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDefaults {
    /// `num_partitions`.
    pub partitions: i32,
    /// `default_replication_factor`.
    pub replication_factor: i32,
    /// `min_insync_replicas`.
    pub min_insync_replicas: i32,
    /// `log_retention_ms`.
    pub retention_ms: i64,
    /// `log_segment_bytes`.
    pub segment_bytes: i64,
    /// `auto_create_topics_enable`.
    pub auto_create: bool,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults::from_config(&Config::default())
    }
}

/// What a topic is created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    pub partitions: i32,
    pub replication_factor: i32,
    pub configs: BTreeMap<String, String>,
}

fn builtin(key: &str) -> Option<&'static str> {
    TOPIC_CONFIG_DEFAULTS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
}

impl TopicDefaults {
    /// The defaults of a node's config (validated: the values fit in `i32`/`i64`).
    pub fn from_config(c: &Config) -> TopicDefaults {
        TopicDefaults {
            partitions: c.num_partitions.min(i32::MAX as u32) as i32,
            replication_factor: c.default_replication_factor.min(i32::MAX as u32) as i32,
            min_insync_replicas: c.min_insync_replicas.min(i32::MAX as u32) as i32,
            retention_ms: c.log_retention_ms,
            segment_bytes: c.log_segment_bytes.min(i64::MAX as u64) as i64,
            auto_create: c.auto_create_topics_enable,
        }
    }

    /// The topic a CreateTopics entry asks for, with the defaults filled in (see the module
    /// doc). `min.insync.replicas` from the defaults is capped at the replication factor, so
    /// a cluster default of 2 does not refuse a topic of one replica.
    pub fn apply(
        &self,
        partitions: Option<i32>,
        replication_factor: Option<i32>,
        configs: &BTreeMap<String, String>,
    ) -> NewTopic {
        let partitions = partitions.unwrap_or(self.partitions);
        let rf = replication_factor.unwrap_or(self.replication_factor);
        let mut configs = configs.clone();
        let min_isr = self.min_insync_replicas.min(rf.max(1));
        let defaults = [
            ("min.insync.replicas", min_isr.to_string()),
            ("retention.ms", self.retention_ms.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
        ];
        for (key, value) in defaults {
            if !configs.contains_key(key) && builtin(key) != Some(value.as_str()) {
                configs.insert(key.to_owned(), value);
            }
        }
        NewTopic {
            partitions,
            replication_factor: rf,
            configs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn kafka_values_write_nothing() {
        let d = TopicDefaults::default();
        let t = d.apply(None, None, &BTreeMap::new());
        assert_eq!((t.partitions, t.replication_factor), (1, 1));
        assert!(t.configs.is_empty(), "{:?}", t.configs);
    }

    #[test]
    fn the_worked_example() {
        let d = TopicDefaults {
            partitions: 6,
            replication_factor: 3,
            min_insync_replicas: 2,
            retention_ms: 86_400_000,
            segment_bytes: 1 << 30,
            auto_create: false,
        };
        // (partitions, rf, configs given) → (partitions, rf, configs written)
        type Case<'a> = (
            Option<i32>,
            Option<i32>,
            Vec<(&'a str, &'a str)>,
            (i32, i32, Vec<(&'a str, &'a str)>),
        );
        let cases: Vec<Case> = vec![
            (
                None,
                None,
                vec![],
                (
                    6,
                    3,
                    vec![("min.insync.replicas", "2"), ("retention.ms", "86400000")],
                ),
            ),
            (
                Some(2),
                Some(1),
                vec![],
                (2, 1, vec![("retention.ms", "86400000")]),
            ),
            (
                None,
                None,
                vec![("retention.ms", "-1"), ("min.insync.replicas", "3")],
                (
                    6,
                    3,
                    vec![("min.insync.replicas", "3"), ("retention.ms", "-1")],
                ),
            ),
        ];
        for (p, rf, given, (want_p, want_rf, want)) in cases {
            let t = d.apply(p, rf, &configs(&given));
            assert_eq!(
                (t.partitions, t.replication_factor, t.configs),
                (want_p, want_rf, configs(&want)),
                "{p:?} {rf:?} {given:?}"
            );
        }
    }

    #[test]
    fn segment_bytes_is_written_when_it_differs() {
        let d = TopicDefaults {
            segment_bytes: 1 << 20,
            ..TopicDefaults::default()
        };
        let t = d.apply(None, None, &BTreeMap::new());
        assert_eq!(t.configs, configs(&[("segment.bytes", "1048576")]));
    }
}
