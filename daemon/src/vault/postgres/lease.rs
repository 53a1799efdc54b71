//! Leases across hosts, with fencing tokens, in the database; taken, renewed and given back
//! by the server's `host_leases` for exclusive opens.
//!
//! A lease row names its holder (host, daemon instance, pid, uid), an expiry on the
//! database's clock (one clock for every host: no skew between them) and a fencing token
//! drawn from a sequence, so every new holder's token is larger than every earlier one.
//!
//! Fencing: every write of a session's rows first locks that session's lease row (`FOR
//! SHARE`, once per session and transaction) and checks it, in the same transaction as the
//! write. A session deleted meanwhile, by any daemon, refuses the write: a delete first
//! deletes the lease row, so it waits for every open transaction that checked it, and the
//! check finds no `sessions` row once the delete committed. Then:
//! - if this store holds the session's lease, the row must still carry its token and be
//!   unexpired, else the write is refused (a paused or partitioned daemon whose lease lapsed
//!   can never write again without re-acquiring); a lease found lost so (here, or by
//!   [`PostgresStore::renew_leases`]) keeps refusing the session's writes until it is taken
//!   again or given back ([`PostgresStore::forget_lost_lease`]: no handle holds it here);
//! - if it does not, no other live lease may exist (another host holds the session).
//!
//! A takeover updates the same row, so it waits for the row lock of a writer's open
//! transaction: a write checked under the old token commits before the new holder's token
//! exists, never after.

use std::time::Duration;

use super::PostgresStore;
use crate::vault::error::{EngineError, Result, StorageErrorKind};

/// Who holds a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Host name.
    pub host: String,
    /// This daemon's instance id (random per start): tells two daemons of one host apart.
    pub instance: String,
    /// Pid of the client process holding the session.
    pub pid: Option<u32>,
    /// Uid of that process.
    pub uid: Option<u32>,
}

impl Holder {
    /// From a row of `leases`' `host, instance, pid, uid`.
    fn from_row(r: &postgres::Row) -> Holder {
        let id = |i: usize| {
            r.get::<_, Option<i64>>(i)
                .and_then(|v| u32::try_from(v).ok())
        };
        Holder {
            host: r.get(0),
            instance: r.get(1),
            pid: id(2),
            uid: id(3),
        }
    }
}

/// Outcome of [`PostgresStore::acquire_lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours, with this fencing token.
    Token(i64),
    /// Another live holder has it.
    Busy(Holder),
}

fn fenced(message: String) -> EngineError {
    EngineError::Storage {
        kind: StorageErrorKind::Busy,
        message,
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Takes `session`'s lease for `ttl` if it is free, expired or already this instance's.
    /// Call with no transaction open (it commits at once).
    ///
    /// A lease that another instance holds, live, is answered `Busy` from the statement's
    /// snapshot, without touching the row: the holder's open group commit keeps the row
    /// locked `FOR SHARE` (its fencing check) for up to a flush interval, and an `ON CONFLICT
    /// DO UPDATE` would wait for that lock before finding the lease live.
    ///
    /// The update (a free, expired or own lease) waits for the row lock of a writer's open
    /// transaction (see the module doc), which may be a paused host's until PostgreSQL ends
    /// it ([`super::idle`]): its expiry is counted from when the row is written, not from when
    /// the statement began (`excluded`'s value would be that old, and the lease taken over
    /// would be born expired).
    pub fn acquire_lease(
        &mut self,
        session: i64,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Acquired> {
        let pid = holder.pid.map(i64::from);
        let uid = holder.uid.map(i64::from);
        if self.instance.as_deref() != Some(&holder.instance) {
            // Before the lease is ours: this daemon's writes of it must keep its
            // `cache_owner` from the first.
            super::conn::set_instance(self.client()?, &holder.instance)?;
            self.instance = Some(holder.instance.clone());
        }
        // The lease's time to live counts from before the statement: the database's expiry,
        // dated when the row is written, is never earlier than this host's.
        let since = super::cache::Stamp::now();
        // `cache_kept`: the row, locked, still named this instance as the owner of a current
        // cache of the session (no other instance's write since, see `cache`).
        let row = self.query_opt(
            "INSERT INTO leases AS l (session, token, host, instance, pid, uid, expires_at,
                                      cache_owner, cache_kept)
             SELECT $1, nextval('lease_token'), $2, $3, $4, $5,
                    clock_timestamp() + $6::bigint * interval '1 millisecond', $3, false
             WHERE NOT EXISTS (SELECT 1 FROM leases WHERE session = $1 AND instance <> $3
                               AND expires_at > clock_timestamp())
             ON CONFLICT (session) DO UPDATE SET token = nextval('lease_token'),
                 host = excluded.host, instance = excluded.instance, pid = excluded.pid,
                 uid = excluded.uid,
                 expires_at = clock_timestamp() + $6::bigint * interval '1 millisecond',
                 cache_owner = excluded.instance,
                 cache_kept = coalesce(l.cache_owner = excluded.instance, false)
             WHERE l.expires_at <= clock_timestamp() OR l.instance = excluded.instance
             RETURNING token, cache_kept",
            &[
                &session,
                &holder.host,
                &holder.instance,
                &pid,
                &uid,
                &millis(ttl),
            ],
        )?;
        if let Some(r) = row {
            let token: i64 = r.get(0);
            self.leases.insert(session, token);
            self.lost.remove(&session);
            self.cache.taken(session, r.get(1), since, ttl);
            return Ok(Acquired::Token(token));
        }
        let r = self.query_opt(
            "SELECT host, instance, pid, uid FROM leases WHERE session = $1",
            &[&session],
        )?;
        match r {
            Some(r) => Ok(Acquired::Busy(Holder::from_row(&r))),
            // Released between the two statements: try again.
            None => self.acquire_lease(session, holder, ttl),
        }
    }

    /// Extends every lease this store holds by `ttl` from now, if still unexpired and still
    /// ours; returns the sessions whose lease was lost (expired or taken over), which are
    /// forgotten. Call with no transaction open.
    pub fn renew_leases(&mut self, ttl: Duration) -> Result<Vec<i64>> {
        let held: Vec<(i64, i64)> = self.leases.iter().map(|(s, t)| (*s, *t)).collect();
        let mut lost = Vec::new();
        for (session, token) in held {
            let since = super::cache::Stamp::now();
            let n = self.exec(
                "UPDATE leases SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
                 WHERE session = $1 AND token = $2 AND expires_at > clock_timestamp()",
                &[&session, &token, &millis(ttl)],
            )?;
            if n == 0 {
                self.leases.remove(&session);
                self.lost.insert(session);
                self.cache.drop_session(session);
                lost.push(session);
            } else {
                self.cache.renewed(session, since, ttl);
            }
        }
        Ok(lost)
    }

    /// A live lease held by another daemon instance than `instance`, if any (`rekey` is
    /// refused while one exists: it would re-seal rows under a holder's feet).
    pub fn other_live_lease(&mut self, instance: &str) -> Result<Option<Holder>> {
        let r = self.query_opt(
            "SELECT host, instance, pid, uid FROM leases
             WHERE instance <> $1 AND expires_at > clock_timestamp() LIMIT 1",
            &[&instance],
        )?;
        Ok(r.map(|r| Holder::from_row(&r)))
    }

    /// The sessions whose lease this store holds.
    pub fn held_leases(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// Forgets that `session`'s lease was lost: no handle of this daemon holds the session
    /// exclusively any more, so its writes are checked as any non-holder's again.
    pub fn forget_lost_lease(&mut self, session: i64) {
        self.lost.remove(&session);
    }

    /// The sessions whose lease this store lost and still refuses writes of.
    pub fn lost_leases(&self) -> Vec<i64> {
        self.lost.iter().copied().collect()
    }

    /// Gives `session`'s lease back (if this store still holds it): it lapses at once. The
    /// row stays (the fencing check needs a row to lock). Call with no transaction open.
    pub fn release_lease(&mut self, session: i64) -> Result<()> {
        self.lost.remove(&session);
        if let Some(token) = self.leases.remove(&session) {
            self.cache.given_back(session);
            self.exec(
                "UPDATE leases SET expires_at = '-infinity' WHERE session = $1 AND token = $2",
                &[&session, &token],
            )?;
        }
        Ok(())
    }

    /// The fencing check before a write of `session`'s rows (see the module doc); once per
    /// session and transaction, the row lock holding until its end.
    pub(super) fn fence(&mut self, session: i64) -> Result<()> {
        if self.fenced.contains(&session)
            || self.fenced_in_savepoint.contains(&session)
            || self.admin_pass.contains(&session)
        {
            return Ok(());
        }
        // At once, not after the deferred writes: they are what it fences (see `Deferred`).
        // Joined with the session's row: a session deleted by any daemon has no row (see
        // `delete_session`, which first deletes the lease row, waiting for this lock).
        let check = "SELECT l.token, l.expires_at > clock_timestamp(), l.host, l.pid
                     FROM leases l JOIN sessions s ON s.id = l.session
                     WHERE l.session = $1 FOR SHARE OF l";
        let mut row = self.query_opt_now(check, &[&session])?;
        if row.is_none() {
            // No row to lock (a session never leased): a lapsed one is put in, so that a
            // lease taken meanwhile waits for this transaction like any takeover, instead of
            // inserting its row at once and holding a token before this write commits.
            self.query_opt_now(
                "INSERT INTO leases (session, token, host, instance, expires_at)
                 SELECT $1, 0, '', '', '-infinity'
                 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $1)
                 ON CONFLICT (session) DO NOTHING RETURNING session",
                &[&session],
            )?;
            row = self.query_opt_now(check, &[&session])?;
            if row.is_none() {
                // No session row: deleted by another daemon (this one's handles on it end at
                // its next coherence check). Its rows must not come back.
                return Err(EngineError::NoSuchSession {
                    name: "(deleted while open)".into(),
                });
            }
        }
        let live = row
            .as_ref()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, bool>(1)));
        match (self.leases.get(&session), live) {
            (Some(&mine), Some((token, true))) if token == mine => {}
            (Some(&mine), _) => {
                self.leases.remove(&session);
                self.lost.insert(session);
                self.cache.drop_session(session);
                return Err(fenced(format!(
                    "write refused: the lease of session id {session} lapsed or passed to \
                     another holder (fencing token {mine} is stale); re-open the session"
                )));
            }
            (None, Some((_, true))) => {
                let r = row.as_ref().expect("live implies a row");
                let host: String = r.get(2);
                let pid: Option<i64> = r.get(3);
                return Err(fenced(format!(
                    "write refused: session id {session} is leased by pid {} on host {host}",
                    pid.map_or("?".into(), |p| p.to_string())
                )));
            }
            (None, _) if self.lost.contains(&session) => {
                return Err(fenced(format!(
                    "write refused: the lease of session id {session} lapsed or passed to \
                     another holder while this vaultd held it; re-open the session"
                )));
            }
            (None, _) => {}
        }
        // A check made before the savepoint reached the server holds its lock for the
        // transaction, whatever becomes of the savepoint.
        if self.in_savepoint && self.deferred.sent {
            self.fenced_in_savepoint.push(session);
        } else {
            self.fenced.insert(session);
        }
        Ok(())
    }
}
