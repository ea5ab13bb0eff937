//! The broker-wide bound on memory that client requests hold: `request_memory_bytes`, in the
//! spirit of Kafka's `queued.max.request.bytes`.
//!
//! A tower layer on the client listener counts every gRPC message a client sends against one
//! pool of bytes. The 5-byte gRPC prefix of a message gives its length before its body arrives,
//! so the whole message is reserved at once, and its body is not read until the pool has room:
//! HTTP/2 flow control then holds the client back. Reserving whole messages, never parts, means
//! that two half-received requests can never wait on each other. A fetch reserves what it may
//! read (`Reservation::share_up_to`) before it reads. What a request reserved is given back when
//! its answer has been sent (or dropped), since the decoded request and its answer live until
//! then. A message larger than the whole pool can never fit and is refused with
//! `RESOURCE_EXHAUSTED`.
//!
//! So memory for requests does not grow with load: more clients, larger batches or a slow disk
//! make requests wait, not the broker grow.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

/// Length of the prefix of every gRPC message: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// The pool of bytes that requests in flight may hold.
#[derive(Debug)]
pub struct RequestMemory {
    pool: Arc<Semaphore>,
    total: usize,
    /// The largest message a service decodes: a prefix announcing more is refused at once,
    /// before it can hold the pool.
    max_message: usize,
}

impl RequestMemory {
    pub fn new(total: usize, max_message: usize) -> Arc<Self> {
        // A semaphore holds at most usize::MAX >> 3 permits; no config comes near it.
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            pool: Arc::new(Semaphore::new(total)),
            total,
            max_message,
        })
    }

    /// Bytes not reserved by any request now.
    pub fn available(&self) -> usize {
        self.pool.available_permits()
    }

    fn too_large(&self, bytes: usize) -> Status {
        match bytes > self.max_message {
            true => Status::resource_exhausted(format!(
                "a request message of {bytes} bytes is larger than the broker's limit of {} \
                 bytes",
                self.max_message
            )),
            false => Status::resource_exhausted(format!(
                "a request message of {bytes} bytes is larger than this broker's \
                 request_memory_bytes ({})",
                self.total
            )),
        }
    }

    /// Waits until `bytes` fit in the pool and takes them.
    async fn acquire(self: Arc<Self>, bytes: usize) -> Result<OwnedSemaphorePermit, Status> {
        if bytes > self.total || bytes > self.max_message {
            return Err(self.too_large(bytes));
        }
        let n = u32::try_from(bytes).map_err(|_| self.too_large(bytes))?;
        self.pool
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| Status::unavailable("the broker is stopping"))
    }
}

/// What one request holds of the pool, given back when the last holder drops it: the request
/// body, the handler (through the request's extensions) and the answer's body share it.
#[derive(Debug, Clone)]
pub struct Reservation {
    memory: Arc<RequestMemory>,
    permits: Arc<Mutex<Vec<OwnedSemaphorePermit>>>,
}

impl Reservation {
    fn new(memory: Arc<RequestMemory>) -> Self {
        Self {
            memory,
            permits: Arc::default(),
        }
    }

    /// Reserves between `floor` and `want` bytes for one read: waits until `floor` fits, then
    /// takes at once what is free of the rest. A fetch waits only for a floor so that many
    /// waiting fetches cannot hold the pool among them and wait on each other. The share is
    /// the caller's: it gives it back by dropping it (a pass that found too little) or adds
    /// it to the request with [`keep_read`](Self::keep_read).
    pub async fn share_up_to(&self, floor: usize, want: usize) -> Result<Share, Status> {
        let floor = floor.min(want).min(self.memory.total);
        let mut permit = self.memory.clone().acquire(floor).await?;
        self.take_if_free(&mut permit, (want - floor).min(self.memory.available()));
        Ok(Share(permit))
    }

    /// Keeps `bytes` read under `share` until the answer is sent: the rest goes back to the
    /// pool. A read larger than its share (the first batch comes whole) takes the difference
    /// if it is free; if not, it is counted short by that much.
    pub fn keep_read(&self, mut share: Share, bytes: usize) {
        let had = share.0.num_permits();
        if bytes < had {
            drop(share.0.split(had - bytes));
        } else {
            self.take_if_free(&mut share.0, bytes - had);
        }
        self.keep(share.0);
    }

    /// Adds `bytes` to `permit` if the pool has them free now; never waits.
    fn take_if_free(&self, permit: &mut OwnedSemaphorePermit, bytes: usize) {
        let Ok(n) = u32::try_from(bytes) else { return };
        if let Ok(more) = self.memory.pool.clone().try_acquire_many_owned(n) {
            permit.merge(more);
        }
    }

    fn keep(&self, permit: OwnedSemaphorePermit) {
        self.permits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(permit);
    }
}

/// Bytes of the pool held for one read, given back when dropped.
#[derive(Debug)]
pub struct Share(OwnedSemaphorePermit);

impl Share {
    /// How many bytes it holds.
    pub fn bytes(&self) -> usize {
        self.0.num_permits()
    }
}

/// Puts every request of a server under `memory`.
#[derive(Debug, Clone)]
pub struct RequestMemoryLayer {
    memory: Arc<RequestMemory>,
}

impl RequestMemoryLayer {
    pub fn new(memory: Arc<RequestMemory>) -> Self {
        Self { memory }
    }
}

impl<S> Layer<S> for RequestMemoryLayer {
    type Service = Bounded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bounded {
            inner,
            memory: self.memory.clone(),
        }
    }
}

/// The service of [`RequestMemoryLayer`].
#[derive(Debug, Clone)]
pub struct Bounded<S> {
    inner: S,
    memory: Arc<RequestMemory>,
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ResBody> Service<http::Request<tonic::body::Body>> for Bounded<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Held<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let reservation = Reservation::new(self.memory.clone());
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(reservation.clone());
        let body = tonic::body::Body::new(Counted::new(body, reservation.clone()));
        let answer = self.inner.call(http::Request::from_parts(parts, body));
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|inner| Held {
                inner,
                _reservation: reservation,
            }))
        })
    }
}

/// An answer's body that keeps its request's reservation until it has been sent or dropped.
#[derive(Debug)]
pub struct Held<B> {
    inner: B,
    _reservation: Reservation,
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a request body stands in its stream of length-prefixed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Reading a prefix; `have` of its bytes seen so far.
    Prefix { have: usize, bytes: [u8; PREFIX] },
    /// Inside a message body; `left` bytes to go.
    Body { left: usize },
}

impl Default for Framing {
    fn default() -> Self {
        Framing::Prefix {
            have: 0,
            bytes: [0; PREFIX],
        }
    }
}

impl Framing {
    /// Walks `chunk` from `at`; returns where it stopped and, when it stopped on a completed
    /// prefix, the length of the message that follows.
    fn walk(&mut self, chunk: &[u8], mut at: usize) -> (usize, Option<usize>) {
        while at < chunk.len() {
            match self {
                Framing::Body { left } => {
                    let take = (*left).min(chunk.len() - at);
                    at += take;
                    *left -= take;
                    if *left == 0 {
                        *self = Framing::default();
                    }
                }
                Framing::Prefix { have, bytes } => {
                    let take = (PREFIX - *have).min(chunk.len() - at);
                    bytes[*have..*have + take].copy_from_slice(&chunk[at..at + take]);
                    *have += take;
                    at += take;
                    if *have == PREFIX {
                        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                        *self = match len {
                            0 => Framing::default(),
                            n => Framing::Body { left: n as usize },
                        };
                        return (at, Some(PREFIX + len as usize));
                    }
                }
            }
        }
        (at, None)
    }
}

/// A request body whose messages are reserved in the pool before they are passed on.
struct Counted {
    inner: tonic::body::Body,
    reservation: Reservation,
    framing: Framing,
    /// A data frame held back until its next message fits, and how far it has been walked.
    held: Option<(Bytes, usize)>,
    waiting: Option<BoxFuture<Result<OwnedSemaphorePermit, Status>>>,
}

impl Counted {
    fn new(inner: tonic::body::Body, reservation: Reservation) -> Self {
        Self {
            inner,
            reservation,
            framing: Framing::default(),
            held: None,
            waiting: None,
        }
    }

    /// Walks the held frame, reserving each message that starts in it; ready once the whole
    /// frame is walked and every reservation is taken.
    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        loop {
            if let Some(waiting) = self.waiting.as_mut() {
                let acquired = ready!(waiting.as_mut().poll(cx));
                // Cleared before an error returns: a finished future must not be polled again.
                self.waiting = None;
                self.reservation.keep(acquired?);
            }
            let Some((chunk, at)) = self.held.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            if *at == chunk.len() {
                return Poll::Ready(Ok(()));
            }
            let (next, message) = self.framing.walk(chunk.chunk(), *at);
            *at = next;
            if let Some(bytes) = message {
                let memory = self.reservation.memory.clone();
                self.waiting = Some(Box::pin(memory.acquire(bytes)));
            }
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.held.is_none() {
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => this.held = Some((data, 0)),
                Err(other) => return Poll::Ready(Some(Ok(other))),
            }
        }
        ready!(this.poll_reserve(cx))?;
        let (data, _) = this.held.take().expect("a held frame");
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "request_memory_test.rs"]
mod tests;
