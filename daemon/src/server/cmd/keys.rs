//! `init`, `unlock`, `lock` and `change_passphrase`.
//!
//! Passphrase checks go through the daemon-wide throttle; Argon2 runs in `spawn_blocking`
//! inside the vault handle, never on a runtime worker.

use session_vault_proto::message::{Event, KdfSpec, Passphrase, Response, WireError};

use crate::server::conn::Conn;
use crate::server::errors::from_vault;
use crate::vault::{KdfParams, VaultError};

fn kdf(spec: Option<KdfSpec>) -> KdfParams {
    spec.map_or_else(KdfParams::default, |k| KdfParams {
        m_cost_kib: k.m_cost_kib,
        t_cost: k.t_cost,
        p_cost: k.p_cost,
    })
}

/// `init`: a new vault with keyslot 0, left unlocked.
pub async fn init(
    conn: &Conn,
    passphrase: Passphrase,
    spec: Option<KdfSpec>,
) -> Result<Response, WireError> {
    conn.daemon
        .vault
        .init(passphrase.expose(), kdf(spec))
        .await?;
    tracing::info!(uid = conn.peer.uid, "vault initialized");
    conn.daemon.publish(Event::Unlocked);
    Ok(Response::Ok)
}

/// `unlock`, throttled.
pub async fn unlock(conn: &Conn, passphrase: Passphrase) -> Result<Response, WireError> {
    let d = &conn.daemon;
    d.throttle
        .attempt(
            || d.vault.unlock(passphrase.expose()),
            |e| matches!(e, VaultError::BadPassphrase),
        )
        .await
        .map_err(|(e, delay)| {
            if matches!(e, VaultError::BadPassphrase) {
                tracing::warn!(uid = conn.peer.uid, pid = ?conn.peer.pid, "unlock refused: wrong passphrase");
            }
            from_vault(&e, delay)
        })?;
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
    let params = kdf(spec);
    d.throttle
        .attempt(
            || {
                d.vault
                    .change_passphrase(old.expose(), new.expose(), params)
            },
            |e| matches!(e, VaultError::BadPassphrase),
        )
        .await
        .map_err(|(e, delay)| from_vault(&e, delay))?;
    tracing::info!(uid = conn.peer.uid, "passphrase changed");
    Ok(Response::Ok)
}
