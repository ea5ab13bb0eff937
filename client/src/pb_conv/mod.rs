//! Conversions between `keel.v1` messages and the client's types, one file per family of
//! types. Every conversion from a response is a `TryFrom` that fails with
//! [`Error::InvalidResponse`](crate::Error::InvalidResponse) when the message breaks the
//! contract (a topic id that is not 16 bytes), naming the rpc.

mod impl_api_error;
mod impl_cluster;
mod impl_config;
mod impl_quorum;
mod impl_topic;

pub(crate) use impl_api_error::api_error;
pub(crate) use impl_config::{config_change, topic_resource};
pub(crate) use impl_topic::new_topic;

use crate::{Error, TopicId};

/// The topic id in `bytes`: `None` when empty, an error naming `rpc` when not 16 bytes.
pub(crate) fn topic_id(rpc: &'static str, bytes: &[u8]) -> Result<Option<TopicId>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    TopicId::from_slice(bytes)
        .map(Some)
        .ok_or_else(|| Error::InvalidResponse {
            rpc,
            reason: format!("topic id of {} bytes, expected 16", bytes.len()),
        })
}

/// Fails with the request-level error of a response, if it carries one.
pub(crate) fn check(error: Option<keel_proto::v1::Error>) -> Result<(), Error> {
    match api_error(error) {
        Some(e) => Err(Error::Api(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::v1 as pb;

    #[test]
    fn topic_id_is_none_when_empty_and_refused_when_not_16_bytes() {
        assert_eq!(topic_id("r", &[]).unwrap(), None);
        assert_eq!(topic_id("r", &[7; 16]).unwrap(), Some(TopicId([7; 16])));
        let err = topic_id("Cluster.Metadata", &[1, 2, 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "INVALID_RESPONSE: Cluster.Metadata: topic id of 3 bytes, expected 16"
        );
    }

    #[test]
    fn check_passes_absent_and_ok_errors_and_fails_on_a_code() {
        assert!(check(None).is_ok());
        assert!(check(Some(pb::Error::default())).is_ok());
        let err = check(Some(pb::Error::new(
            pb::ErrorCode::NotController,
            "no leader",
        )))
        .unwrap_err();
        assert_eq!(err.code_name(), "NOT_CONTROLLER");
        assert!(err.is_retriable());
    }
}
