//! Produce and fetch request metrics per topic: request counts, record bytes in and out, and
//! latency histograms.
//!
//! Cardinality stays bounded: the only label is `topic`, never the partition, and only topics
//! that exist in the metadata image when the request arrives are counted (a client naming
//! random topics cannot grow the registry). Series of topics deleted since are removed at the
//! next scrape ([`Requests::prune`]).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use keel_metadata::image::MetadataImage;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Latency buckets in seconds: sub-millisecond appends up to a minute-long fetch long poll.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The kind of a data-path request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Produce,
    Fetch,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Produce => "produce",
            Kind::Fetch => "fetch",
        }
    }
}

/// The three series of one request kind.
struct Family {
    requests: IntCounterVec,
    bytes: IntCounterVec,
    latency: HistogramVec,
}

impl Family {
    fn new(r: &Registry, kind: Kind, bytes_name: &str, bytes_help: &str) -> Family {
        let k = kind.as_str();
        let requests = IntCounterVec::new(
            Opts::new(
                format!("keel_{k}_requests_total"),
                format!("{k} requests per topic (one per topic named in a request)"),
            ),
            &["topic"],
        )
        .expect("valid counter");
        let bytes = IntCounterVec::new(Opts::new(bytes_name, bytes_help), &["topic"])
            .expect("valid counter");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                format!("keel_{k}_request_duration_seconds"),
                format!("Time from a {k} request's arrival to its answer, per topic"),
            )
            .buckets(BUCKETS.to_vec()),
            &["topic"],
        )
        .expect("valid histogram");
        for c in [&requests, &bytes] {
            r.register(Box::new(c.clone())).expect("registered once");
        }
        r.register(Box::new(latency.clone()))
            .expect("registered once");
        Family {
            requests,
            bytes,
            latency,
        }
    }

    fn remove(&self, topic: &str) {
        let _ = self.requests.remove_label_values(&[topic]);
        let _ = self.bytes.remove_label_values(&[topic]);
        let _ = self.latency.remove_label_values(&[topic]);
    }
}

/// Produce and fetch metrics per topic.
pub struct Requests {
    produce: Family,
    fetch: Family,
    /// Topics with series, for [`Requests::prune`].
    topics: Mutex<BTreeSet<String>>,
}

impl Requests {
    /// The families, registered in `r`.
    pub fn new(r: &Registry) -> Requests {
        Requests {
            produce: Family::new(
                r,
                Kind::Produce,
                "keel_bytes_in_total",
                "Record batch bytes appended by produce requests, per topic",
            ),
            fetch: Family::new(
                r,
                Kind::Fetch,
                "keel_bytes_out_total",
                "Record batch bytes returned to consumers, per topic",
            ),
            topics: Mutex::new(BTreeSet::new()),
        }
    }

    fn family(&self, kind: Kind) -> &Family {
        match kind {
            Kind::Produce => &self.produce,
            Kind::Fetch => &self.fetch,
        }
    }

    /// Counts one request of `kind` for `topic` that moved `bytes` and took `elapsed`, if
    /// the topic exists in `image`.
    pub fn record(
        &self,
        image: &MetadataImage,
        kind: Kind,
        topic: &str,
        bytes: u64,
        elapsed: Duration,
    ) {
        if image.topic_by_name(topic).is_none() {
            return;
        }
        {
            let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            if !topics.contains(topic) {
                topics.insert(topic.to_owned());
            }
        }
        let f = self.family(kind);
        f.requests.with_label_values(&[topic]).inc();
        f.bytes.with_label_values(&[topic]).inc_by(bytes);
        f.latency
            .with_label_values(&[topic])
            .observe(elapsed.as_secs_f64());
    }

    /// Removes the series of topics that `image` no longer has.
    pub fn prune(&self, image: &MetadataImage) {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics.retain(|t| {
            let keep = image.topic_by_name(t).is_some();
            if !keep {
                self.produce.remove(t);
                self.fetch.remove(t);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use keel_metadata::image::TopicImage;
    use keel_metadata::records::TopicId;

    use super::*;

    fn image(topics: &[&str]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (i, name) in topics.iter().enumerate() {
            let id = TopicId(i as u128 + 1);
            image.topic_ids.insert((*name).into(), id);
            image.topics.insert(
                id,
                TopicImage {
                    name: (*name).into(),
                    topic_id: id,
                    configs: BTreeMap::new(),
                    partitions: BTreeMap::new(),
                    created_at_ms: 0,
                },
            );
        }
        image
    }

    fn text(r: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn only_known_topics_are_counted_and_deleted_ones_are_pruned() {
        let r = Registry::new();
        let m = Requests::new(&r);
        let both = image(&["a", "b"]);
        let ms = Duration::from_millis(3);
        m.record(&both, Kind::Produce, "a", 100, ms);
        m.record(&both, Kind::Produce, "a", 50, ms);
        m.record(&both, Kind::Fetch, "b", 70, ms);
        m.record(&both, Kind::Produce, "nosuch", 1, ms);
        let t = text(&r);
        assert!(
            t.contains("keel_produce_requests_total{topic=\"a\"} 2"),
            "{t}"
        );
        assert!(t.contains("keel_bytes_in_total{topic=\"a\"} 150"), "{t}");
        assert!(t.contains("keel_bytes_out_total{topic=\"b\"} 70"), "{t}");
        assert!(
            t.contains("keel_fetch_request_duration_seconds_bucket{topic=\"b\",le=\"0.005\"} 1"),
            "{t}"
        );
        assert!(!t.contains("nosuch"), "{t}");

        m.prune(&image(&["b"]));
        let t = text(&r);
        assert!(!t.contains("topic=\"a\""), "{t}");
        assert!(
            t.contains("keel_fetch_requests_total{topic=\"b\"} 1"),
            "{t}"
        );
    }
}
