//! How a broker without the controller role follows the metadata: a `FetchMetadata` stream
//! from any controller node, whose snapshots replace the broker's image.

use std::sync::Arc;
use std::time::Duration;

use keel_metadata::image::MetadataImage;
use keel_proto::v1::controller_client::ControllerClient;
use keel_proto::v1::fetch_metadata_response::Data;
use keel_proto::v1::FetchMetadataRequest;
use tokio::sync::watch;

use crate::services::Shared;

/// Follows the voters' metadata into `images` until `shutdown` turns true.
pub async fn run(
    shared: Arc<Shared>,
    broker_id: i32,
    images: watch::Sender<Arc<MetadataImage>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let voters: Vec<String> = shared.voters.values().cloned().collect();
    let mut next = 0;
    loop {
        let addr = voters[next % voters.len()].clone();
        next += 1;
        tokio::select! {
            result = follow(&shared, &addr, broker_id, &images) => {
                tracing::debug!(%addr, ?result, "metadata stream ended; trying the next voter");
            }
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn follow(
    shared: &Shared,
    addr: &str,
    broker_id: i32,
    images: &watch::Sender<Arc<MetadataImage>>,
) -> Result<(), String> {
    let current = images.borrow().clone();
    let req = FetchMetadataRequest {
        cluster_id: current.cluster_id.clone(),
        broker_id,
        next_offset: if current.offset == 0 {
            0
        } else {
            current.offset + 1
        },
        max_bytes: 0,
    };
    let mut stream = ControllerClient::new(shared.channel(addr))
        .fetch_metadata(req)
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let mut snapshot = Vec::new();
    while let Some(msg) = stream.message().await.map_err(|s| s.to_string())? {
        if let Some(e) = msg.error {
            return Err(e.message);
        }
        shared.set_reported_controller(msg.controller_id);
        match msg.data {
            Some(Data::SnapshotChunk(c)) => {
                if c.position as usize != snapshot.len() {
                    return Err(format!(
                        "snapshot chunk at {} after {} bytes",
                        c.position,
                        snapshot.len()
                    ));
                }
                snapshot.extend_from_slice(&c.data);
                if c.done {
                    let image: MetadataImage =
                        serde_json::from_slice(&snapshot).map_err(|e| e.to_string())?;
                    snapshot.clear();
                    images.send_replace(Arc::new(image));
                }
            }
            Some(Data::Entries(_)) => {
                return Err("log entries are not served by this version".into())
            }
            None => {}
        }
    }
    Ok(())
}
