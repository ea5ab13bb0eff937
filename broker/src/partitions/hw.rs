//! The high watermark as a pure function of the log end offsets of the ISR.

use std::collections::BTreeMap;

use keel_metadata::records::BrokerId;
use keel_storage::Offset;

/// The high watermark the leader may expose now: the minimum log end offset over the ISR,
/// never below `current` (a high watermark never decreases) and never above the leader's own
/// log end.
///
/// `follower_leos` holds the log end offsets followers last reported. An ISR member with no
/// report leaves the high watermark where it is: the leader cannot know what that member has.
/// Until replication exists (the next step of the data plane), followers report nothing, so
/// only an ISR of the leader alone moves the high watermark.
///
/// Worked examples (leader 1 with log end 10, current high watermark 4):
///
/// | ISR       | follower LEOs | high watermark                      |
/// |-----------|---------------|-------------------------------------|
/// | [1]       | —             | 10 (the leader alone)               |
/// | [1, 2]    | 2 → 7         | 7                                   |
/// | [1, 2]    | —             | 4 (2 unknown: stays)                |
/// | [1, 2, 3] | 2 → 12, 3 → 3 | 4 (3 lags below the current: stays) |
/// | [1, 2]    | 2 → 12        | 10 (capped at the leader's end)     |
pub fn compute_hw(
    leader: BrokerId,
    leader_leo: Offset,
    isr: &[BrokerId],
    follower_leos: &BTreeMap<BrokerId, Offset>,
    current: Offset,
) -> Offset {
    let mut min = leader_leo;
    for member in isr.iter().filter(|m| **m != leader) {
        match follower_leos.get(member) {
            Some(leo) => min = min.min(*leo),
            None => return current,
        }
    }
    min.max(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_examples_of_the_doc_comment() {
        let leos = |pairs: &[(BrokerId, Offset)]| pairs.iter().copied().collect();
        let cases: &[(&[BrokerId], BTreeMap<BrokerId, Offset>, Offset)] = &[
            (&[1], leos(&[]), 10),
            (&[1, 2], leos(&[(2, 7)]), 7),
            (&[1, 2], leos(&[]), 4),
            (&[1, 2, 3], leos(&[(2, 12), (3, 3)]), 4),
            (&[1, 2], leos(&[(2, 12)]), 10),
            // The leader missing from the ISR (it is being moved out) changes nothing.
            (&[2], leos(&[(2, 6)]), 6),
        ];
        for (isr, followers, want) in cases {
            assert_eq!(compute_hw(1, 10, isr, followers, 4), *want, "ISR {isr:?}");
        }
    }
}
