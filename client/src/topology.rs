//! The data path's view of the cluster: the partitions of each topic the client uses, the
//! broker leading each one, and one gRPC channel per broker.
//!
//! Learned from `Cluster.Metadata` through an [`AdminClient`] (which owns bootstrap failover
//! and retries), so a client needs only one reachable bootstrap address and learns the rest.
//! Channels connect lazily: a dead broker costs a failed call (retried by the caller after
//! a refresh), not a failed start.
//!
//! Refreshes are single-flight: a caller that saw a stale leader passes the
//! [`generation`](Topology::generation) it routed with, and only the first of many such
//! callers fetches; the others find a newer generation and return at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::admin::parse_address;
use crate::{AdminClient, AdminOptions, Error, TopicId, TopicPartition};

/// The partitions of one topic and their leaders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicRoute {
    /// The topic's id, for fetch's recreated-topic check.
    pub id: Option<TopicId>,
    /// Leader of each partition, by index; `None` while it has none.
    pub leaders: Vec<Option<Leader>>,
}

impl TopicRoute {
    /// The partition count.
    pub fn partitions(&self) -> i32 {
        self.leaders.len() as i32
    }
}

/// A partition's leader as the metadata names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leader {
    pub broker: i32,
    pub epoch: i32,
}

/// Where to send a request for one partition.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub broker: i32,
    pub endpoint: String,
    pub channel: Channel,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    /// Client endpoint (`host:port`) of each broker.
    brokers: HashMap<i32, String>,
    /// One channel per endpoint, kept across refreshes.
    channels: HashMap<String, Channel>,
    topics: HashMap<String, Arc<TopicRoute>>,
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Topology {
    admin: AdminClient,
    state: Mutex<State>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Topology {
    /// Connects to the first reachable bootstrap address. Data rpcs on the broker channels
    /// set their own deadlines (a long poll waits longer than a produce).
    pub async fn connect(bootstrap: &[String], metadata: AdminOptions) -> Result<Self, Error> {
        Ok(Self {
            admin: AdminClient::connect_with(bootstrap, metadata).await?,
            state: Mutex::new(State::default()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The admin client the metadata comes through.
    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    /// The number of refreshes so far; pass it to [`Topology::refresh_after`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The route of `topic`, from the cache or fetched. Fails with the topic's own error
    /// (`UNKNOWN_TOPIC_OR_PARTITION`, ...) when the metadata has it.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicRoute>, Error> {
        if let Some(route) = self.lock().topics.get(topic) {
            return Ok(route.clone());
        }
        let _one = self.refreshing.lock().await;
        if let Some(route) = self.lock().topics.get(topic) {
            return Ok(route.clone());
        }
        self.load(&[topic.to_string()]).await?;
        self.lock()
            .topics
            .get(topic)
            .cloned()
            .ok_or_else(|| Error::InvalidResponse {
                rpc: "Cluster.Metadata",
                reason: format!("no result for topic {topic}"),
            })
    }

    /// Fetches the metadata of every known topic again, unless another caller did since
    /// `seen` (a generation read before the failure that calls for a refresh).
    pub async fn refresh_after(&self, seen: u64) -> Result<(), Error> {
        let _one = self.refreshing.lock().await;
        let known: Vec<String> = {
            let state = self.lock();
            if state.generation != seen {
                return Ok(());
            }
            state.topics.keys().cloned().collect()
        };
        if known.is_empty() {
            return Ok(());
        }
        self.load(&known).await.or_else(|e| match e {
            // A topic deleted meanwhile is dropped from the cache by `load`; the callers
            // that still use it learn that from their next `topic()`.
            Error::Api(_) => Ok(()),
            other => Err(other),
        })
    }

    /// The route of one partition now; `None` when the topic is not loaded, the partition
    /// does not exist or has no leader, or the leader's endpoint is unknown.
    pub fn route(&self, tp: &TopicPartition) -> Option<Route> {
        let mut state = self.lock();
        let leader = (*state
            .topics
            .get(&tp.topic)?
            .leaders
            .get(tp.partition as usize)?)?;
        let endpoint = state.brokers.get(&leader.broker)?.clone();
        let channel = match state.channels.get(&endpoint) {
            Some(channel) => channel.clone(),
            None => {
                let channel = lazy_channel(&endpoint).ok()?;
                state.channels.insert(endpoint.clone(), channel.clone());
                channel
            }
        };
        Some(Route {
            broker: leader.broker,
            endpoint,
            channel,
        })
    }

    /// Fetches `topics` and stores what came back. Fails with the first topic's error; topics
    /// that failed leave the cache.
    async fn load(&self, topics: &[String]) -> Result<(), Error> {
        let metadata = self.admin.metadata(topics, false).await?;
        let mut first_error = None;
        let mut state = self.lock();
        state.generation += 1;
        state.brokers = metadata
            .brokers
            .iter()
            .map(|b| (b.id, b.address()))
            .collect();
        for t in metadata.topics {
            if let Some(e) = t.error {
                state.topics.remove(&t.name);
                first_error.get_or_insert(Error::Api(e));
                continue;
            }
            let leaders = t
                .partitions
                .iter()
                .map(|p| {
                    p.leader.map(|broker| Leader {
                        broker,
                        epoch: p.leader_epoch,
                    })
                })
                .collect();
            let route = TopicRoute {
                id: t.topic_id,
                leaders,
            };
            state.topics.insert(t.name, Arc::new(route));
        }
        debug!(generation = state.generation, "metadata refreshed");
        first_error.map_or(Ok(()), Err)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few assignments with no await in between: a panic cannot leave
        // the state half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The largest HTTP/2 frame this client accepts: HTTP/2's own limit. A fetch answer's record
/// data then mostly arrives in one frame, which `fetch_call.rs` slices instead of copying.
const MAX_FRAME: u32 = (16 << 20) - 1;

/// How much a broker may send on one stream before the client reads it: a whole fetch answer
/// of the default size, so a backlog read is not held up waiting for window updates.
const STREAM_WINDOW: u32 = 16 << 20;

/// The same for all streams of one connection together (several partitions' fetches).
const CONNECTION_WINDOW: u32 = 32 << 20;

/// A channel to `address` that connects on first use.
pub(crate) fn lazy_channel(address: &str) -> Result<Channel, Error> {
    let uri = parse_address(address)?;
    let endpoint = Endpoint::from_shared(uri).map_err(|_| Error::InvalidArgument {
        argument: address.to_string(),
        reason: "not a valid URI authority",
    })?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        // Fetch answers arrive in HTTP/2 frames of up to this size instead of 16 KiB: fewer
        // frames to parse and gather (a backlog read went about 5% faster, BENCHMARKS.md).
        .max_frame_size(MAX_FRAME)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .connect_lazy())
}
