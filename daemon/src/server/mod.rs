//! The `vaultd` server: socket listener, connections, authorization, dispatch, shutdown.
//!
//! - [`transport`]: the local socket and peer credentials (the only platform-specific code);
//! - [`dirs`]: the data and socket directories, checked through a descriptor before use;
//! - [`refuse`]: peers the kernel cannot name (the overflow uid/gid), refused at `hello`;
//! - [`conn`]: one task per connection: handshake, frame loop, bounded in-flight requests
//!   and answers, fair use of the storage thread by heavy requests, teardown;
//! - [`context`]: what a request handler knows of its connection ([`context::Conn`]);
//! - [`cmd`]: one module per kind of request, dispatched from one `match` once the request's
//!   role ([`cmd::role`]: anyone, session ACL, handle holder, admin) admits its sender;
//! - [`leases`]: exclusive session leases tied to connections; [`host_leases`] their rows in
//!   PostgreSQL, across hosts;
//! - [`coherence`]: following what other daemons sharing a PostgreSQL vault change (names,
//!   ACLs, keyslots), polled every 0.5 s and before the requests that depend on it;
//! - [`handles`]: every connection's open session handles, so that revoke and delete end
//!   them at once;
//! - [`clients`]: every connection with its peer pid and a signal that ends it
//!   (`disconnect`);
//! - [`throttle`]: daemon-wide throttling of passphrase attempts;
//! - [`limits`]: caps on connections, memory and storage use per uid, so that one local user
//!   cannot take the daemon down for others;
//! - [`config`]: TOML file, flags, environment, defaults;
//! - [`systemd`]: readiness/status notifications, socket activation, credential unlock.
//!
//! Shutdown is a protocol (mini-redis style): SIGTERM/SIGINT broadcasts stop; the accept loop
//! ends, every connection stops reading, finishes its in-flight requests and closes; then the
//! vault flushes, the keys are wiped, the socket file is removed, and `run` returns.

pub mod autolock;
pub mod clients;
pub mod cmd;
pub mod coherence;
pub mod config;
pub mod conn;
pub mod context;
pub mod datadir;
#[cfg(unix)]
pub mod dirs;
pub mod disk;
pub mod errors;
pub mod handles;
pub mod host_leases;
pub mod leases;
pub mod limits;
pub mod peer_process;
pub mod refuse;
pub mod systemd;
pub mod throttle;
pub mod transport;
#[cfg(windows)]
pub mod win;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use session_vault_proto::message::Event;
use tokio::sync::{Semaphore, broadcast, mpsc};

use crate::vault::postgres::{IdleTimeout, PgTarget, idle};
use crate::vault::{StoreLocation, Vault, VaultConfig};
use config::Config;

/// First pause after a failed `accept` (e.g. out of file descriptors); doubles per failure.
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(5);
/// Longest pause between `accept` attempts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long shutdown waits for connections to finish their in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by every connection.
pub struct Daemon {
    /// The daemon's configuration.
    pub config: Config,
    /// The vault.
    pub vault: Vault,
    /// Exclusive session leases.
    pub leases: leases::Leases,
    /// Open session handles of every connection.
    pub handles: handles::Handles,
    /// Connections, for `disconnect`.
    pub clients: clients::Clients,
    /// Passphrase-attempt throttle.
    pub throttle: throttle::Throttle,
    /// The backup or restore transfer in progress (see [`cmd::backup`]).
    pub transfers: cmd::backup::Transfers,
    /// Streamed imports and exports pending, one per connection (see [`cmd::stream`]).
    pub streams: cmd::stream::Streams,
    /// Heavy requests running, over all connections (see [`conn::answers`]).
    pub heavy_running: Semaphore,
    /// Caps on connections, request memory and running requests (see [`limits`]).
    pub limits: Arc<limits::Limits>,
    /// Pushed events (lock, unlock, shutdown) to every connection.
    pub events: broadcast::Sender<Event>,
    /// When the daemon started.
    pub started: Instant,
    /// The last request, for `--auto-lock-after` (see [`autolock`]).
    pub activity: autolock::Activity,
    /// Open connections.
    pub connections: AtomicU64,
    /// Another daemon changed the vault and not every handle open here could be checked
    /// against it yet (this daemon locked, the database unreachable): [`coherence`] checks
    /// again at its next look (see there).
    pub recheck_pending: std::sync::atomic::AtomicBool,
    /// A non-admin uid's refused requests recorded in the audit log, at most one per period.
    pub refusals: cmd::audit::Sampler,
    /// A non-admin uid's session opens recorded in the audit log: a burst, then one per
    /// period.
    pub opens: cmd::audit::Sampler,
    /// The vault disk's free-space reserve (see [`disk`]).
    pub disk: disk::DiskReserve,
    next_conn_id: AtomicU64,
    _datadir_lock: datadir::DataDirLock,
}

impl Daemon {
    /// Opens the vault named by `config`; `lock` proves this process owns the data
    /// directory (see [`datadir::DataDirLock`]) and is held for the daemon's lifetime.
    pub fn open(config: Config, lock: datadir::DataDirLock) -> anyhow::Result<Arc<Daemon>> {
        use anyhow::Context;
        // By a path without symbolic links to the directory the lock checked: SQLite opens
        // by path and refuses a link anywhere on it (see `vault::sqlite`).
        let data_dir = lock.resolved_path()?;
        let vault_path = match config.vault_path().file_name() {
            Some(name) => data_dir.join(name),
            None => config.vault_path(),
        };
        let location = match &config.store {
            Some(url) => {
                let idle = match config.store_idle_transaction_timeout {
                    Some(t) => IdleTimeout::Set(t),
                    None => IdleTimeout::Default(idle::default_for(config.flush_interval)),
                };
                let target =
                    PgTarget::with_password_from(url, config.store_password_file.as_deref())
                        .context("invalid --store")?
                        .with_idle_timeout(idle);
                tracing::info!(
                    store = target.display(),
                    sslmode = target.ssl_mode().name(),
                    "PostgreSQL store"
                );
                if let Some(warning) = target.unverified_channel() {
                    tracing::warn!("{warning}");
                }
                StoreLocation::Postgres(target)
            }
            None => StoreLocation::Sqlite(vault_path),
        };
        let vault = Vault::open_store(
            &location,
            VaultConfig {
                flush_interval: config.flush_interval,
            },
        )
        .with_context(|| format!("cannot open the vault {}", location.label().display()))?;
        lock.check_still_at(&data_dir)?;
        let (events, _) = broadcast::channel(64);
        let l = &config.limits;
        let wanted = u64::from(l.max_connections)
            + u64::from(l.admin_reserved_connections)
            + limits::reserved_fds(u64::MAX);
        let fd_limit = limits::raise_fd_limit(wanted);
        let limits = Arc::new(limits::Limits::new(l, fd_limit));
        tracing::info!(
            fd_limit,
            max_connections = limits.max_connections(),
            per_uid = limits.max_connections_per_uid(),
            admin_reserve = limits.admin_reserve(),
            idle_timeout = ?limits.idle_timeout(),
            "connection limits"
        );
        let disk = disk::DiskReserve::new(
            config.store.is_none().then(|| data_dir.clone()),
            l.min_free_disk,
        );
        Ok(Arc::new(Daemon {
            disk,
            config,
            vault,
            leases: leases::Leases::default(),
            handles: handles::Handles::default(),
            clients: clients::Clients::default(),
            throttle: throttle::Throttle::default(),
            transfers: cmd::backup::Transfers::default(),
            streams: cmd::stream::Streams::default(),
            heavy_running: Semaphore::new(conn::answers::HEAVY_RUNNING),
            limits,
            events,
            started: Instant::now(),
            activity: autolock::Activity::default(),
            connections: AtomicU64::new(0),
            recheck_pending: std::sync::atomic::AtomicBool::new(false),
            refusals: cmd::audit::Sampler::refusals(),
            opens: cmd::audit::Sampler::opens(),
            next_conn_id: AtomicU64::new(1),
            _datadir_lock: lock,
        }))
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// One line for systemd's `STATUS=`: the state and, when unlocked, the session count.
    pub async fn status_line(&self) -> String {
        match self.vault.status().await {
            Ok(s) => match s.sessions {
                Some(n) => format!("{}; {n} sessions", s.state.as_str()),
                None => s.state.as_str().to_owned(),
            },
            Err(e) => format!("error: {e}"),
        }
    }

    /// Refreshes systemd's `STATUS=` after the session count changed.
    pub async fn sessions_changed(&self) {
        systemd::notify_status(&self.status_line().await);
    }

    /// Tells every connection about an event.
    pub fn publish(&self, event: Event) {
        // No connection listening is fine.
        let _ = self.events.send(event);
    }
}

/// Serves `listener` until `stop` fires, then shuts down as described in the module docs.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: transport::Listener,
    mut stop: broadcast::Receiver<()>,
) -> anyhow::Result<()> {
    let (stop_conns, _) = broadcast::channel::<()>(1);
    // Each connection task holds a clone; when all are dropped, every connection has ended.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut accept_failures: u32 = 0;
    let mut out_of_fds: u64 = 0;
    let mut spare = spare_fd();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, transport::Peer::Known(peer))) => {
                    accept_failures = 0;
                    admit(&daemon, stream, peer, &stop_conns, &done_tx);
                }
                Err(e) if is_out_of_fds(&e) && spare.is_some() => {
                    // Out of descriptors with a connection waiting: close the spare one to
                    // accept it and close it at once, so the queue moves and the loop does
                    // not spin on it; then take the spare back. Only reached when the caps
                    // do not fit the descriptor limit (other files, other threads).
                    drop(spare.take());
                    if let Some(Ok((stream, _))) = listener.accept().now_or_never() {
                        drop(stream);
                    }
                    spare = spare_fd();
                    out_of_fds += 1;
                    if out_of_fds.is_power_of_two() {
                        tracing::warn!(error = %e, dropped = out_of_fds, "accept failed: out of file descriptors; connections closed at once");
                    }
                }
                Ok((stream, transport::Peer::Unmapped(who))) => {
                    accept_failures = 0;
                    // Answered like a connection over a limit, within the same bound on
                    // refusals in progress; without room, the stream is closed here.
                    if let Some(permit) = daemon.limits.refusing() {
                        let message = refuse::unmapped(&who);
                        tokio::spawn(conn::refuse::refuse(stream, message, permit));
                    }
                }
                Err(e) => {
                    // A peer that vanished between connect and accept, or no peer creds: that
                    // connection is lost, the listener goes on. Out of file descriptors (or
                    // memory) with no spare descriptor to give up, accept fails again at
                    // once: back off instead of spinning, and say so once per back-off step,
                    // not once per failure.
                    accept_failures += 1;
                    let pause = ACCEPT_BACKOFF_START
                        .saturating_mul(1 << accept_failures.min(7))
                        .min(ACCEPT_BACKOFF_MAX);
                    if accept_failures.is_power_of_two() {
                        tracing::warn!(error = %e, failures = accept_failures, "accept failed; backing off {pause:?}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.recv() => break,
                    }
                    if spare.is_none() {
                        spare = spare_fd();
                    }
                    continue;
                }
            },
            _ = stop.recv() => break,
        }
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    systemd::notify_stopping();
    // Each connection tells its client `shutting_down` as it stops.
    let _ = stop_conns.send(());
    drop(done_tx);
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
    // The audit counts of left-out entries not yet written, while the keys can seal them.
    cmd::audit::flush_all_left_out(&daemon).await;
    // Commit whatever is pending, then wipe the keys.
    match daemon.vault.lock().await {
        Ok(()) | Err(crate::vault::EngineError::Uninitialized) => {}
        Err(e) => tracing::error!(error = %e, "final flush failed"),
    }
    // Close the database: the WAL is checkpointed and removed, nothing is left to replay.
    if let Err(e) = daemon.vault.shutdown().await {
        tracing::error!(error = %e, "closing the vault failed");
    }
    tracing::info!("vault flushed and keys wiped; bye");
    Ok(())
}

/// Serves an accepted connection if the limits admit it; otherwise refuses it (an answer to
/// its hello where room allows, see [`conn::refuse`]) and logs that, rate-limited.
fn admit(
    daemon: &Arc<Daemon>,
    stream: interprocess::local_socket::tokio::Stream,
    peer: transport::PeerInfo,
    stop_conns: &broadcast::Sender<()>,
    done_tx: &mpsc::Sender<()>,
) {
    let standing = if daemon.config.admin_uids.contains(&peer.uid) {
        limits::Standing::Admin
    } else {
        limits::Standing::NonAdmin
    };
    match daemon.limits.admit(peer.uid, standing) {
        Ok(admitted) => {
            let d = Arc::clone(daemon);
            let s = stop_conns.subscribe();
            let done = done_tx.clone();
            tokio::spawn(async move {
                conn::serve(d, stream, peer, admitted, s).await;
                drop(done);
            });
        }
        Err(refusal) => {
            daemon.limits.log_refusal(peer.uid, refusal);
            // Without room to answer, the stream is dropped (closed) here.
            if let Some(permit) = daemon.limits.refusing() {
                let message = refusal.message(peer.uid);
                tokio::spawn(conn::refuse::refuse(stream, message, permit));
            }
        }
    }
}

/// Whether `accept` failed for want of a file descriptor (this process's or the system's).
fn is_out_of_fds(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// A descriptor held in reserve for the accept loop (see `serve`): `/dev/null`, opened
/// read-only. `None` if it cannot be opened (then the loop only backs off).
fn spare_fd() -> Option<std::fs::File> {
    #[cfg(unix)]
    {
        std::fs::File::open("/dev/null").ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Runs the daemon with `config` until SIGTERM or SIGINT: takes the socket systemd passed in
/// or binds its own, opens the vault, unlocks it from a credential if configured, notifies
/// readiness, serves, shuts down cleanly.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Signal handlers first: a SIGTERM arriving right after readiness is a clean shutdown.
    let mut signals = Signals::install()?;
    // Then the data directory's lock, then the socket, and only then the vault file: a second
    // daemon is refused at once, by name, and creates nothing.
    let lock = datadir::DataDirLock::acquire(&config.data_dir)?;
    // The socket clients reach: the configured path, or the one systemd passed in (which
    // may differ from the configured one: the .socket unit's ListenStream= decides).
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut socket_shown = config.socket.display().to_string();
    #[cfg(unix)]
    let listener = match systemd::inherited_listener()? {
        Some(fd) => {
            use std::os::fd::AsFd;
            socket_shown = match transport::bound_path(fd.as_fd()) {
                Some(path) => path.display().to_string(),
                None => "an unnamed socket".to_owned(),
            };
            let mut l = transport::from_inherited_fd(fd)?;
            // systemd owns the socket file: leave it for the next activation.
            l.keep_socket_file();
            tracing::info!(socket = %socket_shown, "using the socket passed in by systemd");
            l
        }
        None => transport::bind(&config.socket)?,
    };
    #[cfg(not(unix))]
    let listener = transport::bind(&config.socket)?;
    let daemon = Daemon::open(config, lock)?;
    if let Some(name) = daemon.config.unlock_credential.clone() {
        unlock_from_credential(&daemon, &name).await;
    }
    let state = daemon.vault.status().await?.state;
    tracing::info!(
        socket = %socket_shown,
        vault = %daemon.vault.path().display(),
        state = state.as_str(),
        "vaultd listening"
    );
    systemd::notify_ready(&daemon.status_line().await);
    let (stop_tx, stop_rx) = broadcast::channel(1);
    tokio::spawn(async move {
        signals.recv().await;
        let _ = stop_tx.send(());
    });
    let status_daemon = Arc::clone(&daemon);
    let mut events = daemon.events.subscribe();
    let status_task = tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            if ev != Event::ShuttingDown {
                systemd::notify_status(&status_daemon.status_line().await);
            }
        }
    });
    let autolock_task = daemon
        .config
        .auto_lock_after
        .map(|after| tokio::spawn(autolock::run(Arc::downgrade(&daemon), after)));
    let left_out_task = tokio::spawn(cmd::audit::flush_left_out(Arc::downgrade(&daemon)));
    let lease_task = daemon.vault.is_postgres().then(|| {
        tokio::spawn(host_leases::run(
            Arc::downgrade(&daemon),
            daemon.config.lease_expiry,
        ))
    });
    let coherence_task = daemon
        .vault
        .is_postgres()
        .then(|| tokio::spawn(coherence::run(Arc::downgrade(&daemon))));
    let result = serve(daemon, listener, stop_rx).await;
    if let Some(task) = lease_task {
        task.abort();
    }
    if let Some(task) = coherence_task {
        task.abort();
    }
    status_task.abort();
    left_out_task.abort();
    if let Some(task) = autolock_task {
        task.abort();
    }
    result
}

/// Unattended unlock: the passphrase from a systemd credential. Any failure leaves the
/// daemon running and locked, with one clear log line; it never exits (no restart loop).
async fn unlock_from_credential(daemon: &Daemon, name: &str) {
    let passphrase = match systemd::read_credential(name) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("unattended unlock skipped: {e}; the vault stays locked");
            return;
        }
    };
    match daemon.vault.unlock(&passphrase).await {
        Ok(()) => tracing::info!(credential = name, "vault unlocked from systemd credential"),
        Err(e) => tracing::error!(
            credential = name,
            "unattended unlock failed: {e}; the vault stays locked (run `vaultctl unlock`)"
        ),
    }
}

/// SIGTERM and SIGINT, installed before the daemon says it is ready.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use anyhow::Context;
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
