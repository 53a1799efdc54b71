//! The session's link to the daemon: one connection with the session open on it, and how it
//! survives a daemon restart or a locked vault.
//!
//! Every request goes through [`Linked::call`]:
//!
//! - the connection is gone (the daemon restarted, or shut down): reconnect with backoff
//!   (50 ms doubling to 1 s) for at most the builder's `reconnect_timeout`, re-open the
//!   session (taking its lease again; never creating it), then send the request again.
//!   An admin's `vaultctl disconnect` is the exception: after the daemon's
//!   `disconnected_by_admin` event the session does not reconnect, and every request fails
//!   with [`VaultError::DisconnectedByAdmin`].
//!   Every request the session makes is idempotent (set home DC, set a DC option, merge
//!   peers, set update state, import), so a retry after a lost answer is harmless. One task
//!   reconnects; the others wait for it;
//! - the vault is locked: with no `wait_for_unlock` the request fails at once with
//!   [`VaultError::Locked`]; with one, it waits for the daemon's `Unlocked` event (checking
//!   again at least every [`LOCK_POLL`]) for at most that long, then sends again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_vault_proto::message::{Event, Request, Response};
use session_vault_proto::model::DcOption;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::connection::{ClientError, Connection};
use crate::error::{Failure, VaultError};

/// Longest wait between two checks of a locked vault (events can be missed across a
/// reconnect; a retry is the check).
pub(crate) const LOCK_POLL: Duration = Duration::from_millis(500);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What a link needs to know to (re)open its session.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub name: String,
    pub socket: PathBuf,
    pub create_if_missing: bool,
    pub exclusive: bool,
    pub wait_for_unlock: Option<Duration>,
    pub reconnect_timeout: Duration,
    pub client_name: String,
}

/// A connection with the session open on it.
#[derive(Debug)]
pub(crate) struct Link {
    pub conn: Connection,
    pub handle: u32,
    /// Distinguishes successive links, so that a task reports a failure of the link it used.
    pub epoch: u64,
}

/// What `OpenSession` answered, for the caches.
#[derive(Debug)]
pub(crate) struct Opened {
    pub home_dc: i32,
    pub dc_options: Vec<DcOption>,
    /// The session's full name (`~/` expanded), from daemons that report it.
    pub name: Option<String>,
}

/// How long a request may still wait for the vault to be unlocked.
#[derive(Debug)]
pub(crate) struct LockWait {
    limit: Option<Duration>,
    deadline: Option<Instant>,
}

impl LockWait {
    pub(crate) fn new(limit: Option<Duration>) -> LockWait {
        LockWait {
            limit: limit.filter(|d| !d.is_zero()),
            deadline: None,
        }
    }

    /// Waits for an `Unlocked` event (or [`LOCK_POLL`]), or fails with `Locked` when the
    /// policy does not wait or the wait is over.
    async fn wait(&mut self, events: &mut broadcast::Receiver<Event>) -> Result<(), VaultError> {
        let Some(limit) = self.limit else {
            return Err(VaultError::Locked);
        };
        let now = Instant::now();
        let deadline = *self.deadline.get_or_insert(now + limit);
        if now >= deadline {
            return Err(VaultError::Locked);
        }
        let until = deadline.min(now + LOCK_POLL);
        let unlocked = async {
            loop {
                match events.recv().await {
                    Ok(Event::Unlocked) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Ok(_) => {}
                    // Cannot happen while we hold the connection; wait out the poll period.
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        let _ = tokio::time::timeout_at(until, unlocked).await;
        Ok(())
    }
}

/// Connects and opens the session once: no retry on an unreachable daemon (a wrong path
/// should be reported at once), waits for unlock as the policy says. `create`: create the
/// session if missing (at first connect only, as the builder says: a session gone at a
/// reconnect was deleted on purpose, and recreating it empty would silently log the bot out).
pub(crate) async fn open_link(
    config: &Config,
    epoch: u64,
    create: bool,
    lock_wait: &mut LockWait,
) -> Result<(Arc<Link>, Opened), VaultError> {
    let conn = Connection::connect(&config.socket, &config.client_name)
        .await
        .map_err(|e| match Failure::of(e, &config.name) {
            Failure::Transient(e) | Failure::Fatal(e) => e,
            Failure::Locked => VaultError::Locked,
        })?;
    loop {
        let mut events = conn.events();
        let request = Request::OpenSession {
            name: config.name.clone(),
            exclusive: config.exclusive,
            create_if_missing: create,
        };
        match conn.call(request).await {
            Ok(Response::Opened {
                handle,
                home_dc,
                dc_options,
                name,
                ..
            }) => {
                let link = Arc::new(Link {
                    conn,
                    handle,
                    epoch,
                });
                return Ok((
                    link,
                    Opened {
                        home_dc,
                        dc_options,
                        name,
                    },
                ));
            }
            Ok(_) => {
                return Err(
                    Failure::of(ClientError::Unexpected("open_session"), &config.name).into_error(),
                );
            }
            Err(e) => match Failure::of(e, &config.name) {
                Failure::Locked => lock_wait.wait(&mut events).await?,
                Failure::Transient(e) | Failure::Fatal(e) => return Err(e),
            },
        }
    }
}

impl Failure {
    fn into_error(self) -> VaultError {
        match self {
            Failure::Transient(e) | Failure::Fatal(e) => e,
            Failure::Locked => VaultError::Locked,
        }
    }
}

/// Whether a failed (re)open is worth another try within the reconnect window.
fn retryable(e: &VaultError) -> bool {
    // SessionBusy: after a dropped connection the daemon may not have released our old
    // lease yet (it does once it notices the socket closed).
    matches!(
        e,
        VaultError::Disconnected | VaultError::Unreachable { .. } | VaultError::SessionBusy { .. }
    )
}

/// The current link, and how to replace it.
pub(crate) struct Linked {
    pub config: Config,
    current: Mutex<Option<Arc<Link>>>,
    reconnecting: tokio::sync::Mutex<()>,
    next_epoch: AtomicU64,
    /// An admin disconnected the session's link: final, no reconnect.
    kicked: AtomicBool,
}

impl Linked {
    pub(crate) fn new(config: Config, link: Arc<Link>) -> Linked {
        let next = link.epoch + 1;
        Linked {
            config,
            current: Mutex::new(Some(link)),
            reconnecting: tokio::sync::Mutex::new(()),
            next_epoch: AtomicU64::new(next),
            kicked: AtomicBool::new(false),
        }
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.current
            .lock()
            .expect("link lock is never poisoned: nothing panics while holding it")
            .clone()
            .filter(|l| !l.conn.is_closed())
    }

    /// Whether an admin disconnected this session: its link (live or closed) says so, or an
    /// earlier call found it. Sticky.
    fn kicked(&self) -> bool {
        if self.kicked.load(Ordering::Acquire) {
            return true;
        }
        let stored = self
            .current
            .lock()
            .expect("link lock is never poisoned")
            .clone();
        if stored.is_some_and(|l| l.conn.disconnected_by_admin()) {
            tracing::warn!(session = %self.config.name, "an admin disconnected this client; not reconnecting");
            self.kicked.store(true, Ordering::Release);
            return true;
        }
        false
    }

    fn forget(&self, epoch: u64) {
        let mut cur = self.current.lock().expect("link lock is never poisoned");
        if cur.as_ref().is_some_and(|l| l.epoch == epoch) {
            *cur = None;
        }
    }

    /// The live link, reconnecting first if there is none. `reopened` runs (with what the
    /// daemon answered) each time a new link is made, before any request uses it.
    async fn link(
        &self,
        lock_wait: &mut LockWait,
        reopened: &(dyn Fn(&Opened) + Sync),
    ) -> Result<Arc<Link>, VaultError> {
        if self.kicked() {
            return Err(VaultError::DisconnectedByAdmin);
        }
        if let Some(l) = self.current() {
            return Ok(l);
        }
        let _one_at_a_time = self.reconnecting.lock().await;
        if self.kicked() {
            return Err(VaultError::DisconnectedByAdmin);
        }
        if let Some(l) = self.current() {
            return Ok(l);
        }
        let deadline = Instant::now() + self.config.reconnect_timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
            match open_link(&self.config, epoch, false, lock_wait).await {
                Ok((link, opened)) => {
                    tracing::info!(session = %self.config.name, "reconnected to the Session Vault daemon");
                    reopened(&opened);
                    *self.current.lock().expect("link lock is never poisoned") =
                        Some(Arc::clone(&link));
                    return Ok(link);
                }
                Err(e) if retryable(&e) && Instant::now() + backoff < deadline => {
                    tracing::debug!(session = %self.config.name, error = %e, "reconnect attempt failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Gives the session back (`close_session`) on the live link, if there is one, so that
    /// its lease is free once this returns. No reconnect: a link already gone freed the lease
    /// with its socket, and so does one that fails now.
    pub(crate) async fn close(&self) -> Result<(), VaultError> {
        let Some(link) = self.current() else {
            return Ok(());
        };
        self.forget(link.epoch);
        let handle = link.handle;
        match link.conn.call(Request::CloseSession { handle }).await {
            Ok(_) => Ok(()),
            Err(e) => match Failure::of(e, &self.config.name) {
                Failure::Transient(_) => Ok(()),
                Failure::Locked => Err(VaultError::Locked),
                Failure::Fatal(e) => Err(e),
            },
        }
    }

    /// Sends a request built for the link it is sent on (its handle, and what its daemon
    /// speaks: [`Connection::server_minor`], which a reconnect may change), through
    /// reconnects and a locked vault as the policy says. Returns the daemon's answer, errors
    /// turned into [`VaultError`].
    pub(crate) async fn call_on(
        &self,
        make: impl Fn(&Link) -> Request,
        reopened: &(dyn Fn(&Opened) + Sync),
    ) -> Result<Response, VaultError> {
        let mut lock_wait = LockWait::new(self.config.wait_for_unlock);
        // Set at the first lost connection: a request that keeps losing its connection (a
        // daemon crashing on it, say) gives up after one reconnect window.
        let mut give_up: Option<Instant> = None;
        loop {
            let link = self.link(&mut lock_wait, reopened).await?;
            let mut events = link.conn.events();
            match link.conn.call(make(&link)).await {
                Ok(r) => return Ok(r),
                Err(e) => match Failure::of(e, &self.config.name) {
                    Failure::Transient(_) if self.kicked() => {
                        return Err(VaultError::DisconnectedByAdmin);
                    }
                    Failure::Transient(e) => {
                        let now = Instant::now();
                        if *give_up.get_or_insert(now + self.config.reconnect_timeout) <= now {
                            return Err(e);
                        }
                        tracing::debug!(session = %self.config.name, error = %e, "connection lost; reconnecting");
                        self.forget(link.epoch);
                    }
                    Failure::Locked => lock_wait.wait(&mut events).await?,
                    Failure::Fatal(e) => return Err(e),
                },
            }
        }
    }
}
