//! The sessions table in PostgreSQL: listing, creating, fencing and rewriting sessions.
//! The bodies of those `Store` methods; the trait impl in `mod.rs` forwards `x` to `do_x`.

use super::PostgresStore;
use super::rows::session_row;
use crate::vault::error::{EngineError, Result, StorageErrorKind};
use crate::vault::store::{SessionRow, Store, Table};

/// How long a delete waits for other daemons' open transactions that wrote the session
/// (their group commits, a flush interval or so) before it gives up with `storage` (busy).
pub const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl PostgresStore {
    pub(super) fn do_sessions(&mut self) -> Result<Vec<SessionRow>> {
        let rows = self.query(
            "SELECT id, name, created_at, updated_at, record FROM sessions ORDER BY name COLLATE \"C\"",
            &[],
        )?;
        Ok(rows.iter().map(session_row).collect())
    }

    pub(super) fn do_session(&mut self, id: i64) -> Result<Option<SessionRow>> {
        Ok(self
            .query_opt(
                "SELECT id, name, created_at, updated_at, record FROM sessions WHERE id = $1",
                &[&id],
            )?
            .as_ref()
            .map(session_row))
    }

    pub(super) fn do_insert_session(&mut self, name: &str, now: i64) -> Result<i64> {
        let row = self.query_opt(
            "INSERT INTO sessions (name, created_at, updated_at, record)
             VALUES ($1, $2, $2, ''::bytea) RETURNING id",
            &[&name, &now],
        )?;
        row.map(|r| r.get(0)).ok_or_else(|| EngineError::Storage {
            kind: StorageErrorKind::Other,
            message: "PostgreSQL returned no id for a new session".into(),
        })
    }

    pub(super) fn do_put_session_record(&mut self, id: i64, record: &[u8], now: i64) -> Result<()> {
        self.fence(id)?;
        self.exec(
            "UPDATE sessions SET record = $2, updated_at = $3 WHERE id = $1",
            &[&id, &record, &now],
        )?;
        Ok(())
    }

    pub(super) fn do_touch_session(&mut self, id: i64, now: i64) -> Result<()> {
        if self.deferring() {
            self.deferred_write(id);
            self.deferred.writes.touch(id, now);
            return self.bound_held();
        }
        self.fence(id)?;
        self.exec(
            "UPDATE sessions SET updated_at = $2 WHERE id = $1",
            &[&id, &now],
        )?;
        Ok(())
    }

    pub(super) fn do_rename_session(&mut self, id: i64, name: &str) -> Result<()> {
        self.fence(id)?;
        self.exec("UPDATE sessions SET name = $2 WHERE id = $1", &[&id, &name])?;
        Ok(())
    }

    pub(super) fn do_delete_session(&mut self, id: i64) -> Result<()> {
        // Bounded waits: a paused host's open transaction that wrote the session would hold
        // this delete (and so this daemon's storage thread, and every request behind it)
        // until PostgreSQL's idle timeout ends that transaction. A delete runs in a
        // transaction of its own, so the setting ends with it.
        self.batch(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            DELETE_WAIT.as_millis()
        ))?;
        // The fencing check (it may wait on another host's first write of the session, which
        // inserts its lease row), then, at once: deleting the lease row waits for every other
        // daemon's open transaction that wrote the session (each holds the row `FOR SHARE`
        // from its fencing check), so the clears below, each a statement of its own, see and
        // remove what those wrote; and every later write of the session, anywhere, is
        // refused by its check. (A write once slipped in after the clears and stayed as rows
        // of a deleted session.)
        let waited = self.fence(id).and_then(|()| {
            self.query_opt_now(
                "DELETE FROM leases WHERE session = $1 RETURNING session",
                &[&id],
            )
        });
        match waited {
            Ok(_) => {}
            Err(EngineError::Storage { message, .. })
                if message.starts_with("PostgreSQL 55P03") =>
            {
                return Err(EngineError::Storage {
                    kind: StorageErrorKind::Busy,
                    message: format!(
                        "session id {id} is being written in another vaultd's open \
                         transaction (a paused host, or a long group commit): the delete \
                         waited {} ms for it; try again",
                        DELETE_WAIT.as_millis()
                    ),
                });
            }
            Err(e) => return Err(e),
        }
        self.batch("SET LOCAL lock_timeout = DEFAULT")?;
        for table in Table::ALL {
            self.clear(table, id)?;
        }
        self.exec("DELETE FROM sessions WHERE id = $1", &[&id])?;
        Ok(())
    }
}
