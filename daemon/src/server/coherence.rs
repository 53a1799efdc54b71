//! Coherence between daemons sharing one PostgreSQL vault ("hosts"): this daemon's
//! in-memory state follows what the others change.
//!
//! The vault-wide version is the sealed manifest ([`crate::vault::engine::manifest`]): every
//! change to sessions, names, ACLs or keyslots re-seals it in the same transaction. This
//! daemon compares the stored manifest with the one it last read or wrote
//! ([`crate::vault::Vault::refresh`]) every [`POLL`] and right before the requests whose
//! decision depends on it (opens and the lease takes inside them, `list`, grant and revoke,
//! rename, delete, import, keyslot changes, `rekey`, reading the audit log). On a change the
//! engine re-reads its session index, manifest, keyslot checks and audit head; then
//! [`check`] re-checks every handle open here against the session's current record:
//! handles of deleted sessions end (`Deleted`), handles of connections no longer allowed end
//! (`Revoked`), as if the act had been done on this daemon. If the change was a `rekey` (the
//! keys held here open nothing current), the engine has locked itself: the `locked` event
//! goes to every connection and the log says why; `vaultctl unlock` with the current
//! passphrase brings it back.
//!
//! On the SQLite store (one daemon owns the file) all of this is a no-op without any work.
//!
//! A handle whose record cannot be read when the change is seen (this daemon locked, the
//! database unreachable) is checked again at every look until it can be
//! ([`Daemon::recheck_pending`]); and every change seen moves the handle table's epoch, so that
//! an open that read the older ACL decides again before it registers its handle.
//!
//! Staleness: a change made elsewhere is seen here within [`POLL`] plus one round trip, and
//! at once by a request that checks first or meets a record newer than this daemon's view
//! (which also wakes the poll, so revoked handles end then). Between two checks a request
//! may still be answered from the older state (a handle used once more after a revoke
//! elsewhere).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use session_vault_proto::message::Event;

use super::Daemon;
use super::cmd::open::allowed;
use super::handles::Ended;
use crate::vault::{EngineError, Refreshed};

/// How often the manifest is compared while nothing else asks.
pub const POLL: Duration = Duration::from_millis(500);

/// Follows other daemons' changes now (see the module doc). Errors reading the database are
/// returned; the caller usually goes on (its own request will meet the same error).
pub async fn check(d: &Daemon) -> Result<(), EngineError> {
    match d.vault.refresh().await? {
        Refreshed::Unchanged => {
            if d.recheck_pending.load(Ordering::SeqCst) {
                recheck(d).await;
            }
            Ok(())
        }
        Refreshed::LockedOut(why) => {
            tracing::error!(
                reason = %why,
                "another vaultd changed this vault's keys (rekey) and the keys held here no \
                 longer open it: this vaultd locked itself; unlock it with the current passphrase"
            );
            d.publish(Event::Locked);
            Ok(())
        }
        Refreshed::Reloaded => {
            // An open that read the older ACL must decide again before it registers.
            d.handles.bump_epoch();
            recheck(d).await;
            d.sessions_changed().await;
            Ok(())
        }
    }
}

/// [`check`], logging its error (at debug level: while PostgreSQL is unreachable every
/// request would log it, and the request's own answer reports the trouble).
pub async fn check_logged(d: &Daemon) {
    if let Err(e) = check(d).await {
        tracing::debug!(error = %e, "cannot check the vault for other daemons' changes");
    }
}

/// [`recheck_handles`], remembering whether it must be tried again: a change made elsewhere
/// is consumed when it is read, so a handle whose record could not be read then (this daemon
/// locked, the database unreachable) would otherwise keep its access for good.
async fn recheck(d: &Daemon) {
    d.recheck_pending.store(true, Ordering::SeqCst);
    if recheck_handles(d).await {
        d.recheck_pending.store(false, Ordering::SeqCst);
    }
}

/// Ends the handles open here that the current records no longer allow; `false` if some
/// record could not be read.
async fn recheck_handles(d: &Daemon) -> bool {
    let mut complete = true;
    for sid in d.handles.open_sessions() {
        match d.vault.session_record(sid).await {
            Ok(record) => {
                let ended = d
                    .handles
                    .end_session(sid, Ended::Revoked, &d.leases, |peer| {
                        d.config.admin_uids.contains(&peer.uid) || allowed(peer, &record.acl)
                    });
                if ended > 0 {
                    tracing::info!(
                        session_id = sid.0,
                        ended,
                        "access revoked by another vaultd: handles ended"
                    );
                }
            }
            Err(EngineError::NoSuchSession { .. }) => {
                let ended = d
                    .handles
                    .end_session(sid, Ended::Deleted, &d.leases, |_| false);
                tracing::info!(
                    session_id = sid.0,
                    ended,
                    "session deleted by another vaultd: handles ended"
                );
            }
            // Locked, or the database unreachable: the handles' own requests say so, and
            // the check is made again once the record can be read.
            Err(_) => complete = false,
        }
    }
    complete
}

/// Checks every [`POLL`], and at once when a request met another daemon's change first
/// (see [`crate::vault::Vault::followed`]), until the daemon is gone (PostgreSQL store
/// only).
pub async fn run(daemon: Weak<Daemon>) {
    let Some(followed) = daemon.upgrade().map(|d| d.vault.followed()) else {
        return;
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = followed.notified() => {}
        }
        let Some(d) = daemon.upgrade() else { return };
        poll(&d).await;
    }
}

async fn poll(d: &Arc<Daemon>) {
    if let Err(e) = check(d).await {
        tracing::debug!(error = %e, "coherence check failed");
    }
}
