//! `DescribeQuorumResponse` → [`QuorumDescription`] and [`QuorumMember`].

use keel_proto::v1 as pb;

use crate::{Error, QuorumDescription, QuorumMember};

impl From<pb::QuorumMember> for QuorumMember {
    fn from(m: pb::QuorumMember) -> Self {
        Self {
            node_id: m.node_id,
            endpoint: m.endpoint,
            last_log_index: m.last_log_index,
            lag: m.lag,
            last_contact_ms: m.last_contact_ms,
        }
    }
}

impl TryFrom<pb::DescribeQuorumResponse> for QuorumDescription {
    type Error = Error;

    /// Fails with the response's request-level error, if any.
    fn try_from(r: pb::DescribeQuorumResponse) -> Result<Self, Error> {
        super::check(r.error)?;
        Ok(Self {
            leader_id: r.leader_id,
            term: r.term,
            commit_index: r.commit_index,
            voters: r.voters.into_iter().map(Into::into).collect(),
            learners: r.learners.into_iter().map(Into::into).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_with_a_voter_not_heard_from() {
        let q = QuorumDescription::try_from(pb::DescribeQuorumResponse {
            error: None,
            leader_id: Some(1),
            term: 5,
            commit_index: 120,
            voters: vec![
                pb::QuorumMember {
                    node_id: 1,
                    endpoint: "n1:9293".into(),
                    last_log_index: Some(120),
                    lag: Some(0),
                    last_contact_ms: Some(0),
                },
                pb::QuorumMember {
                    node_id: 2,
                    endpoint: "n2:9293".into(),
                    last_log_index: None,
                    lag: None,
                    last_contact_ms: None,
                },
            ],
            learners: vec![],
        })
        .unwrap();
        assert_eq!(q.leader_id, Some(1));
        assert_eq!((q.term, q.commit_index), (5, 120));
        assert_eq!(q.voters[0].lag, Some(0));
        assert_eq!(q.voters[1].last_log_index, None);
        assert_eq!(q.voters[1].last_contact_ms, None);
    }

    #[test]
    fn not_controller_is_an_error() {
        let err = QuorumDescription::try_from(pb::DescribeQuorumResponse {
            error: Some(pb::Error::new(
                pb::ErrorCode::NotController,
                "no leader known",
            )),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.code_name(), "NOT_CONTROLLER");
        assert!(err.is_retriable());
    }
}
