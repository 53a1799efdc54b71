//! The vault engine: crypto and storage for encrypted Telegram sessions.
//!
//! [`Vault`] is the handle the daemon (and tests) use. It talks to one storage thread that
//! owns the SQLite connection ([`worker`]); async callers never block the runtime on SQLite,
//! and Argon2 runs in `spawn_blocking`, never on the storage thread or a runtime worker.
//!
//! Layers, each depending only on those below it:
//! - [`crypto`]: KDF, keyslots, record sealing, blind indexes (RustCrypto crates only);
//! - [`store`]: the backend trait over encrypted rows; [`sqlite`] its embedded implementation;
//! - [`engine`]: the state machine (`Uninitialized` → `Unlocked` ⇄ `Locked`) and the data
//!   model operations;
//! - [`worker`]: the storage thread and group commit with two durability classes;
//! - [`backup`]: online backup, `verify` and the file swap of a restore.
//!
//! Durability: writes of auth keys, home DC, DC options, session create/rename/delete,
//! extras, ACLs and keyslots are **durable** (answered after fsync); peer caching, update
//! state and the sent-file cache are **cache** class (answered when applied, committed within
//! [`VaultConfig::flush_interval`], 100 ms by default). Keyslot changes (`change_passphrase`)
//! and [`Vault::rekey`] run as barrier jobs with a transaction of their own, then checkpoint
//! the WAL so that a replaced keyslot does not linger in it.
//!
//! Rollback detection: a vault generation and a sealed manifest ([`engine::manifest`]) make
//! old keyslots, ACLs, names and deleted sessions put back into the file `Corrupt`.
//!
//! New keyslots need a passphrase of at least 8 characters
//! ([`crypto::check_new_passphrase`]); the KDF floor is the daemon's (it may be lifted for
//! tests), so the engine takes any parameters Argon2 accepts.

pub mod backend;
pub mod backup;
pub mod crypto;
mod data;
pub use data::{CLEAR_SLICE, EXPORT_PAGE, EXPORT_ROWS_MAX, STATE_CHUNK, STATE_PAGE, Still};
pub mod engine;
pub mod error;
mod host_leases;
mod keys;
pub mod postgres;
pub mod sqlite;
pub mod store;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use session_vault_proto::audit::{AuditEntry, AuditPage};

pub use crypto::KdfParams;
pub use engine::{IfExists, Refreshed, SessionId};
pub use error::{EngineError, Result, StorageErrorKind};
/// The vault's state as `status` reports it: the wire's type, one name for one concept.
pub use session_vault_proto::message::VaultState;

pub use backend::StoreLocation;
use engine::Engine;
use worker::{Class, Job, Redo, Shared, SqliteEngine};

/// How many times a write conflicting with another daemon's is tried in all
/// (`Vault::call_retrying`).
pub const CONFLICT_TRIES: u32 = 3;

/// How long a delete refused as busy (another daemon's open transaction wrote the session)
/// waits before it is tried again, up to [`CONFLICT_TRIES`] tries in all.
const BUSY_RETRY_AFTER: Duration = Duration::from_millis(200);

/// Tunables of a vault.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// How long a cache-class write may stay uncommitted. Default 100 ms.
    pub flush_interval: Duration,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            flush_interval: Duration::from_millis(100),
        }
    }
}

/// What `status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultStatus {
    /// Uninitialized, locked or unlocked.
    pub state: VaultState,
    /// Number of sessions (known only while unlocked).
    pub sessions: Option<usize>,
    /// Whether a recovery keyslot exists (`None` while uninitialized).
    pub recovery_key: Option<bool>,
}

/// A handle to an open vault. Cheap to clone; every clone talks to the same storage thread,
/// which flushes and exits once the last handle is gone (or at [`Vault::close`]).
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    path: PathBuf,
    /// The store is a PostgreSQL database (shared by hosts), not a file.
    postgres: bool,
    /// Woken when a request re-read the vault after another daemon's change
    /// ([`Vault::fresh`]), so that the server acts on it (ends revoked handles) now rather
    /// than at its next poll.
    followed: Arc<tokio::sync::Notify>,
}

/// Starts the SQLite store's thread that reads large sessions' peer maps
/// ([`sqlite::KeyBuilds`]), if `engine` runs on one; without it (it could not start: logged)
/// every map is read on the storage thread.
fn read_maps_elsewhere(engine: &mut SqliteEngine) {
    if let backend::Backend::Sqlite(s) = engine.store() {
        if let Err(e) = s.read_maps_elsewhere() {
            tracing::warn!(error = %e, "vault reads every peer map on its storage thread");
        }
    }
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Vault {
    /// Opens (creating if missing) the vault file at `path`: `Uninitialized` for a new file,
    /// `Locked` otherwise. Starts the storage thread.
    pub fn open(path: &Path, config: VaultConfig) -> Result<Vault> {
        Vault::open_store(&StoreLocation::Sqlite(path.to_owned()), config)
    }

    /// [`Vault::open`] on either store: a SQLite file or a PostgreSQL database
    /// ([`postgres`]). [`Vault::path`] then reports the connection string, without password.
    pub fn open_store(location: &StoreLocation, config: VaultConfig) -> Result<Vault> {
        let path = location.label();
        let postgres = matches!(location, StoreLocation::Postgres(_));
        let (tx, rx) = mpsc::channel();
        // The store is opened (and later dropped) on the storage thread itself: the
        // PostgreSQL client drives a runtime of its own, which must not run on a thread of
        // the caller's (tokio panics on a runtime started inside another).
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let location = location.clone();
        let flush_interval = config.flush_interval;
        let thread = std::thread::Builder::new()
            .name("vault-storage".into())
            .spawn(move || {
                let opened = location.open().and_then(Engine::new);
                match opened {
                    Ok(mut engine) => {
                        read_maps_elsewhere(&mut engine);
                        let shared = Shared::new(engine, flush_interval);
                        let _ = ready_tx.send(Ok(Arc::clone(&shared)));
                        worker::run(shared, rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| EngineError::Storage {
                kind: StorageErrorKind::Other,
                message: format!("cannot start the storage thread: {e}"),
            })?;
        let shared = match ready_rx.recv() {
            Ok(Ok(shared)) => shared,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EngineError::Closed);
            }
        };
        Ok(Vault {
            inner: Arc::new(Inner {
                tx,
                shared,
                thread: std::sync::Mutex::new(Some(thread)),
                path,
                postgres,
                followed: Arc::new(tokio::sync::Notify::new()),
            }),
        })
    }

    /// Creates a vault at `path` protected by `passphrase`, and leaves it unlocked.
    pub async fn create(
        path: &Path,
        passphrase: &[u8],
        kdf: KdfParams,
        config: VaultConfig,
    ) -> Result<Vault> {
        let vault = Vault::open(path, config)?;
        vault.init(passphrase, kdf).await?;
        Ok(vault)
    }

    /// The vault file (for a PostgreSQL store: its connection string, without password).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the vault lives in PostgreSQL rather than a SQLite file: file-level
    /// operations (online backup, restore) are then refused.
    pub fn is_postgres(&self) -> bool {
        self.inner.postgres
    }

    async fn call<T: Send + 'static>(
        &self,
        class: Class,
        f: impl FnOnce(&mut SqliteEngine) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.send(class, None, f).await
    }

    /// A durable write that another daemon sharing the store may conflict with (sessions,
    /// names, ACLs): on a conflict ([`postgres::is_conflict`]) the write was rolled back and
    /// the engine re-read the vault, so it is tried again, deciding afresh (a name created
    /// meanwhile is then `NameTaken`), at most [`CONFLICT_TRIES`] times in all; the last
    /// conflict is the answer. A record newer than this daemon's view is handled as in
    /// [`Vault::fresh`].
    async fn call_retrying<T: Send + 'static>(
        &self,
        f: impl Fn(&mut SqliteEngine) -> Result<T> + Send + Sync + 'static,
    ) -> Result<T> {
        self.retrying(false, f).await
    }

    /// [`Self::call_retrying`] for a write that deletes a session (`delete_session`, an
    /// import that replaces one): a barrier job in a transaction of its own, after the open
    /// group commit is committed. On PostgreSQL a delete waits for other daemons' open
    /// transactions that wrote the session; holding none of this daemon's other writes'
    /// locks meanwhile, it cannot be part of a deadlock with another daemon's delete of a
    /// session this one wrote (which once aborted one of two crossing deletes and the group
    /// commit around it). That wait is bounded (the store answers busy); a busy answer is
    /// tried again after [`BUSY_RETRY_AFTER`], [`CONFLICT_TRIES`] tries in all.
    async fn call_retrying_alone<T: Send + 'static>(
        &self,
        f: impl Fn(&mut SqliteEngine) -> Result<T> + Send + Sync + 'static,
    ) -> Result<T> {
        self.retrying(true, f).await
    }

    async fn retrying<T: Send + 'static>(
        &self,
        alone: bool,
        f: impl Fn(&mut SqliteEngine) -> Result<T> + Send + Sync + 'static,
    ) -> Result<T> {
        let f = Arc::new(f);
        let mut tries = 0;
        loop {
            tries += 1;
            let g = Arc::clone(&f);
            let attempt = if alone {
                self.call(Class::Barrier, move |e| e.in_own_transaction(|e| g(e)))
                    .await
            } else {
                self.call(Class::Durable, move |e| g(e)).await
            };
            match attempt {
                Err(e) if tries < CONFLICT_TRIES && postgres::is_conflict(&e) => {
                    tracing::info!(error = %e, tries, "write conflicted with another vaultd; retrying");
                }
                Err(e)
                    if tries < CONFLICT_TRIES
                        && self.inner.postgres
                        && engine::manifest::is_newer_than_manifest(&e) =>
                {
                    self.follow().await?;
                }
                // A delete that waited its bound for another daemon's open transaction: that
                // transaction is usually a group commit, over within the flush interval, so
                // try again a little later (off the storage thread) before answering busy.
                Err(EngineError::Storage {
                    kind: StorageErrorKind::Busy,
                    ..
                }) if alone && tries < CONFLICT_TRIES => {
                    tracing::info!(
                        tries,
                        "a delete met another vaultd's open transaction; retrying"
                    );
                    tokio::time::sleep(BUSY_RETRY_AFTER).await;
                }
                other => return other,
            }
        }
    }

    /// Runs `f` as a job of `class`; on PostgreSQL, if it met a record newer than this
    /// daemon's manifest (another daemon's change not followed yet: it is polled every
    /// 0.5 s), follows the change ([`Engine::follow`]) and runs it once more, so that the
    /// window between the change and the poll shows no `Corrupt`.
    async fn fresh<T: Send + 'static>(
        &self,
        class: Class,
        f: impl Fn(&mut SqliteEngine) -> Result<T> + Send + Sync + 'static,
    ) -> Result<T> {
        let f = Arc::new(f);
        if !self.inner.postgres {
            let this = self;
            return self
                .with_keys(move || {
                    let g = Arc::clone(&f);
                    this.call(class, move |e| g(e))
                })
                .await;
        }
        let g = Arc::clone(&f);
        match self.call(class, move |e| g(e)).await {
            Err(e) if engine::manifest::is_newer_than_manifest(&e) => {
                self.follow().await?;
                self.call(class, move |e| f(e)).await
            }
            other => other,
        }
    }

    /// Runs `f` on the SQLite store, on the storage thread (tests); `None` on PostgreSQL.
    #[cfg(test)]
    pub async fn with_sqlite_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut sqlite::SqliteStore) -> T + Send + 'static,
    ) -> Option<T> {
        self.call(Class::Barrier, move |e| {
            Ok(match e.store() {
                backend::Backend::Sqlite(s) => Some(f(s)),
                backend::Backend::Postgres(_) => None,
            })
        })
        .await
        .expect("storage thread")
    }

    /// Notified when a request followed another daemon's change (see `Inner::followed`):
    /// the caller then calls [`Vault::refresh`] to learn what it was.
    pub fn followed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.inner.followed)
    }

    /// [`Engine::follow`] for a request that met a record newer than its view.
    async fn follow(&self) -> Result<()> {
        self.call(Class::Barrier, |e| e.follow()).await?;
        self.inner.followed.notify_one();
        Ok(())
    }

    /// Follows what other daemons sharing the store changed ([`Engine::refresh`]): a no-op
    /// without a job on SQLite, one query on PostgreSQL when nothing changed.
    pub async fn refresh(&self) -> Result<Refreshed> {
        if !self.inner.postgres {
            return Ok(Refreshed::Unchanged);
        }
        self.call(Class::Barrier, |e| e.refresh()).await
    }

    /// Returns once every job sent before this call has been applied: after ending handles,
    /// so that a write a handle sent before it was ended is stored before the act that ended
    /// it is answered, and none after.
    pub async fn settle(&self) -> Result<()> {
        self.read(|_| Ok(())).await
    }

    /// A point read (one row or a few): runs inline when the storage thread is idle and has
    /// nothing queued (see [`worker`]), else queued like [`Vault::call`]. Not for reads that
    /// scan a whole session or vault, which would hold a runtime thread. On PostgreSQL it
    /// runs inline only as far as the store answers without a statement (the lease holder's
    /// cache); a read that met another daemon's newer record is queued too, to be followed
    /// there ([`Vault::fresh`]).
    async fn read<T: Send + 'static>(
        &self,
        f: impl Fn(&mut SqliteEngine) -> Result<T> + Send + Sync + 'static,
    ) -> Result<T> {
        match self.inner.shared.try_read(&f) {
            Some(Err(e)) if self.inner.postgres && engine::manifest::is_newer_than_manifest(&e) => {
                self.fresh(Class::Read, f).await
            }
            Some(answer) => answer,
            None => self.fresh(Class::Read, f).await,
        }
    }

    /// A cache-class write; `f` may run again if a failed commit rolled it back after it was
    /// acknowledged (see [`worker`]). `small` (a few rows: [`worker::inline_peers`],
    /// [`worker::INLINE_STATE_ROWS`]) lets it run inline when the storage thread is idle, like a
    /// point read.
    async fn call_cache(
        &self,
        small: bool,
        f: impl Fn(&mut SqliteEngine) -> Result<()> + Send + Sync + 'static,
    ) -> Result<()> {
        let redo: Redo = Arc::new(f);
        if small {
            if let Some((answer, wake)) = self.inner.shared.try_cache(&redo) {
                if wake {
                    self.wake();
                }
                return answer;
            }
        }
        let this = self;
        self.with_keys(move || {
            let run = Arc::clone(&redo);
            this.send(Class::Cache, Some(Arc::clone(&redo)), move |e| run(e))
        })
        .await
    }

    /// Runs `attempt` (a job) again each time it asked for a session's peer map to be read
    /// off the storage thread ([`EngineError::KeysNeeded`]), once that is done, at most
    /// [`sqlite::BUILD_ROUNDS`] times; a map dropped again each time before its job took it
    /// is answered `busy`.
    async fn with_keys<T, F: std::future::Future<Output = Result<T>>>(
        &self,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T> {
        let mut rounds = 0;
        loop {
            let (session, generation, builds) = match attempt().await {
                Err(EngineError::KeysNeeded {
                    session,
                    generation,
                    builds,
                }) => (session, generation, builds),
                other => return other,
            };
            rounds += 1;
            if rounds >= sqlite::BUILD_ROUNDS {
                tracing::warn!(
                    session_id = session,
                    rounds,
                    "a session's peer map was dropped each time before its request could use it"
                );
                return Err(EngineError::Storage {
                    kind: StorageErrorKind::Busy,
                    message: "this session's peer map was read and dropped again to make room \
                              for other sessions' before it could be used; try again"
                        .into(),
                });
            }
            builds.build(session, generation).await?;
        }
    }

    /// Sends the storage thread an empty job, so that it notices an inline write it must
    /// commit within the flush interval. Not waited for.
    fn wake(&self) {
        let job = Job {
            class: Class::Read,
            run: Box::new(|_| (true, Box::new(|_| ()))),
            redo: None,
        };
        self.inner.shared.sending();
        if self.inner.tx.send(job).is_err() {
            // The thread is gone; so is the database, and the write with it: a closing vault.
            self.inner.shared.unsent();
        }
    }

    async fn send<T: Send + 'static>(
        &self,
        class: Class,
        redo: Option<Redo>,
        f: impl FnOnce(&mut SqliteEngine) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            class,
            run: Box::new(move |engine| {
                let result = engine.and_then(f);
                let ok = result.is_ok();
                let done: worker::Completion = Box::new(move |commit_err| {
                    let answer = match commit_err {
                        Some(e) => Err(e),
                        None => result,
                    };
                    // The caller may have stopped waiting (dropped future); nothing to do then.
                    let _ = tx.send(answer);
                });
                (ok, done)
            }),
            redo,
        };
        self.inner.shared.sending();
        if self.inner.tx.send(job).is_err() {
            self.inner.shared.unsent();
            return Err(EngineError::Closed);
        }
        rx.await.map_err(|_| EngineError::Closed)?
    }

    /// Flushes pending writes. When this is the last handle, also stops the storage thread
    /// and waits until it has closed the database file (so it can be reopened at once);
    /// otherwise the thread stops when the last clone is dropped.
    pub async fn close(self) -> Result<()> {
        self.call(Class::Barrier, |_| Ok(())).await?;
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            let Inner { tx, thread, .. } = inner;
            drop(tx);
            let handle = thread.into_inner().ok().flatten();
            if let Some(h) = handle {
                tokio::task::spawn_blocking(move || h.join())
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .ok_or(EngineError::Closed)?;
            }
        }
        Ok(())
    }

    /// Flushes pending writes, stops the storage thread and waits until it has closed the
    /// database (SQLite then checkpoints and removes the WAL). Every handle's later requests
    /// fail with `Closed`. For daemon shutdown, where other clones may still exist.
    pub async fn shutdown(&self) -> Result<()> {
        self.call(Class::Stop, |_| Ok(())).await?;
        let handle = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            tokio::task::spawn_blocking(move || h.join())
                .await
                .ok()
                .and_then(|r| r.ok())
                .ok_or(EngineError::Closed)?;
        }
        Ok(())
    }

    /// State and session count.
    pub async fn status(&self) -> Result<VaultStatus> {
        self.read(|e| {
            Ok(VaultStatus {
                state: e.state(),
                sessions: e.session_count(),
                recovery_key: e.has_recovery_key()?,
            })
        })
        .await
    }

    // ---- audit log ------------------------------------------------------------------------

    /// Records an audit event ([`engine::audit`]). `durable`: answered once the entry is on
    /// disk (admin acts); else a cache-class write, committed within the flush interval with
    /// the writes around it (session opens). While locked the entry waits in memory for the
    /// next unlock.
    pub async fn audit(&self, entry: AuditEntry, durable: bool) -> Result<()> {
        let id = engine::audit::entry_id();
        if durable {
            self.call(Class::Durable, move |e| e.audit(entry, true, id))
                .await
        } else {
            self.call_cache(true, move |e| e.audit(entry.clone(), false, id))
                .await
        }
    }

    /// A page of the audit log, verified as it is read ([`engine::Engine::audit_page`]).
    pub async fn audit_page(
        &self,
        after_seq: u64,
        limit: u32,
        since: Option<i64>,
        session: Option<String>,
    ) -> Result<AuditPage> {
        self.fresh(Class::Read, move |e| {
            e.audit_page(after_seq, limit, since, session.as_deref())
        })
        .await
    }
}

/// Runs blocking work (Argon2) on tokio's blocking pool, and zeroes the stack it used
/// before the pool thread takes other work.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(move || crypto::scrubbed(f))
        .await
        .map_err(|e| EngineError::Storage {
            kind: StorageErrorKind::Other,
            message: format!("key derivation task failed: {e}"),
        })?
}

#[cfg(test)]
mod tests;
