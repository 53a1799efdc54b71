//! Stages 2 and 3 of a connection: the read loop ([`Requests`]: room for the answer, header,
//! weight, payload, decode), then each request run within its connection's and its uid's
//! limits, its answer queued (see the parent module).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use interprocess::local_socket::tokio::Stream;
use session_vault_proto::codec::{self, FrameError};
use session_vault_proto::message::{ClientFrame, EVENT_ID, ErrorCode, Request, Response};
use tokio::task::JoinSet;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{End, FRAME_TIMEOUT, Stop, answers, frame, frames};
use crate::server::cmd::{self, Weight};
use crate::server::context::Conn;
use crate::server::errors::wire_error;
use crate::server::limits::{Admitted, MemoryPermit};

/// Stage 2: the read side of a connection after the handshake, one frame at a time.
pub(super) struct Requests<'a> {
    pub(super) conn: Arc<Conn>,
    pub(super) reader: &'a Stream,
    pub(super) admitted: Arc<Admitted>,
    pub(super) outbox: &'a answers::Outbox,
    pub(super) stop: Stop<'a>,
    /// Requests running or waiting to queue their answers.
    pub(super) tasks: JoinSet<()>,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) last_heard: Instant,
    /// The header being read, kept across the idle timer's interruptions.
    pub(super) header: frames::Header,
    pub(super) limit: u32,
}

impl Requests<'_> {
    /// Reads requests and starts each (see [`run_request`]) until the connection ends.
    pub(super) async fn run(&mut self) -> End {
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
    let answer = if heavy {
        // A whole session's answer (up to a million rows, ~100 MB) takes a second to encode:
        // off the runtime, whose worker would hold up every task queued behind it meanwhile.
        let id = request.id;
        tokio::task::spawn_blocking(move || frame(id, response))
            .await
            .unwrap_or_else(|_| {
                frame(
                    id,
                    Response::Error(wire_error(
                        ErrorCode::Internal,
                        "internal error: the daemon could not encode this answer",
                    )),
                )
            })
    } else {
        frame(request.id, response)
    };
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
