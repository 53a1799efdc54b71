//! [`VaultSession`]: a grammers session served by the vault, and its builder.
//!
//! State kept in-process:
//!
//! - home DC and DC options, always: grammers asks for them synchronously on every request.
//!   Filled from the daemon's `Opened` answer (again at every reconnect) and updated by this
//!   session's writes once the daemon acknowledged them;
//! - with an exclusive lease only, the [`Cache`] of peers, self user and update state.
//!   Without the lease other writers may exist, so every read goes to the daemon.
//!
//! Every write is awaited until the daemon acknowledged it (durable ones: once on disk),
//! except re-cached peers the cache shows would change nothing, which are not sent. The
//! writes mirrored in-process are serialized (one in flight per session), so that the copies
//! see them in the daemon's order; a mirrored write that fails, or whose future is dropped
//! before the answer, makes the cache forget what it touched (the daemon may have applied
//! it). Reads run concurrently on the one connection.
//!
//! `cache_peers` calls that tasks make while another write is in flight are combined: the
//! next task to get the write lock sends every waiting batch as one request (in the order
//! they were made, which is the order sequential calls would have) and answers each caller
//! with its result. So a session shared by many tasks has one `cache_peers` round trip in
//! flight, not one per task in a queue. If the task sending them is cancelled, the others
//! send their own again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use grammers_session::types::UpdatesState as GUpdatesState;
use grammers_session::types::{DcOption as GDcOption, PeerId, PeerInfo, UpdateState};
use session_vault_proto::message::{PeerQuery, Request, Response};
use session_vault_proto::model::{Peer, PeerBatch, PeerKey, UpdateStateChange};

use crate::cache::{Cache, Lookup, Slot, Ticket};
use crate::convert;
use crate::error::VaultError;
use crate::link::{Link, Linked, Opened};
use crate::warm::WarmStart;

mod builder;
mod hits;
pub use builder::VaultSessionBuilder;

/// Peers a session caches by default (exclusive sessions only).
pub const DEFAULT_PEER_CACHE: usize = 100_000;
/// How long a session tries to reconnect by default after losing the daemon.
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Peers per `cache_peers` request: keeps every frame far below the daemon's 1 MiB limit.
pub(crate) const PEERS_PER_REQUEST: usize = 1_000;

/// The first protocol minor whose daemons read a peer written as an array of its fields
/// (`PROTOCOL.md` §4): a quarter of the bytes, decoded in half the time.
pub(crate) const MINOR_COMPACT_PEERS: u16 = 8;

/// `peers` as a `cache_peers` sent on `link` carries them: as arrays if its daemon reads them.
fn peer_batch(link: &Link, peers: &[Peer]) -> PeerBatch {
    PeerBatch::new(
        peers.to_vec(),
        link.conn.server_minor() >= MINOR_COMPACT_PEERS,
    )
}

/// Home DC and DC options, for grammers' synchronous reads.
#[derive(Debug, Default)]
struct DcCache {
    home_dc: i32,
    options: HashMap<i32, GDcOption>,
}

/// A grammers session whose contents live in the Session Vault.
///
/// Implements [`grammers_session::Session`]: give it to grammers wherever a `SqliteSession`
/// went. One connection to the daemon carries every request of every task using the session;
/// it reconnects (and re-opens the session, lease included) when the daemon restarts.
///
/// ```no_run
/// # async fn f() -> Result<(), session_vault_client::VaultError> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use session_vault_client::VaultSession;
///
/// let session = Arc::new(
///     VaultSession::builder("~/mybot") // this uid's own namespace: "<uid>/mybot"
///         .create_if_missing(true)
///         .wait_for_unlock(Duration::from_secs(600))
///         .connect()
///         .await?,
/// );
/// // grammers_mtsender::SenderPool::new(Arc::clone(&session), api_id) …
/// # Ok(()) }
/// ```
pub struct VaultSession {
    link: Linked,
    dcs: RwLock<DcCache>,
    /// `Some` with the lease only (shared with the warm start's loader).
    pub(crate) cache: Option<Arc<Mutex<Cache>>>,
    /// Serializes writes (see the module docs).
    writes: tokio::sync::Mutex<()>,
    /// `cache_peers` calls waiting for the write lock, to be sent together.
    pending_peers: Mutex<Vec<PendingPeers>>,
    /// The warm start's outcome, once known.
    warm: tokio::sync::watch::Receiver<Option<WarmStart>>,
    /// Requests sent through [`VaultSession::call`] (the warm start's not counted).
    requests: AtomicU64,
    /// The daemon ended this session's handle (revoked, deleted, replaced, or its lease
    /// across hosts lapsed): nothing is answered from the in-process copies any more, since
    /// their premise (this client the session's only writer) is gone. Final: build a new
    /// `VaultSession` to open the session again.
    ended: AtomicBool,
}

/// A `cache_peers` call waiting to be combined with others (see the module docs).
struct PendingPeers {
    peers: Vec<Peer>,
    done: tokio::sync::oneshot::Sender<Result<(), VaultError>>,
}

impl std::fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSession")
            .field("name", &self.link.config.name)
            .field("socket", &self.link.config.socket)
            .field("exclusive", &self.link.config.exclusive)
            .finish_non_exhaustive()
    }
}

/// Ends a cache read on every path, cancellation included.
struct ReadGuard<'a> {
    cache: &'a Mutex<Cache>,
    ticket: Option<Ticket>,
}

impl ReadGuard<'_> {
    fn finish(mut self, fill: impl FnOnce(&mut Cache)) {
        if let Some(t) = self.ticket.take() {
            lock(self.cache).finish(t, fill);
        }
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            lock(self.cache).finish(t, |_| {});
        }
    }
}

/// Mirrors a write into the cache once the daemon acknowledged it; if it fails or its
/// future is dropped before that (the daemon may have applied it anyway), forgets what it
/// touched instead, so that the next read asks the daemon.
pub(crate) struct WriteGuard<'a, F: Fn(&mut Cache)> {
    cache: Option<&'a Mutex<Cache>>,
    forget: F,
}

impl<'a, F: Fn(&mut Cache)> WriteGuard<'a, F> {
    pub(crate) fn new(cache: Option<&'a Mutex<Cache>>, forget: F) -> Self {
        WriteGuard { cache, forget }
    }

    /// The daemon acknowledged the write: mirror it.
    pub(crate) fn done(mut self, mirror: impl FnOnce(&mut Cache)) {
        if let Some(c) = self.cache.take() {
            mirror(&mut lock(c));
        }
    }
}

impl<F: Fn(&mut Cache)> Drop for WriteGuard<'_, F> {
    fn drop(&mut self) {
        if let Some(c) = self.cache.take() {
            (self.forget)(&mut lock(c));
        }
    }
}

fn lock(cache: &Mutex<Cache>) -> std::sync::MutexGuard<'_, Cache> {
    // Only cache bookkeeping runs under this lock; none of it panics.
    cache.lock().expect("cache lock is never poisoned")
}

pub(crate) fn unexpected(what: &str) -> VaultError {
    VaultError::Protocol(format!("unexpected response to {what}"))
}

impl VaultSession {
    /// Options for opening the session `name` (its name in the vault).
    pub fn builder(name: impl Into<String>) -> VaultSessionBuilder {
        VaultSessionBuilder::new(name.into())
    }

    /// Opens an existing session exclusively at the default socket: the one-line
    /// replacement of `SqliteSession::open(path)`. Same as
    /// `VaultSession::builder(name).connect()`.
    pub async fn connect(name: impl Into<String>) -> Result<VaultSession, VaultError> {
        VaultSession::builder(name).connect().await
    }

    /// Closes the session: gives its lease back (`close_session`) before returning, then
    /// ends the connection. Dropping a `VaultSession` frees the lease too, but only once the
    /// daemon notices the socket closed, a moment later: a process that opens the session
    /// again right away, exclusively, closes it first or may get [`VaultError::SessionBusy`].
    /// Every write was answered before its call returned, so nothing is left to send.
    pub async fn close(self) -> Result<(), VaultError> {
        self.link.close().await
    }

    /// Waits for the warm start ([`VaultSessionBuilder::warm_start`]) to end and says what it
    /// did; at once when none was tried. May be called any number of times.
    pub async fn warm_start(&self) -> WarmStart {
        let mut rx = self.warm.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(w) => w.clone().unwrap_or_else(WarmStart::skipped),
            Err(_) => WarmStart {
                failed: Some("the warm start did not finish (its runtime stopped)".into()),
                ..WarmStart::skipped()
            },
        }
    }

    /// Requests this session sent to the daemon (each attempt counted; the warm start's not):
    /// for tests and benchmarks that check what was answered in-process.
    #[doc(hidden)]
    pub fn daemon_requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The session's name in the vault: the full name the daemon reported at open (`~/bot`
    /// opened as `1000/bot`), or the name given where the daemon did not report one.
    pub fn name(&self) -> &str {
        &self.link.config.name
    }

    pub(crate) fn dcs_from(&self, opened: &Opened) {
        let mut d = self.dcs.write().expect("dc cache lock is never poisoned");
        d.home_dc = opened.home_dc;
        d.options = opened
            .dc_options
            .iter()
            .map(|o| (o.id, convert::dc_option_from_wire(o)))
            .collect();
    }

    /// Runs after every reconnect: the daemon's DC options are current again; whatever
    /// else was cached may have been changed by another writer while the lease was free.
    fn reopened(&self, opened: &Opened) {
        self.dcs_from(opened);
        if let Some(c) = &self.cache {
            lock(c).clear();
        }
    }

    /// Takes the write lock: always for the writes mirrored in the DC copy, and for peers and
    /// update state when they are cached (without the cache, their order does not matter
    /// here, and concurrent writes may be in flight together).
    pub(crate) async fn serialize(&self, always: bool) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if always || self.cache.is_some() {
            Some(self.writes.lock().await)
        } else {
            None
        }
    }

    pub(crate) async fn call(&self, make: impl Fn(u32) -> Request) -> Result<Response, VaultError> {
        self.call_on(|link| make(link.handle)).await
    }

    /// [`Self::call`] with the request built for the link it is sent on (its daemon's minor
    /// version decides how peers are written, [`peer_batch`]).
    pub(crate) async fn call_on(
        &self,
        make: impl Fn(&Link) -> Request,
    ) -> Result<Response, VaultError> {
        let counted = |link: &Link| {
            self.requests.fetch_add(1, Ordering::Relaxed);
            make(link)
        };
        let answer = self.link.call_on(counted, &|o| self.reopened(o)).await;
        if let Err(VaultError::NoSuchSession { .. }) = &answer {
            // The session was open, so its handle was ended by the daemon.
            self.ended.store(true, Ordering::SeqCst);
            if let Some(c) = &self.cache {
                lock(c).clear();
            }
        }
        answer
    }

    /// `Err(NoSuchSession)` once the daemon ended this session's handle (see `ended`).
    pub(crate) fn still_open(&self) -> Result<(), VaultError> {
        if self.ended.load(Ordering::SeqCst) {
            return Err(VaultError::NoSuchSession {
                name: self.name().to_owned(),
            });
        }
        Ok(())
    }

    pub(crate) async fn call_ok(
        &self,
        what: &str,
        make: impl Fn(u32) -> Request,
    ) -> Result<(), VaultError> {
        match self.call(make).await? {
            Response::Ok => Ok(()),
            _ => Err(unexpected(what)),
        }
    }

    /// The home DC (from the in-process copy).
    pub(crate) fn home_dc(&self) -> i32 {
        self.dcs
            .read()
            .expect("dc cache lock is never poisoned")
            .home_dc
    }

    /// A DC option (from the in-process copy); a production DC the session has no option for
    /// gets its statically known one, as grammers requires.
    pub(crate) fn dc(&self, dc_id: i32) -> Option<GDcOption> {
        let d = self.dcs.read().expect("dc cache lock is never poisoned");
        d.options
            .get(&dc_id)
            .cloned()
            .or_else(|| convert::known_dc_option(dc_id))
    }

    /// Sets the home DC (durable), then the in-process copy.
    pub(crate) async fn set_home_dc(&self, dc_id: i32) -> Result<(), VaultError> {
        let _serial = self.serialize(true).await;
        self.call_ok("set_home_dc", |handle| Request::SetHomeDc { handle, dc_id })
            .await?;
        self.dcs
            .write()
            .expect("dc cache lock is never poisoned")
            .home_dc = dc_id;
        Ok(())
    }

    /// Sets a DC option, auth key included (durable), then the in-process copy.
    pub(crate) async fn set_dc(&self, option: &GDcOption) -> Result<(), VaultError> {
        let _serial = self.serialize(true).await;
        let wire = convert::dc_option_to_wire(option);
        self.call_ok("set_dc_option", |handle| Request::SetDcOption {
            handle,
            option: wire.clone(),
        })
        .await?;
        self.dcs
            .write()
            .expect("dc cache lock is never poisoned")
            .options
            .insert(option.id, option.clone());
        Ok(())
    }

    async fn get_peer(&self, query: PeerQuery) -> Result<Option<Peer>, VaultError> {
        match self
            .call(|handle| Request::GetPeer {
                handle,
                query: query.clone(),
            })
            .await?
        {
            Response::Peer(p) => Ok(p),
            _ => Err(unexpected("get_peer")),
        }
    }

    /// A cached peer by grammers id (`PeerId::self_user()`: the logged-in user).
    pub(crate) async fn peer_info(&self, id: PeerId) -> Result<Option<PeerInfo>, VaultError> {
        let peer = match convert::peer_key(id) {
            Some(key) => self.peer_by_key(key).await?,
            // The daemon keeps naming the user it last saw marked is_self; answer it only
            // while its cached info still says so (grammers' SqliteSession looks for the
            // is_self mark the same way).
            None => self.self_peer().await?.filter(|p| p.is_self == Some(true)),
        };
        Ok(peer.as_ref().and_then(convert::peer_from_wire))
    }

    async fn peer_by_key(&self, key: PeerKey) -> Result<Option<Peer>, VaultError> {
        self.still_open()?;
        let Some(cache) = &self.cache else {
            return self.get_peer(PeerQuery::Key(key)).await;
        };
        let guard = {
            let mut c = lock(cache);
            if let Lookup::Hit(p) = c.peer(key) {
                return Ok(p);
            }
            ReadGuard {
                cache,
                ticket: Some(c.begin(Slot::Peer(key))),
            }
        };
        let p = self.get_peer(PeerQuery::Key(key)).await?;
        guard.finish(|c| c.fill_peer(key, p.clone()));
        Ok(p)
    }

    async fn self_peer(&self) -> Result<Option<Peer>, VaultError> {
        self.still_open()?;
        let Some(cache) = &self.cache else {
            return self.get_peer(PeerQuery::SelfUser).await;
        };
        let guard = {
            let mut c = lock(cache);
            if let Lookup::Hit(p) = c.self_peer() {
                return Ok(p);
            }
            ReadGuard {
                cache,
                ticket: Some(c.begin(Slot::SelfUser)),
            }
        };
        let p = self.get_peer(PeerQuery::SelfUser).await?;
        guard.finish(|c| c.fill_self(p.clone()));
        Ok(p)
    }

    /// Merges peers into the session (grammers' `extend_info` rules, applied by the
    /// daemon), in batches of at most [`PEERS_PER_REQUEST`]. With the cache, peers whose
    /// merge would change nothing are not sent ([`Cache::drop_unchanged`]); when none is
    /// left, no request is made.
    ///
    /// With the cache (writes serialized), calls made while another write is in flight are
    /// combined into one request (see the module docs).
    pub(crate) async fn cache_peer_infos(&self, infos: &[PeerInfo]) -> Result<(), VaultError> {
        if infos.is_empty() {
            return Ok(());
        }
        let peers: Vec<Peer> = infos.iter().map(convert::peer_to_wire).collect();
        if self.cache.is_none() {
            // Unserialized: concurrent calls are in flight together anyway.
            return self.send_peers(peers).await;
        }
        loop {
            let (done, mut answer) = tokio::sync::oneshot::channel();
            self.pending().push(PendingPeers {
                peers: peers.clone(),
                done,
            });
            let serial = tokio::select! {
                biased;
                r = &mut answer => match r {
                    Ok(r) => return r,
                    // The task sending it was cancelled (it may or may not have been
                    // applied): send it again.
                    Err(_) => continue,
                },
                serial = self.writes.lock() => serial,
            };
            // The previous holder of the lock may have sent ours.
            match answer.try_recv() {
                Ok(r) => return r,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => continue,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            // Ours is still waiting, so it is among these; they were made before this point,
            // in this order.
            let waiting = std::mem::take(&mut *self.pending());
            let mut all = Vec::with_capacity(waiting.iter().map(|w| w.peers.len()).sum());
            let mut callers = Vec::with_capacity(waiting.len());
            for w in waiting {
                all.extend(w.peers);
                callers.push(w.done);
            }
            let result = self.send_peers(all).await;
            drop(serial);
            for c in callers {
                let _ = c.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(e.duplicate()),
                });
            }
            return answer.try_recv().unwrap_or(result);
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<PendingPeers>> {
        // Only pushes and takes run under this lock; neither panics.
        self.pending_peers
            .lock()
            .expect("pending peers lock is never poisoned")
    }

    /// Sends `peers` (with the cache: those whose merge would change something), in batches
    /// of at most [`PEERS_PER_REQUEST`], mirroring each acknowledged batch.
    async fn send_peers(&self, peers: Vec<Peer>) -> Result<(), VaultError> {
        let peers = match &self.cache {
            Some(c) => lock(c).drop_unchanged(peers),
            None => peers,
        };
        for batch in peers.chunks(PEERS_PER_REQUEST) {
            let guard = WriteGuard::new(self.cache.as_deref(), |c| c.forget_peers(batch));
            self.cache_peers_now(batch).await?;
            guard.done(|c| c.wrote_peers(batch));
        }
        Ok(())
    }

    /// One `cache_peers` request of `batch` (at most [`PEERS_PER_REQUEST`]), nothing else:
    /// the callers mirror it into the cache.
    pub(crate) async fn cache_peers_now(&self, batch: &[Peer]) -> Result<(), VaultError> {
        let make = |link: &Link| Request::CachePeers {
            handle: link.handle,
            peers: peer_batch(link, batch),
        };
        match self.call_on(make).await? {
            Response::Ok => Ok(()),
            _ => Err(unexpected("cache_peers")),
        }
    }

    /// The whole update state.
    pub(crate) async fn updates_state_now(&self) -> Result<GUpdatesState, VaultError> {
        self.still_open()?;
        let fetch = || async {
            match self
                .call(|handle| Request::GetUpdatesState { handle })
                .await?
            {
                Response::UpdatesState(s) => Ok(s),
                _ => Err(unexpected("get_updates_state")),
            }
        };
        let Some(cache) = &self.cache else {
            return Ok(convert::state_from_wire(&fetch().await?));
        };
        let guard = {
            let mut c = lock(cache);
            if let Lookup::Hit(s) = c.state() {
                return Ok(convert::state_from_wire(&s));
            }
            ReadGuard {
                cache,
                ticket: Some(c.begin(Slot::State)),
            }
        };
        let s = fetch().await?;
        let out = convert::state_from_wire(&s);
        guard.finish(|c| c.fill_state(s));
        Ok(out)
    }

    /// Applies an update-state change.
    pub(crate) async fn set_state(&self, update: &UpdateState) -> Result<(), VaultError> {
        let change: UpdateStateChange = convert::change_to_wire(update);
        let _serial = self.serialize(false).await;
        let guard = WriteGuard::new(self.cache.as_deref(), Cache::forget_state);
        self.call_ok("set_update_state", |handle| Request::SetUpdateState {
            handle,
            change: change.clone(),
        })
        .await?;
        guard.done(|c| c.wrote_state(&change));
        Ok(())
    }
}
