//! The PostgreSQL store's schema: [`MIGRATIONS`], numbered, each run in its own transaction
//! under an advisory lock, so that two daemons starting at once migrate once.

use super::PostgresStore;
use super::errors::pg_error;
use crate::vault::error::{EngineError, Result};

/// The schema, one entry per version; `MIGRATIONS[n]` takes a database from version `n` to
/// `n + 1`. Append only: a released step is never edited. Version 1 holds what SQLite's
/// schema version 3 holds (record format 2 and the sealed manifest).
pub const MIGRATIONS: &[&str] = &[
    // 1: header, keyslots, sessions and the per-session tables of sealed rows.
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v BYTEA NOT NULL);
     CREATE TABLE keyslots (
         slot BIGINT PRIMARY KEY, kind TEXT NOT NULL,
         m_cost BIGINT NOT NULL, t_cost BIGINT NOT NULL, p_cost BIGINT NOT NULL,
         salt BYTEA NOT NULL, wrapped BYTEA NOT NULL, check_sum BYTEA NOT NULL);
     CREATE TABLE sessions (
         id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name TEXT NOT NULL UNIQUE,
         created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, record BYTEA NOT NULL);
     CREATE SEQUENCE row_seq;
     CREATE TABLE dc_options (seq BIGINT NOT NULL DEFAULT nextval('row_seq'),
         session BIGINT NOT NULL, k BYTEA NOT NULL, v BYTEA NOT NULL, i1 BYTEA, i2 BYTEA,
         PRIMARY KEY (session, k));
     CREATE TABLE peers (seq BIGINT NOT NULL DEFAULT nextval('row_seq'),
         session BIGINT NOT NULL, k BYTEA NOT NULL, v BYTEA NOT NULL, i1 BYTEA, i2 BYTEA,
         PRIMARY KEY (session, k));
     CREATE TABLE state (seq BIGINT NOT NULL DEFAULT nextval('row_seq'),
         session BIGINT NOT NULL, k BYTEA NOT NULL, v BYTEA NOT NULL, i1 BYTEA, i2 BYTEA,
         PRIMARY KEY (session, k));
     CREATE TABLE channels (seq BIGINT NOT NULL DEFAULT nextval('row_seq'),
         session BIGINT NOT NULL, k BYTEA NOT NULL, v BYTEA NOT NULL, i1 BYTEA, i2 BYTEA,
         PRIMARY KEY (session, k));
     CREATE TABLE sent_files (seq BIGINT NOT NULL DEFAULT nextval('row_seq'),
         session BIGINT NOT NULL, k BYTEA NOT NULL, v BYTEA NOT NULL, i1 BYTEA, i2 BYTEA,
         PRIMARY KEY (session, k));
     CREATE INDEX channels_order ON channels (session, seq);
     CREATE INDEX peers_username ON peers (session, i1) WHERE i1 IS NOT NULL;
     CREATE INDEX peers_phone ON peers (session, i2) WHERE i2 IS NOT NULL;",
    // 2: leases across hosts with fencing tokens (`lease`).
    "CREATE SEQUENCE lease_token;
     CREATE TABLE leases (session BIGINT PRIMARY KEY, token BIGINT NOT NULL,
         host TEXT NOT NULL, instance TEXT NOT NULL, pid BIGINT, uid BIGINT,
         expires_at TIMESTAMPTZ NOT NULL);",
    // 3: the audit log (`engine::audit`), one sealed entry per row; its sealed head is
    // `meta.audit_head`, as in SQLite's schema 4.
    "CREATE TABLE audit (seq BIGINT PRIMARY KEY, entry BYTEA NOT NULL);",
    // 4: the peers' table in `seq` order per session, for a client's warm start
    // (`scan_page`): a page reads its rows from the index instead of sorting the session.
    "CREATE INDEX peers_order ON peers (session, seq);",
    // 5: the lease holder's row cache (`cache`): `cache_owner` names the daemon instance
    // whose cache of the session is current; any other instance's write of the session's
    // rows clears it (this trigger, so that daemons of every version take part), and a take
    // of the lease says in `cache_kept` whether it still named the taker.
    "ALTER TABLE leases ADD COLUMN cache_owner TEXT,
         ADD COLUMN cache_kept BOOLEAN NOT NULL DEFAULT false;
     CREATE FUNCTION session_vault_unown() RETURNS trigger LANGUAGE plpgsql AS $f$
     BEGIN
         UPDATE leases SET cache_owner = NULL
          WHERE cache_owner IS NOT NULL
            AND cache_owner IS DISTINCT FROM current_setting('session_vault.instance', true)
            AND session IN (SELECT DISTINCT session FROM changed);
         RETURN NULL;
     END $f$;
     CREATE TRIGGER dc_options_i AFTER INSERT ON dc_options REFERENCING NEW TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER dc_options_u AFTER UPDATE ON dc_options REFERENCING NEW TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER dc_options_d AFTER DELETE ON dc_options REFERENCING OLD TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER peers_i AFTER INSERT ON peers REFERENCING NEW TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER peers_u AFTER UPDATE ON peers REFERENCING NEW TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER peers_d AFTER DELETE ON peers REFERENCING OLD TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER state_i AFTER INSERT ON state REFERENCING NEW TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER state_u AFTER UPDATE ON state REFERENCING NEW TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER state_d AFTER DELETE ON state REFERENCING OLD TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER channels_i AFTER INSERT ON channels REFERENCING NEW TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER channels_u AFTER UPDATE ON channels REFERENCING NEW TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER channels_d AFTER DELETE ON channels REFERENCING OLD TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER sent_files_i AFTER INSERT ON sent_files REFERENCING NEW TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER sent_files_u AFTER UPDATE ON sent_files REFERENCING NEW TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();
     CREATE TRIGGER sent_files_d AFTER DELETE ON sent_files REFERENCING OLD TABLE AS changed
         FOR EACH STATEMENT EXECUTE FUNCTION session_vault_unown();",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The advisory lock key that serializes migrations ("SVLT", as SQLite's application id).
const MIGRATION_LOCK: i64 = 0x5356_4c54;

impl PostgresStore {
    /// Runs every missing step of [`MIGRATIONS`], each in its own transaction, under an
    /// advisory lock held for the transaction.
    pub(super) fn migrate(&mut self) -> Result<()> {
        let shown = self.target.display().to_owned();
        let not_a_vault = |reason: String| EngineError::NotAVault {
            path: shown.clone().into(),
            reason,
        };
        loop {
            let client = self.client()?;
            let mut tx = client.transaction().map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .map_err(pg_error)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS session_vault_schema (
                     application TEXT NOT NULL, version INTEGER NOT NULL)",
            )
            .map_err(pg_error)?;
            let row = tx
                .query_opt("SELECT application, version FROM session_vault_schema", &[])
                .map_err(pg_error)?;
            let version = match row {
                Some(r) => {
                    let app: String = r.get(0);
                    if app != "session-vault" {
                        return Err(not_a_vault(format!("schema belongs to {app:?}")));
                    }
                    r.get::<_, i32>(1) as u32
                }
                None => {
                    let foreign: i64 = tx
                        .query_one(
                            "SELECT count(*) FROM information_schema.tables
                             WHERE table_schema = current_schema()
                               AND table_name <> 'session_vault_schema'",
                            &[],
                        )
                        .map_err(pg_error)?
                        .get(0);
                    if foreign != 0 {
                        return Err(not_a_vault(format!(
                            "the schema holds {foreign} other tables and no Session Vault marker"
                        )));
                    }
                    tx.execute(
                        "INSERT INTO session_vault_schema VALUES ('session-vault', 0)",
                        &[],
                    )
                    .map_err(pg_error)?;
                    0
                }
            };
            if version > SCHEMA_VERSION {
                return Err(EngineError::UnsupportedFormat {
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            if version == SCHEMA_VERSION {
                tx.commit().map_err(pg_error)?;
                return Ok(());
            }
            tx.batch_execute(MIGRATIONS[version as usize])
                .map_err(pg_error)?;
            tx.execute(
                "UPDATE session_vault_schema SET version = $1",
                &[&(version as i32 + 1)],
            )
            .map_err(pg_error)?;
            tx.commit().map_err(pg_error)?;
            tracing::info!(store = %shown, version = version + 1, "vault schema migrated");
        }
    }
}
