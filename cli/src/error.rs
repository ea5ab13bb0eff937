//! What `keel` fails with, and the one line it prints for it on stderr:
//! `error: <CODE>: <message>`.

use keel_client::ApiError;

/// Every failure of a `keel` command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// The client failed the call as a whole (unreachable, refused, not controller, ...).
    #[error(transparent)]
    Client(#[from] keel_client::Error),

    /// The server refused one topic of the request.
    #[error("{}: topic {topic}{}", error.code_name(), suffix(&error.message))]
    Topic {
        /// The topic.
        topic: String,
        /// Why it was refused.
        error: ApiError,
    },

    /// A record of `keel produce` was refused; `line` is its input line.
    #[error("{}: line {line}: {}", error.code_name(), error.message())]
    Record {
        /// The input line (from 1).
        line: u64,
        /// Why the record was not written.
        error: keel_client::Error,
    },

    /// Reading the input or writing the output failed.
    #[error("IO: {0}")]
    Io(String),

    /// The arguments contradict themselves in a way clap cannot check (a config key given
    /// twice). Nothing was sent.
    #[error("INVALID_ARGUMENT: {0}")]
    InvalidArgument(String),
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl CliError {
    /// The one line printed on stderr: `error: <CODE>: <message>`, line breaks in server
    /// messages folded into spaces.
    pub fn error_line(&self) -> String {
        let text = self.to_string();
        format!(
            "error: {}",
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    }
}

/// The one line printed for a command line clap refused, `error: INVALID_ARGUMENT: <what>`;
/// `None` for help and version requests, which clap prints itself.
pub fn usage_error_line(err: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return None;
    }
    // clap's message is a paragraph (sometimes continued on indented lines, such as the list
    // of missing arguments), then a blank line and usage hints: keep the paragraph, folded.
    let rendered = err.render().to_string();
    let paragraph = rendered.split("\n\n").next().unwrap_or_default();
    let paragraph = paragraph.strip_prefix("error:").unwrap_or(paragraph);
    let what = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(format!("error: INVALID_ARGUMENT: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Args;
    use clap::Parser;
    use keel_client::ErrorCode;

    #[test]
    fn client_errors_print_code_and_message() {
        let e = CliError::from(keel_client::Error::Api(ApiError::new(
            ErrorCode::NotController,
            "no active controller",
        )));
        assert_eq!(
            e.error_line(),
            "error: NOT_CONTROLLER: no active controller"
        );

        let e = CliError::from(keel_client::Error::InvalidArgument {
            argument: "localhost".into(),
            reason: "expected host:port",
        });
        assert_eq!(
            e.error_line(),
            "error: INVALID_ARGUMENT: localhost: expected host:port"
        );
    }

    #[test]
    fn topic_errors_name_the_topic() {
        let e = CliError::Topic {
            topic: "orders".into(),
            error: ApiError::new(ErrorCode::TopicAlreadyExists, "topic already exists"),
        };
        assert_eq!(
            e.error_line(),
            "error: TOPIC_ALREADY_EXISTS: topic orders: topic already exists"
        );
        let e = CliError::Topic {
            topic: "orders".into(),
            error: ApiError::new(ErrorCode::InvalidConfig, ""),
        };
        assert_eq!(e.error_line(), "error: INVALID_CONFIG: topic orders");
    }

    #[test]
    fn the_error_is_one_line_even_when_the_server_message_is_not() {
        let e = CliError::Topic {
            topic: "t".into(),
            error: ApiError::new(ErrorCode::InvalidConfig, "bad value\n  for retention.ms"),
        };
        let line = e.error_line();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(
            line,
            "error: INVALID_CONFIG: topic t: bad value for retention.ms"
        );
    }

    #[test]
    fn usage_errors_are_one_line() {
        let err = Args::try_parse_from(["keel", "topic", "create", "t", "-p", "zero"]).unwrap_err();
        let line = usage_error_line(&err).unwrap();
        assert!(
            line.starts_with("error: INVALID_ARGUMENT: invalid value 'zero'"),
            "{line}"
        );
        assert!(!line.contains('\n'));

        let err = Args::try_parse_from(["keel", "topic", "alter", "t"]).unwrap_err();
        assert_eq!(
            usage_error_line(&err).unwrap(),
            "error: INVALID_ARGUMENT: the following required arguments were not provided: \
             --config <KEY=VALUE>"
        );

        let err = Args::try_parse_from(["keel", "--help"]).unwrap_err();
        assert_eq!(usage_error_line(&err), None);
    }
}
