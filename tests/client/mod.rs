//! `VaultSession` (the grammers `Session` served by the vault) against the real `vaultd`.
//!
//! - [`cache`]: the exclusive client's cache answers what the daemon would;
//! - [`large`]: a session whose peer map the daemon reads on its map thread, after a restart;
//! - [`conformance`]: random sequences of every trait operation give the same answers as
//!   grammers' `MemorySession`, before and after a daemon restart;
//! - [`processes`]: eight processes with a session each, concurrently; two processes wanting
//!   one session exclusively;
//! - [`locked`]: the locked-vault policies (fail at once, or wait for unlock);
//! - [`restart`]: a running client rides through a daemon restart;
//! - [`plaintext`]: what a grammers bot writes never reaches the disk in the clear;
//! - [`tasks`]: many tasks sharing one session (one connection); whole-session export,
//!   import and `import_from` another grammers storage;
//! - [`warm`]: warm start, a restarted client loading its session's peers at open.
//!
//! Helpers here; the daemon guard and `vaultctl` runs come from `crate::util`.

mod cache;
mod conformance;
mod large;
mod locked;
mod plaintext;
mod processes;
mod restart;
mod tasks;
mod warm;

use std::path::Path;
use std::time::Duration;

use grammers_session::types::{PeerAuth, PeerId, PeerInfo};
use session_vault_client::{VaultError, VaultSession, VaultSessionBuilder};

use crate::util::{Daemon, Env, PASS, assert_success};

/// A started, initialized (cheap KDF) and therefore unlocked daemon.
pub fn unlocked() -> (Env, Daemon) {
    let env = Env::new();
    let d = env.start_and_init();
    (env, d)
}

/// A multi-threaded runtime: blocking helpers (spawning `vaultctl`, restarting the daemon)
/// run on the test thread while client tasks keep running on the workers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A session builder on `socket`, creating the session if missing.
pub fn builder(socket: &Path, name: &str) -> VaultSessionBuilder {
    VaultSession::builder(name)
        .socket(socket)
        .create_if_missing(true)
}

/// Opens (creating) session `name` exclusively with the default policies.
pub async fn open(env: &Env, name: &str) -> VaultSession {
    builder(&env.socket(), name)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("open session {name:?}: {e}"))
}

/// Terminates the daemon (gracefully: SIGTERM), starts it again and unlocks it.
pub fn restart(env: &Env, d: Daemon) -> Daemon {
    assert!(d.terminate().success(), "vaultd exits 0 on SIGTERM");
    let d = env.start();
    assert_success(&env.unlock(PASS), "vaultctl unlock after restart");
    d
}

/// `vaultctl lock`, asserting success.
pub fn lock(env: &Env) {
    assert_success(&env.ctl(&["lock"]), "vaultctl lock");
}

/// A user peer with an access hash.
pub fn user(id: i64, hash: i64) -> PeerInfo {
    PeerInfo::User {
        id,
        auth: Some(PeerAuth::from_hash(hash)),
        bot: Some(false),
        is_self: None,
    }
}

/// The grammers id of user `id`.
pub fn user_id(id: i64) -> PeerId {
    PeerId::user(id).expect("a valid user id")
}

/// Asserts that `r` failed with `Locked`.
pub fn assert_locked<T: std::fmt::Debug>(r: Result<T, VaultError>) {
    match r {
        Err(VaultError::Locked) => {}
        other => panic!("expected VaultError::Locked, got {other:?}"),
    }
}

/// Polls `cond` every 20 ms until it holds, for at most `limit` (for state changes the
/// daemon has no event for, such as a lease freed by a dead process).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
