//! Tests of `ErrorCode`: numbering, ranges, and `docs/error-codes.md`.
//!
//! The table in `docs/error-codes.md` is generated from `errors.proto` (names, numbers and
//! comments) and from `ErrorCode::is_retriable`. Regenerate it with
//! `KEEL_BLESS=1 cargo test -p keel-proto` after changing either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use prost_types::{EnumDescriptorProto, FileDescriptorProto};

use crate::contract_test::{comments_by_path, descriptor_set, keel_files, Comments};
use crate::v1::ErrorCode;

/// The documented ranges, as in the comment on `ErrorCode` in errors.proto.
const RANGES: &[(i32, i32, &str)] = &[
    (0, 0, "success"),
    (1, 999, "generic and request validation"),
    (1000, 1999, "partitions, replication and producer state"),
    (2000, 2999, "metadata quorum and controller"),
    (3000, 3999, "consumer groups"),
];

const DOC_HEADER: &str = "| code | name | number | retriable | meaning |";

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/error-codes.md")
}

/// errors.proto, the `ErrorCode` enum in it, and its path among the file's enums.
fn error_code_enum(files: &[&FileDescriptorProto]) -> (FileDescriptorProto, EnumDescriptorProto) {
    for file in files {
        for enumeration in &file.enum_type {
            if enumeration.name() == "ErrorCode" {
                return ((*file).clone(), enumeration.clone());
            }
        }
    }
    panic!("no ErrorCode enum in keel.v1");
}

/// Comments of each `ErrorCode` value, in declaration order.
fn value_comments(file: &FileDescriptorProto) -> Vec<Comments> {
    let index = file
        .enum_type
        .iter()
        .position(|e| e.name() == "ErrorCode")
        .expect("ErrorCode in its file") as i32;
    let comments = comments_by_path(file);
    let count = file.enum_type[index as usize].value.len();
    (0..count as i32)
        .map(|j| {
            comments
                .get(&vec![5, index, 2, j])
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// A section header such as `---- 1000 to 1999: partitions ... ----` in a detached comment.
fn section_range(comment: &str) -> Option<(i32, i32)> {
    let text = comment.trim().strip_prefix("----")?.trim_start();
    let (bounds, _) = text.split_once(':')?;
    let (low, high) = bounds.split_once(" to ")?;
    Some((low.trim().parse().ok()?, high.trim().parse().ok()?))
}

#[test]
fn error_codes_are_unique_and_each_lies_in_its_documented_range() {
    let set = descriptor_set();
    let (file, enumeration) = error_code_enum(&keel_files(&set));
    let comments = value_comments(&file);

    let mut numbers = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut sections = Vec::new();
    // Before the first section header only OK (0) may appear.
    let mut section = (0, 0);
    for (value, comment) in enumeration.value.iter().zip(&comments) {
        let (name, number) = (value.name(), value.number());
        assert!(
            numbers.insert(number),
            "{number} used twice (again by {name})"
        );
        assert!(names.insert(name), "{name} declared twice");

        if let Some(range) = comment.detached.iter().find_map(|c| section_range(c)) {
            section = range;
            sections.push(range);
        }
        assert!(
            (section.0..=section.1).contains(&number),
            "{name} = {number} is declared in the section for {}..={}",
            section.0,
            section.1
        );
        assert!(
            RANGES.iter().any(|r| (r.0..=r.1).contains(&number)),
            "{name} = {number} lies outside every documented range"
        );

        // The generated Rust enum agrees with the .proto file.
        let code = ErrorCode::try_from(number).expect("generated enum knows every number");
        assert_eq!(code.as_str_name(), name);
        assert_eq!(ErrorCode::from_str_name(name), Some(code));
    }
    assert_eq!(numbers.first(), Some(&0), "OK must be 0");
    assert_eq!(enumeration.value[0].name(), "OK");

    // The section headers in errors.proto are the ranges documented here and in the docs.
    let documented: Vec<(i32, i32)> = RANGES[1..].iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        sections, documented,
        "section headers of ErrorCode in errors.proto"
    );

    // Retired numbers and names are never reused (the compiler checks this too, but only if
    // they were declared `reserved`).
    for range in &enumeration.reserved_range {
        for number in &numbers {
            assert!(
                !(range.start()..=range.end()).contains(number),
                "{number} is retired"
            );
        }
    }
    for name in &enumeration.reserved_name {
        assert!(!names.contains(name.as_str()), "{name} is retired");
    }
}

#[test]
fn retriability_follows_kafka_for_well_known_codes() {
    for code in [
        ErrorCode::NotLeader,
        ErrorCode::LeaderNotAvailable,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::RequestTimedOut,
        ErrorCode::NotController,
        ErrorCode::NotCoordinator,
        ErrorCode::UnknownTopicOrPartition,
    ] {
        assert!(code.is_retriable(), "{code:?} should be retriable");
    }
    for code in [
        ErrorCode::Ok,
        ErrorCode::InvalidRequest,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::ProducerFenced,
        ErrorCode::FencedMemberEpoch,
        ErrorCode::StaleBrokerEpoch,
    ] {
        assert!(!code.is_retriable(), "{code:?} should not be retriable");
    }
}

/// One row of the codes table.
#[derive(Debug, PartialEq)]
struct DocRow {
    code: String,
    name: String,
    number: i32,
    retriable: bool,
    meaning: String,
}

/// Joins a comment's lines into one line of table text.
fn one_line(comment: &str) -> String {
    comment
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn expected_rows() -> Vec<DocRow> {
    let set = descriptor_set();
    let (file, enumeration) = error_code_enum(&keel_files(&set));
    let comments = value_comments(&file);
    let mut rows: Vec<DocRow> = enumeration
        .value
        .iter()
        .zip(&comments)
        .map(|(value, comment)| {
            let code = ErrorCode::try_from(value.number()).expect("known number");
            DocRow {
                code: value.name().to_owned(),
                name: format!("{code:?}"),
                number: value.number(),
                retriable: code.is_retriable(),
                meaning: one_line(&comment.leading),
            }
        })
        .collect();
    rows.sort_by_key(|r| r.number);
    rows
}

/// The whole of docs/error-codes.md, generated from errors.proto and `is_retriable`.
fn render_doc() -> String {
    let set = descriptor_set();
    let (_, enumeration) = error_code_enum(&keel_files(&set));
    let mut out = String::new();
    out.push_str("# Keel error codes\n\n");
    out.push_str(
        "<!-- Generated from proto/proto/keel/v1/errors.proto and ErrorCode::is_retriable by \
         `KEEL_BLESS=1 cargo test -p keel-proto`. Do not edit by hand: edit errors.proto (or \
         proto/src/error.rs) and regenerate. A unit test fails when this file and the enum \
         differ. -->\n\n",
    );
    out.push_str(
        "Every Keel response reports failures with a `keel.v1.Error` whose `code` is one of the \
         `keel.v1.ErrorCode` values below. Names and meanings follow Apache Kafka's error codes \
         where Kafka has an equivalent; the meaning ends with Kafka's name and number.\n\n",
    );
    out.push_str(
        "Numbers are explicit and grouped in ranges. A removed code is retired: its number and \
         name are never used again.\n\n",
    );
    out.push_str("| range | kind |\n|---|---|\n");
    for (low, high, kind) in RANGES {
        if low == high {
            out.push_str(&format!("| {low} | {kind} |\n"));
        } else {
            out.push_str(&format!("| {low}–{high} | {kind} |\n"));
        }
    }
    out.push_str(
        "\nColumns: **code** is the value's name in the `.proto` file (and in JSON); **name** is \
         the Rust variant of `keel_proto::v1::ErrorCode`; **retriable** is \
         `ErrorCode::is_retriable`, which servers copy into `Error.retriable`; **meaning** is the \
         value's comment in `errors.proto`.\n\n",
    );
    out.push_str(DOC_HEADER);
    out.push_str("\n|---|---|---:|---|---|\n");
    for row in expected_rows() {
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} |\n",
            row.code,
            row.name,
            row.number,
            if row.retriable { "yes" } else { "no" },
            row.meaning
        ));
    }
    out.push_str("\n## Retired codes\n\n");
    let mut retired: BTreeMap<String, String> = BTreeMap::new();
    for range in &enumeration.reserved_range {
        let key = if range.start() == range.end() {
            range.start().to_string()
        } else {
            format!("{}–{}", range.start(), range.end())
        };
        retired.insert(format!("number {key}"), String::new());
    }
    for name in &enumeration.reserved_name {
        retired.insert(format!("name `{name}`"), String::new());
    }
    if retired.is_empty() {
        out.push_str("None.\n");
    } else {
        for key in retired.keys() {
            out.push_str(&format!("- {key}\n"));
        }
    }
    out
}

/// Parses the codes table of the markdown file.
fn parse_doc_rows(doc: &str) -> Vec<DocRow> {
    let mut lines = doc.lines().skip_while(|l| l.trim() != DOC_HEADER);
    assert!(lines.next().is_some(), "no `{DOC_HEADER}` table in the doc");
    lines.next(); // the |---| separator
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .splitn(5, " | ")
                .map(|c| c.trim())
                .collect();
            assert_eq!(cells.len(), 5, "malformed row: {line}");
            DocRow {
                code: cells[0].trim_matches('`').to_owned(),
                name: cells[1].trim_matches('`').to_owned(),
                number: cells[2]
                    .parse()
                    .unwrap_or_else(|_| panic!("bad number in: {line}")),
                retriable: match cells[3] {
                    "yes" => true,
                    "no" => false,
                    other => panic!("retriable must be yes or no, not {other:?}: {line}"),
                },
                meaning: cells[4].to_owned(),
            }
        })
        .collect()
}

#[test]
fn error_codes_doc_matches_the_enum() {
    let path = doc_path();
    if std::env::var_os("KEEL_BLESS").is_some() {
        std::fs::write(&path, render_doc()).expect("write docs/error-codes.md");
    }
    let doc =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));

    // Row by row against the generated enum: every documented code exists, with this name,
    // number and retriability.
    let rows = parse_doc_rows(&doc);
    let mut documented = BTreeSet::new();
    for row in &rows {
        assert!(
            documented.insert(row.number),
            "{} documented twice",
            row.number
        );
        let code = ErrorCode::try_from(row.number)
            .unwrap_or_else(|_| panic!("documented code {} is not in ErrorCode", row.number));
        assert_eq!(code.as_str_name(), row.code, "code of {}", row.number);
        assert_eq!(format!("{code:?}"), row.name, "Rust name of {}", row.code);
        assert_eq!(
            code.is_retriable(),
            row.retriable,
            "retriable of {}",
            row.code
        );
        assert!(!row.meaning.is_empty(), "{} has no meaning", row.code);
    }

    // Every code of the enum is documented.
    for row in expected_rows() {
        assert!(
            documented.contains(&row.number),
            "{} = {} is missing from docs/error-codes.md (run KEEL_BLESS=1 cargo test -p keel-proto)",
            row.code,
            row.number
        );
    }

    // And the text is exactly what errors.proto generates (meanings included).
    assert!(
        doc == render_doc(),
        "docs/error-codes.md is stale: run KEEL_BLESS=1 cargo test -p keel-proto"
    );
}

#[test]
fn doc_parser_reads_rows_and_rejects_unknown_codes() {
    let doc = format!(
        "intro\n\n{DOC_HEADER}\n|---|---|---:|---|---|\n\
         | `NOT_LEADER` | `NotLeader` | 1000 | yes | Not the leader \\| moved. |\n\
         | `NOPE` | `Nope` | 4242 | no | Not a code. |\n\nafter\n"
    );
    let rows = parse_doc_rows(&doc);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        DocRow {
            code: "NOT_LEADER".into(),
            name: "NotLeader".into(),
            number: 1000,
            retriable: true,
            meaning: "Not the leader \\| moved.".into(),
        }
    );
    assert!(ErrorCode::try_from(rows[1].number).is_err());
}

#[test]
fn section_headers_parse() {
    assert_eq!(
        section_range("---- 1000 to 1999: partitions ----"),
        Some((1000, 1999))
    );
    assert_eq!(section_range(" Retired codes. 17 to 18: x"), None);
}
