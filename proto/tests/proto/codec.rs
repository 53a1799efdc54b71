//! Framing edge cases: EOF between and inside frames, the size limit, empty and malformed
//! payloads, trailing bytes, nesting depth.

use std::time::{Duration, Instant};

use session_vault_proto::codec::{
    DEFAULT_MAX_FRAME, FIRST_READ, FrameError, MAX_DEPTH, decode_payload, encode_frame, read_frame,
};
use session_vault_proto::message::{ClientFrame, Request, ServerFrame};
use tokio::io::AsyncWriteExt;

use crate::alloc::largest_allocation;

async fn read_all(bytes: &[u8], limit: u32) -> Result<Option<Vec<u8>>, FrameError> {
    let mut reader = bytes;
    read_frame(&mut reader, limit)
        .await
        .map(|p| p.map(|p| p.to_vec()))
}

fn status_frame() -> Vec<u8> {
    encode_frame(&ClientFrame {
        id: 2,
        request: Request::Status,
    })
    .expect("encodes")
    .to_vec()
}

#[tokio::test]
async fn clean_eof_before_a_frame_is_none() {
    assert!(
        read_all(b"", DEFAULT_MAX_FRAME)
            .await
            .expect("ok")
            .is_none()
    );
}

#[tokio::test]
async fn eof_inside_the_header_is_truncated() {
    for cut in 1..4 {
        let frame = status_frame();
        let r = read_all(&frame[..cut], DEFAULT_MAX_FRAME).await;
        assert!(
            matches!(r, Err(FrameError::Truncated)),
            "cut at {cut}: {r:?}"
        );
    }
}

#[tokio::test]
async fn eof_inside_the_payload_is_truncated() {
    let frame = status_frame();
    for cut in 4..frame.len() {
        let r = read_all(&frame[..cut], DEFAULT_MAX_FRAME).await;
        assert!(
            matches!(r, Err(FrameError::Truncated)),
            "cut at {cut}: {r:?}"
        );
    }
    assert!(
        read_all(&frame, DEFAULT_MAX_FRAME)
            .await
            .expect("whole")
            .is_some()
    );
}

#[tokio::test]
async fn eof_after_whole_frames_is_clean() {
    let mut bytes = status_frame();
    bytes.extend(status_frame());
    let mut reader = &bytes[..];
    for _ in 0..2 {
        let p = read_frame(&mut reader, DEFAULT_MAX_FRAME)
            .await
            .expect("reads");
        let f: ClientFrame = decode_payload(&p.expect("a frame")).expect("decodes");
        assert!(matches!(f.request, Request::Status));
    }
    assert!(
        read_frame(&mut reader, DEFAULT_MAX_FRAME)
            .await
            .expect("eof")
            .is_none()
    );
}

/// The peer announces 4 GiB and sends nothing more (its end stays open): the limit is
/// enforced from the header alone, at once, without allocating the announced size.
#[tokio::test(flavor = "current_thread")]
async fn an_oversized_frame_is_refused_from_its_header_without_allocating() {
    let (mut peer, mut ours) = tokio::io::duplex(64);
    peer.write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("writes header");
    let started = Instant::now();
    let (r, largest) = largest_allocation(|| {
        // The read completes without awaiting anything that is not already buffered, so
        // polling it once on this thread is enough (and keeps the recording on this thread).
        futures_lite_block_on(read_frame(&mut ours, DEFAULT_MAX_FRAME))
    });
    assert!(
        matches!(
            r,
            Err(FrameError::TooLarge {
                len: u32::MAX,
                limit: DEFAULT_MAX_FRAME
            })
        ),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        largest < 4096,
        "allocated {largest} bytes for a refused frame"
    );
    drop(peer);
}

/// A frame under a large limit (a client's is 256 MiB) is announced and then not sent: the
/// buffer grows with the bytes that arrive, so a peer that announces 200 MiB and sends 100
/// bytes holds [`FIRST_READ`] bytes, not 200 MiB (which were once allocated, then zeroized
/// whole on drop, from the header alone).
#[tokio::test(flavor = "current_thread")]
async fn an_announced_frame_allocates_as_its_bytes_arrive_not_at_its_header() {
    let (mut peer, mut ours) = tokio::io::duplex(1024);
    peer.write_all(&(200u32 << 20).to_be_bytes())
        .await
        .expect("writes header");
    peer.write_all(&[7u8; 100]).await.expect("writes a start");
    drop(peer);
    let (r, largest) =
        largest_allocation(|| futures_lite_block_on(read_frame(&mut ours, 256 << 20)));
    assert!(matches!(r, Err(FrameError::Truncated)), "{r:?}");
    assert!(
        largest <= FIRST_READ,
        "allocated {largest} bytes for 100 bytes of an announced 200 MiB frame"
    );
}

/// A frame larger than [`FIRST_READ`], arriving in small pieces, is read whole and exactly:
/// not a byte of the frame after it.
#[tokio::test]
async fn a_large_frame_arriving_in_pieces_is_read_whole_and_no_further() {
    let (mut peer, mut ours) = tokio::io::duplex(4096);
    let big: Vec<u8> = (0..(FIRST_READ * 5 + 123))
        .map(|i| (i % 251) as u8)
        .collect();
    let len = u32::try_from(big.len()).expect("fits");
    let expected = big.clone();
    let writer = tokio::spawn(async move {
        peer.write_all(&len.to_be_bytes()).await.expect("header");
        peer.write_all(&big).await.expect("payload");
        peer.write_all(&3u32.to_be_bytes())
            .await
            .expect("next header");
        peer.write_all(b"abc").await.expect("next payload");
    });
    let first = read_frame(&mut ours, 16 << 20)
        .await
        .expect("reads")
        .expect("a frame");
    assert!(
        first[..] == expected[..],
        "the large payload came back changed"
    );
    let second = read_frame(&mut ours, 16 << 20)
        .await
        .expect("reads")
        .expect("a frame");
    assert_eq!(&second[..], b"abc");
    writer.await.expect("writer");
    assert!(
        read_frame(&mut ours, 16 << 20)
            .await
            .expect("eof")
            .is_none()
    );
}

#[tokio::test]
async fn the_limit_is_inclusive() {
    let frame = status_frame();
    let len = (frame.len() - 4) as u32;
    assert!(read_all(&frame, len).await.expect("at the limit").is_some());
    let r = read_all(&frame, len - 1).await;
    assert!(
        matches!(r, Err(FrameError::TooLarge { len: l, limit }) if l == len && limit == len - 1),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_zero_length_payload_is_a_decode_error_not_a_panic() {
    let p = read_all(&[0, 0, 0, 0], DEFAULT_MAX_FRAME)
        .await
        .expect("an empty frame is a frame")
        .expect("not EOF");
    assert!(p.is_empty());
    assert!(matches!(
        decode_payload::<ClientFrame>(&p),
        Err(FrameError::Decode(_))
    ));
    assert!(matches!(
        decode_payload::<ServerFrame>(&p),
        Err(FrameError::Decode(_))
    ));
}

#[test]
fn trailing_bytes_after_the_message_are_refused() {
    let frame = status_frame();
    let payload = &frame[4..];
    assert!(decode_payload::<ClientFrame>(payload).is_ok());
    for extra in [&[0xc0][..], &[0x01], &[0xd9], &[0x82, 0xa2]] {
        let mut p = payload.to_vec();
        p.extend_from_slice(extra);
        let r = decode_payload::<ClientFrame>(&p);
        assert!(matches!(r, Err(FrameError::Decode(_))), "{extra:?}: {r:?}");
    }
}

#[test]
fn a_truncated_payload_is_a_decode_error() {
    let frame = status_frame();
    let payload = &frame[4..];
    for cut in 0..payload.len() {
        let r = decode_payload::<ClientFrame>(&payload[..cut]);
        assert!(
            matches!(r, Err(FrameError::Decode(_))),
            "cut at {cut}: {r:?}"
        );
    }
}

/// `{"id": 1, "request": "status", "x": [[[…nil…]]]}` with `arrays` nested arrays in the
/// ignored field: the frame map plus the arrays make `arrays + 1` levels.
fn nested(arrays: usize) -> Vec<u8> {
    let mut p = vec![0x83, 0xa2, b'i', b'd', 0x01, 0xa7];
    p.extend_from_slice(b"request");
    p.push(0xa6);
    p.extend_from_slice(b"status");
    p.extend_from_slice(&[0xa1, b'x']);
    p.extend(std::iter::repeat_n(0x91, arrays));
    p.push(0xc0);
    p
}

#[test]
fn nesting_is_bounded_by_max_depth() {
    let ok = decode_payload::<ClientFrame>(&nested(MAX_DEPTH - 1));
    assert!(ok.is_ok(), "{ok:?}");
    let deep = decode_payload::<ClientFrame>(&nested(MAX_DEPTH));
    assert!(matches!(deep, Err(FrameError::Decode(_))), "{deep:?}");
}

/// Before the depth bound, about a thousand nested arrays (a 1 KB frame, from any local
/// user, before the handshake) overflowed a 2 MiB stack, a tokio worker's, in a debug build
/// and aborted the whole daemon. Now even 100 000 levels fail early on a 256 KiB stack.
#[test]
fn deep_nesting_cannot_overflow_the_stack() {
    let payload = nested(100_000);
    let result = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            (
                decode_payload::<ClientFrame>(&payload).is_err(),
                decode_payload::<ServerFrame>(&payload).is_err(),
            )
        })
        .expect("spawns")
        .join()
        .expect("no stack overflow");
    assert_eq!(result, (true, true));
}

/// Decoding garbage reports a decode error whose text is bounded.
#[test]
fn decode_error_texts_are_bounded() {
    let long = "x".repeat(100_000);
    let mut p = vec![0x82, 0xa2, b'i', b'd', 0x01, 0xa7];
    p.extend_from_slice(b"request");
    p.push(0xda);
    p.extend_from_slice(&(long.len() as u16).to_be_bytes());
    p.extend_from_slice(long.as_bytes());
    match decode_payload::<ClientFrame>(&p) {
        Err(FrameError::Decode(text)) => {
            assert!(text.starts_with("unknown variant"), "{text}");
            assert!(text.len() <= 1024 + '…'.len_utf8(), "{} bytes", text.len());
        }
        other => panic!("{other:?}"),
    }
}

/// Polls a future to completion on this thread (no runtime needed for a read that only
/// touches already-buffered data).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("the read did not complete from buffered data");
}

/// A reader that serves one frame (header, then the payload `chunk` bytes per read, as a
/// peer trickling its bytes does) and measures how much of the buffers it is offered the
/// caller wrote over between two reads: it marks the bytes just past what it fills, and a
/// mark found gone at the next read means the caller zero-filled the rest of its buffer
/// again (the whole unfilled region: that is what `Vec::resize` does).
struct Trickle {
    frame: Vec<u8>,
    at: usize,
    chunk: usize,
    /// Bytes of the buffers offered, summed over the reads whose mark was found gone.
    refilled: usize,
}

const MARK: [u8; 8] = [0xA5; 8];

impl tokio::io::AsyncRead for Trickle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = &mut *self;
        let offered = buf.remaining();
        let n = me.chunk.min(offered).min(me.frame.len() - me.at);
        let unfilled = buf.initialize_unfilled();
        // Past the header: was the mark left by the last read overwritten? (It sat where
        // this read's bytes start, in the same buffer if the caller kept it.)
        if me.at > 4 && unfilled.len() >= MARK.len() && unfilled[..MARK.len()] != MARK {
            me.refilled += offered;
        }
        unfilled[..n].copy_from_slice(&me.frame[me.at..me.at + n]);
        // Mark the bytes after this read's, where the next read's will go.
        let end = (n + MARK.len()).min(unfilled.len());
        unfilled[n..end].copy_from_slice(&MARK[..end - n]);
        buf.advance(n);
        me.at += n;
        std::task::Poll::Ready(Ok(()))
    }
}

/// A frame that arrives a few bytes per read (a socket-group member may send its 1 MiB
/// frame a byte at a time; a daemon's large answer arrives to a client a socket buffer at a
/// time) costs work in proportion to its bytes. `read_frame` zero-fills the whole rest of
/// its buffer before every read (`resize`, then `truncate` back), so a frame of n bytes in
/// reads of k costs about n^2/(2k) bytes of memset: 2^37 bytes (a minute of a core) for
/// one 1 MiB frame sent a byte at a time to the daemon; gigabytes for a 200 MB export
/// answer. The old `read_exact` into one buffer zero-filled it once; so does each buffer
/// now (found by a review of the growing buffer, which once did this).
#[tokio::test]
async fn a_frame_arriving_in_small_reads_is_not_zero_filled_again_at_each_read() {
    let size = 1usize << 20;
    let mut frame = u32::try_from(size).expect("fits").to_be_bytes().to_vec();
    frame.extend((0..size).map(|i| (i % 253) as u8));
    let expected = frame[4..].to_vec();
    let mut reader = Trickle {
        frame,
        at: 0,
        chunk: 512,
        refilled: 0,
    };
    let payload = read_frame(&mut reader, DEFAULT_MAX_FRAME)
        .await
        .expect("reads")
        .expect("a frame");
    assert!(payload[..] == expected[..], "the payload came back changed");
    // Each new buffer is zero-filled once at most: the capacities sum to under 2 n.
    assert!(
        reader.refilled <= 4 * size,
        "{} bytes zero-filled again for a {size}-byte frame read 512 bytes at a time",
        reader.refilled
    );
}
