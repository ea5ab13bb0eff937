//! The broker role's life with the controller: registration with a fresh incarnation id,
//! heartbeats that report the applied metadata offset, re-registration when the controller
//! no longer knows this registration, controlled shutdown, and asking to be fenced while the
//! data directory refuses writes (see `crate::partitions::disk`).
//!
//! The broker finds the active controller by asking the configured voters in turn and then
//! following `NOT_CONTROLLER` hints; it never needs to know in advance which voter leads.

use std::sync::Arc;
use std::time::Duration;

use keel_proto::v1::controller_client::ControllerClient;
use keel_proto::v1::{
    BrokerEndpoint, BrokerHeartbeatRequest, BrokerRegistrationRequest, Error, ErrorCode,
};
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use crate::services::Shared;

/// What a broker says about itself when it registers.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Node id.
    pub broker_id: i32,
    /// Client listener as others reach it.
    pub client: (String, u16),
    /// Internal listener (replication) as others reach it.
    pub internal: (String, u16),
    /// Rack.
    pub rack: Option<String>,
    /// How often to heartbeat.
    pub heartbeat_interval: Duration,
    /// How long controlled shutdown may take before the broker stops anyway.
    pub shutdown_timeout: Duration,
}

/// The broker's registration as the controller last answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The broker epoch, once registered.
    pub broker_epoch: Option<u64>,
    /// Whether the controller considers it fenced.
    pub fenced: bool,
}

/// Finds the active controller among the voters, following hints.
struct ControllerFinder {
    voters: Vec<String>,
    next: usize,
    hint: Option<String>,
}

impl ControllerFinder {
    fn address(&mut self) -> String {
        if let Some(h) = self.hint.take() {
            return h;
        }
        let addr = self.voters[self.next % self.voters.len()].clone();
        self.next += 1;
        addr
    }

    /// Learns from an error: a hint is tried next; anything else moves on to the next voter.
    fn learn(&mut self, e: &Error) {
        if e.code == ErrorCode::NotController as i32 {
            self.hint = e.leader_endpoint.clone();
        }
    }
}

/// Runs the broker's registration and heartbeats until `shutdown` turns true and controlled
/// shutdown has finished (or timed out). `status` follows the controller's answers.
/// `disk` is `Some(error)` while the data directory refuses writes: the heartbeats then ask
/// to be fenced.
pub async fn run(
    shared: Arc<Shared>,
    me: Identity,
    mut shutdown: watch::Receiver<bool>,
    mut disk: watch::Receiver<Option<String>>,
    status: watch::Sender<Status>,
) {
    let incarnation: [u8; 16] = uuid::Uuid::new_v4().into_bytes();
    let mut finder = ControllerFinder {
        voters: shared.voters.values().cloned().collect(),
        next: 0,
        hint: None,
    };
    let mut shutdown_deadline: Option<Instant> = None;
    loop {
        let Some((epoch, addr)) =
            register(&shared, &me, &incarnation, &mut finder, &mut shutdown).await
        else {
            return;
        };
        tracing::info!(broker_id = me.broker_id, broker_epoch = epoch, controller = %addr, "registered");
        status.send_replace(Status {
            broker_epoch: Some(epoch),
            fenced: true,
        });
        let mut addr = addr;
        loop {
            let want_shutdown = *shutdown.borrow();
            if want_shutdown && shutdown_deadline.is_none() {
                shutdown_deadline = Some(Instant::now() + me.shutdown_timeout);
            }
            if shutdown_deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(
                    broker_id = me.broker_id,
                    "controlled shutdown timed out; stopping anyway"
                );
                return;
            }
            let req = BrokerHeartbeatRequest {
                broker_id: me.broker_id,
                broker_epoch: epoch,
                current_metadata_offset: shared.view.offset(),
                want_fence: disk.borrow_and_update().is_some(),
                want_shutdown,
            };
            let answer = ControllerClient::new(shared.channel(&addr))
                .broker_heartbeat(with_deadline(req, rpc_timeout(&me, shutdown_deadline)))
                .await;
            let mut retry_now = false;
            match answer.map(|r| r.into_inner()) {
                Ok(r) if r.error.is_none() => {
                    status.send_replace(Status {
                        broker_epoch: Some(epoch),
                        fenced: r.is_fenced,
                    });
                    if want_shutdown && r.should_shutdown {
                        tracing::info!(broker_id = me.broker_id, "controlled shutdown complete");
                        return;
                    }
                }
                Ok(r) => {
                    let e = r.error.unwrap_or_default();
                    if e.code == ErrorCode::StaleBrokerEpoch as i32
                        || e.code == ErrorCode::BrokerIdNotRegistered as i32
                    {
                        tracing::warn!(broker_id = me.broker_id, error = %e.message, "registration lost; registering again");
                        break;
                    }
                    finder.learn(&e);
                    retry_now = finder.hint.is_some();
                    addr = finder.address();
                }
                Err(status) => {
                    tracing::debug!(%addr, %status, "heartbeat failed");
                    addr = finder.address();
                }
            }
            if retry_now {
                continue;
            }
            let pause = if want_shutdown {
                Duration::from_millis(100)
            } else {
                me.heartbeat_interval
            };
            // A disk that fails or recovers is told to the controller at once.
            tokio::select! {
                _ = sleep(pause) => {}
                _ = shutdown.changed() => {}
                _ = disk.changed() => {}
            }
        }
    }
}

/// How long one call to the controller may take: a few heartbeat intervals, and never past
/// the controlled-shutdown deadline.
fn rpc_timeout(me: &Identity, deadline: Option<Instant>) -> Duration {
    let normal = (me.heartbeat_interval * 2).max(Duration::from_secs(1));
    match deadline {
        Some(d) => normal
            .min(d.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(10)),
        None => normal,
    }
}

fn with_deadline<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

/// Sleeps for `d` or until shutdown is asked.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

/// Registers until it succeeds; `None` when shutdown was asked first.
async fn register(
    shared: &Shared,
    me: &Identity,
    incarnation: &[u8; 16],
    finder: &mut ControllerFinder,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(u64, String)> {
    let endpoint = |name: &str, (host, port): &(String, u16)| BrokerEndpoint {
        name: name.into(),
        host: host.clone(),
        port: i32::from(*port),
    };
    let req = BrokerRegistrationRequest {
        cluster_id: shared.view.current().cluster_id.clone(),
        broker_id: me.broker_id,
        incarnation_id: bytes::Bytes::copy_from_slice(incarnation),
        endpoints: vec![
            endpoint("client", &me.client),
            endpoint("replication", &me.internal),
        ],
        rack: me.rack.clone(),
    };
    loop {
        if *shutdown.borrow() {
            return None;
        }
        let addr = finder.address();
        let answer = ControllerClient::new(shared.channel(&addr))
            .broker_registration(with_deadline(req.clone(), rpc_timeout(me, None)))
            .await
            .map(|r| r.into_inner());
        match answer {
            Ok(r) if r.error.is_none() => return Some((r.broker_epoch, addr)),
            Ok(r) => {
                let e = r.error.unwrap_or_default();
                if e.code == ErrorCode::BrokerDecommissioned as i32 {
                    // Nothing to serve any more; say so now and then until it is stopped.
                    tracing::error!(
                        broker_id = me.broker_id,
                        "this broker was decommissioned and may not register again: stop it"
                    );
                    pause(Duration::from_secs(30), shutdown).await;
                    continue;
                }
                tracing::debug!(%addr, error = %e.message, "registration refused");
                finder.learn(&e);
                if finder.hint.is_some() {
                    continue;
                }
            }
            Err(status) => tracing::debug!(%addr, %status, "registration failed"),
        }
        pause(Duration::from_millis(250), shutdown).await;
    }
}
