//! The writer process of the crash harness: the test binary re-executed (its ignored
//! [`writer_entry`] test) with the socket and its first counter in the environment.
//!
//! It streams the workload of [`super::op_of`] through `VaultSession`s (one session and one
//! task per stream, [`super::TASKS`] streams), creates a session `c<n>` at a time through a
//! fresh `VaultSession` with `create_if_missing`, and deletes the session it created
//! [`KEEP`] steps before through an admin connection. Every other [`PHASE_NS`] is
//! cache-only (durable writes skipped), so that kills also land where nothing but the flush
//! interval commits. It prints one line per acknowledgment,
//! `SVREL ack <kind> <task> <n> <t0> <t1>` (`t0` before the request was sent, `t1` after
//! its answer, both `CLOCK_MONOTONIC` ns), `SVREL send X <n>` before each delete, and
//! `SVREL open <task>` once each stream's session is open. It never exits by itself: the
//! harness kills it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use grammers_session::Session;
use grammers_session::types::UpdateState;
use session_vault_client::{ClientError, Connection, VaultSession};
use session_vault_proto::message::{ErrorCode, Request, Response, WireError};

use super::super::mono_ns;
use super::{
    BASE_VAR, MARK, Op, SOCKET_VAR, TASKS, grammers_dc_option, grammers_peer, op_of, session_name,
};

/// Sessions created and not yet deleted at any time.
pub const KEEP: usize = 4;
/// How long a client waits for the daemon to come back, or to be unlocked.
const PATIENCE: Duration = Duration::from_secs(120);
/// Pause before retrying what failed while the daemon was down.
const RETRY: Duration = Duration::from_millis(5);
/// Length of the alternating phases of the workload (monotonic clock).
const PHASE_NS: u64 = 150_000_000;

/// Whether this is a cache-only phase: no durable write anywhere, so that only the flush
/// interval makes cache-class writes durable (any durable write commits the whole group).
fn cache_only() -> bool {
    (mono_ns() / PHASE_NS) % 2 == 1
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The harness reads these lines; if it is gone, we are about to be killed anyway.
    let _ = writeln!(out, "{MARK}{line}");
    let _ = out.flush();
}

fn builder(socket: &Path, name: &str) -> session_vault_client::VaultSessionBuilder {
    VaultSession::builder(name)
        .socket(socket)
        .create_if_missing(true)
        .wait_for_unlock(PATIENCE)
        .reconnect_timeout(PATIENCE)
        .client_name("reliability crash writer")
}

/// Opens a session, retrying while the daemon is down or a killed writer's lease is still
/// held (the daemon frees it once it sees the socket closed).
async fn open(socket: &Path, name: &str) -> VaultSession {
    loop {
        match builder(socket, name).connect().await {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// One stream: its session, and the workload from counter `base` on.
async fn stream(socket: PathBuf, task: u32, base: u64) {
    let s = open(&socket, &session_name(task)).await;
    say(&format!("open {task}"));
    let mut n = base;
    loop {
        if cache_only() && matches!(op_of(n), Op::Dc | Op::Home) {
            n += 1;
            continue;
        }
        let t0 = mono_ns();
        let r = match op_of(n) {
            Op::Dc => s.set_dc_option(&grammers_dc_option(task, n)).await,
            Op::Home => s.set_home_dc_id(n as i32).await,
            Op::Peer => s.cache_peer(grammers_peer(n)).await,
            Op::State => {
                s.set_update_state(UpdateState::Primary {
                    pts: n as i32,
                    date: n as i32,
                    seq: n as i32,
                })
                .await
            }
        };
        let t1 = mono_ns();
        match r {
            Ok(()) => {
                say(&format!("ack {} {task} {n} {t0} {t1}", op_of(n).letter()));
                n += 1;
            }
            Err(e) => {
                // Retried with the same counter (every write is idempotent); counted by the
                // harness, which expects none.
                say(&format!("error {task} {n} {e}"));
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// An admin connection that reconnects, for deletes.
struct Admin {
    socket: PathBuf,
    conn: Option<Connection>,
}

impl Admin {
    /// Sends `request` until the daemon answers with anything but a transient refusal.
    async fn call(&mut self, make: impl Fn() -> Request) -> Result<Response, WireError> {
        loop {
            if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
                match Connection::connect(&self.socket, "reliability crash writer admin").await {
                    Ok(c) => self.conn = Some(c),
                    Err(_) => {
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                }
            }
            let conn = self.conn.as_ref().expect("connected just above");
            match conn.call(make()).await {
                Ok(r) => return Ok(r),
                Err(ClientError::Daemon(e)) => match e.code {
                    // Locked after a restart; a lease not yet freed; shutting down.
                    ErrorCode::Locked | ErrorCode::SessionBusy { .. } | ErrorCode::ShuttingDown => {
                        tokio::time::sleep(RETRY).await
                    }
                    _ => return Err(e),
                },
                Err(_) => {
                    self.conn = None;
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// Creates `c<n>` sessions one after the other, deleting each [`KEEP`] steps later.
async fn creator(socket: PathBuf, base: u64) {
    let mut admin = Admin {
        socket: socket.clone(),
        conn: None,
    };
    let mut alive = std::collections::VecDeque::new();
    let mut n = base;
    loop {
        while cache_only() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t0 = mono_ns();
        drop(open(&socket, &format!("c{n}")).await);
        let t1 = mono_ns();
        say(&format!("ack C 0 {n} {t0} {t1}"));
        alive.push_back(n);
        if alive.len() > KEEP {
            let old = alive.pop_front().expect("more than KEEP queued");
            say(&format!("send X {old}"));
            let t0 = mono_ns();
            let r = admin
                .call(|| Request::DeleteSession {
                    name: format!("c{old}"),
                    force: false,
                })
                .await;
            let t1 = mono_ns();
            match r {
                // NoSuchSession: an earlier attempt deleted it and lost its answer.
                Ok(Response::Ok) => say(&format!("ack X 0 {old} {t0} {t1}")),
                Err(e) if e.code == ErrorCode::NoSuchSession => {
                    say(&format!("ack X 0 {old} {t0} {t1}"))
                }
                other => say(&format!("error 0 {old} delete: {other:?}")),
            }
        }
        n += 1;
        // Sessions are cheap, but a few per kill interval are enough.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The writer's side: does nothing unless started by the harness.
#[test]
#[ignore = "entry point of the crash harness's writer processes"]
fn writer_entry() {
    let Some(socket) = std::env::var_os(SOCKET_VAR).map(PathBuf::from) else {
        return;
    };
    let base: u64 = std::env::var(BASE_VAR)
        .expect("base counter in the environment")
        .parse()
        .expect("base counter is a number");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            tasks.push(tokio::spawn(stream(socket.clone(), task, base)));
        }
        tasks.push(tokio::spawn(creator(socket, base)));
        for t in tasks {
            let _ = t.await;
        }
    });
}
