//! `init`, `unlock`, `lock`, `change_passphrase` and `rekey`.
//!
//! Passphrase checks go through the daemon-wide throttle (one judged at a time, none before
//! the delay earned by the last wrong one); Argon2 runs in `spawn_blocking` inside the vault
//! handle, never on a runtime worker.
//!
//! New keyslots get KDF parameters of at least [`KdfParams::FLOOR`] (OWASP's Argon2id
//! minimum), unless the daemon was started with `--insecure-allow-weak-kdf` (tests and
//! benchmarks); their passphrase floor (8 characters) is the vault's own.

use session_vault_proto::message::{ErrorCode, Event, KdfSpec, Passphrase, Response, WireError};

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

/// `unlock`, throttled.
pub async fn unlock(conn: &Conn, passphrase: Passphrase) -> Result<Response, WireError> {
    let d = &conn.daemon;
    d.throttle
        .attempt(
            || d.vault.unlock(passphrase.expose()),
            |e| matches!(e, EngineError::BadPassphrase),
        )
        .await
        .map_err(|r| refused(conn, "unlock", r))?;
    tracing::info!(uid = conn.peer.uid, "vault unlocked");
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
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let params = kdf(conn, spec)?;
    d.throttle
        .attempt(
            || {
                d.vault
                    .change_passphrase(old.expose(), new.expose(), params)
            },
            |e| matches!(e, EngineError::BadPassphrase),
        )
        .await
        .map_err(|r| refused(conn, "passphrase change", r))?;
    tracing::info!(uid = conn.peer.uid, "passphrase changed");
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
