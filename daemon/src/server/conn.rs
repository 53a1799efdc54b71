//! One client connection: handshake, the frame loop, concurrent requests, clean teardown.
//!
//! [`serve`] runs the stages in order: `handshake` (hello, version, welcome), the read loop
//! (`Requests::run`: room, header, weight, payload, decode), `run_request` per request
//! (limits, the role check and the handler in [`cmd::dispatch`], the answer queued), and
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
pub mod refuse;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use interprocess::local_socket::tokio::Stream;
use session_vault_proto::codec::{self, FrameError};
use session_vault_proto::message::{
    ClientFrame, EVENT_ID, ErrorCode, Event, PROTOCOL_MAJOR, PROTOCOL_MINOR, Request, Response,
    ServerFrame, VaultState,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::Daemon;
use super::clients::Kicked;
use super::cmd::{self, Weight};
use super::context::Conn;
use super::errors::wire_error;
use super::limits::{Admitted, HELLO_MAX_FRAME, MemoryPermit};
use super::transport::PeerInfo;

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

/// Stage 1: reads `hello` within [`HANDSHAKE_TIMEOUT`], checks the protocol version and
/// answers `welcome`. Returns the connection's event subscription, or `None` once it has
/// answered a bad start (or the client left, or `stop` fired) and the connection must close.
async fn handshake(
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
    if let Err(e) = super::transport::confirm_pipe_client(stream, peer) {
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

/// Stage 2: the read side of a connection after the handshake, one frame at a time.
struct Requests<'a> {
    conn: Arc<Conn>,
    reader: &'a Stream,
    admitted: Arc<Admitted>,
    outbox: &'a answers::Outbox,
    stop: Stop<'a>,
    /// Requests running or waiting to queue their answers.
    tasks: JoinSet<()>,
    idle_timeout: Option<Duration>,
    last_heard: Instant,
    /// The header being read, kept across the idle timer's interruptions.
    header: frames::Header,
    limit: u32,
}

impl Requests<'_> {
    /// Reads requests and starts each (see [`run_request`]) until the connection ends.
    async fn run(&mut self) -> End {
        let mut spare = None;
        loop {
            // Room for the answer first: a client that does not read stops being read.
            let room = match spare.take() {
                Some(room) => room,
                None => match self.reserve().await {
                    Ok(room) => room,
                    Err(end) => return end,
                },
            };
            let (memory, payload) = match self.read_frame().await {
                Ok(read) => read,
                Err(end) => return end,
            };
            let request = match codec::decode_payload::<ClientFrame>(&payload) {
                Ok(f) => f,
                Err(e) => {
                    // The framing is intact: answer, keep the room, go on.
                    let rid = codec::decode_frame_id(&payload).unwrap_or(EVENT_ID);
                    let resp = Response::Error(wire_error(
                        ErrorCode::InvalidRequest,
                        format!("malformed or unknown request: {e}"),
                    ));
                    spare = Some(room);
                    if let Some(f) = frame(rid, resp) {
                        if !self.outbox.send_small(f).await {
                            return End::Closed;
                        }
                    }
                    continue;
                }
            };
            drop(payload);
            self.tasks.spawn(run_request(
                Arc::clone(&self.conn),
                Arc::clone(&self.admitted),
                room,
                memory,
                request,
            ));
            while self.tasks.try_join_next().is_some() {}
        }
    }

    /// Room for one more answer in the outgoing queue.
    async fn reserve(&mut self) -> Result<answers::Slot, End> {
        tokio::select! {
            s = self.outbox.reserve() => s.ok_or(End::Closed),
            end = self.stop.recv() => Err(end),
        }
    }

    /// One frame: its header, its weight taken from the uid's memory budget before any byte
    /// of it is allocated, then its payload within [`FRAME_TIMEOUT`]. A frame over the limit
    /// is answered `frame_too_large` and ends the connection.
    async fn read_frame(&mut self) -> Result<(MemoryPermit, Zeroizing<Vec<u8>>), End> {
        let conn_id = self.conn.id;
        let len = match self.read_header().await? {
            Ok(Some(len)) => len,
            Ok(None) => return Err(End::Closed),
            Err(e) => {
                tracing::debug!(conn = conn_id, error = %e, "connection ended");
                return Err(End::Closed);
            }
        };
        let limit = self.limit;
        if len > limit {
            tracing::warn!(conn = conn_id, len, limit, "frame over the limit; closing");
            let resp = Response::Error(wire_error(
                ErrorCode::FrameTooLarge { limit },
                format!("frame of {len} bytes exceeds the limit of {limit} bytes"),
            ));
            if let Some(f) = frame(EVENT_ID, resp) {
                self.outbox.send_small(f).await;
            }
            return Err(End::Closed);
        }
        // Its weight before its bytes: nothing is allocated beyond the uid's share.
        let memory = tokio::select! {
            m = self.admitted.memory(len) => m,
            end = self.stop.recv() => return Err(end),
        };
        let payload = tokio::select! {
            r = tokio::time::timeout(FRAME_TIMEOUT, frames::read_payload(&mut self.reader, len)) => r,
            end = self.stop.recv() => return Err(end),
        };
        let payload = match payload {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(conn = conn_id, error = %e, "connection ended");
                return Err(End::Closed);
            }
            Err(_) => {
                tracing::debug!(
                    conn = conn_id,
                    "frame not completed within {FRAME_TIMEOUT:?}; closing"
                );
                return Err(End::Closed);
            }
        };
        self.last_heard = Instant::now();
        Ok((memory, payload))
    }

    /// The next frame's header, cancel-safe: the idle timer can interrupt and resume it. A
    /// non-admin connection with no session handle and no request running is closed once
    /// idle.
    async fn read_header(&mut self) -> Result<Result<Option<u32>, FrameError>, End> {
        loop {
            let idle = self
                .idle_timeout
                .and_then(|t| self.last_heard.checked_add(t));
            tokio::select! {
                r = self.header.read(&mut self.reader) => return Ok(r),
                end = self.stop.recv() => return Err(end),
                () = sleep_until_some(idle) => {
                    while self.tasks.try_join_next().is_some() {}
                    if self.tasks.is_empty() && !self.conn.has_handles() {
                        tracing::debug!(conn = self.conn.id, "idle without a session handle; closing");
                        return Err(End::Closed);
                    }
                    self.last_heard = Instant::now();
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Stage 3: runs one request within its connection's and its uid's limits and queues its
/// answer. `memory` (its weight) and its running slots are given back once the answer is
/// built, before it waits for room in the outgoing queue, which depends on the client reading.
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

/// Runs one request (role check and handler: [`cmd::dispatch`]). A handler that panics (a
/// bug) is answered `internal` under the request's id instead of leaving its client waiting
/// forever, and the connection goes on. The panic's payload is neither sent nor put in this
/// log line (it may quote anything the handler held); the standard panic hook has printed it
/// with its location, as for any panic.
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
            Response::Error(wire_error(
                ErrorCode::Internal,
                "internal error: the daemon failed to handle this request (see its log)",
            ))
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
