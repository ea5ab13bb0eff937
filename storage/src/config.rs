//! Per-log configuration, with Kafka's topic config names and defaults.

use crate::error::ConfigError;

/// The settings of one partition log. Field names follow Kafka's topic configs
/// (`segment.bytes` is `segment_bytes`, and so on); `None` means "no limit" where Kafka uses -1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: a segment rolls before it would grow past this size.
    pub segment_bytes: u64,
    /// `segment.ms`: a non-empty segment rolls once it is this old.
    pub segment_ms: i64,
    /// `retention.ms`: closed segments whose newest record is older are deleted.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: oldest closed segments are deleted while the log is larger.
    pub retention_bytes: Option<u64>,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: usize,
    /// `index.interval.bytes`: bytes between two sparse index entries.
    pub index_interval_bytes: u64,
}

/// Smallest `segment.bytes`: a segment must hold at least one batch header. Kafka's floor is
/// 14 bytes for the same reason; a larger floor keeps misconfigured logs from creating a
/// file per batch by accident.
pub const MIN_SEGMENT_BYTES: u64 = 1024;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
        }
    }
}

impl LogConfig {
    /// Checks each value's range; the first bad key is named in the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, value: i64, rule| Err(ConfigError { key, value, rule });
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return bad(
                "segment.bytes",
                self.segment_bytes as i64,
                "must be at least 1024",
            );
        }
        if self.segment_ms < 1 {
            return bad("segment.ms", self.segment_ms, "must be at least 1");
        }
        if let Some(ms) = self.retention_ms {
            if ms < 0 {
                return bad("retention.ms", ms, "must be -1 (unlimited) or at least 0");
            }
        }
        if self.max_message_bytes < crate::batch::HEADER_LEN {
            return bad(
                "max.message.bytes",
                self.max_message_bytes as i64,
                "must hold at least a batch header (61 bytes)",
            );
        }
        if self.index_interval_bytes == 0 {
            return bad("index.interval.bytes", 0, "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(LogConfig::default().validate(), Ok(()));
        let cases = [
            (
                LogConfig {
                    segment_bytes: 10,
                    ..Default::default()
                },
                "segment.bytes",
            ),
            (
                LogConfig {
                    segment_ms: 0,
                    ..Default::default()
                },
                "segment.ms",
            ),
            (
                LogConfig {
                    retention_ms: Some(-5),
                    ..Default::default()
                },
                "retention.ms",
            ),
            (
                LogConfig {
                    max_message_bytes: 3,
                    ..Default::default()
                },
                "max.message.bytes",
            ),
            (
                LogConfig {
                    index_interval_bytes: 0,
                    ..Default::default()
                },
                "index.interval.bytes",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(config.validate().unwrap_err().key, key);
        }
    }
}
