//! Group state as records of `__consumer_offsets`, and back.
//!
//! Each record's key is a `GroupRecordKey` (kind, group, member or topic/partition) and its
//! value the matching `Stored*` message of internal.proto; an empty value deletes the key. A
//! coordinator replays a partition from its start, latest record per key winning. A snapshot
//! batch (first record of kind SNAPSHOT) holds the whole state of the partition's groups and
//! supersedes everything before it, so the log before the last snapshot may be deleted.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use keel_metadata::records::TopicId;
use keel_proto::v1::{self as pb, GroupRecordKind as Kind};
use keel_storage::batch::NewRecord;
use prost::Message;

use super::assignor::TopicPartition;
use super::group::{Change, Committed, Group, Member, Subscription};

/// The stored format's version.
const VERSION: i32 = 1;

/// A decoded record: key and value (`None`: delete).
pub type Entry = (pb::GroupRecordKey, Option<Bytes>);

fn key(kind: Kind, group: &str) -> pb::GroupRecordKey {
    pb::GroupRecordKey {
        version: VERSION,
        kind: kind as i32,
        group_id: group.to_owned(),
        ..Default::default()
    }
}

fn member_key(kind: Kind, group: &str, member: &str) -> pb::GroupRecordKey {
    pb::GroupRecordKey {
        member_id: member.to_owned(),
        ..key(kind, group)
    }
}

fn offset_key(group: &str, topic: &str, partition: i32) -> pb::GroupRecordKey {
    pb::GroupRecordKey {
        topic: topic.to_owned(),
        partition,
        ..key(Kind::Offset, group)
    }
}

fn encode<M: Message>(m: &M) -> Option<Bytes> {
    Some(Bytes::from(m.encode_to_vec()))
}

fn stored_partitions(set: &BTreeSet<TopicPartition>) -> Vec<pb::StoredPartitions> {
    let mut by_topic: BTreeMap<TopicId, Vec<i32>> = BTreeMap::new();
    for (t, p) in set {
        by_topic.entry(*t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(t, partitions)| pb::StoredPartitions {
            topic_id: crate::services::convert::topic_id_bytes(t),
            partitions,
        })
        .collect()
}

fn partition_set(stored: &[pb::StoredPartitions]) -> BTreeSet<TopicPartition> {
    stored
        .iter()
        .filter_map(|s| Some((crate::services::convert::parse_topic_id(&s.topic_id)?, s)))
        .flat_map(|(t, s)| s.partitions.iter().map(move |p| (t, *p)))
        .collect()
}

fn group_value(g: &Group) -> Option<Bytes> {
    encode(&pb::StoredGroup {
        epoch: g.epoch,
        target_epoch: g.target_epoch,
        assignor: g.assignor.clone(),
    })
}

fn member_value(m: &Member) -> Option<Bytes> {
    encode(&pb::StoredMember {
        instance_id: m.instance_id.clone().unwrap_or_default(),
        rack_id: m.rack_id.clone().unwrap_or_default(),
        epoch: m.epoch,
        previous_epoch: m.previous_epoch,
        topic_names: m.subscription.names.iter().cloned().collect(),
        topic_regex: m.subscription.pattern().unwrap_or_default(),
        assignor: m.assignor.clone().unwrap_or_default(),
        rebalance_timeout_ms: m.rebalance_timeout_ms,
        assigned: stored_partitions(&m.assigned),
        revoking: stored_partitions(&m.revoking),
        left_temporarily: m.left_temporarily,
    })
}

fn offset_value(c: &Committed) -> Option<Bytes> {
    encode(&pb::StoredOffset {
        offset: c.offset,
        leader_epoch: c.leader_epoch.unwrap_or(-1),
        metadata: c.metadata.clone(),
        commit_timestamp: c.commit_timestamp,
    })
}

/// The records that persist `changes` of `g` (its state after them).
pub fn entries(g: &Group, changes: &[Change]) -> Vec<Entry> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for c in changes {
        if !seen.insert(format!("{c:?}")) {
            continue;
        }
        out.push(match c {
            Change::Group => (key(Kind::Group, &g.id), group_value(g)),
            Change::GroupGone => (key(Kind::Group, &g.id), None),
            Change::Member(m) => match g.members.get(m) {
                Some(member) => (member_key(Kind::Member, &g.id, m), member_value(member)),
                None => (member_key(Kind::Member, &g.id, m), None),
            },
            Change::MemberGone(m) => (member_key(Kind::Member, &g.id, m), None),
            Change::Target(m) => {
                let set = g.target.get(m).cloned().unwrap_or_default();
                let value = encode(&pb::StoredTarget {
                    partitions: stored_partitions(&set),
                });
                (member_key(Kind::Target, &g.id, m), value)
            }
            Change::Offset(t, p) => {
                let value = g.offsets.get(&(t.clone(), *p)).and_then(offset_value);
                (offset_key(&g.id, t, *p), value)
            }
            Change::OffsetGone(t, p) => (offset_key(&g.id, t, *p), None),
        });
    }
    out
}

/// The whole state of `groups` as one snapshot: a marker, then every group's records.
pub fn snapshot<'a>(groups: impl Iterator<Item = &'a Group>) -> Vec<Entry> {
    let mut out = vec![(key(Kind::Snapshot, ""), None)];
    for g in groups {
        let mut changes = vec![Change::Group];
        changes.extend(g.members.keys().map(|m| Change::Member(m.clone())));
        changes.extend(g.target.keys().map(|m| Change::Target(m.clone())));
        changes.extend(g.offsets.keys().map(|(t, p)| Change::Offset(t.clone(), *p)));
        out.extend(entries(g, &changes));
    }
    out
}

/// Entries as records of one batch.
pub fn to_records(entries: &[Entry], now_ms: i64) -> Vec<NewRecord> {
    entries
        .iter()
        .map(|(k, v)| NewRecord {
            timestamp: now_ms,
            key: Some(Bytes::from(k.encode_to_vec())),
            value: v.clone(),
            headers: vec![],
        })
        .collect()
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    #[error("undecodable group record: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("group record of unknown version {0}")]
    Version(i32),
}

/// Decodes one record; `None` for a record without a key (not ours: ignored).
pub fn decode(key: Option<&Bytes>, value: Option<&Bytes>) -> Result<Option<Entry>, StoredError> {
    let Some(k) = key else { return Ok(None) };
    let k = pb::GroupRecordKey::decode(k.clone())?;
    if k.version != VERSION {
        return Err(StoredError::Version(k.version));
    }
    Ok(Some((k, value.filter(|v| !v.is_empty()).cloned())))
}

/// Whether an entry starts a snapshot.
pub fn is_snapshot(e: &Entry) -> bool {
    e.0.kind() == Kind::Snapshot
}

/// Replays one record into `groups`.
pub fn apply(groups: &mut BTreeMap<String, Group>, e: Entry) -> Result<(), StoredError> {
    let (k, value) = e;
    let group = || Group {
        subscribed: None,
        ..Group::new(&k.group_id)
    };
    match (k.kind(), value) {
        (Kind::Snapshot, _) => groups.clear(),
        (Kind::Group, None) => {
            groups.remove(&k.group_id);
        }
        (Kind::Group, Some(v)) => {
            let s = pb::StoredGroup::decode(v)?;
            let g = groups.entry(k.group_id.clone()).or_insert_with(group);
            (g.epoch, g.target_epoch, g.assignor) = (s.epoch, s.target_epoch, s.assignor);
        }
        (Kind::Member, None) => {
            if let Some(g) = groups.get_mut(&k.group_id) {
                g.members.remove(&k.member_id);
                g.target.remove(&k.member_id);
            }
        }
        (Kind::Member, Some(v)) => {
            let m = stored_member(&k.member_id, pb::StoredMember::decode(v)?);
            let g = groups.entry(k.group_id.clone()).or_insert_with(group);
            g.members.insert(k.member_id.clone(), m);
        }
        (Kind::Target, v) => {
            let set = match v {
                Some(v) => partition_set(&pb::StoredTarget::decode(v)?.partitions),
                None => BTreeSet::new(),
            };
            let g = groups.entry(k.group_id.clone()).or_insert_with(group);
            g.target.insert(k.member_id.clone(), set);
        }
        (Kind::Offset, None) => {
            if let Some(g) = groups.get_mut(&k.group_id) {
                g.offsets.remove(&(k.topic.clone(), k.partition));
            }
        }
        (Kind::Offset, Some(v)) => {
            let s = pb::StoredOffset::decode(v)?;
            let g = groups.entry(k.group_id.clone()).or_insert_with(group);
            let c = Committed {
                offset: s.offset,
                leader_epoch: (s.leader_epoch >= 0).then_some(s.leader_epoch),
                metadata: s.metadata,
                commit_timestamp: s.commit_timestamp,
            };
            g.offsets.insert((k.topic.clone(), k.partition), c);
        }
        (Kind::Unspecified, _) => {}
    }
    Ok(())
}

fn stored_member(id: &str, s: pb::StoredMember) -> Member {
    let regex = (!s.topic_regex.is_empty()).then_some(s.topic_regex.as_str());
    let subscription = Subscription::new(s.topic_names.clone(), regex).unwrap_or_default();
    Member {
        id: id.to_owned(),
        instance_id: (!s.instance_id.is_empty()).then_some(s.instance_id),
        rack_id: (!s.rack_id.is_empty()).then_some(s.rack_id),
        epoch: s.epoch,
        previous_epoch: s.previous_epoch,
        subscription,
        assignor: (!s.assignor.is_empty()).then_some(s.assignor),
        rebalance_timeout_ms: s.rebalance_timeout_ms,
        assigned: partition_set(&s.assigned),
        revoking: partition_set(&s.revoking),
        left_temporarily: s.left_temporarily,
        ..Member::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(entries: Vec<Entry>) -> BTreeMap<String, Group> {
        let mut groups = BTreeMap::new();
        for e in entries {
            // Through the wire form, as a coordinator reads them.
            let (k, v) = e;
            let k = Bytes::from(k.encode_to_vec());
            let decoded = decode(Some(&k), v.as_ref()).unwrap().unwrap();
            apply(&mut groups, decoded).unwrap();
        }
        groups
    }

    fn sample() -> Group {
        let mut g = Group::new("g");
        g.epoch = 3;
        g.target_epoch = 3;
        let tp = (TopicId(9), 1);
        g.members.insert(
            "m".into(),
            Member {
                id: "m".into(),
                instance_id: Some("i".into()),
                epoch: 3,
                previous_epoch: 2,
                subscription: Subscription::new(vec!["orders".into()], Some("o.*")).unwrap(),
                assigned: BTreeSet::from([tp]),
                rebalance_timeout_ms: 5,
                ..Member::default()
            },
        );
        g.target.insert("m".into(), BTreeSet::from([tp]));
        let c = Committed {
            offset: 42,
            leader_epoch: Some(1),
            metadata: "meta".into(),
            commit_timestamp: 7,
        };
        g.offsets.insert(("orders".into(), 1), c);
        g
    }

    #[test]
    fn a_snapshot_replays_to_the_same_group() {
        let g = sample();
        let back = replay(snapshot([&g].into_iter()));
        let r = &back["g"];
        assert_eq!((r.epoch, r.target_epoch), (3, 3));
        assert_eq!(r.offsets, g.offsets);
        assert_eq!(r.target, g.target);
        let (m, b) = (&g.members["m"], &r.members["m"]);
        assert_eq!(b.assigned, m.assigned);
        assert_eq!(b.subscription, m.subscription);
        assert_eq!((b.epoch, b.previous_epoch), (3, 2));
        assert_eq!(b.instance_id.as_deref(), Some("i"));
    }

    #[test]
    fn deletes_win_and_a_snapshot_supersedes_what_came_before() {
        let g = sample();
        let mut all = snapshot([&g].into_iter());
        all.extend(entries(&g, &[Change::OffsetGone("orders".into(), 1)]));
        all.extend(entries(&g, &[Change::MemberGone("m".into())]));
        let back = replay(all.clone());
        assert!(back["g"].offsets.is_empty());
        assert!(back["g"].members.is_empty());
        all.extend(entries(&g, &[Change::GroupGone]));
        assert!(replay(all.clone()).is_empty());
        let mut other = Group::new("h");
        other.epoch = 1;
        all.extend(snapshot([&other].into_iter()));
        let back = replay(all);
        assert_eq!(back.keys().collect::<Vec<_>>(), vec!["h"]);
    }

    #[test]
    fn an_unknown_version_is_an_error_not_a_guess() {
        let mut k = key(Kind::Group, "g");
        k.version = 9;
        let k = Bytes::from(k.encode_to_vec());
        assert!(matches!(
            decode(Some(&k), None),
            Err(StoredError::Version(9))
        ));
    }
}
