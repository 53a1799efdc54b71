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
//! SHA-256 as announced), pass [`check_vault_file`], open with the passphrase given (the
//! backup's own keyslot; throttled like `unlock`) and have every record authenticate
//! ([`Vault::verify`]); only then is it swapped in ([`Vault::replace_with`]), the current vault
//! kept beside it as `vault.db.before-restore-UNIXTIME`. Every open session handle is ended
//! (session ids of the old file mean nothing in the new one); the vault stays locked.

#[cfg(unix)]
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use session_vault_proto::backup::{Blob, CHUNK_MAX, RestoreInfo, TransferInfo};
use session_vault_proto::message::{ErrorCode, Event, Passphrase, Response, WireError};
use sha2::{Digest, Sha256};

use crate::server::context::Conn;
use crate::server::errors::{self, wire_error};
use crate::server::handles::Ended;
use crate::server::throttle::Refusal;
use crate::vault::backup::with_suffix;
use crate::vault::sqlite::check_vault_file;
use crate::vault::{EngineError, Vault, VaultConfig, VaultState};

/// How long a transfer may sit unused before another `*_begin` may drop it.
pub const TRANSFER_IDLE: Duration = Duration::from_secs(60);

/// The file name prefix of transfer files in the data directory.
const PREFIXES: [&str; 2] = [".backup-", ".restore-"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Backup,
    Restore,
}

#[derive(Debug)]
struct Transfer {
    id: u64,
    kind: Kind,
    path: PathBuf,
    size: u64,
    sha256: Vec<u8>,
    /// Restore: bytes received so far.
    written: u64,
    /// A request is working on it (a backup being taken, a chunk written, a commit).
    busy: bool,
    last_used: Instant,
}

/// A request's hold on the transfer it works on: ends the transfer (deleting its file) when
/// dropped, unless [`Hold::keep`] hands it back, so that a request abandoned midway (its
/// connection gone) cannot leave the one transfer slot busy.
struct Hold<'a> {
    transfers: &'a Transfers,
    id: u64,
}

impl Hold<'_> {
    /// Hands the transfer back for later requests, with `written` bytes received.
    fn keep(self, written: u64) {
        self.transfers.put_back(self.id, Some(written));
        std::mem::forget(self);
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.transfers.put_back(self.id, None);
    }
}

/// The daemon's transfer (at most one).
#[derive(Default)]
pub struct Transfers {
    current: Mutex<Option<Transfer>>,
    next_id: std::sync::atomic::AtomicU64,
}

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

impl Transfers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Transfer>> {
        // Only field updates run under this lock.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves the one transfer slot (busy) for a new transfer of `kind` in `dir`; drops an
    /// idle one and files left over.
    fn start(
        &self,
        kind: Kind,
        dir: &Path,
        size: u64,
        sha256: Vec<u8>,
    ) -> Result<(Hold<'_>, PathBuf), WireError> {
        let mut cur = self.lock();
        if let Some(t) = cur.as_ref() {
            if t.busy || t.last_used.elapsed() < TRANSFER_IDLE {
                return Err(invalid(
                    "another backup or restore is in progress; try again when it is done",
                ));
            }
        }
        *cur = None;
        remove_leftovers(dir);
        let id = self.new_id();
        let name = match kind {
            Kind::Backup => format!("{}{id}.db", PREFIXES[0]),
            Kind::Restore => format!("{}{id}.db", PREFIXES[1]),
        };
        let path = dir.join(name);
        *cur = Some(Transfer {
            id,
            kind,
            path: path.clone(),
            size,
            sha256,
            written: 0,
            busy: true,
            last_used: Instant::now(),
        });
        Ok((
            Hold {
                transfers: self,
                id,
            },
            path,
        ))
    }

    /// A transfer id no other transfer has had: backups and restores here, streamed imports
    /// and exports ([`super::stream`]) alike, so that `transfer_end` names one of them.
    pub fn new_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Marks transfer `id` of `kind` busy and returns a hold on it and a copy of what a
    /// request needs.
    #[allow(clippy::type_complexity)]
    fn take(
        &self,
        id: u64,
        kind: Kind,
    ) -> Result<(Hold<'_>, PathBuf, u64, Vec<u8>, u64), WireError> {
        let mut cur = self.lock();
        match cur.as_mut() {
            Some(t) if t.id == id && t.kind == kind => {
                if t.busy {
                    return Err(invalid("a request on this transfer is still running"));
                }
                t.busy = true;
                t.last_used = Instant::now();
                let hold = Hold {
                    transfers: self,
                    id,
                };
                Ok((hold, t.path.clone(), t.size, t.sha256.clone(), t.written))
            }
            _ => Err(invalid(format!(
                "no transfer {id} in progress (ended, or dropped after {} s unused)",
                TRANSFER_IDLE.as_secs()
            ))),
        }
    }

    /// Ends a request on transfer `id`: done with it (`written` bytes so far), or gone.
    fn put_back(&self, id: u64, written: Option<u64>) {
        let mut cur = self.lock();
        let Some(t) = cur.as_mut().filter(|t| t.id == id) else {
            return;
        };
        match written {
            Some(w) => {
                t.written = w;
                t.busy = false;
                t.last_used = Instant::now();
            }
            None => {
                let _ = std::fs::remove_file(&t.path);
                *cur = None;
            }
        }
    }

    fn set_info(&self, id: u64, size: u64, sha256: Vec<u8>) {
        if let Some(t) = self.lock().as_mut().filter(|t| t.id == id) {
            t.size = size;
            t.sha256 = sha256;
        }
    }
}

/// Deletes transfer files in `dir` (called with no transfer in use).
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if PREFIXES.iter().any(|p| name.starts_with(p)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
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

/// `restore_begin`.
pub async fn restore_begin(conn: &Conn, size: u64, sha256: Blob) -> Result<Response, WireError> {
    let d = &conn.daemon;
    if d.vault.is_postgres() {
        return Err(wire_error(
            ErrorCode::Unsupported,
            "this vault is kept in PostgreSQL: back it up with PostgreSQL's tools (pg_dump, \
             base backups); online backup and restore are for the SQLite store",
        ));
    }
    if sha256.0.len() != 32 {
        return Err(invalid("sha256 must be 32 bytes"));
    }
    if d.vault.status().await?.state == VaultState::Unlocked {
        return Err(invalid(
            "the vault is unlocked: lock it first (`vaultctl lock`), then restore",
        ));
    }
    let dir = data_dir(&d.vault);
    let (hold, path) = d
        .transfers
        .start(Kind::Restore, &dir, size, sha256.0.clone())?;
    let id = hold.id;
    let created = blocking(move || {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        o.open(&path)
            .map(drop)
            .map_err(|e| storage("create", &path, e))
    })
    .await;
    created?;
    hold.keep(0);
    Ok(Response::Transfer(TransferInfo { id, size, sha256 }))
}

/// `restore_chunk`.
pub async fn restore_chunk(
    conn: &Conn,
    id: u64,
    offset: u64,
    data: Blob,
) -> Result<Response, WireError> {
    let t = &conn.daemon.transfers;
    let (hold, path, size, _, written) = t.take(id, Kind::Restore)?;
    let len = data.0.len() as u64;
    if offset != written || data.0.len() > CHUNK_MAX || written + len > size {
        hold.keep(written);
        return Err(invalid(format!(
            "restore chunk out of order or too long: offset {offset}, {len} bytes; \
             {written} of {size} bytes received, chunks of at most {CHUNK_MAX} bytes"
        )));
    }
    let result = blocking(move || {
        let f = reopen(&path, true).map_err(|e| storage("write", &path, e))?;
        f.write_all_at(&data.0, offset)
            .map_err(|e| storage("write", &path, e))
    })
    .await;
    result?;
    hold.keep(written + len);
    Ok(Response::Ok)
}

/// `restore_commit`: see the module docs.
pub async fn restore_commit(
    conn: &Conn,
    id: u64,
    passphrase: Passphrase,
    recovery: bool,
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    // A recovery key that fails its checks is refused before the transfer is touched.
    let key = if recovery {
        Some(super::keys::recovery_bytes(&passphrase)?)
    } else {
        None
    };
    let (hold, path, size, sha256, written) = d.transfers.take(id, Kind::Restore)?;
    // Dropping `hold` ends the transfer: after a swap (its file is the vault now, so there is
    // nothing to delete) and after a refusal.
    match commit(conn, &path, size, &sha256, written, passphrase, key).await {
        // A wrong passphrase may be sent again without sending the file again.
        Err(e) if matches!(e.code, ErrorCode::BadPassphrase { .. }) => {
            hold.keep(written);
            Err(e)
        }
        other => other,
    }
}

async fn commit(
    conn: &Conn,
    path: &Path,
    size: u64,
    sha256: &[u8],
    written: u64,
    passphrase: Passphrase,
    recovery_key: Option<zeroize::Zeroizing<[u8; 16]>>,
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    if written != size {
        return Err(invalid(format!(
            "the restore file is incomplete: {written} of {size} bytes received"
        )));
    }
    let p = path.to_owned();
    let (n, hash) = blocking(move || {
        reopen(&p, false)
            .and_then(|f| f.sync_all())
            .map_err(|e| storage("fsync", &p, e))?;
        digest(&p)
    })
    .await?;
    if n != size || hash != sha256 {
        return Err(wire_error(
            ErrorCode::Corrupt,
            "the restore file is not the one announced (its SHA-256 differs)",
        ));
    }
    let p = path.to_owned();
    blocking(move || {
        check_vault_file(&p).map_err(|e| match e {
            EngineError::NotAVault { reason, .. } => wire_error(
                ErrorCode::Corrupt,
                format!(
                    "the backup is not a whole Session Vault database ({reason}); \
                     the vault was not changed"
                ),
            ),
            other => WireError::from(other),
        })
    })
    .await?;
    if d.vault.status().await?.state == VaultState::Unlocked {
        return Err(invalid(
            "the vault is unlocked: lock it first (`vaultctl lock`), then restore",
        ));
    }
    // Open the new file as a vault of its own, with its own passphrase, and authenticate
    // every record before anything is swapped.
    let staged = Vault::open(
        path,
        VaultConfig {
            flush_interval: d.config.flush_interval,
        },
    )?;
    let checked = async {
        d.throttle
            .attempt(
                || async {
                    match &recovery_key {
                        Some(key) => staged.unlock_with_recovery_key(&key[..]).await,
                        None => staged.unlock(passphrase.expose()).await,
                    }
                },
                |e| matches!(e, EngineError::BadPassphrase),
            )
            .await
            .map_err(|r| match r {
                Refusal::NotJudged { retry_after } => errors::not_judged(retry_after),
                Refusal::Failed { error, retry_after } => {
                    if matches!(error, EngineError::BadPassphrase) {
                        tracing::warn!(uid = conn.peer.uid, "restore refused: wrong passphrase");
                    }
                    errors::from_engine(&error, retry_after)
                }
            })?;
        Ok::<_, WireError>(staged.verify().await?)
    }
    .await;
    staged.close().await?;
    let report = checked?;
    if !report.failures.is_empty() {
        let first: Vec<String> = report
            .failures
            .iter()
            .take(3)
            .map(|f| format!("{}: {}", f.place, f.reason))
            .collect();
        return Err(wire_error(
            ErrorCode::Corrupt,
            format!(
                "the backup is damaged or was tampered with; the vault was not changed: {}",
                first.join("; ")
            ),
        ));
    }
    let vault_path = d.vault.path().to_owned();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_secs())
        .unwrap_or(0);
    let mut aside = with_suffix(&vault_path, &format!(".before-restore-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        aside = with_suffix(&vault_path, &format!(".before-restore-{stamp}-{n}"));
        n += 1;
    }
    let had = d.vault.replace_with(path, &aside).await?;
    let ended = d.handles.end_all(Ended::Restored, &d.leases);
    d.publish(Event::Locked);
    tracing::info!(
        uid = conn.peer.uid,
        sessions = report.sessions,
        records = report.records,
        previous = %aside.display(),
        handles_ended = ended,
        "vault restored from a backup; it is locked"
    );
    Ok(Response::Restored(RestoreInfo {
        report,
        previous: had.then(|| aside.display().to_string()),
    }))
}

/// `transfer_end`: a backup or restore here, or this connection's streamed import or
/// export ([`super::stream`]).
pub fn transfer_end(conn: &Conn, id: u64) -> Result<Response, WireError> {
    if conn.daemon.streams.end(conn.id, id) {
        return Ok(Response::Ok);
    }
    let t = &conn.daemon.transfers;
    let mut cur = t.lock();
    match cur.as_ref() {
        Some(x) if x.id == id && !x.busy => {
            let _ = std::fs::remove_file(&x.path);
            *cur = None;
            Ok(Response::Ok)
        }
        Some(x) if x.id == id => Err(invalid("a request on this transfer is still running")),
        _ => Err(invalid(format!("no transfer {id} in progress"))),
    }
}

/// `verify`.
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
