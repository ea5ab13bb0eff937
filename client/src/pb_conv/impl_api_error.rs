//! `keel.v1.Error` → [`ApiError`].

use keel_proto::v1 as pb;

use crate::ApiError;

/// The client form of a wire error; `None` when absent or `OK` (both mean success).
///
/// A code number this client does not know becomes `UNKNOWN_SERVER_ERROR` with the number in
/// the message, and keeps the server's `retriable` flag, as `errors.proto` asks. For known
/// codes retriability comes from [`pb::ErrorCode::is_retriable`], the one table both sides
/// share, so a server that forgot to set the flag is still retried correctly.
pub(crate) fn api_error(error: Option<pb::Error>) -> Option<ApiError> {
    let e = error?;
    let (code, message, retriable) = match pb::ErrorCode::try_from(e.code) {
        Ok(pb::ErrorCode::Ok) => return None,
        Ok(code) => (code, e.message, code.is_retriable()),
        Err(_) => (
            pb::ErrorCode::UnknownServerError,
            format!("unknown error code {}: {}", e.code, e.message),
            e.retriable,
        ),
    };
    Some(ApiError {
        code,
        message,
        retriable,
        leader_id: e.leader_id,
        leader_endpoint: e.leader_endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_and_ok_mean_success() {
        assert_eq!(api_error(None), None);
        assert_eq!(api_error(Some(pb::Error::default())), None);
    }

    #[test]
    fn known_codes_keep_message_and_hints() {
        let wire = pb::Error {
            code: pb::ErrorCode::NotController as i32,
            message: "forwarding failed".into(),
            retriable: true,
            leader_id: Some(3),
            leader_endpoint: Some("n3:9292".into()),
            leader_epoch: None,
        };
        let e = api_error(Some(wire)).unwrap();
        assert_eq!(e.code, pb::ErrorCode::NotController);
        assert_eq!(e.code_name(), "NOT_CONTROLLER");
        assert_eq!(e.message, "forwarding failed");
        assert!(e.retriable);
        assert_eq!(e.leader_id, Some(3));
        assert_eq!(e.leader_endpoint.as_deref(), Some("n3:9292"));
    }

    #[test]
    fn known_codes_take_retriability_from_the_shared_table() {
        let mut wire = pb::Error::new(pb::ErrorCode::RequestTimedOut, "slow");
        wire.retriable = false;
        assert!(api_error(Some(wire)).unwrap().retriable);
        let mut wire = pb::Error::new(pb::ErrorCode::TopicAlreadyExists, "dup");
        wire.retriable = true;
        assert!(!api_error(Some(wire)).unwrap().retriable);
    }

    #[test]
    fn unknown_codes_become_unknown_server_error_and_follow_the_flag() {
        let wire = pb::Error {
            code: 4242,
            message: "from the future".into(),
            retriable: true,
            ..Default::default()
        };
        let e = api_error(Some(wire)).unwrap();
        assert_eq!(e.code, pb::ErrorCode::UnknownServerError);
        assert_eq!(e.message, "unknown error code 4242: from the future");
        assert!(e.retriable);
    }
}
