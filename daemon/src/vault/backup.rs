//! Backup, verification and restore of a vault, as the daemon runs them.
//!
//! - [`Vault::backup_to`]: an online copy into a new file, by SQLite's backup API on the
//!   storage thread's connection ([`super::sqlite`]'s `backup` module), [`BACKUP_STEP_PAGES`]
//!   pages per storage-thread job with [`BACKUP_PAUSE`] between jobs: a writer waits at most
//!   one step (plus the commit of what was pending, which each step, a barrier, makes first).
//!   Every write acknowledged before the call is in the copy (the first step commits it), and
//!   the copy is consistent as of its last step. It works locked or unlocked: it copies
//!   ciphertext.
//! - [`Vault::verify`]: reads and authenticates every record (see `engine::verify`), one
//!   storage-thread job for the vault-wide checks and one per session.
//! - [`Vault::replace_with`]: the swap at the end of a restore, once the new file passed
//!   [`check_vault_file`](super::sqlite::check_vault_file) and a verification under its own
//!   passphrase: one barrier job that closes the vault file, moves it (and any write-ahead
//!   log left) aside, renames the new file into its place, fsyncs the directory, and opens it
//!   (locked). If the new file cannot be opened, the old one is put back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use session_vault_proto::backup::VerifyReport;

use super::engine::Engine;
use super::error::{EngineError, Result, StorageErrorKind};
use super::sqlite::{BackupProgress, SqliteStore};
use super::worker::{Class, SqliteEngine};
use super::{Vault, VaultState};

/// Pages copied per backup step (4 KiB pages: 1 MiB), about a millisecond of work.
pub const BACKUP_STEP_PAGES: i32 = 256;

/// Pause between backup steps, during which requests run.
pub const BACKUP_PAUSE: Duration = Duration::from_millis(2);

/// Steps in a row that copy nothing before a backup gives up (a write transaction that never
/// ends: a failing disk).
const MAX_IDLE_STEPS: u32 = 1000;

fn io_error(what: &str, path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Storage {
        kind: StorageErrorKind::Io,
        message: format!("cannot {what} {}: {e}", path.display()),
    }
}

/// `path` with `suffix` appended to its file name (`vault.db` → `vault.db-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync the directory", dir, e))
}

/// Renames `from` to `to` if `from` exists (a write-ahead log or its index).
fn rename_if_exists(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("move", from, e)),
    }
}

impl Vault {
    /// Copies the vault into the new file `dest` (mode 0600, it must not exist) while
    /// requests go on; see the module docs. On error the file is removed.
    pub async fn backup_to(&self, dest: &Path) -> Result<BackupProgress> {
        let abandoned = Abandoned {
            vault: self.clone(),
            dest: Some(dest.to_owned()),
        };
        let result = self.backup_steps(dest).await;
        abandoned.disarm();
        if result.is_err() {
            // The handle (if any) is dropped first, so that the file is closed when removed.
            let _ = self
                .call(Class::Barrier, |e| {
                    e.store().backup_cancel();
                    Ok(())
                })
                .await;
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    async fn backup_steps(&self, dest: &Path) -> Result<BackupProgress> {
        let target = dest.to_owned();
        self.call(Class::Barrier, move |e| e.store().backup_start(&target))
            .await?;
        let mut idle = 0;
        let mut last = None;
        loop {
            let p = self
                .call(Class::Barrier, |e| e.store().backup_step(BACKUP_STEP_PAGES))
                .await?;
            if p.done {
                return Ok(p);
            }
            if last == Some(p.remaining) {
                idle += 1;
                if idle >= MAX_IDLE_STEPS {
                    return Err(EngineError::Storage {
                        kind: StorageErrorKind::Busy,
                        message: "the backup made no progress: a write transaction stays open"
                            .into(),
                    });
                }
            } else {
                idle = 0;
            }
            last = Some(p.remaining);
            tokio::time::sleep(BACKUP_PAUSE).await;
        }
    }

    /// Reads and authenticates every record; needs the vault unlocked.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let (report, sessions) = self
            .call(Class::Read, |e| {
                let mut report = VerifyReport::default();
                let sessions = e.verify_vault(&mut report)?;
                Ok((report, sessions))
            })
            .await?;
        let mut report = report;
        for (sid, name) in sessions {
            report = self
                .call(Class::Read, move |e| {
                    let mut report = report;
                    e.verify_session(sid, &name, &mut report)?;
                    Ok(report)
                })
                .await?;
        }
        Ok(report)
    }

    /// Copies the vault, as its sealed rows, into the empty PostgreSQL database `target`,
    /// verified and committed as one transaction (see [`super::postgres::migrate`]). The vault
    /// must be locked, so that nothing writes to it during the copy, which runs as one job
    /// of the storage thread.
    pub async fn migrate_store(
        &self,
        target: super::postgres::PgTarget,
    ) -> Result<session_vault_proto::backup::MigrateInfo> {
        self.call(Class::Barrier, move |e| {
            match e.state() {
                VaultState::Locked => {}
                VaultState::Unlocked => {
                    return Err(EngineError::Invalid(
                        "the vault is unlocked: lock it first (vaultctl lock), so that no \
                         write races the copy"
                            .into(),
                    ));
                }
                VaultState::Uninitialized => {
                    return Err(EngineError::Invalid(
                        "the vault is not initialized: there is nothing to migrate".into(),
                    ));
                }
            }
            super::postgres::migrate::copy_into(e.store(), &target)
        })
        .await
    }

    /// Replaces the vault file by `staged` (checked and verified by the caller), keeping
    /// the current one as `aside`; the vault must be locked or uninitialized, and is locked
    /// afterwards. Returns whether an initialized vault was replaced (else `aside` is
    /// removed). See the module docs.
    pub async fn replace_with(&self, staged: &Path, aside: &Path) -> Result<bool> {
        let vault = self.path().to_owned();
        let (staged, aside) = (staged.to_owned(), aside.to_owned());
        self.call(Class::Barrier, move |e| swap(e, &vault, &staged, &aside))
            .await
    }
}

/// Cleans up after a backup whose caller stopped waiting midway (its future dropped: the
/// client went away): the storage thread drops the backup handle, so that writes stop being
/// copied into it, and the file is removed. Not waited for.
struct Abandoned {
    vault: Vault,
    dest: Option<PathBuf>,
}

impl Abandoned {
    fn disarm(mut self) {
        self.dest = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some(dest) = self.dest.take() else {
            return;
        };
        let job = super::worker::Job {
            class: Class::Barrier,
            run: Box::new(move |engine| {
                if let Ok(e) = engine {
                    e.store().backup_cancel();
                }
                let _ = std::fs::remove_file(&dest);
                (true, Box::new(|_| ()))
            }),
            redo: None,
        };
        self.vault.inner.shared.sending();
        if self.vault.inner.tx.send(job).is_err() {
            // The storage thread is gone, and the backup handle with it.
            self.vault.inner.shared.unsent();
        }
    }
}

/// The body of [`Vault::replace_with`], on the storage thread.
fn swap(e: &mut SqliteEngine, vault: &Path, staged: &Path, aside: &Path) -> Result<bool> {
    e.store().require_sqlite("a restore")?;
    let had = match e.state() {
        VaultState::Unlocked => {
            return Err(EngineError::Invalid(
                "the vault is unlocked: lock it first (`vaultctl lock`), then restore".into(),
            ));
        }
        VaultState::Locked => true,
        VaultState::Uninitialized => false,
    };
    // Closing the current connection (the old engine dropped) checkpoints the write-ahead
    // log into the file and removes it; the engine meanwhile is an empty one in memory.
    let old = std::mem::replace(e, Engine::new(SqliteStore::in_memory()?.into())?);
    drop(old);
    let moved = (|| {
        std::fs::rename(vault, aside).map_err(|err| io_error("move aside", vault, err))?;
        rename_if_exists(&with_suffix(vault, "-wal"), &with_suffix(aside, "-wal"))?;
        sync_dir(vault)?;
        std::fs::rename(staged, vault).map_err(|err| io_error("move into place", staged, err))?;
        sync_dir(vault)?;
        let mut engine = Engine::new(SqliteStore::open(vault)?.into())?;
        super::read_maps_elsewhere(&mut engine);
        Ok(engine)
    })();
    match moved {
        Ok(new) => {
            *e = new;
            if !had {
                let _ = std::fs::remove_file(aside);
            }
            Ok(had)
        }
        Err(err) => {
            tracing::error!(error = %err, "restore failed while swapping files; putting the vault back");
            if aside.exists() {
                if vault.exists() {
                    let _ = std::fs::rename(vault, staged);
                }
                let _ = std::fs::rename(aside, vault);
                let _ = rename_if_exists(&with_suffix(aside, "-wal"), &with_suffix(vault, "-wal"));
                let _ = sync_dir(vault);
            }
            match SqliteStore::open(vault).and_then(|s| Engine::new(s.into())) {
                Ok(mut back) => {
                    super::read_maps_elsewhere(&mut back);
                    *e = back;
                }
                Err(e2) => tracing::error!(
                    error = %e2,
                    path = %vault.display(),
                    "cannot reopen the vault after a failed restore; restart vaultd"
                ),
            }
            Err(err)
        }
    }
}
