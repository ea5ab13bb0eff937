//! The `Consumer` and `Replication` services as routed on the listeners: `Fetch` and
//! `ReplicaFetch` answers leave without a copy of their record data; every other method goes
//! to the generated server.
//!
//! tonic encodes an answer by copying it into one buffer, record batches included: for a
//! consumer reading a backlog that copy was the broker's largest cost after the read itself,
//! and on a leader the buffers of its followers' long-lived streams grew to the largest answer
//! and stayed (the largest share of a broker's resident memory under acks=all load).
//! Here an answer is written as a list of chunks instead: the protobuf fields around the
//! batches go into small buffers, and each batch of raw bytes is passed on as the very `Bytes`
//! its segment read returned, which HTTP/2 writes to the socket with the frame headers
//! around it (vectored writes). The bytes on the wire are exactly prost's encoding of the same
//! message (unit tests below), so clients see no difference.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use keel_proto::v1 as pb;
use keel_proto::v1::consumer_server::ConsumerServer;
use keel_proto::v1::fetch_partition_response::Data;
use keel_proto::v1::replication_server::ReplicationServer;
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;
use tonic::codec::Codec;
use tonic::server::NamedService;
use tonic::Status;
use tower_service::Service;

use super::consumer::ConsumerService;
use super::replication::ReplicationService;
use crate::request_memory::{BoxFuture, Reservation};

/// The path of the consumer method served here.
const FETCH: &str = "/keel.v1.Consumer/Fetch";
/// The path of the replication method served here.
const REPLICA_FETCH: &str = "/keel.v1.Replication/ReplicaFetch";
/// Batches smaller than this are copied into the surrounding chunk: a separate chunk costs
/// more than the copy.
const CHAIN_AT: usize = 4096;
/// The largest Fetch answer sent: the limit the generated server had (its length prefix is
/// a `u32`).
const MAX_ANSWER: usize = 64 << 20;
/// The largest Fetch request read (a request names topics and partitions, no data).
const MAX_REQUEST: usize = 4 << 20;

type HttpRequest = http::Request<tonic::body::Body>;
type HttpResponse = http::Response<tonic::body::Body>;
type Answer<S> = fn(S, HttpRequest) -> BoxFuture<Result<HttpResponse, Infallible>>;

/// A generated server `G` with one method (`path`) answered by `answer` over `service`.
#[derive(Clone)]
pub struct Routes<S, G> {
    service: S,
    generated: G,
    path: &'static str,
    answer: Answer<S>,
}

/// `keel.v1.Consumer` with `Fetch` answered by [`fetch`].
pub fn consumer_routes(
    service: ConsumerService,
    generated: ConsumerServer<ConsumerService>,
) -> Routes<ConsumerService, ConsumerServer<ConsumerService>> {
    Routes {
        service,
        generated,
        path: FETCH,
        answer: |service, req| {
            Box::pin(async move {
                Ok(match fetch(service, req).await {
                    Ok(chunks) => answer(Chunks::whole(chunks)),
                    Err(status) => status.into_http(),
                })
            })
        },
    }
}

/// `keel.v1.Replication` with `ReplicaFetch` answered by [`encode_replica_chunks`], round by
/// round.
pub fn replication_routes(
    service: ReplicationService,
    generated: ReplicationServer<ReplicationService>,
) -> Routes<ReplicationService, ReplicationServer<ReplicationService>> {
    Routes {
        service,
        generated,
        path: REPLICA_FETCH,
        answer: |service, req| {
            let decoder = tonic_prost::ProstCodec::<
                pb::ReplicaFetchResponse,
                pb::ReplicaFetchRequest,
            >::default()
            .decoder();
            let inbound =
                tonic::Streaming::new_request(decoder, req.into_body(), None, Some(MAX_REQUEST));
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            crate::spawn(async move { service.serve_stream(inbound, tx).await });
            Box::pin(async move { Ok(answer(Chunks::streamed(rx))) })
        },
    }
}

impl<S, G: NamedService> NamedService for Routes<S, G> {
    const NAME: &'static str = G::NAME;
}

impl<S, G> Service<HttpRequest> for Routes<S, G>
where
    S: Clone,
    G: Service<
        HttpRequest,
        Response = HttpResponse,
        Error = Infallible,
        Future = BoxFuture<Result<HttpResponse, Infallible>>,
    >,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.generated.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        if req.uri().path() != self.path {
            return self.generated.call(req);
        }
        (self.answer)(self.service.clone(), req)
    }
}

/// Reads the request, runs the fetch, and writes the answer as chunks (gRPC prefix first).
async fn fetch(
    service: ConsumerService,
    req: http::Request<tonic::body::Body>,
) -> Result<VecDeque<Bytes>, Status> {
    let reservation = req.extensions().get::<Reservation>().cloned();
    let message = read_message(req.into_body()).await?;
    let request = pb::FetchRequest::decode(message)
        .map_err(|e| Status::internal(format!("a Fetch request that does not decode: {e}")))?;
    let response = service.answer_fetch(request, reservation).await?;
    if response.encoded_len() > MAX_ANSWER {
        return Err(Status::resource_exhausted(format!(
            "a Fetch answer of {} bytes is over {MAX_ANSWER}",
            response.encoded_len()
        )));
    }
    Ok(encode_chunks(&response))
}

/// The one gRPC message of a unary request body.
async fn read_message(mut body: tonic::body::Body) -> Result<Bytes, Status> {
    let mut buf = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > MAX_REQUEST + 5 {
                return Err(Status::out_of_range(format!(
                    "a Fetch request over {MAX_REQUEST} bytes"
                )));
            }
            buf.put(data);
        }
    }
    if buf.len() < 5 {
        return Err(Status::internal("a Fetch request without a message"));
    }
    let mut buf = buf.freeze();
    if buf.get_u8() != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not accepted",
        ));
    }
    let len = buf.get_u32() as usize;
    if buf.len() != len {
        return Err(Status::internal(format!(
            "a Fetch request of {} bytes announced as {len}",
            buf.len()
        )));
    }
    Ok(buf)
}

/// A successful gRPC answer made of `chunks`, then the `grpc-status: 0` trailer.
fn answer(chunks: Chunks) -> HttpResponse {
    let mut resp = http::Response::new(tonic::body::Body::new(chunks));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// The gRPC message of `resp` (its 5-byte prefix included) as chunks whose concatenation is
/// prost's encoding; record batches of [`CHAIN_AT`] bytes or more are chunks of their own.
pub fn encode_chunks(resp: &pb::FetchResponse) -> VecDeque<Bytes> {
    let mut out = ChunkWriter::prefix(resp.encoded_len());
    if let Some(e) = &resp.error {
        prost::encoding::message::encode(1, e, &mut out.head);
    }
    for t in &resp.topics {
        encode_key(2, WireType::LengthDelimited, &mut out.head);
        encode_varint(t.encoded_len() as u64, &mut out.head);
        // proto3 leaves out fields at their default, as prost does.
        if !t.topic.is_empty() {
            prost::encoding::string::encode(1, &t.topic, &mut out.head);
        }
        if !t.topic_id.is_empty() {
            prost::encoding::bytes::encode(2, &t.topic_id, &mut out.head);
        }
        for p in &t.partitions {
            encode_key(3, WireType::LengthDelimited, &mut out.head);
            encode_varint(p.encoded_len() as u64, &mut out.head);
            out.partition(p);
        }
    }
    out.finish()
}

/// [`encode_chunks`] for a leader's answer to one replica fetch round.
pub fn encode_replica_chunks(resp: &pb::ReplicaFetchResponse) -> VecDeque<Bytes> {
    let mut out = ChunkWriter::prefix(resp.encoded_len());
    if let Some(e) = &resp.error {
        prost::encoding::message::encode(1, e, &mut out.head);
    }
    for t in &resp.topics {
        encode_key(2, WireType::LengthDelimited, &mut out.head);
        encode_varint(t.encoded_len() as u64, &mut out.head);
        if !t.topic_id.is_empty() {
            prost::encoding::bytes::encode(1, &t.topic_id, &mut out.head);
        }
        for p in &t.partitions {
            encode_key(2, WireType::LengthDelimited, &mut out.head);
            encode_varint(p.encoded_len() as u64, &mut out.head);
            out.replica_partition(p);
        }
    }
    out.finish()
}

/// Small fields go into `head`; a large batch closes `head` as a chunk and follows it.
#[derive(Default)]
struct ChunkWriter {
    head: BytesMut,
    chunks: VecDeque<Bytes>,
}

impl ChunkWriter {
    /// A gRPC message of `len` bytes starts here (uncompressed).
    fn prefix(len: usize) -> Self {
        let mut out = ChunkWriter::default();
        out.head.put_u8(0);
        out.head.put_u32(len as u32);
        out
    }

    /// Field `tag`, raw bytes: a chunk of its own when large.
    fn bytes_field(&mut self, tag: u32, data: &Bytes) {
        encode_key(tag, WireType::LengthDelimited, &mut self.head);
        encode_varint(data.len() as u64, &mut self.head);
        match data.len() >= CHAIN_AT {
            true => {
                self.flush();
                self.chunks.push_back(data.clone());
            }
            false => self.head.put_slice(data),
        }
    }

    fn partition(&mut self, p: &pb::FetchPartitionResponse) {
        let fields = pb::FetchPartitionResponse {
            partition: p.partition,
            error: p.error.clone(),
            high_watermark: p.high_watermark,
            last_stable_offset: p.last_stable_offset,
            log_start_offset: p.log_start_offset,
            next_fetch_offset: p.next_fetch_offset,
            data: None,
        };
        fields
            .encode(&mut self.head)
            .expect("a BytesMut grows as needed");
        match &p.data {
            None => {}
            Some(Data::Records(records)) => {
                prost::encoding::message::encode(7, records, &mut self.head);
            }
            Some(Data::RecordBatches(batches)) => self.bytes_field(8, batches),
        }
    }

    fn replica_partition(&mut self, p: &pb::ReplicaFetchPartitionResponse) {
        let fields = pb::ReplicaFetchPartitionResponse {
            record_batches: Bytes::new(),
            ..p.clone()
        };
        fields
            .encode(&mut self.head)
            .expect("a BytesMut grows as needed");
        // The batches are the last field (6), so appending them keeps prost's field order;
        // proto3 leaves an empty one out.
        if !p.record_batches.is_empty() {
            self.bytes_field(6, &p.record_batches);
        }
    }

    fn flush(&mut self) {
        if !self.head.is_empty() {
            self.chunks.push_back(self.head.split().freeze());
        }
    }

    fn finish(mut self) -> VecDeque<Bytes> {
        self.flush();
        self.chunks
    }
}

/// A response body of data chunks, then gRPC's OK trailer. A streaming answer's messages
/// arrive one by one through `more`; the trailer follows once its sender is gone.
struct Chunks {
    chunks: VecDeque<Bytes>,
    more: Option<tokio::sync::mpsc::Receiver<VecDeque<Bytes>>>,
    trailers: bool,
}

impl Chunks {
    fn whole(chunks: VecDeque<Bytes>) -> Self {
        Chunks {
            chunks,
            more: None,
            trailers: true,
        }
    }

    fn streamed(more: tokio::sync::mpsc::Receiver<VecDeque<Bytes>>) -> Self {
        Chunks {
            chunks: VecDeque::new(),
            more: Some(more),
            trailers: true,
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            if let Some(chunk) = self.chunks.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            let Some(more) = self.more.as_mut() else {
                break;
            };
            match std::task::ready!(more.poll_recv(cx)) {
                Some(message) => self.chunks = message,
                None => self.more = None,
            }
        }
        if std::mem::take(&mut self.trailers) {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.more.is_none() && !self.trailers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(p: i32, data: Option<Data>) -> pb::FetchPartitionResponse {
        pb::FetchPartitionResponse {
            partition: p,
            high_watermark: 1_000_000 + i64::from(p),
            last_stable_offset: 999,
            log_start_offset: 3,
            next_fetch_offset: 77,
            data,
            ..Default::default()
        }
    }

    #[test]
    fn the_chunks_are_prosts_encoding_with_large_batches_passed_through() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let resp = pb::FetchResponse {
            error: None,
            topics: vec![
                pb::FetchTopicResponse {
                    topic: "orders".into(),
                    topic_id: Bytes::from_static(&[1; 16]),
                    partitions: vec![
                        partition(0, Some(Data::RecordBatches(big.clone()))),
                        partition(1, Some(Data::RecordBatches(Bytes::from_static(b"tiny")))),
                        partition(2, None),
                        pb::FetchPartitionResponse {
                            error: Some(pb::Error::new(pb::ErrorCode::NotLeader, "moved")),
                            ..partition(3, None)
                        },
                        partition(4, Some(Data::Records(pb::ConsumerRecords::default()))),
                        partition(5, Some(Data::RecordBatches(big.clone()))),
                    ],
                },
                pb::FetchTopicResponse {
                    topic: "empty".into(),
                    ..Default::default()
                },
            ],
        };
        let chunks = encode_chunks(&resp);
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut expected = vec![0u8];
        expected.extend((resp.encoded_len() as u32).to_be_bytes());
        expected.extend(resp.encode_to_vec());
        assert_eq!(whole, expected);
        let passed: Vec<&Bytes> = chunks.iter().filter(|c| c.len() == big.len()).collect();
        assert_eq!(passed.len(), 2);
        assert!(
            passed.iter().all(|c| c.as_ptr() == big.as_ptr()),
            "large batches are the read buffer itself, not copies"
        );
        let decoded = pb::FetchResponse::decode(&whole[5..]).unwrap();
        assert_eq!(decoded, resp);
    }

    #[test]
    fn replica_answers_are_prosts_encoding_with_large_batches_passed_through() {
        let big = Bytes::from(vec![9u8; 50_000]);
        let part = |p: i32, batches: Bytes| pb::ReplicaFetchPartitionResponse {
            partition: p,
            high_watermark: 500 + i64::from(p),
            log_start_offset: 2,
            record_batches: batches,
            ..Default::default()
        };
        let resp = pb::ReplicaFetchResponse {
            error: None,
            topics: vec![
                pb::ReplicaFetchTopicResponse {
                    topic_id: Bytes::from_static(&[4; 16]),
                    partitions: vec![
                        part(0, big.clone()),
                        part(1, Bytes::from_static(b"small")),
                        part(2, Bytes::new()),
                        pb::ReplicaFetchPartitionResponse {
                            error: Some(pb::Error::new(pb::ErrorCode::NotLeader, "moved")),
                            diverging_epoch: Some(pb::EpochEndOffset {
                                epoch: 3,
                                end_offset: 40,
                            }),
                            ..part(3, Bytes::new())
                        },
                    ],
                },
                pb::ReplicaFetchTopicResponse::default(),
            ],
        };
        let chunks = encode_replica_chunks(&resp);
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut expected = vec![0u8];
        expected.extend((resp.encoded_len() as u32).to_be_bytes());
        expected.extend(resp.encode_to_vec());
        assert_eq!(whole, expected);
        assert!(
            chunks.iter().any(|c| c.as_ptr() == big.as_ptr()),
            "a large batch is the read buffer itself, not a copy"
        );
        let refused = pb::ReplicaFetchResponse {
            error: Some(pb::Error::new(pb::ErrorCode::StaleBrokerEpoch, "later")),
            topics: vec![],
        };
        let whole: Vec<u8> = encode_replica_chunks(&refused)
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(
            pb::ReplicaFetchResponse::decode(&whole[5..]).unwrap(),
            refused
        );
    }

    #[test]
    fn an_error_only_answer_round_trips() {
        let resp = pb::FetchResponse {
            error: Some(pb::Error::new(pb::ErrorCode::InvalidRequest, "no")),
            topics: vec![],
        };
        let whole: Vec<u8> = encode_chunks(&resp).into_iter().flatten().collect();
        assert_eq!(pb::FetchResponse::decode(&whole[5..]).unwrap(), resp);
    }
}
