//! Producer ids for `Producer.InitProducerId`: this broker takes blocks of ids from the
//! active controller (`Controller.AllocateProducerIds`, one metadata record per block of
//! [`keel_metadata::node::PRODUCER_ID_BLOCK`]) and hands them out one by one from memory, so
//! a new producer costs no quorum write. Ids of a block left unused when the broker stops are
//! never handed out again (as in Kafka): the next block starts after every block allocated.
//!
//! A non-transactional idempotent producer always gets a new id with epoch 0, even when it
//! names the id it held (Kafka's coordinator does the same when there is no transactional id:
//! nothing ties an old id to the asking client).

use std::sync::Arc;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_proto::v1::controller_client::ControllerClient;
use keel_proto::v1::ErrorCode;
use tokio::sync::watch;

use crate::lifecycle::Status;
use crate::services::{forward, Remote, Shared};

/// Tries of a block allocation before the caller hears the last error (retriable ones only).
const ATTEMPTS: u32 = 5;
const RETRY_WAIT: Duration = Duration::from_millis(200);

/// The ids `[next, end)` of the current block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Block {
    next: i64,
    end: i64,
}

impl Block {
    /// The next id of the block, if any is left.
    fn take(&mut self) -> Option<i64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
}

/// Hands out producer ids from blocks the controller allocated to this broker.
pub struct ProducerIds {
    shared: Arc<Shared>,
    broker_id: i32,
    status: watch::Receiver<Status>,
    /// Held across the allocation call, so concurrent callers wait for one block.
    block: tokio::sync::Mutex<Block>,
}

fn call_allocate(
    channel: tonic::transport::Channel,
    req: tonic::Request<pb::AllocateProducerIdsRequest>,
) -> futures_util::future::BoxFuture<
    'static,
    Result<tonic::Response<pb::AllocateProducerIdsResponse>, tonic::Status>,
> {
    Box::pin(async move {
        ControllerClient::new(channel)
            .allocate_producer_ids(req)
            .await
    })
}

impl ProducerIds {
    pub fn new(shared: Arc<Shared>, broker_id: i32, status: watch::Receiver<Status>) -> Self {
        ProducerIds {
            shared,
            broker_id,
            status,
            block: tokio::sync::Mutex::new(Block::default()),
        }
    }

    /// A producer id no other producer has had.
    pub async fn next(&self) -> Result<i64, pb::Error> {
        let mut block = self.block.lock().await;
        if let Some(id) = block.take() {
            return Ok(id);
        }
        *block = self.allocate().await?;
        block.take().ok_or_else(|| {
            pb::Error::new(
                ErrorCode::UnknownServerError,
                "the controller allocated an empty block",
            )
        })
    }

    /// A new block from the active controller, retrying retriable failures a few times.
    async fn allocate(&self) -> Result<Block, pb::Error> {
        let mut last = pb::Error::new(ErrorCode::BrokerNotAvailable, "broker not registered yet");
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_WAIT).await;
            }
            let Some(broker_epoch) = self.status.borrow().broker_epoch else {
                continue;
            };
            let req = pb::AllocateProducerIdsRequest {
                broker_id: self.broker_id,
                broker_epoch,
            };
            let call: Remote<_, pb::AllocateProducerIdsResponse> = call_allocate;
            let addrs = self.shared.voters_controller_first();
            match forward(&self.shared, &addrs, req, call).await {
                Ok(resp) => match resp.error {
                    None => {
                        tracing::info!(
                            first = resp.producer_id_start,
                            len = resp.producer_id_len,
                            "producer id block allocated"
                        );
                        return Ok(Block {
                            next: resp.producer_id_start,
                            end: resp.producer_id_start + i64::from(resp.producer_id_len),
                        });
                    }
                    Some(e) if e.retriable => last = e,
                    Some(e) => return Err(e),
                },
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_hands_out_each_id_once() {
        let mut b = Block {
            next: 1000,
            end: 1002,
        };
        assert_eq!(b.take(), Some(1000));
        assert_eq!(b.take(), Some(1001));
        assert_eq!(b.take(), None);
        assert_eq!(Block::default().take(), None);
    }
}
