//! [`VaultSessionBuilder`]: the options of a [`VaultSession`] and its `connect`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::{DEFAULT_PEER_CACHE, DEFAULT_RECONNECT_TIMEOUT, DcCache, VaultSession};
use crate::cache::Cache;
use crate::error::VaultError;
use crate::link::{Config, Linked, LockWait, open_link};
use crate::warm::{self, WarmStart};

/// Options for opening a [`VaultSession`]; from [`VaultSession::builder`].
#[derive(Debug, Clone)]
pub struct VaultSessionBuilder {
    name: String,
    socket: Option<PathBuf>,
    create_if_missing: bool,
    exclusive: bool,
    wait_for_unlock: Option<Duration>,
    reconnect_timeout: Duration,
    peer_cache: usize,
    warm_start: bool,
    client_name: String,
}

impl VaultSessionBuilder {
    /// The defaults, for `name` (see [`VaultSession::builder`]).
    pub(super) fn new(name: String) -> Self {
        VaultSessionBuilder {
            name,
            socket: None,
            create_if_missing: false,
            exclusive: true,
            wait_for_unlock: None,
            reconnect_timeout: DEFAULT_RECONNECT_TIMEOUT,
            peer_cache: DEFAULT_PEER_CACHE,
            warm_start: true,
            client_name: format!("session-vault-client {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The daemon's socket. Default: `$SESSION_VAULT_SOCKET`, else the user daemon's
    /// `$XDG_RUNTIME_DIR/session-vault/vault.sock`, else `/run/session-vault/vault.sock`.
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Create the session (owned by this process's uid, with a new session's contents: home
    /// DC 2 and the five known DC options) if it does not exist. Default `false`:
    /// [`VaultError::NoSuchSession`].
    ///
    /// A uid that is not one of the daemon's admins may create sessions only in its own
    /// namespace, names starting with `<uid>/`: write `~/mybot`, which the daemon expands to
    /// `1000/mybot` for uid 1000 (and [`VaultSession::name`] then returns the full name).
    /// Elsewhere a non-admin gets [`VaultError::NoSuchSession`], the same answer as for a
    /// session that exists but is not its own. The daemon caps how many sessions a non-admin
    /// uid may create (`max_sessions_per_uid`, 32 by default).
    ///
    /// With it, an existing session opens only if it is this uid's own or was granted to it
    /// (for an admin uid: also when another admin uid owns it): a bot never writes its auth
    /// key into a session that another uid made for it to find.
    pub fn create_if_missing(mut self, yes: bool) -> Self {
        self.create_if_missing = yes;
        self
    }

    /// Hold the session's lease while connected (default `true`): another exclusive open
    /// gets [`VaultError::SessionBusy`], and this session may cache what it reads.
    /// Without it, several processes may share the session, and nothing but the DC options
    /// is cached.
    pub fn exclusive(mut self, yes: bool) -> Self {
        self.exclusive = yes;
        self
    }

    /// When the vault is locked, wait up to `limit` for it to be unlocked, then go on
    /// (at connect and at every request). Default: fail at once with [`VaultError::Locked`].
    /// A service started at boot, before an administrator unlocks the vault, wants this.
    pub fn wait_for_unlock(mut self, limit: Duration) -> Self {
        self.wait_for_unlock = Some(limit);
        self
    }

    /// How long to keep trying to reconnect after the connection was lost (the daemon
    /// restarted). Default [`DEFAULT_RECONNECT_TIMEOUT`]. A daemon that restarts comes back
    /// locked: combine with [`wait_for_unlock`](Self::wait_for_unlock) unless the vault is
    /// unlocked unattended.
    pub fn reconnect_timeout(mut self, limit: Duration) -> Self {
        self.reconnect_timeout = limit;
        self
    }

    /// How many peers an exclusive session keeps in-process (default
    /// [`DEFAULT_PEER_CACHE`]; 0 disables the peer cache).
    pub fn peer_cache_capacity(mut self, peers: usize) -> Self {
        self.peer_cache = peers;
        self
    }

    /// Warm start (default `true`; exclusive sessions with a peer cache only): at open, load
    /// the session's peers, most recently added first, up to the peer cache's capacity, into
    /// the cache in the background, so that a restarted bot answers them in-process. Lookups
    /// made meanwhile go to the daemon; writes made meanwhile win over what is loaded.
    /// [`VaultSession::warm_start`] waits for it. A daemon too old for it (protocol minor
    /// below 5) is served as without it.
    pub fn warm_start(mut self, yes: bool) -> Self {
        self.warm_start = yes;
        self
    }

    /// How this program names itself in the daemon's logs.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// Connects to the daemon and opens the session.
    ///
    /// Fails at once if the daemon cannot be reached (no retry: a wrong path is reported
    /// right away); waits for unlock only if [`wait_for_unlock`](Self::wait_for_unlock) was
    /// given.
    pub async fn connect(self) -> Result<VaultSession, VaultError> {
        let mut config = Config {
            socket: self
                .socket
                .unwrap_or_else(session_vault_proto::paths::default_socket_path),
            name: self.name,
            create_if_missing: self.create_if_missing,
            exclusive: self.exclusive,
            wait_for_unlock: self.wait_for_unlock,
            reconnect_timeout: self.reconnect_timeout,
            client_name: self.client_name,
        };
        let mut lock_wait = LockWait::new(config.wait_for_unlock);
        let (link, opened) =
            open_link(&config, 0, config.create_if_missing, &mut lock_wait).await?;
        // `~/bot` is `<uid>/bot`: keep the full name, for `name()` and for reconnects.
        if let Some(full) = &opened.name {
            config.name.clone_from(full);
        }
        let cache = config
            .exclusive
            .then(|| Arc::new(Mutex::new(Cache::new(self.peer_cache))));
        let (warm_tx, warm_rx) = tokio::sync::watch::channel(None);
        match &cache {
            Some(c) if self.warm_start && self.peer_cache > 1 => {
                warm::spawn(&link, Arc::clone(c), warm_tx);
            }
            _ => {
                let _ = warm_tx.send(Some(WarmStart::skipped()));
            }
        }
        let session = VaultSession {
            link: Linked::new(config, link),
            dcs: RwLock::new(DcCache::default()),
            cache,
            writes: tokio::sync::Mutex::new(()),
            pending_peers: Mutex::new(Vec::new()),
            warm: warm_rx,
            requests: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        };
        session.dcs_from(&opened);
        Ok(session)
    }
}
