//! Transactions and savepoints of the PostgreSQL store: `BEGIN` with the data-key check,
//! `COMMIT` with the held writes, and the operation savepoints, sent lazily. The bodies of
//! those `Store` methods; the trait impl in `mod.rs` forwards `x` to `do_x`.

use super::deferred::Deferred;
use super::errors::pg_error;
use super::{HELD_MAX, PostgresStore, idle};
use crate::vault::error::Result;
use crate::vault::store::Store;

impl PostgresStore {
    pub(super) fn do_begin(&mut self) -> Result<()> {
        let sql = std::mem::take(&mut self.begin_sql);
        let begun = self.batch(&sql);
        self.begin_sql = sql;
        if let Err(e) = begun {
            // The server's transaction (if `BEGIN` ran) is aborted: end it.
            if let Some(c) = self.client.as_mut().filter(|c| !c.is_closed()) {
                let _ = c.batch_execute("ROLLBACK");
            }
            return Err(e);
        }
        self.in_txn = true;
        self.cache.begun();
        self.manifest_at_begin = self.manifest_seen.clone();
        Ok(())
    }

    pub(super) fn do_commit(&mut self) -> Result<()> {
        // The held writes and `COMMIT` in one round trip.
        let done = (|| {
            if self.in_savepoint {
                self.sync()?;
            }
            let mut sql = String::new();
            let held = std::mem::take(&mut self.held);
            held.tell(self.cache.sending());
            held.render(&mut sql);
            sql.push_str("COMMIT");
            self.client()?.batch_execute(&sql).map_err(pg_error)
        })();
        match &done {
            Ok(()) => self.cache.committed(),
            Err(_) => self.cache.commit_failed(),
        }
        self.end_txn();
        self.send_each = done.is_err();
        if done.is_err() {
            // A held write failed before `COMMIT` ran: the server's transaction is still open
            // (aborted). End it, so the next `BEGIN` starts afresh.
            if let Some(c) = self.client.as_mut().filter(|c| !c.is_closed()) {
                let _ = c.batch_execute("ROLLBACK");
            }
        }
        done
    }

    pub(super) fn do_begin_snapshot(&mut self) -> Result<()> {
        // No data-key check: nothing is written, and a copy runs with the vault locked. Not
        // ended for sitting idle: the copy waits on its target between reads (see `idle`).
        self.batch(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {}",
            idle::NO_TIMEOUT_LOCAL
        ))?;
        self.in_txn = true;
        self.manifest_at_begin = self.manifest_seen.clone();
        Ok(())
    }

    pub(super) fn do_rollback(&mut self) -> Result<()> {
        let was = self.in_txn;
        self.end_txn();
        if was {
            self.manifest_seen = self.manifest_at_begin.take();
            self.cache.rolled_back();
        }
        match self.client.as_mut() {
            // A dead connection took its transaction with it: nothing to roll back.
            Some(c) if was && !c.is_closed() => c.batch_execute("ROLLBACK").map_err(pg_error),
            _ => Ok(()),
        }
    }

    pub(super) fn do_savepoint(&mut self) -> Result<()> {
        // Not sent yet: `SAVEPOINT` goes with the operation's first statement that must be
        // inside it, or with its deferred writes at `release_op`; an operation that only
        // reads costs no savepoint round trip. The transaction's held writes stay held.
        if self.in_savepoint {
            self.sync()?;
        }
        self.in_savepoint = true;
        self.deferred = Deferred::default();
        self.manifest_at_savepoint = self.manifest_seen.clone();
        Ok(())
    }

    pub(super) fn do_release(&mut self) -> Result<()> {
        match self.release_op()? {
            Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn do_release_op(&mut self) -> Result<Result<()>> {
        if !self.in_savepoint {
            return Ok(Ok(()));
        }
        if !self.deferred.sent && self.deferred.writes.is_empty() {
            // Nothing reached the server inside the savepoint: nothing to release.
            self.end_savepoint();
            return Ok(Ok(()));
        }
        // The fencing checks; then, if the savepoint reached the server, `RELEASE op`. The
        // operation's writes join the transaction's held writes (sent at `COMMIT`).
        if let Err(e) = self.fence_deferred() {
            self.rollback_to_savepoint()?;
            return Ok(Err(e));
        }
        if self.send_each && !self.deferred.writes.is_empty() {
            // Since a failed commit: `SAVEPOINT op; writes` now, `RELEASE op` below.
            if let Err(e) = self.sync() {
                self.rollback_to_savepoint()?;
                return Ok(Err(e));
            }
        }
        if self.deferred.sent {
            // A statement failed (a constraint, a conflict): the server stopped at it, the
            // transaction waits for `ROLLBACK TO op`, which keeps the other operations' writes.
            // If that fails too (the connection is gone), the transaction is lost.
            if let Err(e) = self.client()?.batch_execute("RELEASE op").map_err(pg_error) {
                self.rollback_to_savepoint()?;
                return Ok(Err(e));
            }
        }
        let writes = std::mem::take(&mut self.deferred.writes);
        self.held.absorb(writes);
        self.end_savepoint();
        if self.held.bytes() >= HELD_MAX {
            // Outside the savepoint now: an error here is the transaction's.
            self.sync()?;
        }
        Ok(Ok(()))
    }

    pub(super) fn do_unguarded_op(&mut self) -> Result<bool> {
        // A savepoint costs nothing here until a statement must run inside it, and the
        // operation's writes are held on the client until it ends: keep the savepoint.
        self.savepoint().map(|()| false)
    }

    pub(super) fn do_rollback_to_savepoint(&mut self) -> Result<()> {
        if !self.in_savepoint {
            // Already rolled back (by `release_op`, whose caller may roll back again).
            return Ok(());
        }
        // Row locks taken inside the savepoint are released with it: check again next time.
        self.in_savepoint = false;
        self.fenced_in_savepoint.clear();
        self.admin_pass.clear();
        self.manifest_seen = self.manifest_at_savepoint.take();
        let sent = std::mem::take(&mut self.deferred).sent;
        if !sent {
            // The server never saw the savepoint nor anything done inside it.
            return Ok(());
        }
        self.client()?
            .batch_execute("ROLLBACK TO op; RELEASE op")
            .map_err(pg_error)
    }
}
