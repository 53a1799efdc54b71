//! `backup_begin`/`backup_chunk`, `restore_begin`/`restore_chunk`/`restore_commit`,
//! `transfer_end` and `verify` (admins only).
//!
//! The daemon never writes to a path a client names: it runs as its own user, with its own
//! view of the file system (systemd's `ProtectSystem=` and friends). A backup is taken into a
//! private file of its data directory (`.backup-ID.db`, mode 0600) and streamed to the client
//! in chunks; a restore is streamed from the client into `.restore-ID.db` the same way. One
//! transfer at a time, daemon-wide: a second `*_begin` is refused while one is in use, and a
//! transfer nobody touched for [`TRANSFER_IDLE`] is dropped (its file deleted) by the next
//! `*_begin`, which also deletes files a crashed daemon left behind.
//!
//! A backup works locked or unlocked (the copy is the same ciphertext as the vault). A
//! restore needs the vault locked (or uninitialized): the file must be whole (size and
//! SHA-256 as announced), pass [`check_vault_file`](crate::vault::sqlite::check_vault_file),
//! open with the passphrase given (the backup's own keyslot; throttled like `unlock`) and
//! have every record authenticate
//! ([`Vault::verify`]); only then is it swapped in ([`Vault::replace_with`]), the current vault
//! kept beside it as `vault.db.before-restore-UNIXTIME`. Every open session handle is ended
//! (session ids of the old file mean nothing in the new one); the vault stays locked.

mod restore;
mod transfer;

#[cfg(unix)]
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use session_vault_proto::backup::{Blob, CHUNK_MAX, TransferInfo};
use session_vault_proto::message::{ErrorCode, Passphrase, Response, WireError};
use sha2::{Digest, Sha256};

use crate::server::context::Conn;
use crate::server::errors::wire_error;
use crate::vault::{EngineError, Vault, VaultState};

pub use restore::{restore_begin, restore_chunk, restore_commit};
use transfer::Kind;
pub use transfer::{Transfers, transfer_end};

/// How long a transfer may sit unused before another `*_begin` may drop it.
pub const TRANSFER_IDLE: Duration = Duration::from_secs(60);

fn invalid(message: impl Into<String>) -> WireError {
    wire_error(ErrorCode::InvalidRequest, message)
}

fn storage(what: &str, path: &Path, e: std::io::Error) -> WireError {
    wire_error(
        ErrorCode::Storage,
        format!("cannot {what} {}: {e}", path.display()),
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WireError> + Send + 'static,
) -> Result<T, WireError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| wire_error(ErrorCode::Internal, format!("file task failed: {e}")))?
}

fn data_dir(vault: &Vault) -> PathBuf {
    match vault.path().parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Opens a transfer file of the data directory again by its name, never through a symbolic
/// link (as every file the daemon creates, see `server::dirs`).
fn reopen(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(!write).write(write);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
}

/// Size and SHA-256 of a file.
fn digest(path: &Path) -> Result<(u64, Vec<u8>), WireError> {
    let mut f = reopen(path, false).map_err(|e| storage("read", path, e))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(|e| storage("read", path, e))?;
    Ok((n, h.finalize().to_vec()))
}

/// `backup_begin`.
pub async fn backup_begin(conn: &Conn) -> Result<Response, WireError> {
    let d = &conn.daemon;
    if d.vault.is_postgres() {
        return Err(wire_error(
            ErrorCode::Unsupported,
            "this vault is kept in PostgreSQL: back it up with PostgreSQL's tools (pg_dump, \
             base backups); online backup and restore are for the SQLite store",
        ));
    }
    if d.vault.status().await?.state == VaultState::Uninitialized {
        return Err(EngineError::Uninitialized.into());
    }
    let dir = data_dir(&d.vault);
    let (hold, path) = d.transfers.start(Kind::Backup, &dir, 0, Vec::new())?;
    let id = hold.id;
    let started = Instant::now();
    let result = async {
        d.vault.backup_to(&path).await?;
        let p = path.clone();
        blocking(move || digest(&p)).await
    }
    .await;
    let (size, sha256) = result?;
    d.transfers.set_info(id, size, sha256.clone());
    hold.keep(0);
    tracing::info!(
        uid = conn.peer.uid,
        bytes = size,
        ms = started.elapsed().as_millis() as u64,
        "online backup taken"
    );
    Ok(Response::Transfer(TransferInfo {
        id,
        size,
        sha256: Blob(sha256),
    }))
}

/// `backup_chunk`.
pub async fn backup_chunk(conn: &Conn, id: u64, offset: u64) -> Result<Response, WireError> {
    let t = &conn.daemon.transfers;
    let (hold, path, size, ..) = t.take(id, Kind::Backup)?;
    let result = blocking(move || {
        let len = size.saturating_sub(offset).min(CHUNK_MAX as u64) as usize;
        let mut buf = vec![0u8; len];
        let f = reopen(&path, false).map_err(|e| storage("read", &path, e))?;
        f.read_exact_at(&mut buf, offset)
            .map_err(|e| storage("read", &path, e))?;
        Ok(buf)
    })
    .await;
    hold.keep(0);
    Ok(Response::Chunk(Blob(result?)))
}

/// `migrate_store`: copies the locked vault into an empty PostgreSQL database (see
/// [`Vault::migrate_store`]).
pub async fn migrate_store(
    conn: &Conn,
    url: String,
    password: Option<Passphrase>,
) -> Result<Response, WireError> {
    let password = password.map(|p| zeroize::Zeroizing::new(p.expose().to_vec()));
    let target = crate::vault::postgres::PgTarget::new(&url, password)?;
    if let Some(warning) = target.unverified_channel() {
        tracing::warn!("migrate-store target: {warning}");
    }
    let info = conn.daemon.vault.migrate_store(target).await?;
    tracing::info!(
        target_store = %info.target,
        sessions = info.sessions,
        rows = info.rows,
        "vault copied into PostgreSQL and verified"
    );
    Ok(Response::Migrated(info))
}

/// `verify`.
pub async fn verify(conn: &Conn) -> Result<Response, WireError> {
    let started = Instant::now();
    let report = conn.daemon.vault.verify().await?;
    tracing::info!(
        uid = conn.peer.uid,
        records = report.records,
        failures = report.failures.len(),
        ms = started.elapsed().as_millis() as u64,
        "vault verified"
    );
    Ok(Response::Verified(report))
}

/// `read_exact_at` and `write_all_at` of Unix's `FileExt`, on Windows's positioned reads and
/// writes (which, unlike Unix's, move the file's cursor: the transfer files are only used
/// through these calls, so nothing depends on it).
#[cfg(windows)]
trait FileExt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
}

#[cfg(windows)]
impl FileExt for std::fs::File {
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
        use std::os::windows::fs::FileExt as _;
        while !buf.is_empty() {
            match self.seek_read(buf, offset)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }

    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
        use std::os::windows::fs::FileExt as _;
        while !buf.is_empty() {
            match self.seek_write(buf, offset)? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}
