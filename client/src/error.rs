//! The client's one error type, [`Error`], and [`ApiError`], the client form of a wire
//! `keel.v1.Error`.
//!
//! Every error has a code name (a wire `ErrorCode` name such as `NOT_CONTROLLER`, a gRPC
//! status name such as `UNAVAILABLE` for transport failures, or `INVALID_ARGUMENT` /
//! `INVALID_RESPONSE` for what the client itself refuses), a human-readable message and a
//! retriability flag. `Display` prints `<CODE>: <message>`.

use keel_proto::v1::ErrorCode;
use serde::{Serialize, Serializer};

/// An error reported by a Keel node inside a response: a wire [`ErrorCode`] with its message,
/// retriability and leader hints.
///
/// It appears as the `Err` of a call (when the request as a whole failed) and as the `error`
/// field of per-item results (one topic of a batch), where it stays with its item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// What went wrong. A number this client does not know arrives as
    /// [`ErrorCode::UnknownServerError`], with the number in `message`.
    #[serde(serialize_with = "serialize_code")]
    pub code: ErrorCode,
    /// Human-readable detail from the server; may be empty.
    pub message: String,
    /// Whether retrying the same request may succeed.
    pub retriable: bool,
    /// The node that should receive the request instead (the active controller for
    /// `NOT_CONTROLLER`), when the server knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<i32>,
    /// That node's client endpoint as `host:port`, when the server knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_endpoint: Option<String>,
}

impl ApiError {
    /// An error with `code` and `message`, retriability from [`ErrorCode::is_retriable`] and
    /// no leader hints.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retriable: code.is_retriable(),
            leader_id: None,
            leader_endpoint: None,
        }
    }

    /// The code's wire name, such as `TOPIC_ALREADY_EXISTS`.
    pub fn code_name(&self) -> &'static str {
        self.code.as_str_name()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code_name(), self.message)
    }
}

impl std::error::Error for ApiError {}

fn serialize_code<S: Serializer>(code: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str_name())
}

/// Everything a call of this client can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node answered, with an error for the request as a whole.
    #[error("{0}")]
    Api(#[from] ApiError),

    /// The node could not be reached or the call failed below Keel's API: connection refused,
    /// the node is starting or stopping (`UNAVAILABLE`), the deadline passed
    /// (`DEADLINE_EXCEEDED`), the rpc is not served (`UNIMPLEMENTED`), a server bug
    /// (`INTERNAL`).
    #[error("{}: {endpoint}: {message}", grpc_code_name(*.code))]
    Transport {
        /// The address that was called.
        endpoint: String,
        /// The gRPC status class.
        code: tonic::Code,
        /// What failed, with its causes.
        message: String,
    },

    /// An argument was refused before anything was sent (an empty bootstrap list, an address
    /// without a port).
    #[error("INVALID_ARGUMENT: {argument}: {reason}")]
    InvalidArgument {
        /// The offending value.
        argument: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The producer or consumer was closed (or its background task stopped) before the call
    /// could finish.
    #[error("CLIENT_CLOSED: {0}")]
    Closed(&'static str),

    /// A node answered with something that breaks the contract (a topic id that is not 16
    /// bytes, a missing result). A server bug; not retried.
    #[error("INVALID_RESPONSE: {rpc}: {reason}")]
    InvalidResponse {
        /// The rpc that answered.
        rpc: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    /// The code name: a wire `ErrorCode` name for [`Error::Api`], the gRPC status name for
    /// [`Error::Transport`], `INVALID_ARGUMENT`, `INVALID_RESPONSE` or `CLIENT_CLOSED`
    /// otherwise.
    pub fn code_name(&self) -> &'static str {
        match self {
            Error::Api(e) => e.code_name(),
            Error::Transport { code, .. } => grpc_code_name(*code),
            Error::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Error::InvalidResponse { .. } => "INVALID_RESPONSE",
            Error::Closed(_) => "CLIENT_CLOSED",
        }
    }

    /// The message without the code name.
    pub fn message(&self) -> String {
        match self {
            Error::Api(e) => e.message.clone(),
            Error::Transport {
                endpoint, message, ..
            } => format!("{endpoint}: {message}"),
            Error::InvalidArgument { argument, reason } => format!("{argument}: {reason}"),
            Error::InvalidResponse { rpc, reason } => format!("{rpc}: {reason}"),
            Error::Closed(what) => what.to_string(),
        }
    }

    /// Whether the same call may succeed when retried, perhaps on another node: retriable wire
    /// codes, and the transport classes that mean "this node, now" (`UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`, `CANCELLED`, `UNKNOWN`: a connection reset mid-call).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Api(e) => e.retriable,
            Error::Transport { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
            ),
            Error::InvalidArgument { .. } | Error::InvalidResponse { .. } | Error::Closed(_) => {
                false
            }
        }
    }

    /// The wire code, for [`Error::Api`].
    pub fn api_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// A failed gRPC call to `endpoint`.
    pub(crate) fn from_status(endpoint: &str, status: &tonic::Status) -> Self {
        let mut message = status.message().to_string();
        if message.is_empty() {
            message = status.code().description().to_string();
        }
        append_sources(&mut message, status);
        Error::Transport {
            endpoint: endpoint.to_string(),
            code: status.code(),
            message,
        }
    }

    /// A failed connection attempt to `endpoint`.
    pub(crate) fn from_connect(endpoint: &str, err: &tonic::transport::Error) -> Self {
        // tonic's own text is only "transport error"; the causes say what happened.
        let mut message = "cannot connect".to_string();
        append_sources(&mut message, err);
        Error::Transport {
            endpoint: endpoint.to_string(),
            code: tonic::Code::Unavailable,
            message,
        }
    }
}

/// Appends the `source()` chain of `err` to `message` (`a: b: c`), skipping parts that repeat
/// what is already there (tonic's "transport error" wraps hyper's, which wraps the OS error).
fn append_sources(message: &mut String, err: &(dyn std::error::Error + 'static)) {
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
}

/// The canonical upper-case name of a gRPC status code (`UNAVAILABLE`, `DEADLINE_EXCEEDED`).
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_displays_code_name_and_message() {
        let e = Error::from(ApiError::new(
            ErrorCode::TopicAlreadyExists,
            "topic orders exists",
        ));
        assert_eq!(e.to_string(), "TOPIC_ALREADY_EXISTS: topic orders exists");
        assert_eq!(e.code_name(), "TOPIC_ALREADY_EXISTS");
        assert_eq!(e.message(), "topic orders exists");
        assert!(!e.is_retriable());
        assert_eq!(e.api_code(), Some(ErrorCode::TopicAlreadyExists));
    }

    #[test]
    fn retriability_of_api_errors_follows_the_flag() {
        assert!(Error::from(ApiError::new(ErrorCode::NotController, "")).is_retriable());
        assert!(Error::from(ApiError::new(ErrorCode::RequestTimedOut, "")).is_retriable());
        assert!(!Error::from(ApiError::new(ErrorCode::InvalidConfig, "")).is_retriable());
    }

    #[test]
    fn transport_errors_are_named_by_grpc_class() {
        let status = tonic::Status::unavailable("node is shutting down");
        let e = Error::from_status("127.0.0.1:9292", &status);
        assert_eq!(e.code_name(), "UNAVAILABLE");
        assert_eq!(
            e.to_string(),
            "UNAVAILABLE: 127.0.0.1:9292: node is shutting down"
        );
        assert!(e.is_retriable());

        let status = tonic::Status::unimplemented("");
        let e = Error::from_status("n1:9292", &status);
        assert_eq!(e.code_name(), "UNIMPLEMENTED");
        assert!(e.message().starts_with("n1:9292: "), "{}", e.message());
        assert!(!e.is_retriable());

        for code in [
            tonic::Code::DeadlineExceeded,
            tonic::Code::Cancelled,
            tonic::Code::Unknown,
        ] {
            let e = Error::from_status("a:1", &tonic::Status::new(code, "x"));
            assert!(e.is_retriable(), "{code:?}");
        }
        for code in [tonic::Code::Internal, tonic::Code::ResourceExhausted] {
            let e = Error::from_status("a:1", &tonic::Status::new(code, "x"));
            assert!(!e.is_retriable(), "{code:?}");
        }
    }

    #[test]
    fn client_side_errors_are_not_retriable() {
        let e = Error::InvalidArgument {
            argument: "localhost".into(),
            reason: "expected host:port",
        };
        assert_eq!(
            e.to_string(),
            "INVALID_ARGUMENT: localhost: expected host:port"
        );
        assert!(!e.is_retriable());
        let e = Error::InvalidResponse {
            rpc: "Admin.CreateTopics",
            reason: "no result".into(),
        };
        assert_eq!(e.code_name(), "INVALID_RESPONSE");
        assert!(!e.is_retriable());
    }

    #[test]
    fn api_error_serializes_the_code_by_name_and_skips_absent_hints() {
        let e = ApiError::new(ErrorCode::NotController, "no leader");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":"NOT_CONTROLLER","message":"no leader","retriable":true}"#
        );
        let e = ApiError {
            leader_id: Some(2),
            leader_endpoint: Some("n2:9292".into()),
            ..e
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":"NOT_CONTROLLER","message":"no leader","retriable":true,"leader_id":2,"leader_endpoint":"n2:9292"}"#
        );
    }
}
