//! `restore_begin`, `restore_chunk` and `restore_commit`: a backup streamed in from the
//! client and, once whole and checked, swapped in for the vault (see the parent module).

use std::path::Path;

use session_vault_proto::backup::{Blob, CHUNK_MAX, RestoreInfo, TransferInfo};
use session_vault_proto::message::{ErrorCode, Event, Passphrase, Response, WireError};

use super::transfer::Kind;
use super::{FileExt, blocking, data_dir, digest, invalid, reopen, storage};
use crate::server::context::Conn;
use crate::server::errors::{self, wire_error};
use crate::server::handles::Ended;
use crate::server::throttle::Refusal;
use crate::vault::backup::with_suffix;
use crate::vault::sqlite::check_vault_file;
use crate::vault::{EngineError, Vault, VaultConfig, VaultState};

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
        Some(crate::server::cmd::keys::recovery_bytes(&passphrase)?)
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
