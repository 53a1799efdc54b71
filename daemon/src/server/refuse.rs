//! Connections refused at the handshake because the kernel cannot say who the peer is.
//!
//! A peer reported as the overflow uid or gid ([`Unmapped`]) comes from outside vaultd's user
//! namespace (systemd's `PrivateUsers=`, a container): every such peer shares that one id, so
//! serving it would let any of them open what any other created. The daemon fails closed: one
//! warning names the pid and the likely cause, the client's `hello` is answered
//! `permission_denied` with the reason, and the connection is closed.

use serde::Deserialize;
use session_vault_proto::codec;
use session_vault_proto::message::{EVENT_ID, ErrorCode, Response, ServerFrame};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use interprocess::local_socket::tokio::Stream;

use super::conn::HANDSHAKE_TIMEOUT;
use super::errors::wire;
use super::transport::Unmapped;

#[derive(Deserialize)]
struct IdOnly {
    id: u32,
}

/// Logs the refusal, answers the peer's first frame (its `hello`) with `permission_denied`,
/// and closes. Gives up with the handshake timeout, or at once when `stop` fires.
pub async fn unmapped(
    stream: Stream,
    who: Unmapped,
    limit: u32,
    mut stop: broadcast::Receiver<()>,
) {
    let pid = who
        .pid
        .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    tracing::warn!(
        pid = %pid,
        uid = who.uid,
        gid = who.gid,
        "refused a client reported as the overflow uid/gid: its ids are not mapped into \
         vaultd's user namespace (likely systemd's PrivateUsers= or a container); run vaultd \
         where its clients' ids are mapped"
    );
    let mut reader = &stream;
    let first = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, codec::read_frame(&mut reader, limit)) => r,
        _ = stop.recv() => return,
    };
    let id = match first {
        Ok(Ok(Some(payload))) => {
            codec::decode_payload::<IdOnly>(&payload).map_or(EVENT_ID, |f| f.id)
        }
        // Nothing said in time, a closed or broken connection: nobody to tell.
        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return,
    };
    let response = Response::Error(wire(
        ErrorCode::PermissionDenied,
        format!(
            "vaultd cannot tell who you are: the kernel reports your uid/gid as the overflow \
             id {}/{}, because vaultd runs in a user namespace that does not map your ids \
             (e.g. systemd's PrivateUsers=); refused",
            who.uid, who.gid
        ),
    ));
    if let Ok(frame) = codec::encode_frame(&ServerFrame { id, response }) {
        let mut writer = &stream;
        let _ = writer.write_all(&frame).await;
    }
}
