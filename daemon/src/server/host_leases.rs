//! Leases across hosts (PostgreSQL store only): an exclusive open also takes the session's
//! lease row in the database, named after this host, this daemon instance and the client's
//! pid and uid; a task renews every lease a connection holds here every third of the expiry
//! and gives back those no connection holds any more. A daemon that dies or hangs stops
//! renewing: its leases lapse after `lease_expiry`, another host takes over with a larger
//! fencing token, and the database refuses every later write of the old holder
//! ([`crate::vault::postgres::lease`]).
//!
//! The expiry trades takeover time (a dead holder's sessions wait that long) against
//! tolerance of pauses (a daemon stalled longer than it — GC-free, but a VM freeze, a
//! SIGSTOP, a PostgreSQL failover — loses its leases and its writes are refused).

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use session_vault_proto::message::{ErrorCode, WireError};

use super::Daemon;
use super::errors::wire_error;
use super::handles::Ended;
use crate::vault::SessionId;
use crate::vault::postgres::{Acquired, Holder};

/// Default of `lease_expiry`.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(15);

/// This host's name and this daemon's random instance id, fixed at first use.
fn identity() -> &'static (String, String) {
    static ID: OnceLock<(String, String)> = OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".into());
        let mut bytes = [0u8; 8];
        // An id, not a secret, but it must tell this daemon from every other on the database
        // (a lease whose instance is this one's counts as this daemon's own): a failed
        // getrandom falls back to host, pid and start time, never to the pid alone, which
        // another host's daemon may have too.
        let instance = match getrandom::fill(&mut bytes) {
            Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
            Err(_) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                format!("{host}/pid{}/{nanos}", std::process::id())
            }
        };
        (host, instance)
    })
}

/// Takes `sid`'s database lease for the client `pid`/`uid`, or answers `session_busy`
/// naming the holder and its host.
pub async fn acquire(
    d: &Daemon,
    sid: SessionId,
    name: &str,
    pid: Option<u32>,
    uid: u32,
) -> Result<(), WireError> {
    let (host, instance) = identity().clone();
    let holder = Holder {
        host,
        instance,
        pid,
        uid: Some(uid),
    };
    match d
        .vault
        .acquire_host_lease(sid, holder, d.config.lease_expiry)
        .await?
    {
        Acquired::Token(_) => Ok(()),
        Acquired::Busy(h) => Err(wire_error(
            ErrorCode::SessionBusy { holder_pid: h.pid },
            format!(
                "session {name:?} is in use by {} on host {}",
                h.pid
                    .map_or("another client".to_owned(), |p| format!("pid {p}")),
                h.host
            ),
        )),
    }
}

/// A live session lease held by another daemon instance (on this host or another).
pub async fn other_holder(d: &Daemon) -> Result<Option<Holder>, WireError> {
    if !d.vault.is_postgres() {
        return Ok(None);
    }
    let (_, instance) = identity().clone();
    Ok(d.vault.other_host_lease(instance).await?)
}

/// Renews and gives back leases until the daemon is gone.
pub async fn run(daemon: Weak<Daemon>, expiry: Duration) {
    let mut tick = tokio::time::interval(expiry / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(d) = daemon.upgrade() else { return };
        reconcile(&d, expiry).await;
    }
}

async fn reconcile(d: &Arc<Daemon>, expiry: Duration) {
    let daemon = Arc::downgrade(d);
    let keep = move |sid| {
        daemon
            .upgrade()
            .is_some_and(|d| d.leases.holder(sid).is_some())
    };
    match d.vault.reconcile_host_leases(keep, expiry).await {
        Ok(lost) => {
            for sid in lost {
                let ended = d.handles.end_exclusive(sid, Ended::LeaseLost, &d.leases);
                if ended == 0 {
                    continue;
                }
                tracing::warn!(
                    session_id = sid.0,
                    ended,
                    "the database lease of a session open here lapsed (this daemon was paused or \
                     cut off longer than the lease expiry): its exclusive handles are ended and \
                     its writes refused until it is opened again"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot renew the database leases"),
    }
}
