//! Tests of the contract as a whole: every element is documented, enums follow the naming
//! rules, and messages keep their wire encoding. Also the descriptor helpers shared with
//! `error_test.rs`.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

use crate::v1::{
    partition_produce_data, Acks, Error, ErrorCode, IdempotentProducer, PartitionProduceData,
    ProduceRequest, ProducerRecord, ProducerRecords, RecordHeader, TopicProduceData,
};

// Field numbers inside descriptor.proto, used to build source-location paths.
const FILE_MESSAGE_TYPE: i32 = 4;
const FILE_ENUM_TYPE: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED_TYPE: i32 = 3;
const MESSAGE_ENUM_TYPE: i32 = 4;
const MESSAGE_ONEOF_DECL: i32 = 8;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

/// The package's descriptor set as built by `build.rs`, with source comments.
pub(crate) fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).expect("embedded descriptor set decodes")
}

/// The files of package `keel.v1` (imports from other packages, if any, left out).
pub(crate) fn keel_files(set: &FileDescriptorSet) -> Vec<&FileDescriptorProto> {
    let files: Vec<_> = set
        .file
        .iter()
        .filter(|f| f.package() == "keel.v1")
        .collect();
    assert!(!files.is_empty(), "descriptor set holds no keel.v1 file");
    files
}

/// Comments of one source element.
#[derive(Default, Clone)]
pub(crate) struct Comments {
    pub(crate) leading: String,
    pub(crate) trailing: String,
    pub(crate) detached: Vec<String>,
}

/// Comments of a file's elements, by source-location path.
pub(crate) fn comments_by_path(file: &FileDescriptorProto) -> HashMap<Vec<i32>, Comments> {
    let info = file
        .source_code_info
        .as_ref()
        .unwrap_or_else(|| panic!("{} has no source info", file.name()));
    info.location
        .iter()
        .map(|loc| {
            let comments = Comments {
                leading: loc.leading_comments().trim().to_owned(),
                trailing: loc.trailing_comments().trim().to_owned(),
                detached: loc.leading_detached_comments.clone(),
            };
            (loc.path.clone(), comments)
        })
        .collect()
}

/// Walks every documentable element of `file` and returns the names of those without a
/// leading or trailing comment.
fn undocumented(file: &FileDescriptorProto) -> Vec<String> {
    let comments = comments_by_path(file);
    let mut missing = Vec::new();
    let mut check = |path: &[i32], what: String| {
        let documented = comments
            .get(path)
            .is_some_and(|c| !c.leading.is_empty() || !c.trailing.is_empty());
        if !documented {
            missing.push(format!("{}: {what}", file.name()));
        }
    };

    for (i, service) in file.service.iter().enumerate() {
        let path = vec![FILE_SERVICE, i as i32];
        check(&path, format!("service {}", service.name()));
        for (j, method) in service.method.iter().enumerate() {
            let mut p = path.clone();
            p.extend([SERVICE_METHOD, j as i32]);
            check(&p, format!("rpc {}.{}", service.name(), method.name()));
        }
    }
    for (i, enumeration) in file.enum_type.iter().enumerate() {
        check_enum(&mut check, vec![FILE_ENUM_TYPE, i as i32], enumeration);
    }
    for (i, message) in file.message_type.iter().enumerate() {
        check_message(&mut check, vec![FILE_MESSAGE_TYPE, i as i32], message);
    }
    missing
}

fn check_enum(
    check: &mut impl FnMut(&[i32], String),
    path: Vec<i32>,
    enumeration: &prost_types::EnumDescriptorProto,
) {
    check(&path, format!("enum {}", enumeration.name()));
    for (j, value) in enumeration.value.iter().enumerate() {
        let mut p = path.clone();
        p.extend([ENUM_VALUE, j as i32]);
        check(
            &p,
            format!("enum value {}.{}", enumeration.name(), value.name()),
        );
    }
}

fn check_message(
    check: &mut impl FnMut(&[i32], String),
    path: Vec<i32>,
    message: &prost_types::DescriptorProto,
) {
    // Map entries are synthesized by the compiler and have no source of their own.
    if message.options.as_ref().is_some_and(|o| o.map_entry()) {
        return;
    }
    check(&path, format!("message {}", message.name()));
    for (j, field) in message.field.iter().enumerate() {
        let mut p = path.clone();
        p.extend([MESSAGE_FIELD, j as i32]);
        check(&p, format!("field {}.{}", message.name(), field.name()));
    }
    for (j, oneof) in message.oneof_decl.iter().enumerate() {
        // proto3 `optional` creates a synthetic oneof per field; only real ones are documented.
        let synthetic = message
            .field
            .iter()
            .any(|f| f.oneof_index == Some(j as i32) && f.proto3_optional());
        if !synthetic {
            let mut p = path.clone();
            p.extend([MESSAGE_ONEOF_DECL, j as i32]);
            check(&p, format!("oneof {}.{}", message.name(), oneof.name()));
        }
    }
    for (j, nested) in message.nested_type.iter().enumerate() {
        let mut p = path.clone();
        p.extend([MESSAGE_NESTED_TYPE, j as i32]);
        check_message(check, p, nested);
    }
    for (j, nested) in message.enum_type.iter().enumerate() {
        let mut p = path.clone();
        p.extend([MESSAGE_ENUM_TYPE, j as i32]);
        check_enum(check, p, nested);
    }
}

#[test]
fn every_service_rpc_message_field_and_enum_value_is_documented() {
    let set = descriptor_set();
    let missing: Vec<String> = keel_files(&set)
        .into_iter()
        .flat_map(undocumented)
        .collect();
    assert!(
        missing.is_empty(),
        "undocumented elements (the .proto files are the API reference):\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_file_has_a_header_comment_and_the_expected_package() {
    let set = descriptor_set();
    for file in keel_files(&set) {
        assert!(
            file.name().starts_with("keel/v1/"),
            "{} is not under keel/v1/",
            file.name()
        );
        let header = comments_by_path(file)
            .get(&vec![12]) // FileDescriptorProto.syntax: the comment block above `syntax`
            .map(|c| c.detached.join("").trim().len() + c.leading.len())
            .unwrap_or(0);
        assert!(header > 0, "{} has no header comment", file.name());
    }
}

/// Every enum except `ErrorCode` (whose values carry Kafka's bare names) prefixes its values
/// with its own name in SCREAMING_SNAKE_CASE and starts with `<PREFIX>_UNSPECIFIED = 0`.
#[test]
fn enums_have_prefixed_values_and_an_unspecified_zero() {
    let set = descriptor_set();
    let mut checked = 0;
    for file in keel_files(&set) {
        for enumeration in &file.enum_type {
            if enumeration.name() == "ErrorCode" {
                continue;
            }
            let prefix = screaming_snake(enumeration.name());
            let zero = enumeration
                .value
                .iter()
                .find(|v| v.number() == 0)
                .unwrap_or_else(|| panic!("enum {} has no zero value", enumeration.name()));
            assert_eq!(zero.name(), format!("{prefix}_UNSPECIFIED"));
            for value in &enumeration.value {
                assert!(
                    value.name().starts_with(&format!("{prefix}_")),
                    "{}.{} lacks the prefix {prefix}_",
                    enumeration.name(),
                    value.name()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > 5,
        "expected the contract's enums, found {checked}"
    );
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[test]
fn screaming_snake_splits_camel_case() {
    assert_eq!(
        screaming_snake("ConfigResourceType"),
        "CONFIG_RESOURCE_TYPE"
    );
    assert_eq!(screaming_snake("Acks"), "ACKS");
}

fn raw_batch_request() -> ProduceRequest {
    ProduceRequest {
        acks: Acks::All as i32,
        timeout_ms: 1500,
        topics: vec![TopicProduceData {
            topic: "t".into(),
            partitions: vec![PartitionProduceData {
                partition: 1,
                data: Some(partition_produce_data::Data::RecordBatches(
                    Bytes::from_static(&[0x01, 0x02]),
                )),
            }],
        }],
    }
}

/// The wire bytes of a small request, worked out by hand from the field numbers. Fails when a
/// field is renumbered or changes type: a breaking change for every client.
#[test]
fn produce_request_has_the_documented_wire_encoding() {
    let expected: &[u8] = &[
        0x08, 0x03, // acks = ACKS_ALL (3)
        0x10, 0xdc, 0x0b, // timeout_ms = 1500
        0x1a, 0x0b, // topics[0], 11 bytes
        0x0a, 0x01, b't', // topic = "t"
        0x12, 0x06, // partitions[0], 6 bytes
        0x08, 0x01, // partition = 1
        0x1a, 0x02, 0x01, 0x02, // record_batches = 01 02
    ];
    assert_eq!(raw_batch_request().encode_to_vec(), expected);
    assert_eq!(
        ProduceRequest::decode(expected).unwrap(),
        raw_batch_request()
    );
}

#[test]
fn produce_request_round_trips_structured_records_with_presence() {
    let request = ProduceRequest {
        acks: Acks::Leader as i32,
        timeout_ms: 30_000,
        topics: vec![TopicProduceData {
            topic: "orders".into(),
            partitions: vec![
                PartitionProduceData {
                    partition: 0,
                    data: Some(partition_produce_data::Data::Records(ProducerRecords {
                        records: vec![
                            ProducerRecord {
                                key: None,
                                value: Some(Bytes::new()),
                                headers: vec![RecordHeader {
                                    key: "trace".into(),
                                    value: None,
                                }],
                                timestamp: Some(1_700_000_000_000),
                            },
                            ProducerRecord {
                                key: Some(Bytes::from_static(b"k")),
                                value: None,
                                headers: vec![],
                                timestamp: None,
                            },
                        ],
                        idempotent_producer: Some(IdempotentProducer {
                            producer_id: 42,
                            producer_epoch: 0,
                            base_sequence: 7,
                        }),
                    })),
                },
                raw_batch_request().topics[0].partitions[0].clone(),
            ],
        }],
    };

    let decoded = ProduceRequest::decode(request.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, request);

    // proto3 `optional` keeps null apart from empty, which Kafka's records need.
    let Some(partition_produce_data::Data::Records(records)) =
        &decoded.topics[0].partitions[0].data
    else {
        panic!("structured records expected");
    };
    assert_eq!(records.records[0].key, None);
    assert_eq!(records.records[0].value, Some(Bytes::new()));
    assert_eq!(records.records[0].headers[0].value, None);
    assert_eq!(records.records[1].timestamp, None);
    assert_eq!(decoded.acks(), Acks::Leader);
}

#[test]
fn unspecified_acks_decode_as_the_zero_value() {
    // ACKS_UNSPECIFIED must stay 0 so that a request without acks means "all" (see Acks).
    let request = ProduceRequest::decode(&[][..]).unwrap();
    assert_eq!(request.acks(), Acks::Unspecified);
    assert_eq!(Acks::Unspecified as i32, 0);
}

#[test]
fn error_new_fills_retriable_from_the_code() {
    let not_leader = Error::new(ErrorCode::NotLeader, "leader moved");
    assert_eq!(not_leader.code(), ErrorCode::NotLeader);
    assert!(not_leader.retriable);
    assert_eq!(not_leader.message, "leader moved");
    assert_eq!(not_leader.leader_id, None);

    let out_of_range = Error::new(ErrorCode::OffsetOutOfRange, "");
    assert!(!out_of_range.retriable);
}
