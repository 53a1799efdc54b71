//! One client connection: handshake, the frame loop, concurrent requests, clean teardown.
//!
//! The reader reads frames one at a time (check-then-parse, length bounded before
//! allocation) and spawns a task per request; answers go through a bounded queue to a single
//! writer. How much a client can have running or queued, in count, in bytes and in heavy
//! storage jobs, is the business of [`answers`]: in short, room for an answer is reserved
//! before its request runs, so a client that never reads its answers stops getting work done
//! (the reader waits for room, and the kernel's socket buffer pushes back on the client), and
//! one that pipelines exports cannot hold the storage thread for more than one at a time.
//!
//! Before its payload is read, a request takes its weight from its uid's share of the
//! daemon's memory budget, and it runs only when its uid has a running slot free (and, if
//! heavy, its uid's heavy slot): see [`super::limits`]. A connection of a non-admin uid that
//! holds no session handle, has no request running and sends nothing for the idle timeout
//! is closed; a frame whose payload does not arrive within [`FRAME_TIMEOUT`] closes its
//! connection, whoever it is.
//!
//! A malformed frame (undecodable payload, unknown request) is answered with
//! `invalid_request` and the connection goes on, since the framing is intact; a frame over
//! the size limit is answered with `frame_too_large` (id 0) and the connection is closed, as
//! is one truncated mid-frame. A client that connects and says nothing is dropped after
//! [`HANDSHAKE_TIMEOUT`]; it never holds up anyone else. A request whose handler panics (a
//! bug) is answered `internal` and the connection goes on.

pub mod answers;
pub mod frames;
pub mod refuse;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use interprocess::local_socket::tokio::Stream;
use serde::Deserialize;
use session_vault_proto::codec::{self, FrameError};
use session_vault_proto::message::{
    ClientFrame, EVENT_ID, ErrorCode, Event, PROTOCOL_MAJOR, PROTOCOL_MINOR, Request, Response,
    ServerFrame, VaultState,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use super::Daemon;
use super::cmd::{self, Weight};
use super::errors::wire;
use super::limits::{Admitted, MemoryPermit};
use super::transport::PeerInfo;
use crate::vault::StateKind;

pub use answers::MAX_IN_FLIGHT;
/// How long answers may wait for a client that stopped reading, once the connection ends.
pub const WRITE_GRACE: Duration = Duration::from_secs(1);
/// How long a new connection may take to send `Hello`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request's payload may take to arrive once the daemon reads it. A client writes
/// a frame in one go; one that stops midway holds its request's weight until then.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// What request handlers know of their connection.
pub struct Conn {
    /// Connection id (for leases and logs).
    pub id: u64,
    /// The peer's credentials.
    pub peer: PeerInfo,
    /// The daemon. Its session handles live in the daemon-wide [`super::handles`] table.
    pub daemon: Arc<Daemon>,
}

impl Conn {
    /// Whether any session is open on this connection (a bot's connection: never idle).
    pub fn has_handles(&self) -> bool {
        self.daemon.handles.has_open(self.id)
    }

    /// Whether the peer is an admin.
    pub fn is_admin(&self) -> bool {
        self.daemon.config.admin_uids.contains(&self.peer.uid)
    }
}

/// Maps the engine's state to the wire's.
pub fn wire_state(s: StateKind) -> VaultState {
    match s {
        StateKind::Uninitialized => VaultState::Uninitialized,
        StateKind::Locked => VaultState::Locked,
        StateKind::Unlocked => VaultState::Unlocked,
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: u32,
}

fn frame(id: u32, response: Response) -> Option<Zeroizing<Vec<u8>>> {
    match codec::encode_frame(&ServerFrame { id, response }) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a response");
            codec::encode_frame(&ServerFrame {
                id,
                response: Response::Error(wire(ErrorCode::Internal, "cannot encode the response")),
            })
            .ok()
        }
    }
}

/// Runs one request. A handler that panics (a bug) is answered `internal` under the request's
/// id instead of leaving its client waiting forever, and the connection goes on. The panic's
/// payload is neither sent nor put in this log line (it may quote anything the handler held);
/// the standard panic hook has printed it with its location, as for any panic.
async fn run_guarded(conn: &Conn, id: u32, request: Request) -> Response {
    // Unwind safety: the state a handler shares (leases, handles, the vault handle) is only
    // changed under short locks that nothing inside can panic, or through channels.
    match AssertUnwindSafe(cmd::dispatch(conn, request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => {
            let conn_id = conn.id;
            // Guarded too: if logging is what panicked, this line would panic again.
            let _ = std::panic::catch_unwind(|| {
                tracing::error!(
                    conn = conn_id,
                    request = id,
                    "request handler panicked; answered `internal`"
                );
            });
            Response::Error(wire(
                ErrorCode::Internal,
                "internal error: the daemon failed to handle this request (see its log)",
            ))
        }
    }
}

struct Counted(Arc<Daemon>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs one request within its connection's and its uid's limits and queues its answer.
/// `memory` (its weight) and its running slots are given back once the answer is built,
/// before it waits for room in the outgoing queue, which depends on the client reading.
async fn run_request(
    c: Arc<Conn>,
    admitted: Arc<Admitted>,
    mut slot: answers::Slot,
    memory: MemoryPermit,
    request: ClientFrame,
) {
    let weight = cmd::weight(&request.request);
    let heavy = weight != Weight::Cheap;
    if heavy {
        // This connection's heavy slot, then its uid's: both stay with the answer until it
        // is written (see `answers`).
        slot.hold_heavy().await;
        slot.hold_also(admitted.heavy().await);
    }
    let running = admitted.running().await;
    // Held while a heavy request runs, not while its answer waits for the client.
    let daemon_heavy = if heavy {
        let permit = c
            .daemon
            .heavy_running
            .acquire()
            .await
            .expect("the daemon's heavy-request semaphore is never closed");
        if weight == Weight::HeavyRead && slot.client_gone() {
            // Its answer is all it would do, and nobody is left to read it.
            return;
        }
        Some(permit)
    } else {
        None
    };
    let response = run_guarded(&c, request.id, request.request).await;
    let answer = frame(request.id, response);
    drop((daemon_heavy, running, memory));
    if let Some(f) = answer {
        slot.send(f).await;
    }
}

/// Serves one connection, admitted by the limits, until it closes or `stop` fires.
pub async fn serve(
    daemon: Arc<Daemon>,
    stream: Stream,
    peer: PeerInfo,
    admitted: Admitted,
    mut stop: broadcast::Receiver<()>,
) {
    let admitted = Arc::new(admitted);
    daemon.connections.fetch_add(1, Ordering::Relaxed);
    let _counted = Counted(Arc::clone(&daemon));
    let id = daemon.next_conn_id();
    let stream = Arc::new(stream);
    let limit = daemon.config.max_frame;
    tracing::debug!(conn = id, uid = peer.uid, pid = ?peer.pid, "connection opened");

    // ---- handshake ----
    let mut reader = &*stream;
    let first = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, codec::read_frame(&mut reader, limit)) => r,
        _ = stop.recv() => return,
    };
    let mut writer = &*stream;
    let hello = match first {
        Err(_) => {
            tracing::debug!(conn = id, "no hello within {HANDSHAKE_TIMEOUT:?}; closing");
            return;
        }
        Ok(Ok(Some(payload))) => codec::decode_payload::<ClientFrame>(&payload),
        Ok(Ok(None)) => return,
        Ok(Err(FrameError::TooLarge { limit, .. })) => {
            let resp = Response::Error(wire(
                ErrorCode::FrameTooLarge { limit },
                format!("frame exceeds the limit of {limit} bytes"),
            ));
            if let Some(f) = frame(EVENT_ID, resp) {
                let _ = writer.write_all(&f).await;
            }
            return;
        }
        Ok(Err(_)) => return,
    };
    let (hello_id, major) = match hello {
        Ok(ClientFrame {
            id,
            request:
                Request::Hello {
                    protocol_major,
                    client,
                    ..
                },
        }) => {
            tracing::debug!(conn = id, client = %client, "hello");
            (id, protocol_major)
        }
        Ok(ClientFrame { id, .. }) => {
            if let Some(f) = frame(
                id,
                Response::Error(wire(
                    ErrorCode::InvalidRequest,
                    "the first request must be hello",
                )),
            ) {
                let _ = writer.write_all(&f).await;
            }
            return;
        }
        Err(e) => {
            if let Some(f) = frame(
                EVENT_ID,
                Response::Error(wire(
                    ErrorCode::InvalidRequest,
                    format!("malformed hello: {e}"),
                )),
            ) {
                let _ = writer.write_all(&f).await;
            }
            return;
        }
    };
    if major != PROTOCOL_MAJOR {
        let resp = Response::Error(wire(
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
        return;
    }
    // Subscribe before the snapshot: a lock or unlock after it is then pushed, never lost
    // between the Welcome's state and the first event.
    let mut events = daemon.events.subscribe();
    let state = daemon
        .vault
        .status()
        .await
        .map(|s| wire_state(s.state))
        .unwrap_or(VaultState::Locked);
    let welcome = Response::Welcome {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        server: format!("vaultd {}", env!("CARGO_PKG_VERSION")),
        vault_state: state,
    };
    match frame(hello_id, welcome) {
        Some(f) if writer.write_all(&f).await.is_ok() => {}
        _ => return,
    }

    // ---- request loop ----
    let conn = Arc::new(Conn {
        id,
        peer,
        daemon: Arc::clone(&daemon),
    });
    let (outbox, answer_writer) = answers::Outbox::new(Arc::clone(&stream));
    let event_out = outbox.clone();
    let events_task = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => {
                    let Some(f) = frame(EVENT_ID, Response::Event(ev)) else {
                        continue;
                    };
                    if !event_out.send_small(f).await {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    let mut stopping = false;
    let mut tasks = JoinSet::new();
    // Admins are never timed out: one may sit at `vaultctl unlock`'s passphrase prompt.
    let idle_timeout = if conn.is_admin() {
        None
    } else {
        daemon.limits.idle_timeout()
    };
    let mut last_heard = tokio::time::Instant::now();
    let mut header = frames::Header::default();
    let mut slot = None;
    'frames: loop {
        // Room for the answer first: a client that does not read stops being read.
        let room = match slot.take() {
            Some(s) => s,
            None => tokio::select! {
                s = outbox.reserve() => match s {
                    Some(s) => s,
                    None => break,
                },
                _ = stop.recv() => {
                    stopping = true;
                    break;
                }
            },
        };
        // The header, cancel-safe: the idle timer can interrupt and resume it.
        let read = loop {
            let idle = idle_timeout.and_then(|t| last_heard.checked_add(t));
            tokio::select! {
                r = header.read(&mut reader) => break r,
                _ = stop.recv() => {
                    stopping = true;
                    break 'frames;
                }
                () = sleep_until_some(idle) => {
                    while tasks.try_join_next().is_some() {}
                    if tasks.is_empty() && !conn.has_handles() {
                        tracing::debug!(conn = id, "idle without a session handle; closing");
                        break 'frames;
                    }
                    last_heard = tokio::time::Instant::now();
                }
            }
        };
        let len = match read {
            Ok(Some(len)) => len,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(conn = id, error = %e, "connection ended");
                break;
            }
        };
        if len > limit {
            tracing::warn!(conn = id, len, limit, "frame over the limit; closing");
            let resp = Response::Error(wire(
                ErrorCode::FrameTooLarge { limit },
                format!("frame of {len} bytes exceeds the limit of {limit} bytes"),
            ));
            if let Some(f) = frame(EVENT_ID, resp) {
                outbox.send_small(f).await;
            }
            break;
        }
        // Its weight before its bytes: nothing is allocated beyond the uid's share.
        let memory = tokio::select! {
            m = admitted.memory(len) => m,
            _ = stop.recv() => {
                stopping = true;
                break;
            }
        };
        let payload = tokio::select! {
            r = tokio::time::timeout(FRAME_TIMEOUT, frames::read_payload(&mut reader, len)) => r,
            _ = stop.recv() => {
                stopping = true;
                break;
            }
        };
        let payload = match payload {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(conn = id, error = %e, "connection ended");
                break;
            }
            Err(_) => {
                tracing::debug!(
                    conn = id,
                    "frame not completed within {FRAME_TIMEOUT:?}; closing"
                );
                break;
            }
        };
        last_heard = tokio::time::Instant::now();
        let request = match codec::decode_payload::<ClientFrame>(&payload) {
            Ok(f) => f,
            Err(e) => {
                let rid = codec::decode_payload::<IdOnly>(&payload).map_or(EVENT_ID, |f| f.id);
                let resp = Response::Error(wire(
                    ErrorCode::InvalidRequest,
                    format!("malformed or unknown request: {e}"),
                ));
                slot = Some(room);
                if let Some(f) = frame(rid, resp) {
                    if !outbox.send_small(f).await {
                        break;
                    }
                }
                continue;
            }
        };
        drop(payload);
        tasks.spawn(run_request(
            Arc::clone(&conn),
            Arc::clone(&admitted),
            room,
            memory,
            request,
        ));
        while tasks.try_join_next().is_some() {}
    }
    // Finish what is in flight, then close. Requests that change something complete
    // regardless (heavy reads nobody can receive are skipped, see `answers`); only delivering
    // answers can stall, on a client that does not read: after a grace period the writer
    // gives up on it and drops the answers, which lets the tasks end.
    events_task.abort();
    if stopping {
        // Said here rather than through the broadcast, which the aborted task may not have
        // forwarded yet: a client is always told before its connection closes.
        if let Some(f) = frame(EVENT_ID, Response::Event(Event::ShuttingDown)) {
            let _ = tokio::time::timeout(WRITE_GRACE, outbox.send_small(f)).await;
        }
    }
    drop(outbox);
    let drained = tokio::time::timeout(WRITE_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(conn = id, "client does not read its answers; dropping them");
        answer_writer.give_up();
        while tasks.join_next().await.is_some() {}
    }
    daemon.handles.connection_ended(id, &daemon.leases);
    answer_writer.finish(WRITE_GRACE).await;
    tracing::debug!(conn = id, "connection closed");
}
