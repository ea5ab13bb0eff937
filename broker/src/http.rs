//! The node's HTTP side listener (`http_listen`): `/healthz` answers while the process serves
//! at all; `/readyz` answers 200 only when the node is ready for traffic: a broker registered
//! and unfenced (so caught up with the metadata log) with a data directory that takes writes,
//! a controller-only node in a quorum with a leader. Otherwise 503 with the reason, for load
//! balancers and Kubernetes probes.
//! `/metrics` serves the Prometheus text of [`crate::metrics`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::lifecycle::Status;
use crate::services::Shared;

/// What the probes read.
#[derive(Clone)]
pub struct Probes {
    /// The node's shared state.
    pub shared: Arc<Shared>,
    /// The broker role's registration, when the node has that role.
    pub broker: Option<watch::Receiver<Status>>,
    /// With the broker role: `Some(error)` while the data directory refuses writes.
    pub disk: Option<watch::Receiver<Option<String>>>,
    /// What `/metrics` reads.
    pub metrics: crate::metrics::Sources,
}

impl Probes {
    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(Some(error)) = self.disk.as_ref().map(|d| d.borrow().clone()) {
            return Err(format!("the data directory refuses writes: {error}"));
        }
        if let Some(status) = &self.broker {
            let s = *status.borrow();
            return match (s.broker_epoch, s.fenced) {
                (None, _) => Err("broker not registered with the controller yet".into()),
                (Some(_), true) => Err("broker fenced: catching up with the metadata log".into()),
                (Some(_), false) => Ok(()),
            };
        }
        match self.shared.controller_id() {
            Some(_) => Ok(()),
            None => Err("no active controller known".into()),
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(probes): State<Probes>) -> (StatusCode, String) {
    match probes.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(probes): State<Probes>) -> String {
    probes.metrics.render().await
}

/// Serves the probes on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, probes: Probes, mut stop: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(error = %e, "http listener failed");
    }
}
