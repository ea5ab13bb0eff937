//! Renderers on constructed results: columns, values, and the JSON shape scripts rely on.

use super::*;
use keel_client::{BrokerInfo, BrokerState, ConfigChange, PartitionMetadata, QuorumMember};
use serde_json::{json, Value};

const ID: TopicId = TopicId([
    0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00,
]);
const ID_TEXT: &str = "123e4567-e89b-12d3-a456-426614174000";

/// The cells of a rendered table: one vector per line, split at runs of two or more spaces
/// (cells themselves hold at most single spaces).
fn cells(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

fn json_of(report: &Report) -> Value {
    serde_json::from_str(&report.render(OutputFormat::Json)).expect("one JSON document")
}

fn partition(p: i32, leader: Option<i32>, replicas: &[i32], isr: &[i32]) -> PartitionMetadata {
    PartitionMetadata {
        partition: p,
        error: None,
        leader,
        leader_epoch: 4,
        partition_epoch: 9,
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        offline_replicas: replicas
            .iter()
            .copied()
            .filter(|r| !isr.contains(r))
            .collect(),
    }
}

fn orders() -> TopicMetadata {
    TopicMetadata {
        name: "orders".into(),
        error: None,
        topic_id: Some(ID),
        internal: false,
        partitions: vec![
            partition(0, Some(1), &[1, 2, 3], &[1, 2, 3]),
            partition(1, None, &[2, 3, 1], &[]),
        ],
        configs: [("retention.ms".to_string(), "1000".to_string())].into(),
    }
}

#[test]
fn topic_describe_table() {
    let text = Report::TopicDescription(orders()).render(OutputFormat::Table);
    let sections: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(sections.len(), 3, "{text}");

    assert_eq!(
        cells(sections[0]),
        [
            vec![
                "TOPIC",
                "TOPIC ID",
                "PARTITIONS",
                "REPLICATION FACTOR",
                "INTERNAL"
            ],
            vec!["orders", ID_TEXT, "2", "3", "false"],
        ]
    );
    assert_eq!(
        cells(sections[1]),
        [vec!["CONFIG", "VALUE"], vec!["retention.ms", "1000"]]
    );
    assert_eq!(
        cells(sections[2]),
        [
            vec![
                "PARTITION",
                "LEADER",
                "LEADER EPOCH",
                "REPLICAS",
                "ISR",
                "OFFLINE REPLICAS"
            ],
            vec!["0", "1", "4", "1,2,3", "1,2,3", "-"],
            vec!["1", "-", "4", "2,3,1", "-", "2,3,1"],
        ]
    );
    assert!(text.ends_with('\n'));
    assert!(
        text.lines().all(|l| l == l.trim_end()),
        "trailing blanks:\n{text}"
    );
}

#[test]
fn topic_describe_without_overrides_has_no_config_section() {
    let mut t = orders();
    t.configs.clear();
    let text = Report::TopicDescription(t).render(OutputFormat::Table);
    assert_eq!(text.split("\n\n").count(), 2, "{text}");
    assert!(!text.contains("CONFIG"));
}

#[test]
fn topic_describe_json() {
    let v = json_of(&Report::TopicDescription(orders()));
    assert_eq!(v["name"], "orders");
    assert_eq!(v["topic_id"], ID_TEXT);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["configs"], json!({"retention.ms": "1000"}));
    assert_eq!(v["partitions"][0]["leader"], 1);
    assert_eq!(v["partitions"][0]["isr"], json!([1, 2, 3]));
    assert_eq!(v["partitions"][1]["leader"], Value::Null);
    assert_eq!(v["partitions"][1]["offline_replicas"], json!([2, 3, 1]));
}

#[test]
fn topic_list_table_and_json() {
    let topics = vec![
        TopicSummary::from(&orders()),
        TopicSummary {
            name: "__consumer_offsets".into(),
            topic_id: None,
            partitions: 50,
            replication_factor: 3,
            internal: true,
        },
    ];
    let report = Report::TopicList(topics);
    assert_eq!(
        cells(&report.render(OutputFormat::Table)),
        [
            vec![
                "TOPIC",
                "TOPIC ID",
                "PARTITIONS",
                "REPLICATION FACTOR",
                "INTERNAL"
            ],
            vec!["orders", ID_TEXT, "2", "3", "false"],
            vec!["__consumer_offsets", "-", "50", "3", "true"],
        ]
    );
    let v = json_of(&report);
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert_eq!(
        v[0],
        json!({"name": "orders", "topic_id": ID_TEXT, "partitions": 2,
               "replication_factor": 3, "internal": false})
    );
}

#[test]
fn an_empty_topic_list_is_a_header_or_an_empty_array() {
    let report = Report::TopicList(vec![]);
    assert_eq!(
        cells(&report.render(OutputFormat::Table)),
        [vec![
            "TOPIC",
            "TOPIC ID",
            "PARTITIONS",
            "REPLICATION FACTOR",
            "INTERNAL"
        ]]
    );
    assert_eq!(json_of(&report), json!([]));
}

fn created(validate_only: bool) -> Report {
    Report::TopicCreated(TopicCreated {
        topic: CreatedTopic {
            name: "orders".into(),
            error: None,
            topic_id: (!validate_only).then_some(ID),
            num_partitions: 6,
            replication_factor: 3,
            configs: [("cleanup.policy".to_string(), "delete".to_string())].into(),
        },
        validate_only,
    })
}

#[test]
fn topic_create_table_and_json() {
    assert_eq!(
        cells(&created(false).render(OutputFormat::Table)),
        [
            vec![
                "TOPIC",
                "TOPIC ID",
                "PARTITIONS",
                "REPLICATION FACTOR",
                "STATUS"
            ],
            vec!["orders", ID_TEXT, "6", "3", "created"],
        ]
    );
    assert_eq!(
        cells(&created(true).render(OutputFormat::Table))[1],
        [
            "orders",
            "-",
            "6",
            "3",
            "valid (validate only: not created)"
        ]
    );
    let v = json_of(&created(true));
    assert_eq!(v["name"], "orders");
    assert_eq!(v["topic_id"], Value::Null);
    assert_eq!(v["num_partitions"], 6);
    assert_eq!(v["validate_only"], true);
    assert_eq!(v["configs"]["cleanup.policy"], "delete");
}

#[test]
fn delete_alter_and_add_partitions() {
    let deleted = Report::TopicDeleted(DeletedTopic {
        name: "orders".into(),
        topic_id: Some(ID),
        error: None,
    });
    assert_eq!(
        cells(&deleted.render(OutputFormat::Table))[1],
        ["orders", ID_TEXT, "deleted"]
    );

    let altered = Report::ConfigsAltered(ConfigsAltered {
        topic: "orders".into(),
        changes: vec![
            ConfigChange::Set {
                name: "retention.ms".into(),
                value: "1000".into(),
            },
            ConfigChange::Delete {
                name: "cleanup.policy".into(),
            },
        ],
    });
    assert_eq!(
        cells(&altered.render(OutputFormat::Table)),
        [
            vec!["TOPIC", "CONFIG", "ACTION", "VALUE"],
            vec!["orders", "retention.ms", "set", "1000"],
            vec!["orders", "cleanup.policy", "delete", "-"],
        ]
    );
    assert_eq!(
        json_of(&altered),
        json!({"topic": "orders", "changes": [
            {"op": "set", "name": "retention.ms", "value": "1000"},
            {"op": "delete", "name": "cleanup.policy"},
        ]})
    );

    let added = Report::PartitionsAdded(PartitionsAdded {
        topic: "orders".into(),
        partitions: 12,
    });
    assert_eq!(
        cells(&added.render(OutputFormat::Table)),
        [vec!["TOPIC", "PARTITIONS"], vec!["orders", "12"]]
    );
    assert_eq!(
        json_of(&added),
        json!({"topic": "orders", "partitions": 12})
    );
}

fn cluster() -> Report {
    let broker = |id: i32, rack: Option<&str>, state| BrokerInfo {
        id,
        host: format!("keel-{id}.keel"),
        port: 9292,
        rack: rack.map(str::to_string),
        state,
        decommissioning: false,
        replica_count: 0,
    };
    Report::Cluster(ClusterDescription {
        cluster_id: "kc-1".into(),
        controller_id: Some(1),
        brokers: vec![
            broker(1, Some("a"), BrokerState::Unfenced),
            broker(2, None, BrokerState::Fenced),
        ],
        metadata_offset: 42,
    })
}

#[test]
fn cluster_describe_table_and_json() {
    let text = cluster().render(OutputFormat::Table);
    let sections: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(
        cells(sections[0]),
        [
            vec!["CLUSTER ID", "CONTROLLER", "METADATA OFFSET"],
            vec!["kc-1", "1", "42"],
        ]
    );
    assert_eq!(
        cells(sections[1]),
        [
            vec!["BROKER", "ADDRESS", "RACK", "STATE"],
            vec!["1", "keel-1.keel:9292", "a", "unfenced"],
            vec!["2", "keel-2.keel:9292", "-", "fenced"],
        ]
    );
    let v = json_of(&cluster());
    assert_eq!(v["cluster_id"], "kc-1");
    assert_eq!(v["controller_id"], 1);
    assert_eq!(
        v["brokers"][1],
        json!({"id": 2, "host": "keel-2.keel", "port": 9292, "rack": null, "state": "fenced",
            "decommissioning": false, "replica_count": 0})
    );
}

fn quorum() -> Report {
    let member =
        |id: i32, last: Option<u64>, lag: Option<u64>, contact: Option<i64>| QuorumMember {
            node_id: id,
            endpoint: format!("keel-{id}.keel:9293"),
            last_log_index: last,
            lag,
            last_contact_ms: contact,
        };
    Report::Quorum(QuorumDescription {
        leader_id: Some(1),
        term: 7,
        commit_index: 130,
        voters: vec![
            member(1, Some(130), Some(0), Some(0)),
            member(2, Some(128), Some(2), Some(45)),
            member(3, None, None, None),
        ],
        learners: vec![member(4, Some(100), Some(30), Some(120))],
    })
}

#[test]
fn quorum_describe_table_and_json() {
    let text = quorum().render(OutputFormat::Table);
    let sections: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(
        cells(sections[0]),
        [
            vec!["LEADER", "TERM", "COMMIT INDEX"],
            vec!["1", "7", "130"]
        ]
    );
    assert_eq!(
        cells(sections[1]),
        [
            vec![
                "NODE",
                "ROLE",
                "ENDPOINT",
                "LAST LOG INDEX",
                "LAG",
                "LAST CONTACT MS"
            ],
            vec!["1", "leader", "keel-1.keel:9293", "130", "0", "0"],
            vec!["2", "voter", "keel-2.keel:9293", "128", "2", "45"],
            vec!["3", "voter", "keel-3.keel:9293", "-", "-", "-"],
            vec!["4", "learner", "keel-4.keel:9293", "100", "30", "120"],
        ]
    );
    let v = json_of(&quorum());
    assert_eq!(v["leader_id"], 1);
    assert_eq!(v["term"], 7);
    assert_eq!(v["voters"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["voters"][2]["lag"], Value::Null);
    assert_eq!(v["learners"][0]["node_id"], 4);
}
