//! What a leader knows of its followers, and the ISR it should propose, as pure functions.
//!
//! A follower is *caught up* at a fetch when it asks for the leader's log end, or when it asks
//! for at least the log end the leader had at its previous fetch (it has everything that was
//! there one round ago); `last_caught_up_ms` is the latest such moment (Kafka's rule). An ISR
//! member not caught up for `replica.lag.time.max.ms` leaves the ISR; a replica outside it
//! joins once its log end reaches the high watermark and the start of the current leader
//! epoch (so it holds every record the leader wrote in its term below the high watermark).
//!
//! Worked example (leader 1, replicas [1, 2, 3], lag limit 10 s, now 100 s, HW 50, the
//! leader's epoch started at 40):
//!
//! | ISR       | follower 2            | follower 3            | proposal     |
//! |-----------|-----------------------|-----------------------|--------------|
//! | [1, 2, 3] | caught up at 99 s     | caught up at 80 s     | [1, 2]       |
//! | [1, 2]    | caught up at 99 s     | LEO 50, at 99 s       | [1, 2, 3]    |
//! | [1, 2]    | caught up at 99 s     | LEO 49, at 99 s       | none         |
//! | [1]       | LEO 60 but at 70 s    | —                     | none         |

use std::collections::BTreeMap;

use keel_metadata::records::{BrokerEpoch, BrokerId};
use keel_storage::Offset;

/// The leader's record of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's log end offset as of its last fetch; `None` before its first fetch
    /// in this leader epoch.
    pub leo: Option<Offset>,
    /// The broker epoch its fetches carried (0 before the first).
    pub broker_epoch: BrokerEpoch,
    /// When it was last caught up (ms since the Unix epoch).
    pub last_caught_up_ms: i64,
    /// When it last fetched, and the leader's log end then.
    pub last_fetch_ms: i64,
    pub last_fetch_leader_leo: Offset,
}

impl FollowerState {
    /// A follower assumed caught up at `now` (an ISR member when its leader takes over: it
    /// gets the lag limit to show up).
    pub fn fresh(now_ms: i64) -> FollowerState {
        FollowerState {
            leo: None,
            broker_epoch: 0,
            last_caught_up_ms: now_ms,
            last_fetch_ms: now_ms,
            last_fetch_leader_leo: Offset::MAX,
        }
    }

    /// Records a fetch at `fetch_offset` when the leader's log end is `leader_leo`.
    pub fn fetched(
        &mut self,
        fetch_offset: Offset,
        leader_leo: Offset,
        epoch: BrokerEpoch,
        now_ms: i64,
    ) {
        if fetch_offset >= leader_leo {
            self.last_caught_up_ms = now_ms;
        } else if fetch_offset >= self.last_fetch_leader_leo {
            self.last_caught_up_ms = self.last_caught_up_ms.max(self.last_fetch_ms);
        }
        self.leo = Some(fetch_offset);
        self.broker_epoch = epoch;
        self.last_fetch_ms = now_ms;
        self.last_fetch_leader_leo = leader_leo;
    }
}

/// What [`propose_isr`] looks at.
pub struct IsrView<'a> {
    pub leader: BrokerId,
    pub replicas: &'a [BrokerId],
    pub isr: &'a [BrokerId],
    pub followers: &'a BTreeMap<BrokerId, FollowerState>,
    pub high_watermark: Offset,
    /// Where the current leader epoch starts in the leader's log.
    pub epoch_start: Offset,
    pub now_ms: i64,
    pub lag_max_ms: i64,
}

/// The ISR the leader should ask for now, or `None` when the current one is right: lagging
/// members leave, caught-up replicas join (see the module doc). The leader always stays.
pub fn propose_isr(v: &IsrView<'_>) -> Option<Vec<BrokerId>> {
    let in_sync = |f: &FollowerState| v.now_ms - f.last_caught_up_ms <= v.lag_max_ms;
    let mut isr: Vec<BrokerId> = v
        .isr
        .iter()
        .copied()
        .filter(|m| *m == v.leader || v.followers.get(m).is_none_or(in_sync))
        .collect();
    if !isr.contains(&v.leader) {
        isr.insert(0, v.leader);
    }
    let joining: Vec<BrokerId> = v
        .replicas
        .iter()
        .copied()
        .filter(|r| !isr.contains(r))
        .filter(|r| {
            v.followers.get(r).is_some_and(|f| {
                in_sync(f)
                    && f.leo
                        .is_some_and(|leo| leo >= v.high_watermark && leo >= v.epoch_start)
            })
        })
        .collect();
    isr.extend(joining);
    (isr.as_slice() != v.isr).then_some(isr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 100_000;

    fn follower(leo: Option<Offset>, caught_up_ms: i64) -> FollowerState {
        FollowerState {
            leo,
            broker_epoch: 7,
            last_caught_up_ms: caught_up_ms,
            last_fetch_ms: caught_up_ms,
            last_fetch_leader_leo: 0,
        }
    }

    #[test]
    fn worked_examples_of_the_module_doc() {
        let f = |pairs: &[(BrokerId, FollowerState)]| pairs.iter().copied().collect();
        type Case<'a> = (
            &'a [BrokerId],
            BTreeMap<BrokerId, FollowerState>,
            Option<Vec<BrokerId>>,
        );
        let cases: Vec<Case> = vec![
            (
                &[1, 2, 3],
                f(&[
                    (2, follower(Some(60), 99_000)),
                    (3, follower(Some(60), 80_000)),
                ]),
                Some(vec![1, 2]),
            ),
            (
                &[1, 2],
                f(&[
                    (2, follower(Some(60), 99_000)),
                    (3, follower(Some(50), 99_000)),
                ]),
                Some(vec![1, 2, 3]),
            ),
            (
                &[1, 2],
                f(&[
                    (2, follower(Some(60), 99_000)),
                    (3, follower(Some(49), 99_000)),
                ]),
                None,
            ),
            (&[1], f(&[(2, follower(Some(60), 70_000))]), None),
        ];
        for (isr, followers, want) in cases {
            let v = IsrView {
                leader: 1,
                replicas: &[1, 2, 3],
                isr,
                followers: &followers,
                high_watermark: 50,
                epoch_start: 40,
                now_ms: NOW,
                lag_max_ms: 10_000,
            };
            assert_eq!(propose_isr(&v), want, "ISR {isr:?}");
        }
    }

    #[test]
    fn a_replica_behind_the_epoch_start_does_not_join() {
        let followers = [(2, follower(Some(45), NOW))].into_iter().collect();
        let v = IsrView {
            leader: 1,
            replicas: &[1, 2],
            isr: &[1],
            followers: &followers,
            high_watermark: 30,
            epoch_start: 46,
            now_ms: NOW,
            lag_max_ms: 10_000,
        };
        assert_eq!(propose_isr(&v), None);
    }

    #[test]
    fn caught_up_follows_kafkas_rule() {
        let mut f = FollowerState::fresh(0);
        f.fetched(10, 20, 3, 1_000); // behind, and the previous round's end is unknown
        assert_eq!(f.last_caught_up_ms, 0);
        f.fetched(20, 25, 3, 2_000); // has what the leader had at the previous fetch
        assert_eq!(f.last_caught_up_ms, 1_000);
        f.fetched(25, 25, 3, 3_000); // at the log end
        assert_eq!(f.last_caught_up_ms, 3_000);
        assert_eq!((f.leo, f.broker_epoch), (Some(25), 3));
    }
}
