//! `init`, `unlock`, `lock`, `change_passphrase`, `rekey` and the recovery key.
//!
//! Passphrase checks go through the daemon-wide throttle (one judged at a time, none before
//! the delay earned by the last wrong one); Argon2 runs in `spawn_blocking` inside the vault
//! handle, never on a runtime worker.
//!
//! New keyslots get KDF parameters of at least [`KdfParams::FLOOR`] (OWASP's Argon2id
//! minimum), unless the daemon was started with `--insecure-allow-weak-kdf` (tests and
//! benchmarks); their passphrase floor (8 characters) is the vault's own.

use session_vault_proto::message::{ErrorCode, Event, KdfSpec, Passphrase, Response, WireError};
use session_vault_proto::recovery::{self, RecoveryKey};

use crate::server::context::Conn;
use crate::server::errors::{self, wire_error};
use crate::server::throttle::Refusal;
use crate::vault::{EngineError, KdfParams};

/// The KDF parameters of a new keyslot: the default when none are given; refused below the
/// floor unless the daemon allows weak ones.
fn kdf(conn: &Conn, spec: Option<KdfSpec>) -> Result<KdfParams, WireError> {
    let params = spec.map_or_else(KdfParams::default, |k| KdfParams {
        m_cost_kib: k.m_cost_kib,
        t_cost: k.t_cost,
        p_cost: k.p_cost,
    });
    if !params.meets_floor() && !conn.daemon.config.insecure_allow_weak_kdf {
        let f = KdfParams::FLOOR;
        return Err(wire_error(
            ErrorCode::InvalidRequest,
            format!(
                "KDF parameters below the floor: at least {} KiB of memory, {} iterations and {} lane are required",
                f.m_cost_kib, f.t_cost, f.p_cost
            ),
        ));
    }
    Ok(params)
}

/// `init`: a new vault with keyslot 0, left unlocked.
pub async fn init(
    conn: &Conn,
    passphrase: Passphrase,
    spec: Option<KdfSpec>,
) -> Result<Response, WireError> {
    let params = kdf(conn, spec)?;
    conn.daemon.vault.init(passphrase.expose(), params).await?;
    tracing::info!(uid = conn.peer.uid, "vault initialized");
    conn.daemon.publish(Event::Unlocked);
    Ok(Response::Ok)
}

/// The wire error for a throttled attempt that did not succeed. Wrong passphrases are logged
/// (they are few: the throttle spaces them out); attempts refused unjudged are not, since a
/// brute force sends them as fast as they are answered.
fn refused(conn: &Conn, what: &str, refusal: Refusal<EngineError>) -> WireError {
    match refusal {
        Refusal::NotJudged { retry_after } => errors::not_judged(retry_after),
        Refusal::Failed { error, retry_after } => {
            if matches!(error, EngineError::BadPassphrase) {
                tracing::warn!(uid = conn.peer.uid, pid = ?conn.peer.pid, "{what} refused: wrong passphrase");
            }
            errors::from_engine(&error, retry_after)
        }
    }
}

/// The 16 bytes of a recovery key sent as text; `InvalidRequest` (before any throttle or
/// KDF) when it fails its checks. The message never repeats the key.
pub(super) fn recovery_bytes(text: &Passphrase) -> Result<zeroize::Zeroizing<[u8; 16]>, WireError> {
    let text = std::str::from_utf8(text.expose()).map_err(|_| {
        wire_error(
            ErrorCode::InvalidRequest,
            "a recovery key holds only digits, in groups separated by '-' or spaces",
        )
    })?;
    recovery::parse(text).map_err(|e| wire_error(ErrorCode::InvalidRequest, e.to_string()))
}

/// `unlock`, throttled; with `recovery`, by the recovery key (throttled alike).
pub async fn unlock(
    conn: &Conn,
    passphrase: Passphrase,
    recovery: bool,
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let key = if recovery {
        Some(recovery_bytes(&passphrase)?)
    } else {
        None
    };
    d.throttle
        .attempt(
            || async {
                match &key {
                    Some(key) => d.vault.unlock_with_recovery_key(&key[..]).await,
                    None => d.vault.unlock(passphrase.expose()).await,
                }
            },
            |e| matches!(e, EngineError::BadPassphrase),
        )
        .await
        .map_err(|r| refused(conn, "unlock", r))?;
    if recovery {
        tracing::warn!(uid = conn.peer.uid, "vault unlocked with the recovery key");
    } else {
        tracing::info!(uid = conn.peer.uid, "vault unlocked");
    }
    d.publish(Event::Unlocked);
    Ok(Response::Ok)
}

/// `lock`: flush, wipe the keys.
pub async fn lock(conn: &Conn) -> Result<Response, WireError> {
    conn.daemon.vault.lock().await?;
    tracing::info!(uid = conn.peer.uid, "vault locked");
    conn.daemon.publish(Event::Locked);
    Ok(Response::Ok)
}

/// `change_passphrase`, throttled like `unlock`.
pub async fn change_passphrase(
    conn: &Conn,
    old: Passphrase,
    new: Passphrase,
    spec: Option<KdfSpec>,
    recovery: bool,
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let params = kdf(conn, spec)?;
    let key = if recovery {
        Some(recovery_bytes(&old)?)
    } else {
        None
    };
    let old: &[u8] = match &key {
        Some(key) => &key[..],
        None => old.expose(),
    };
    d.throttle
        .attempt(
            || {
                d.vault
                    .change_passphrase_with(old, recovery, new.expose(), params)
            },
            |e| matches!(e, EngineError::BadPassphrase),
        )
        .await
        .map_err(|r| refused(conn, "passphrase change", r))?;
    if recovery {
        tracing::warn!(uid = conn.peer.uid, "passphrase set with the recovery key");
    } else {
        tracing::info!(uid = conn.peer.uid, "passphrase changed");
    }
    Ok(Response::Ok)
}

/// `add_recovery_key`: a new recovery keyslot (replacing any earlier one); the key is in
/// the answer only, never in a log.
pub async fn add_recovery_key(conn: &Conn) -> Result<Response, WireError> {
    let key = conn.daemon.vault.add_recovery_key().await?;
    tracing::info!(uid = conn.peer.uid, "recovery key added");
    Ok(Response::RecoveryKey(RecoveryKey::from_bytes(&key)))
}

/// `remove_recovery_key`: deletes the recovery keyslot.
pub async fn remove_recovery_key(conn: &Conn) -> Result<Response, WireError> {
    if !conn.daemon.vault.remove_recovery_key().await? {
        return Err(wire_error(
            ErrorCode::InvalidRequest,
            "the vault has no recovery key",
        ));
    }
    tracing::info!(uid = conn.peer.uid, "recovery key removed");
    Ok(Response::Ok)
}

/// `rekey`, throttled like `unlock`: a new data-encryption key, every record re-sealed.
pub async fn rekey(
    conn: &Conn,
    passphrase: Passphrase,
    spec: Option<KdfSpec>,
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let params = kdf(conn, spec)?;
    // Another daemon sharing the vault holding a session would have its rows re-sealed under
    // its feet, and then lock itself out mid-use: refused while one does.
    if let Some(holder) = crate::server::host_leases::other_holder(d).await? {
        return Err(wire_error(
            ErrorCode::SessionBusy {
                holder_pid: holder.pid,
            },
            format!(
                "rekey refused: another vaultd (on host {}) holds a session lease of this vault \
                 for {}; close it there, or wait until it lapses, then rekey",
                holder.host,
                holder
                    .pid
                    .map_or("a client".to_owned(), |p| format!("pid {p}"))
            ),
        ));
    }
    let started = std::time::Instant::now();
    d.throttle
        .attempt(
            || d.vault.rekey(passphrase.expose(), params),
            |e| matches!(e, EngineError::BadPassphrase),
        )
        .await
        .map_err(|r| refused(conn, "rekey", r))?;
    tracing::info!(
        uid = conn.peer.uid,
        ms = started.elapsed().as_millis() as u64,
        "vault rekeyed: new data key, every record re-sealed, one keyslot left"
    );
    Ok(Response::Ok)
}
