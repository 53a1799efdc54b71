//! Stage 1 of a connection: `hello` read within [`HANDSHAKE_TIMEOUT`], the protocol version
//! checked, `welcome` answered with the vault's state.

use interprocess::local_socket::tokio::Stream;
use session_vault_proto::codec::{self, FrameError};
use session_vault_proto::message::{
    ClientFrame, EVENT_ID, ErrorCode, Event, PROTOCOL_MAJOR, PROTOCOL_MINOR, Request, Response,
    VaultState,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use super::{HANDSHAKE_TIMEOUT, frame};
use crate::server::Daemon;
use crate::server::errors::wire_error;
use crate::server::limits::HELLO_MAX_FRAME;
use crate::server::transport::PeerInfo;

/// Stage 1: reads `hello` within [`HANDSHAKE_TIMEOUT`], checks the protocol version and
/// answers `welcome`. Returns the connection's event subscription, or `None` once it has
/// answered a bad start (or the client left, or `stop` fired) and the connection must close.
pub(super) async fn handshake(
    daemon: &Daemon,
    id: u64,
    stream: &Stream,
    peer: &PeerInfo,
    stop: &mut broadcast::Receiver<()>,
) -> Option<broadcast::Receiver<Event>> {
    let hello_limit = HELLO_MAX_FRAME.min(daemon.config.max_frame);
    let (hello_id, major) = read_hello(hello_limit, id, stream, stop).await?;
    let mut writer = stream;
    // Windows: the client has written, so the pipe can now tell whose token it wrote with;
    // it must be the identity its process id gave at accept (see `transport`).
    #[cfg(windows)]
    if let Err(e) = crate::server::transport::confirm_pipe_client(stream, peer) {
        tracing::warn!(conn = id, pid = ?peer.pid, error = %e, "refused a pipe client: its identity could not be confirmed from the pipe");
        let resp = Response::Error(wire_error(
            ErrorCode::PermissionDenied,
            "vaultd could not confirm who you are from the pipe; refused".to_owned(),
        ));
        if let Some(f) = frame(hello_id, resp) {
            let _ = writer.write_all(&f).await;
        }
        return None;
    }
    #[cfg(not(windows))]
    let _ = peer;
    if major != PROTOCOL_MAJOR {
        let resp = Response::Error(wire_error(
            ErrorCode::ProtocolMismatch {
                server_major: PROTOCOL_MAJOR,
            },
            format!(
                "protocol version mismatch: client speaks {major}.x, this daemon speaks {PROTOCOL_MAJOR}.x"
            ),
        ));
        if let Some(f) = frame(hello_id, resp) {
            let _ = writer.write_all(&f).await;
        }
        return None;
    }
    // Subscribe before the snapshot: a lock or unlock after it is then pushed, never lost
    // between the Welcome's state and the first event.
    let events = daemon.events.subscribe();
    let state = daemon
        .vault
        .status()
        .await
        .map(|s| s.state)
        .unwrap_or(VaultState::Locked);
    let welcome = Response::Welcome {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        server: format!("vaultd {}", env!("CARGO_PKG_VERSION")),
        vault_state: state,
    };
    match frame(hello_id, welcome) {
        Some(f) if writer.write_all(&f).await.is_ok() => Some(events),
        _ => None,
    }
}

/// The first frame, which must be `hello`: its id and the client's protocol major. Anything
/// else is answered (where there is an answer) and gives `None`.
async fn read_hello(
    limit: u32,
    id: u64,
    stream: &Stream,
    stop: &mut broadcast::Receiver<()>,
) -> Option<(u32, u16)> {
    let mut reader = stream;
    let first = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, codec::read_frame(&mut reader, limit)) => r,
        _ = stop.recv() => return None,
    };
    let mut writer = stream;
    let hello = match first {
        Err(_) => {
            tracing::debug!(conn = id, "no hello within {HANDSHAKE_TIMEOUT:?}; closing");
            return None;
        }
        Ok(Ok(Some(payload))) => codec::decode_payload::<ClientFrame>(&payload),
        Ok(Ok(None)) => return None,
        Ok(Err(FrameError::TooLarge { limit, .. })) => {
            let resp = Response::Error(wire_error(
                ErrorCode::FrameTooLarge { limit },
                format!("frame exceeds the limit of {limit} bytes"),
            ));
            if let Some(f) = frame(EVENT_ID, resp) {
                let _ = writer.write_all(&f).await;
            }
            return None;
        }
        Ok(Err(_)) => return None,
    };
    let (rid, error) = match hello {
        Ok(ClientFrame {
            id: hello_id,
            request:
                Request::Hello {
                    protocol_major,
                    client,
                    ..
                },
        }) => {
            tracing::debug!(conn = id, client = %client, "hello");
            return Some((hello_id, protocol_major));
        }
        Ok(ClientFrame { id: rid, .. }) => (
            rid,
            wire_error(ErrorCode::InvalidRequest, "the first request must be hello"),
        ),
        Err(e) => (
            EVENT_ID,
            wire_error(ErrorCode::InvalidRequest, format!("malformed hello: {e}")),
        ),
    };
    if let Some(f) = frame(rid, Response::Error(error)) {
        let _ = writer.write_all(&f).await;
    }
    None
}
