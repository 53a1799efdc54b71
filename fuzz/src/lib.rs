//! Helpers shared by the fuzz targets in `fuzz_targets/`: driving the async frame reader over
//! an in-memory buffer, and running every importer on one input.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde::de::DeserializeOwned;
use session_vault_formats::{Format, Input, import};
use session_vault_proto::codec::{self, FrameError};

/// Runs a future that never waits: reading from a `&[u8]` is always ready, so the frame
/// reader completes without a runtime. Panics if it ever pends (that would be a bug here).
pub fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a read from memory pended"),
    }
}

/// Reads frames from `data` as a peer would send them (4-byte length, payload), with the
/// daemon's default limit, decoding each payload as `T`, until EOF or the first framing
/// error; then decodes the whole of `data` as one payload too.
pub fn frames<T: DeserializeOwned>(data: &[u8]) {
    let mut reader = data;
    loop {
        match ready(codec::read_frame(&mut reader, codec::DEFAULT_MAX_FRAME)) {
            Ok(Some(payload)) => {
                let _ = codec::decode_payload::<T>(&payload);
            }
            Ok(None) => break,
            Err(FrameError::Io(e)) => panic!("i/o error reading from memory: {e}"),
            Err(_) => break,
        }
    }
    let _ = codec::decode_payload::<T>(data);
}

/// Runs the importer on `input` (made afresh for each run), detecting the format, then as
/// each format in `formats`.
pub fn import_as<'a>(input: impl Fn() -> Input<'a>, formats: &[Format]) {
    let mut progress = |_: u64, _: u64| {};
    let _ = import(input(), None, &mut progress);
    for f in formats {
        let _ = import(input(), Some(*f), &mut progress);
    }
}
