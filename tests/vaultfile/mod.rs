//! Attacks on the vault file and on the daemon's memory (security issue 13): a thief who can
//! read and rewrite `vault.db` while the daemon is stopped (rusqlite plays the thief),
//! someone who reads the running daemon's memory after `lock`, and weak passphrases or KDF
//! parameters for new keyslots.
//!
//! - [`rollback`]: old keyslots, ACLs and deleted sessions put back are `corrupt`;
//! - [`rekey`]: `vaultctl rekey` leaves every earlier keyslot useless, and is all or nothing
//!   across a SIGKILL;
//! - [`index`]: blind-index values swapped between peers are `corrupt`, not another peer;
//! - [`memory`]: no key or HMAC midstate in the daemon's memory after `lock`;
//! - [`floor`]: passphrase and KDF floors for new keyslots; record sizes that do not tell
//!   which DC holds an auth key.

mod floor;
mod index;
mod memory;
mod rekey;
mod rollback;

use std::path::{Path, PathBuf};

use session_vault_client::Connection;
use session_vault_proto::message::{ErrorCode, Request, Response};
use session_vault_proto::model::{AuthKey, DcOption};

use crate::util::*;

/// A second passphrase (for `passwd`).
pub const NEW_PASS: &str = "a brand new passphrase";

/// The auth key tests store: recognizable bytes.
pub fn auth_key(seed: u8) -> AuthKey {
    let mut k = [0u8; 256];
    for (i, b) in k.iter_mut().enumerate() {
        *b = seed ^ (i as u8);
    }
    AuthKey::new(k)
}

/// A DC option with (or without) an auth key.
pub fn dc(id: i32, key: Option<u8>) -> DcOption {
    DcOption {
        id,
        ipv4: Some(format!("149.154.167.{id}:443").parse().expect("address")),
        ipv6: None,
        auth_key: key.map(auth_key),
    }
}

/// Calls `request` and returns the error code it failed with; panics if it succeeded.
pub async fn fails(c: &Connection, request: Request) -> ErrorCode {
    err_code(c.call(request).await)
}

/// Calls `request` and asserts `ok`.
pub async fn ok(c: &Connection, request: Request, what: &str) {
    match c.call(request).await {
        Ok(Response::Ok) => {}
        other => panic!("{what}: {other:?}"),
    }
}

/// Stops the daemon gracefully (SQLite checkpoints its WAL into `vault.db` on close).
pub fn stop(d: Daemon) {
    let status = d.terminate();
    assert!(status.success(), "vaultd exit: {status:?}");
}

/// Copies the stopped daemon's `vault.db` aside; returns the copy's path.
pub fn save_copy(env: &Env, name: &str) -> PathBuf {
    let copy = env.path().join(name);
    std::fs::copy(env.vault_db(), &copy).expect("copy vault.db");
    copy
}

/// The thief: `vault.db` opened with rusqlite (daemon stopped), an old copy attached as `old`.
pub fn thief(env: &Env, old: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(env.vault_db()).expect("open vault.db");
    db.execute(
        "ATTACH DATABASE ?1 AS old",
        [old.to_str().expect("utf-8 path")],
    )
    .expect("attach the old copy");
    db
}

/// Opens `name` (non-exclusive) and returns its handle.
pub async fn handle(c: &Connection, name: &str) -> u32 {
    open_session(c, name, false).await
}
