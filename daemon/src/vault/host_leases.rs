//! [`Vault`]'s side of leases across hosts: taking, renewing and giving back a session's
//! lease row in PostgreSQL ([`super::postgres::lease`]). On the SQLite store they are no-ops
//! (one daemon owns the file; its in-memory leases are the whole story).
//!
//! Each runs as a barrier job (pending writes committed first, no transaction open), since a
//! lease change must be committed at once, not ride along with a group commit.

use std::time::Duration;

use super::backend::Backend;
use super::postgres::{Acquired, Holder};
use super::worker::Class;
use super::{Result, SessionId, Vault};

impl Vault {
    /// Takes `sid`'s lease in the database for `ttl`, or says who holds it.
    pub async fn acquire_host_lease(
        &self,
        sid: SessionId,
        holder: Holder,
        ttl: Duration,
    ) -> Result<Acquired> {
        self.call(Class::Barrier, move |e| match e.store() {
            Backend::Postgres(p) => p.acquire_lease(sid.0, &holder, ttl),
            Backend::Sqlite(_) => Ok(Acquired::Token(0)),
        })
        .await
    }

    /// A live lease of another daemon instance than `instance` (another host's, or another
    /// daemon's on this host), if any. Always `None` on SQLite.
    pub async fn other_host_lease(&self, instance: String) -> Result<Option<Holder>> {
        self.call(Class::Barrier, move |e| match e.store() {
            Backend::Postgres(p) => p.other_live_lease(&instance),
            Backend::Sqlite(_) => Ok(None),
        })
        .await
    }

    /// Gives back every database lease `keep` does not name and renews the others by `ttl`;
    /// returns the kept sessions whose lease was lost (lapsed, or taken over after a pause:
    /// found at this renewal or by a write's fencing check). A lost lease no longer kept is
    /// forgotten (its session's writes are checked as a non-holder's
    /// again). `keep` is asked on the storage thread, after every lease take queued before
    /// this call ran: a set read before queueing could miss a lease an open took meanwhile,
    /// and give its database row back under it.
    pub async fn reconcile_host_leases(
        &self,
        keep: impl Fn(SessionId) -> bool + Send + 'static,
        ttl: Duration,
    ) -> Result<Vec<SessionId>> {
        self.call(Class::Barrier, move |e| match e.store() {
            Backend::Postgres(p) => {
                for sid in p.held_leases() {
                    if !keep(SessionId(sid)) {
                        p.release_lease(sid)?;
                    }
                }
                p.renew_leases(ttl)?;
                // Lost at this renewal or found lost by a write's fencing check since the last.
                let mut lost = Vec::new();
                for sid in p.lost_leases() {
                    if keep(SessionId(sid)) {
                        lost.push(SessionId(sid));
                    } else {
                        p.forget_lost_lease(sid);
                    }
                }
                Ok(lost)
            }
            Backend::Sqlite(_) => Ok(Vec::new()),
        })
        .await
    }
}
