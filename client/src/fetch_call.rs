//! `Consumer.Fetch` made on the channel directly, below tonic's generated client.
//!
//! tonic's decoder gathers a whole answer into one buffer before prost sees it, so every
//! fetched byte is copied once more after hyper received it (about a tenth of a backlog read's
//! time in a profile, BENCHMARKS.md). Here the HTTP/2 data frames are kept as hyper gave them
//! ([`Frames`]) and prost decodes from them: a `bytes` field that lies within one frame (the
//! record data of an answer, with frames of up to 16 MiB) becomes a slice of it, not a copy.
//!
//! Only what a unary gRPC call needs is here: the length-prefixed request, the
//! `grpc-status` of the headers (a trailers-only answer) or of the trailers, one uncompressed
//! message no larger than the caller allows, and a deadline over the whole call.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use keel_proto::v1 as pb;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower_service::Service;

const PATH: &str = "/keel.v1.Consumer/Fetch";

/// The gRPC message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// Sends `request` and waits up to `timeout` for the whole answer, which may hold at most
/// `max_answer` bytes (a larger one fails with `OUT_OF_RANGE`, as tonic's own limit does).
pub(crate) async fn fetch(
    channel: Channel,
    request: &pb::FetchRequest,
    timeout: Duration,
    max_answer: usize,
) -> Result<pb::FetchResponse, Status> {
    let call = call(channel, request, timeout, max_answer);
    match tokio::time::timeout(timeout, call).await {
        Ok(answer) => answer,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer to Consumer.Fetch within {timeout:?}"
        ))),
    }
}

async fn call(
    mut channel: Channel,
    request: &pb::FetchRequest,
    timeout: Duration,
    max_answer: usize,
) -> Result<pb::FetchResponse, Status> {
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::from_error(Box::new(e)))?;
    let response = channel
        .call(http_request(request, timeout))
        .await
        .map_err(|e| Status::from_error(Box::new(e)))?;
    let (parts, mut body) = response.into_parts();
    if parts.status != StatusCode::OK {
        return Err(http_status(parts.status));
    }
    check_status(&parts.headers)?;
    let mut frames = Frames::default();
    let mut ended = false;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                frames.push(data);
                if frames.remaining() > PREFIX + max_answer {
                    return Err(too_large(frames.remaining() - PREFIX, max_answer));
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    check_status(&trailers)?;
                    ended = true;
                }
            }
        }
    }
    if !ended {
        return Err(Status::internal("the answer ended without a grpc-status"));
    }
    decode(frames, max_answer)
}

fn http_request(request: &pb::FetchRequest, timeout: Duration) -> Request<tonic::body::Body> {
    let len = request.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    request
        .encode(&mut buf)
        .expect("the buffer was sized for the message");
    let body = tonic::body::Body::new(Full::new(buf.freeze()));
    let mut http = Request::new(body);
    *http.method_mut() = Method::POST;
    // Path only: the channel adds its own scheme and authority (as tonic's clients rely on).
    *http.uri_mut() = http::Uri::from_static(PATH);
    let headers = http.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    headers.insert("grpc-timeout", grpc_timeout(timeout));
    http
}

/// The `grpc-timeout` header: at most eight digits and a unit.
fn grpc_timeout(timeout: Duration) -> HeaderValue {
    let millis = timeout.as_millis().min(99_999_999);
    HeaderValue::from_str(&format!("{millis}m")).expect("digits and a letter are a valid header")
}

/// The error a `grpc-status` other than OK in `headers` stands for.
fn check_status(headers: &HeaderMap) -> Result<(), Status> {
    match Status::from_header_map(headers) {
        Some(status) if status.code() != Code::Ok => Err(status),
        _ => Ok(()),
    }
}

/// What gRPC's HTTP mapping makes of an answer that is not `200 OK`.
fn http_status(status: StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status} from the broker"))
}

fn too_large(len: usize, max_answer: usize) -> Status {
    Status::out_of_range(format!(
        "the fetch answer ({len} bytes) is larger than this client takes ({max_answer} bytes)"
    ))
}

/// The one message of a unary answer.
fn decode(mut frames: Frames, max_answer: usize) -> Result<pb::FetchResponse, Status> {
    if frames.remaining() < PREFIX {
        return Err(Status::internal("the answer holds no message"));
    }
    let compressed = frames.get_u8();
    let len = frames.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::internal(
            "the answer is compressed, which was not asked for",
        ));
    }
    if len > max_answer {
        return Err(too_large(len, max_answer));
    }
    if frames.remaining() != len {
        return Err(Status::internal(format!(
            "the answer's message says {len} bytes but {} arrived",
            frames.remaining()
        )));
    }
    pb::FetchResponse::decode(frames)
        .map_err(|e| Status::internal(format!("the answer cannot be decoded: {e}")))
}

/// The data frames of an answer as received, read as one buffer. Taking bytes that lie
/// within one frame slices it; only a run across frames is copied.
#[derive(Debug, Default)]
struct Frames {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl Frames {
    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.remaining += data.len();
            self.chunks.push_back(data);
        }
    }
}

impl Buf for Frames {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| c.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of the frames");
        self.remaining -= cnt;
        while cnt > 0 {
            let front = self
                .chunks
                .front_mut()
                .expect("remaining counts the chunks");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(len <= self.remaining, "take past the end of the frames");
        match self.chunks.front_mut() {
            Some(front) if len <= front.len() => {
                self.remaining -= len;
                let taken = front.split_to(len);
                if front.is_empty() {
                    self.chunks.pop_front();
                }
                taken
            }
            _ => {
                let mut joined = BytesMut::with_capacity(len);
                joined.put((&mut *self).take(len));
                joined.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Frames {
        let mut frames = Frames::default();
        for part in parts {
            frames.push(Bytes::copy_from_slice(part));
        }
        frames
    }

    #[test]
    fn taking_within_a_frame_slices_it_and_across_frames_joins() {
        let mut f = frames(&[b"abc", b"", b"defgh"]);
        assert_eq!(f.remaining(), 8);
        let first = f.copy_to_bytes(2);
        assert_eq!(&first[..], b"ab");
        let joined = f.copy_to_bytes(3);
        assert_eq!(&joined[..], b"cde");
        assert_eq!(f.chunk(), b"fgh");
        f.advance(3);
        assert_eq!(f.remaining(), 0);
        assert_eq!(f.chunk(), b"");
    }

    #[test]
    fn a_message_split_over_frames_decodes_and_its_record_data_is_a_slice() {
        use pb::fetch_partition_response::Data;
        let batches = Bytes::from(vec![7u8; 4096]);
        let answer = pb::FetchResponse {
            topics: vec![pb::FetchTopicResponse {
                topic: "t".into(),
                partitions: vec![pb::FetchPartitionResponse {
                    partition: 3,
                    data: Some(Data::RecordBatches(batches.clone())),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = answer.encode_to_vec();
        let mut prefixed = vec![0];
        prefixed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        prefixed.extend_from_slice(&body);
        // The record data is the last field, so the second frame holds exactly it.
        let (head, rest) = prefixed.split_at(prefixed.len() - batches.len());
        let second = Bytes::copy_from_slice(rest);
        let mut received = frames(&[&head[..3], &head[3..]]);
        received.push(second.clone());
        let decoded = decode(received, 1 << 20).unwrap();
        assert_eq!(decoded, answer);
        let Some(Data::RecordBatches(data)) = &decoded.topics[0].partitions[0].data else {
            panic!("no record batches in {decoded:?}");
        };
        assert_eq!(data.as_ptr(), second.as_ptr(), "the record data was copied");
    }

    #[test]
    fn a_message_larger_than_allowed_or_truncated_fails() {
        let mut prefixed = vec![0];
        prefixed.extend_from_slice(&100u32.to_be_bytes());
        prefixed.extend_from_slice(&[0; 10]);
        let e = decode(frames(&[&prefixed]), 50).unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange);
        let e = decode(frames(&[&prefixed]), 1000).unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e}");
        let e = decode(frames(&[&[0, 0]]), 1000).unwrap_err();
        assert_eq!(e.code(), Code::Internal);
    }

    #[test]
    fn the_timeout_header_has_at_most_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_secs(35)), "35000m");
        assert_eq!(grpc_timeout(Duration::from_secs(1 << 40)), "99999999m");
    }
}
