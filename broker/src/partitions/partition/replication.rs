//! Replication on one partition: the leader serving a follower's fetch (divergence check,
//! follower tracking, high watermark), the follower applying the answer (truncation, append,
//! its high watermark), and the ISR proposals of the leader.

use bytes::Bytes;
use keel_metadata::records::{BrokerEpoch, BrokerId, LeaderEpoch, PartitionEpoch};
use keel_storage::{Log, Offset};

use super::{now_ms, Partition};
use crate::partitions::isr::{propose_isr, FollowerState, IsrView};
use crate::partitions::PartitionError;

/// A follower's fetch of one partition, as the leader receives it.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaFetch {
    pub replica: BrokerId,
    pub replica_epoch: BrokerEpoch,
    /// The follower's log end: the next offset it wants, and how far it has written.
    pub fetch_offset: Offset,
    /// The epoch of the follower's last batch.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    pub current_leader_epoch: LeaderEpoch,
    pub max_bytes: usize,
}

/// The leader's answer for one partition of a follower's fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Whole batches from the fetch offset (maybe none), with the leader's offsets.
    Records {
        batches: Bytes,
        high_watermark: Offset,
        log_start: Offset,
    },
    /// The follower's log disagrees with the leader's: `epoch` ends at `end_offset` in the
    /// leader's log. No records.
    Diverging {
        epoch: LeaderEpoch,
        end_offset: Offset,
        high_watermark: Offset,
        log_start: Offset,
    },
    /// The fetch offset lies outside the leader's log.
    OutOfRange {
        log_start: Offset,
        high_watermark: Offset,
    },
}

/// An ISR change a leader asks the controller for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    /// The new ISR with the broker epoch each member's fetches carried (0: not known here;
    /// the sender fills in the registration's epoch).
    pub isr: Vec<(BrokerId, BrokerEpoch)>,
}

impl Partition {
    /// Serves one partition of a follower's fetch round as the leader. Blocking (reads).
    pub fn serve_replica_fetch(&self, f: &ReplicaFetch) -> Result<Fetched, PartitionError> {
        let role = self.role();
        if !role.leader {
            return Err(role.not_leader());
        }
        check_epoch(f.current_leader_epoch, role.leader_epoch)?;
        if !role.replicas.contains(&f.replica) {
            return Err(PartitionError::InvalidRequest(
                "the fetching broker is not a replica of the partition",
            ));
        }
        let (batches, log_end, log_start) = {
            let guard = self.log_ref();
            let log = guard.as_ref().ok_or(PartitionError::LeaderNotAvailable)?;
            let (log_start, log_end) = (log.log_start_offset(), log.log_end_offset());
            if let Some(diverging) = divergence(log, f) {
                let (epoch, end_offset) = diverging;
                return Ok(Fetched::Diverging {
                    epoch,
                    end_offset,
                    high_watermark: self.high_watermark(),
                    log_start,
                });
            }
            if f.fetch_offset < log_start || f.fetch_offset > log_end {
                return Ok(Fetched::OutOfRange {
                    log_start,
                    high_watermark: self.high_watermark(),
                });
            }
            // A throttled reassignment copy may get nothing this round (max_bytes 0).
            let batches = match f.max_bytes {
                0 => Default::default(),
                max => log.read(f.fetch_offset, max, log_end)?,
            };
            (batches, log_end, log_start)
        };
        self.leader_state()
            .followers
            .entry(f.replica)
            .or_insert_with(|| FollowerState::fresh(0))
            .fetched(f.fetch_offset, log_end, f.replica_epoch, now_ms());
        self.update_hw();
        Ok(Fetched::Records {
            batches,
            high_watermark: self.high_watermark(),
            log_start,
        })
    }

    /// Where this follower is: its log end and the epoch of its last batch, for the next
    /// fetch; `None` when it is not a follower (or its log is closed).
    pub fn follower_position(&self) -> Option<(Offset, Option<LeaderEpoch>, Offset)> {
        if self.role().leader {
            return None;
        }
        let guard = self.log_ref();
        let log = guard.as_ref()?;
        Some((
            log.log_end_offset(),
            log.latest_epoch(),
            log.log_start_offset(),
        ))
    }

    /// Applies the leader's answer as a follower that fetched in `leader_epoch`. Returns the
    /// log end to flush when records were appended. Blocking (writes).
    pub fn apply_fetched(
        &self,
        leader_epoch: LeaderEpoch,
        fetched: Fetched,
    ) -> Result<Option<Offset>, PartitionError> {
        self.apply_fetched_to_log(leader_epoch, fetched)
            .map_err(|e| self.disk_noted(e))
    }

    fn apply_fetched_to_log(
        &self,
        leader_epoch: LeaderEpoch,
        fetched: Fetched,
    ) -> Result<Option<Offset>, PartitionError> {
        let role = self.role();
        if role.leader || role.leader_epoch != leader_epoch {
            return Ok(None); // the role changed while the fetch was out: drop the answer
        }
        let mut guard = self.log_mut();
        let log = guard.as_mut().ok_or(PartitionError::LeaderNotAvailable)?;
        let (appended, leader_hw) = match fetched {
            Fetched::Records {
                batches,
                high_watermark,
                log_start,
            } => {
                let appended = !batches.is_empty() && log.append_replicated(&batches)?.is_some();
                // Follow the leader's log start (a group coordinator's snapshot moved it).
                if log_start > log.log_start_offset() {
                    log.delete_before(log_start)?;
                }
                (appended, high_watermark)
            }
            Fetched::Diverging {
                epoch,
                end_offset,
                high_watermark,
                ..
            } => {
                let to = truncation_offset(log, epoch, end_offset);
                let from = log.log_end_offset();
                let new_end = log.truncate_to(to)?;
                tracing::info!(topic = %self.topic, partition = self.index, log = %log.name(),
                    from, to = new_end, diverging_epoch = epoch,
                    "follower log truncated to the leader's");
                (false, high_watermark)
            }
            Fetched::OutOfRange {
                log_start,
                high_watermark,
            } => {
                tracing::warn!(topic = %self.topic, partition = self.index, log = %log.name(),
                    log_end = log.log_end_offset(), leader_log_start = log_start,
                    "fetch offset outside the leader's log; starting over at the leader's log start");
                log.truncate_fully_and_start_at(log_start)?;
                (false, high_watermark)
            }
        };
        let log_end = log.log_end_offset();
        drop(guard);
        self.set_hw(leader_hw.min(log_end));
        Ok(appended.then_some(log_end))
    }

    /// The ISR change this leader should ask for now (see [`crate::partitions::isr`]), once:
    /// it is then pending until the image shows a new partition epoch, or until `retry_ms`
    /// passed without one.
    pub fn isr_proposal(&self, lag_max_ms: i64, retry_ms: i64) -> Option<IsrProposal> {
        let role = self.role();
        if !role.leader {
            return None;
        }
        let now = now_ms();
        let hw = self.high_watermark();
        let mut st = self.leader_state();
        if st
            .pending
            .as_ref()
            .is_some_and(|(_, at)| now - at < retry_ms)
        {
            return None;
        }
        let isr = propose_isr(&IsrView {
            leader: self.me,
            replicas: &role.replicas,
            isr: &role.isr,
            followers: &st.followers,
            high_watermark: hw,
            epoch_start: st.epoch_start,
            now_ms: now,
            lag_max_ms,
        })?;
        let with_epochs = isr
            .iter()
            .map(|m| (*m, st.followers.get(m).map_or(0, |f| f.broker_epoch)))
            .collect();
        st.pending = Some((isr, now));
        Some(IsrProposal {
            leader_epoch: role.leader_epoch,
            partition_epoch: role.partition_epoch,
            isr: with_epochs,
        })
    }

    /// The controller refused or did not answer a proposal: ask again at the next check.
    pub fn isr_proposal_failed(&self) {
        self.leader_state().pending = None;
        self.update_hw();
    }

    /// The end of `epoch` in this leader's log (OffsetsForLeaderEpoch).
    pub fn end_offset_for_epoch(
        &self,
        current_leader_epoch: LeaderEpoch,
        epoch: LeaderEpoch,
    ) -> Result<Option<(LeaderEpoch, Offset)>, PartitionError> {
        let role = self.role();
        if !role.leader {
            return Err(role.not_leader());
        }
        check_epoch(current_leader_epoch, role.leader_epoch)?;
        let guard = self.log_ref();
        let log = guard.as_ref().ok_or(PartitionError::LeaderNotAvailable)?;
        Ok(log.end_offset_for_epoch(epoch))
    }

    /// Saves the high watermark with the log (made durable by the next flush or close).
    pub fn checkpoint_hw(&self) {
        let hw = self.high_watermark();
        if let Some(log) = self.log_mut().as_mut() {
            if let Err(e) = log.checkpoint_high_watermark(hw) {
                tracing::warn!(topic = %self.topic, partition = self.index, log = %log.name(),
                    error = %e, "high watermark not checkpointed");
            }
        }
    }
}

fn check_epoch(requested: LeaderEpoch, current: LeaderEpoch) -> Result<(), PartitionError> {
    use std::cmp::Ordering::*;
    match requested.cmp(&current) {
        Equal => Ok(()),
        Less => Err(PartitionError::FencedLeaderEpoch { requested, current }),
        Greater => Err(PartitionError::UnknownLeaderEpoch { requested, current }),
    }
}

/// Where the follower's log leaves the leader's, if it does: the follower's last epoch must
/// end, in the leader's log, at or after the follower's log end.
fn divergence(log: &Log, f: &ReplicaFetch) -> Option<(LeaderEpoch, Offset)> {
    let last = f.last_fetched_epoch?;
    match log.end_offset_for_epoch(last) {
        Some((epoch, end)) if epoch == last && end >= f.fetch_offset => None,
        Some(found) => Some(found),
        // The follower has an epoch this leader never saw: everything of it must go.
        None => Some((log.latest_epoch().unwrap_or(-1), log.log_end_offset())),
    }
}

/// Where a follower cuts its log when the leader says `epoch` ends at `leader_end` in its log
/// (Kafka's rule): at the end of the follower's own largest epoch up to `epoch`, never past
/// the leader's end.
fn truncation_offset(log: &Log, epoch: LeaderEpoch, leader_end: Offset) -> Offset {
    match log.end_offset_for_epoch(epoch) {
        Some((_, own_end)) => own_end.min(leader_end),
        None => leader_end.min(log.log_end_offset()),
    }
}
