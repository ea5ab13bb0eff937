//! Config messages ↔ [`ConfigEntry`], [`ConfigSource`] and [`ConfigChange`].

use keel_proto::v1 as pb;

use crate::{ConfigChange, ConfigEntry, ConfigSource};

/// The config resource of topic `name`.
pub(crate) fn topic_resource(name: &str) -> pb::ConfigResource {
    pb::ConfigResource {
        r#type: pb::ConfigResourceType::Topic as i32,
        name: name.to_string(),
    }
}

/// The wire form of one incremental change.
pub(crate) fn config_change(change: &ConfigChange) -> pb::AlterableConfig {
    match change {
        ConfigChange::Set { name, value } => pb::AlterableConfig {
            name: name.clone(),
            op: pb::AlterConfigOp::Set as i32,
            value: value.clone(),
        },
        ConfigChange::Delete { name } => pb::AlterableConfig {
            name: name.clone(),
            op: pb::AlterConfigOp::Delete as i32,
            value: String::new(),
        },
    }
}

impl From<i32> for ConfigSource {
    fn from(source: i32) -> Self {
        use pb::ConfigSource as S;
        match S::try_from(source) {
            Ok(S::DynamicTopicConfig) => ConfigSource::DynamicTopicConfig,
            Ok(S::DynamicBrokerConfig) => ConfigSource::DynamicBrokerConfig,
            Ok(S::DynamicDefaultBrokerConfig) => ConfigSource::DynamicDefaultBrokerConfig,
            Ok(S::StaticBrokerConfig) => ConfigSource::StaticBrokerConfig,
            Ok(S::DefaultConfig) => ConfigSource::DefaultConfig,
            Ok(S::Unspecified) | Err(_) => ConfigSource::Unknown,
        }
    }
}

impl From<pb::ConfigEntry> for ConfigEntry {
    fn from(e: pb::ConfigEntry) -> Self {
        Self {
            name: e.name,
            value: e.value,
            source: e.source.into(),
            read_only: e.read_only,
            sensitive: e.is_sensitive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_map_to_set_and_delete_ops() {
        let set = config_change(&ConfigChange::Set {
            name: "retention.ms".into(),
            value: "1000".into(),
        });
        assert_eq!(set.op, pb::AlterConfigOp::Set as i32);
        assert_eq!(
            (set.name.as_str(), set.value.as_str()),
            ("retention.ms", "1000")
        );

        let delete = config_change(&ConfigChange::Delete {
            name: "cleanup.policy".into(),
        });
        assert_eq!(delete.op, pb::AlterConfigOp::Delete as i32);
        assert_eq!(delete.name, "cleanup.policy");
        assert_eq!(delete.value, "");
    }

    #[test]
    fn topic_resource_names_the_topic() {
        let r = topic_resource("orders");
        assert_eq!(r.r#type, pb::ConfigResourceType::Topic as i32);
        assert_eq!(r.name, "orders");
    }

    #[test]
    fn config_entries_and_sources() {
        let e = ConfigEntry::from(pb::ConfigEntry {
            name: "retention.ms".into(),
            value: Some("1000".into()),
            source: pb::ConfigSource::DynamicTopicConfig as i32,
            read_only: false,
            is_sensitive: false,
            documentation: None,
        });
        assert_eq!(e.value.as_deref(), Some("1000"));
        assert_eq!(e.source, ConfigSource::DynamicTopicConfig);
        assert_eq!(e.source.as_str(), "DYNAMIC_TOPIC_CONFIG");

        assert_eq!(
            ConfigSource::from(pb::ConfigSource::DefaultConfig as i32),
            ConfigSource::DefaultConfig
        );
        assert_eq!(ConfigSource::from(0), ConfigSource::Unknown);
        assert_eq!(ConfigSource::from(99), ConfigSource::Unknown);
    }
}
