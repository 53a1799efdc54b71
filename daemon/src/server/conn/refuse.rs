//! Answering a connection the limits refused (see [`crate::server::limits`]).
//!
//! The answer goes where a client looks for it: the error `permission_denied` in answer to
//! its `hello` (same id), with a message that says which limit it hit; then the connection
//! is closed. A refused client has little time to say hello
//! ([`REFUSAL_HELLO_TIMEOUT`]) and little room ([`REFUSAL_MAX_FRAME`]); one that says
//! something else, or nothing, is closed without an answer. At most
//! [`REFUSALS_AT_ONCE`](crate::server::limits::REFUSALS_AT_ONCE) refusals are answered at once
//! (the caller holds one of their permits), so refusing holds few descriptors.

use interprocess::local_socket::tokio::Stream;
use session_vault_proto::codec;
use session_vault_proto::message::{ClientFrame, ErrorCode, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::server::errors::wire_error;
use crate::server::limits::{REFUSAL_HELLO_TIMEOUT, REFUSAL_MAX_FRAME};

/// Reads the refused client's `hello`, answers it `permission_denied` with `message`, and
/// closes the connection; `_permit` is given back at the end.
pub async fn refuse(stream: Stream, message: String, _permit: OwnedSemaphorePermit) {
    let mut reader = &stream;
    let first = tokio::time::timeout(
        REFUSAL_HELLO_TIMEOUT,
        codec::read_frame(&mut reader, REFUSAL_MAX_FRAME),
    )
    .await;
    let Ok(Ok(Some(payload))) = first else {
        return;
    };
    let id = match codec::decode_payload::<ClientFrame>(&payload) {
        Ok(ClientFrame {
            id,
            request: Request::Hello { .. },
        }) => id,
        _ => return,
    };
    let answer = Response::Error(wire_error(ErrorCode::PermissionDenied, message));
    if let Some(f) = super::frame(id, answer) {
        let mut writer = &stream;
        let _ = tokio::time::timeout(REFUSAL_HELLO_TIMEOUT, writer.write_all(&f)).await;
    }
}
