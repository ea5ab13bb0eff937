//! The node id on every log line of `keeld`, whichever task logged it.
//!
//! [`crate::Node`] runs its tasks in a `node{node_id}` span, so its own lines carry the id.
//! Tasks that libraries spawn out of that span (openraft's replication and state-machine
//! tasks, whose own spans are disabled at the default level) would log without it. The
//! binary's formatter, [`NodeTag`], closes that gap, since a `keeld` process is exactly one
//! node:
//! - JSON: every line gets a top-level `"node_id"`, first, so log tools can filter on it
//!   without digging into the span list;
//! - text: a line logged outside the node span gets the same `node{node_id=N}:` that the
//!   span prints on the others, after the level.
//!
//! Only the binary installs a subscriber; this module only provides the formatter.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The span every task of a node runs in.
pub const NODE_SPAN: &str = "node";

/// Wraps an event formatter to add the node id where the line lacks it (see the module doc).
pub struct NodeTag<F> {
    inner: F,
    node_id: u32,
    json: bool,
}

impl<F> NodeTag<F> {
    /// `inner` for JSON lines (`json`) or text lines, tagged with `node_id`.
    pub fn new(inner: F, node_id: u32, json: bool) -> NodeTag<F> {
        NodeTag {
            inner,
            node_id,
            json,
        }
    }
}

/// `line` (a text log line without colours) with `tag` inserted after its level: the line
/// starts with a timestamp, spaces, the level and a space. `None` when it does not.
fn insert_after_level(line: &str, tag: &str) -> Option<String> {
    let (timestamp, rest) = line.split_once(' ')?;
    let trimmed = rest.trim_start();
    let level_len = trimmed.find(' ')?;
    let level = &trimmed[..level_len];
    let known = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
    if !known.contains(&level) {
        return None;
    }
    let pad = &rest[..rest.len() - trimmed.len()];
    let after = &trimmed[level_len + 1..];
    Some(format!("{timestamp} {pad}{level} {tag} {after}"))
}

impl<S, N, F> FormatEvent<S, N> for NodeTag<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut in_node = false;
        if let Some(scope) = ctx.event_scope() {
            in_node = scope.from_root().any(|s| s.name() == NODE_SPAN);
        }
        if self.json {
            let mut line = String::new();
            self.inner
                .format_event(ctx, Writer::new(&mut line), event)?;
            return match line.strip_prefix('{') {
                Some(rest) => write!(writer, "{{\"node_id\":{},{rest}", self.node_id),
                None => writer.write_str(&line),
            };
        }
        if in_node {
            return self.inner.format_event(ctx, writer, event);
        }
        let tag = format!("{NODE_SPAN}{{node_id={}}}:", self.node_id);
        if writer.has_ansi_escapes() {
            // A terminal: colours cannot be re-created in a buffer; lead with the tag.
            write!(writer, "{tag} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match insert_after_level(&line, &tag) {
            Some(tagged) => writer.write_str(&tagged),
            None => write!(writer, "{tag} {line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_both_ways(json: bool) -> Vec<String> {
        let out = Buffer::default();
        let sink = out.clone();
        let make = move || sink.clone();
        let base = tracing_subscriber::fmt().with_writer(make).with_ansi(false);
        let emit = || {
            tracing::warn!("outside");
            tracing::info_span!(NODE_SPAN, node_id = 7).in_scope(|| tracing::info!("inside"));
        };
        if json {
            let format = tracing_subscriber::fmt::format()
                .json()
                .with_span_list(true);
            let s = base
                .json()
                .event_format(NodeTag::new(format, 7, true))
                .finish();
            tracing::subscriber::with_default(s, emit);
        } else {
            let s = base
                .event_format(NodeTag::new(tracing_subscriber::fmt::format(), 7, false))
                .finish();
            tracing::subscriber::with_default(s, emit);
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn json_lines_lead_with_the_node_id() {
        let lines = log_both_ways(true);
        assert_eq!(lines.len(), 2, "{lines:?}");
        for l in &lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["node_id"], 7, "{l}");
            assert!(l.starts_with("{\"node_id\":7,"), "{l}");
        }
    }

    #[test]
    fn text_lines_outside_the_span_get_its_tag_after_the_level() {
        let lines = log_both_ways(false);
        assert_eq!(lines.len(), 2, "{lines:?}");
        for l in &lines {
            assert_eq!(l.matches("node{node_id=7}:").count(), 1, "{l}");
        }
        assert!(lines[0].contains(" WARN node{node_id=7}: "), "{}", lines[0]);
    }

    #[test]
    fn the_tag_goes_after_the_level() {
        assert_eq!(
            insert_after_level("2026-01-01T00:00:00Z  INFO x: hi", "T:").as_deref(),
            Some("2026-01-01T00:00:00Z  INFO T: x: hi")
        );
        assert_eq!(insert_after_level("garbage", "T:"), None);
    }
}
