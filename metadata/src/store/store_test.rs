use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, StorageError};
use tempfile::TempDir;

use super::*;
use crate::records::{CreateTopic, TopicId};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = TempDir::new().expect("tempdir");
        let (log, sm) = open(dir.path())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(RocksBuilder)
}

fn topic_entry(index: u64, name: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(MetadataRequest {
            records: vec![Record::CreateTopic(CreateTopic {
                name: name.into(),
                topic_id: TopicId(index as u128),
                configs: Default::default(),
                partitions: 1,
                timestamp_ms: 0,
            })],
        }),
    }
}

/// The image survives a reopen through its snapshot; entries applied after the snapshot are
/// not in it (openraft re-applies them from the log at start-up).
#[tokio::test]
async fn snapshot_survives_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let (_log, mut sm) = open(dir.path()).unwrap();
        let resp = sm
            .apply([topic_entry(1, "a"), topic_entry(2, "a")])
            .await
            .unwrap();
        assert!(resp[0].refused.is_empty());
        // The duplicate name is refused, deterministically, and reported.
        assert_eq!(resp[1].refused.len(), 1);
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        sm.apply([topic_entry(3, "b")]).await.unwrap();
        assert_eq!(sm.view().current().topics.len(), 2);
    }
    let (_log, mut sm) = open(dir.path()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(2));
    let img = sm.view().current();
    assert_eq!(img.offset, 2);
    assert!(img.topic_by_name("a").is_some());
    assert!(img.topic_by_name("b").is_none());
}

/// Purging keeps the purge point, and entries after it stay readable after a reopen.
#[tokio::test]
async fn purge_and_committed_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let committed = Some(LogId::new(CommittedLeaderId::new(1, 1), 3));
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        let index = log.commit_index();
        assert_eq!(index.get(), None, "nothing committed yet");
        log.save_committed(committed).await.unwrap();
        assert_eq!(index.get(), Some(3), "the handle follows save_committed");
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 1))
            .await
            .unwrap();
    }
    let (mut log, _sm) = open(dir.path()).unwrap();
    assert_eq!(log.commit_index().get(), Some(3), "loaded at open");
    assert_eq!(log.read_committed().await.unwrap(), committed);
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(1));
    assert_eq!(st.last_log_id.map(|l| l.index), Some(1));
}
