use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use super::*;

/// A request body made of the given data frames.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// One gRPC message of `len` body bytes, cut into frames of at most `frame` bytes.
fn message(len: usize, frame: usize) -> VecDeque<Bytes> {
    let mut bytes = vec![0u8];
    bytes.extend((len as u32).to_be_bytes());
    bytes.extend(std::iter::repeat_n(7u8, len));
    bytes.chunks(frame).map(Bytes::copy_from_slice).collect()
}

/// Reads a whole request body and answers; the answer holds the request's reservation.
#[derive(Clone)]
struct ReadAll;

impl Service<http::Request<tonic::body::Body>> for ReadAll {
    type Response = http::Response<tonic::body::Body>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut body = req.into_body();
            let mut read = 0;
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                read += frame?.into_data().map_or(0, |d| d.len());
            }
            let mut resp = http::Response::new(tonic::body::Body::empty());
            resp.headers_mut()
                .insert("read", read.to_string().parse().expect("a header value"));
            Ok(resp)
        })
    }
}

fn request(frames: VecDeque<Bytes>) -> http::Request<tonic::body::Body> {
    http::Request::new(tonic::body::Body::new(Chunks(frames)))
}

fn read(resp: &http::Response<Held<tonic::body::Body>>) -> usize {
    resp.headers()["read"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_request_waits_until_the_answer_that_holds_the_pool_is_gone() {
    let memory = RequestMemory::new(1_000, 1 << 20);
    let mut svc = RequestMemoryLayer::new(memory.clone()).layer(ReadAll);
    let first = svc.call(request(message(700, 100))).await.expect("first");
    assert_eq!(read(&first), 705);
    assert_eq!(
        memory.available(),
        295,
        "the whole message, prefix included"
    );

    let second = tokio::spawn(svc.call(request(message(700, 100))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!second.is_finished(), "read while the pool was full");
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("went on once the first answer was gone")
        .expect("no panic")
        .expect("second");
    assert_eq!(read(&second), 705);
    drop(second);
    assert_eq!(memory.available(), 1_000, "all given back");
}

/// Sends one message of 2,000 bytes through a layer over `memory`: refused, and the pool
/// holds nothing afterwards. Returns the refusal's text.
async fn refused(memory: Arc<RequestMemory>) -> String {
    let before = memory.available();
    let mut svc = RequestMemoryLayer::new(memory.clone()).layer(ReadAll);
    let err = svc
        .call(request(message(2_000, 512)))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(memory.available(), before, "nothing held");
    err.message().to_string()
}

#[tokio::test]
async fn a_message_larger_than_the_pool_is_refused_and_holds_nothing() {
    let text = refused(RequestMemory::new(1_000, 1 << 20)).await;
    assert!(text.contains("request_memory_bytes"), "{text}");
    // Past the broker's message limit, whatever the pool.
    let text = refused(RequestMemory::new(1 << 30, 1_000)).await;
    assert!(text.contains("limit of 1000 bytes"), "{text}");
}

#[tokio::test]
async fn several_messages_in_one_frame_and_prefixes_split_across_frames_are_all_counted() {
    let memory = RequestMemory::new(10_000, 1 << 20);
    let mut svc = RequestMemoryLayer::new(memory.clone()).layer(ReadAll);
    let mut whole = Vec::new();
    for len in [10, 0, 300] {
        whole.extend(message(len, usize::MAX).pop_front().unwrap());
    }
    // 3-byte frames split every prefix; one frame holds them all.
    for frame in [3, whole.len()] {
        let frames = whole.chunks(frame).map(Bytes::copy_from_slice).collect();
        let resp = svc.call(request(frames)).await.expect("read");
        assert_eq!(read(&resp), whole.len());
        assert_eq!(memory.available(), 10_000 - (15 + 5 + 305), "frame {frame}");
    }
}

#[test]
fn framing_finds_each_message_length_wherever_the_frames_cut() {
    let mut framing = Framing::default();
    let data = [0, 0, 0, 0, 2, 9, 9, 0, 0, 0, 0, 1, 9];
    let mut found = Vec::new();
    for chunk in data.chunks(2) {
        let mut at = 0;
        while at < chunk.len() {
            let (next, message) = framing.walk(chunk, at);
            at = next;
            found.extend(message);
        }
    }
    assert_eq!(found, vec![7, 6]);
    assert_eq!(framing, Framing::default(), "ended between messages");
}

#[tokio::test]
async fn a_fetch_waits_only_for_its_floor_takes_what_is_free_and_keeps_what_it_read() {
    let memory = RequestMemory::new(1_000, 1 << 20);
    let a = Reservation::new(memory.clone());
    let share = a.share_up_to(100, 800).await.unwrap();
    assert_eq!(share.bytes(), 800);
    let b = Reservation::new(memory.clone());
    let b_share = b.share_up_to(100, 800).await.unwrap();
    assert_eq!(
        b_share.bytes(),
        200,
        "the floor, and the rest of what was free"
    );
    a.keep_read(share, 50);
    assert_eq!(memory.available(), 750, "only what was read is kept");
    drop(b_share);
    assert_eq!(memory.available(), 950, "a share not kept goes back");
    // A read larger than its share takes the difference when it is free.
    let share = b.share_up_to(100, 100).await.unwrap();
    b.keep_read(share, 300);
    assert_eq!(memory.available(), 650);

    let c = Reservation::new(memory.clone());
    let waiting = tokio::spawn(async move { c.share_up_to(900, 900).await.map(|s| s.bytes()) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the floor did not fit");
    drop((a, b));
    assert_eq!(waiting.await.unwrap().unwrap(), 900);
}
