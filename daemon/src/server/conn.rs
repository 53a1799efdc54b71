//! One client connection: handshake, the frame loop, concurrent requests, clean teardown.
//!
//! [`serve`] runs the stages in order: `handshake` (hello, version, welcome; `handshake.rs`),
//! the read loop (`Requests::run`: room, header, weight, payload, decode; `requests.rs`),
//! `run_request` per request (limits, the role check and the handler in
//! [`cmd::dispatch`](super::cmd::dispatch), the answer queued; `requests.rs` too), and
//! `teardown`. What handlers see of the connection is [`super::context::Conn`].
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
mod handshake;
pub mod refuse;
mod requests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use session_vault_proto::codec;
use session_vault_proto::message::{EVENT_ID, ErrorCode, Event, Response, ServerFrame};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::Daemon;
use super::clients::Kicked;
use super::context::Conn;
use super::errors::wire_error;
use super::limits::Admitted;
use super::transport::PeerInfo;
use handshake::handshake;
use requests::Requests;

pub use answers::MAX_IN_FLIGHT;
/// How long answers may wait for a client that stopped reading, once the connection ends.
pub const WRITE_GRACE: Duration = Duration::from_secs(1);
/// How long a new connection may take to send `Hello`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request's payload may take to arrive once the daemon reads it. A client writes
/// a frame in one go; one that stops midway holds its request's weight until then.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection's read loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed, broke the framing, timed out, or the writer is gone.
    Closed,
    /// The daemon is shutting down: the client is told before the connection closes.
    Stopping,
    /// An admin ended the connection (`disconnect`); its handles are already ended.
    Kicked,
}

/// What ends a connection's read loop from outside: the daemon's shutdown, or an admin's
/// `disconnect` ([`super::clients`]).
struct Stop<'a> {
    shutdown: &'a mut broadcast::Receiver<()>,
    kicked: Kicked,
}

impl Stop<'_> {
    /// Waits for either, and says which.
    async fn recv(&mut self) -> End {
        tokio::select! {
            _ = self.shutdown.recv() => End::Stopping,
            () = self.kicked.wait() => End::Kicked,
        }
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
    daemon.connections.fetch_add(1, Ordering::Relaxed);
    let _counted = Counted(Arc::clone(&daemon));
    let id = daemon.next_conn_id();
    let stream = Arc::new(stream);
    tracing::debug!(conn = id, uid = peer.uid, pid = ?peer.pid, "connection opened");
    // Read now, while the pid still names the process that connected.
    let process = super::peer_process::ProcessIdent::of(peer.pid);
    let Some(events) = handshake(&daemon, id, &stream, &peer, &mut stop).await else {
        return;
    };
    let conn = Arc::new(Conn {
        id,
        peer,
        process,
        daemon: Arc::clone(&daemon),
    });
    let kicked = daemon.clients.register(id, conn.peer.pid);
    let (outbox, answer_writer) = answers::Outbox::new(Arc::clone(&stream));
    let events_task = tokio::spawn(forward_events(events, outbox.clone()));
    // Admins are never timed out: one may sit at `vaultctl unlock`'s passphrase prompt.
    let idle_timeout = if conn.is_admin() {
        None
    } else {
        daemon.limits.idle_timeout()
    };
    let mut requests = Requests {
        conn: Arc::clone(&conn),
        reader: &stream,
        admitted: Arc::new(admitted),
        outbox: &outbox,
        stop: Stop {
            shutdown: &mut stop,
            kicked,
        },
        tasks: JoinSet::new(),
        idle_timeout,
        last_heard: Instant::now(),
        header: frames::Header::default(),
        limit: daemon.config.max_frame,
    };
    let end = requests.run().await;
    let tasks = requests.tasks;
    events_task.abort();
    teardown(&conn, end, outbox, answer_writer, tasks).await;
}

/// Pushes the daemon's events (lock, unlock, shutdown) to the client, until the writer is
/// gone or the task is aborted at teardown.
async fn forward_events(mut events: broadcast::Receiver<Event>, outbox: answers::Outbox) {
    loop {
        match events.recv().await {
            Ok(ev) => {
                let Some(f) = frame(EVENT_ID, Response::Event(ev)) else {
                    continue;
                };
                if !outbox.send_small(f).await {
                    break;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// Stage 4, the answer's bytes: `response` framed under request `id` for the writer (see
/// [`answers`]). One that cannot be encoded becomes `internal`; `None` if even that fails.
fn frame(id: u32, response: Response) -> Option<Zeroizing<Vec<u8>>> {
    match codec::encode_frame(&ServerFrame { id, response }) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a response");
            codec::encode_frame(&ServerFrame {
                id,
                response: Response::Error(wire_error(
                    ErrorCode::Internal,
                    "cannot encode the response",
                )),
            })
            .ok()
        }
    }
}

/// Stage 5: finishes what is in flight, then closes. Requests that change something complete
/// regardless (heavy reads nobody can receive are skipped, see `answers`); only delivering
/// answers can stall, on a client that does not read: after [`WRITE_GRACE`] the writer gives
/// up on it and drops the answers, which lets the tasks end. Then the connection's handles
/// and leases go.
async fn teardown(
    conn: &Conn,
    end: End,
    outbox: answers::Outbox,
    answer_writer: answers::Writer,
    mut tasks: JoinSet<()>,
) {
    let id = conn.id;
    if end == End::Stopping {
        // Said here rather than through the broadcast, which the aborted event task may not
        // have forwarded yet: a client is always told before its connection closes.
        if let Some(f) = frame(EVENT_ID, Response::Event(Event::ShuttingDown)) {
            let _ = tokio::time::timeout(WRITE_GRACE, outbox.send_small(f)).await;
        }
    }
    if end == End::Kicked {
        // An error that answers no request (id 0), then the close: what the client can read.
        tracing::debug!(conn = id, "disconnected by an admin; closing");
        // The event for clients of 1.4 and later (no reconnect), the error for older ones.
        if let Some(f) = frame(EVENT_ID, Response::Event(Event::DisconnectedByAdmin)) {
            let _ = tokio::time::timeout(WRITE_GRACE, outbox.send_small(f)).await;
        }
        let resp = Response::Error(wire_error(
            ErrorCode::PermissionDenied,
            "an admin disconnected this client (vaultctl disconnect)",
        ));
        if let Some(f) = frame(EVENT_ID, resp) {
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
    let daemon = &conn.daemon;
    daemon.clients.remove(id);
    daemon.handles.connection_ended(id, &daemon.leases);
    daemon.streams.connection_ended(id);
    answer_writer.finish(WRITE_GRACE).await;
    tracing::debug!(conn = id, "connection closed");
}

/// Keeps [`Daemon::connections`] counting this connection until it ends.
struct Counted(Arc<Daemon>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
