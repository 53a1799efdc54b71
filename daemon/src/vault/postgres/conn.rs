//! The store's connection: opening and reconnecting it, its session settings, prepared
//! statements, and the query helpers every other part of the store goes through.

use std::collections::HashMap;

use postgres::{Client, Statement};

use super::deferred::{Deferred, Held};
use super::errors::pg_error;
use super::rows::data_row;
use super::{PgTarget, PostgresStore, begin_sql, idle};
use crate::vault::error::{EngineError, Result, StorageErrorKind};
use crate::vault::store::Row;

impl PostgresStore {
    /// Connects to `target`, checks that the database is empty or a Session Vault, and
    /// migrates it to [`super::SCHEMA_VERSION`]. A database newer than this build is refused.
    pub fn open(target: PgTarget) -> Result<Self> {
        let mut store = PostgresStore {
            client: None,
            statements: HashMap::new(),
            in_txn: false,
            leases: HashMap::new(),
            lost: Default::default(),
            fenced: Default::default(),
            admin_pass: Vec::new(),
            fenced_in_savepoint: Vec::new(),
            in_savepoint: false,
            deferred: Deferred::default(),
            held: Held::default(),
            send_each: false,
            manifest_seen: None,
            manifest_at_begin: None,
            manifest_at_savepoint: None,
            begin_sql: begin_sql(None),
            idle_in_force: None,
            cache: Default::default(),
            instance: None,
            data_key_id: None,
            point_reads: 0,
            target,
        };
        store.connect()?;
        store.log_idle_timeout();
        store.migrate()?;
        Ok(store)
    }

    /// Says at startup how long PostgreSQL lets this daemon's transactions sit idle, and
    /// warns where the database's own setting is shorter than the default (it may end this
    /// daemon's healthy group commits).
    pub(super) fn log_idle_timeout(&self) {
        let Some(now) = &self.idle_in_force else {
            return;
        };
        let ms = now.timeout.as_millis() as u64;
        match self.target.idle_timeout() {
            idle::IdleTimeout::Default(t) if now.source != "session" && now.timeout < t => {
                tracing::warn!(
                    idle_in_transaction_session_timeout_ms = ms,
                    source = %now.source,
                    default_ms = t.as_millis() as u64,
                    "PostgreSQL's idle_in_transaction_session_timeout, set on the role or \
                     database, is shorter than vaultd's default: it may end this vaultd's own \
                     group commits (keep it well above --flush-interval-ms), or set \
                     --store-idle-transaction-timeout"
                );
            }
            idle::IdleTimeout::Unset => {}
            _ if now.timeout.is_zero() => tracing::warn!(
                "PostgreSQL idle_in_transaction_session_timeout is off: a paused vaultd holds \
                 its locks (lease takeovers, rekey) until it resumes"
            ),
            _ => tracing::info!(
                idle_in_transaction_session_timeout_ms = ms,
                source = %now.source,
                "PostgreSQL ends a transaction of this vaultd left idle this long (a paused host)"
            ),
        }
    }

    /// How many rows the transaction holds written but not sent (tests).
    #[cfg(test)]
    pub fn held_rows(&self) -> usize {
        self.held.rows()
    }

    /// How many point reads were sent to the server (tests).
    #[cfg(test)]
    pub fn point_reads(&self) -> u64 {
        self.point_reads
    }

    /// The connection string, without its password.
    pub fn display(&self) -> &str {
        self.target.display()
    }

    pub(super) fn connect(&mut self) -> Result<&mut Client> {
        refuse_inline()?;
        self.statements.clear();
        let mut client = self.target.connect()?;
        // Durable-class writes are answered after `COMMIT` returns: it must mean "flushed".
        client
            .batch_execute(
                "SET synchronous_commit = on; SET client_min_messages = warning; \
                 SET standard_conforming_strings = on",
            )
            .map_err(pg_error)?;
        // A paused `vaultd`'s open transaction must not hold its locks for as long as the
        // pause lasts (see `idle`).
        self.idle_in_force = Some(idle::apply(&mut client, self.target.idle_timeout())?);
        if let Some(instance) = &self.instance {
            set_instance(&mut client, instance)?;
        }
        Ok(self.client.insert(client))
    }

    /// The `idle_in_transaction_session_timeout` in force on the current connection, and
    /// where it came from (see [`idle`]); `None` before the first connection.
    pub fn idle_timeout_in_force(&self) -> Option<&idle::InForce> {
        self.idle_in_force.as_ref()
    }

    /// The live connection; reconnects first if it died outside a transaction.
    pub(super) fn client(&mut self) -> Result<&mut Client> {
        refuse_inline()?;
        let dead = self.client.as_ref().is_none_or(Client::is_closed);
        if dead {
            if self.in_txn {
                return Err(EngineError::Storage {
                    kind: StorageErrorKind::Io,
                    message: "the connection to PostgreSQL was lost with the open transaction"
                        .into(),
                });
            }
            self.client = None;
            return self.connect();
        }
        Ok(self.client.as_mut().expect("checked alive above"))
    }

    /// The prepared statement for `sql` on the current connection.
    pub(super) fn stmt(&mut self, sql: &'static str) -> Result<(&mut Client, Statement)> {
        refuse_inline()?;
        let client_alive = self.client.as_ref().is_some_and(|c| !c.is_closed());
        if !client_alive {
            self.client()?;
        }
        let client = self.client.as_mut().expect("connected above");
        let stmt = match self.statements.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = client.prepare(sql).map_err(pg_error)?;
                self.statements.insert(sql, s.clone());
                s
            }
        };
        Ok((client, stmt))
    }

    pub(super) fn exec(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        self.sync()?;
        let (client, stmt) = self.stmt(sql)?;
        client.execute(&stmt, params).map_err(pg_error)
    }

    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        self.sync()?;
        let (client, stmt) = self.stmt(sql)?;
        client.query(&stmt, params).map_err(pg_error)
    }

    /// The rows `sql` (`SELECT k, v, <index 1>, <index 2> … WHERE session = $1`) selects,
    /// each with what it says of the two index columns.
    pub(super) fn scan_with_indexes<T: postgres::types::FromSqlOwned>(
        &mut self,
        sql: &'static str,
        session: i64,
    ) -> Result<Vec<(Row, [T; 2])>> {
        Ok(self
            .query(sql, &[&session])?
            .iter()
            .map(|r| (data_row(r), [r.get(2), r.get(3)]))
            .collect())
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<postgres::Row>> {
        self.sync()?;
        self.query_opt_now(sql, params)
    }

    /// [`Self::query_opt`] without sending the deferred writes first (for the fencing check
    /// and for reads the deferred writes cannot change).
    pub(super) fn query_opt_now(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<postgres::Row>> {
        let (client, stmt) = self.stmt(sql)?;
        client.query_opt(&stmt, params).map_err(pg_error)
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<()> {
        self.sync()?;
        self.client()?.batch_execute(sql).map_err(pg_error)
    }

    pub(super) fn not_a_vault(&self, reason: String) -> EngineError {
        EngineError::NotAVault {
            path: self.target.display().into(),
            reason,
        }
    }

    pub(super) fn meta(&mut self, k: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .query_opt("SELECT v FROM meta WHERE k = $1", &[&k])?
            .map(|r| r.get(0)))
    }

    pub(super) fn put_meta(&mut self, k: &str, v: &[u8]) -> Result<()> {
        self.exec(
            "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            &[&k, &v],
        )?;
        Ok(())
    }
}

/// Names this daemon instance on `client`'s connection (`session_vault.instance`, read by the
/// trigger that keeps each lease's `cache_owner`: see [`super::cache`]).
pub(super) fn set_instance(client: &mut Client, instance: &str) -> Result<()> {
    client
        .execute(
            "SELECT set_config('session_vault.instance', $1, false)",
            &[&instance],
        )
        .map_err(pg_error)?;
    Ok(())
}

/// Every statement goes through the connection, which must not be used on a runtime thread
/// (the client's own runtime would be entered from another): a job running inline there
/// ([`crate::vault::worker::running_inline`]) is refused before any statement, and queued
/// for the storage thread. What the store answers without a statement (the held writes, the
/// lease holder's cache) it answers inline.
pub(super) fn refuse_inline() -> Result<()> {
    if crate::vault::worker::running_inline() {
        return Err(EngineError::NotInline);
    }
    Ok(())
}
