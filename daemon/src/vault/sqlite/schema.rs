//! The schema of the vault file: its application id and the numbered migrations.

/// `PRAGMA application_id` of a Session Vault database ("SVLT").
pub const APPLICATION_ID: i32 = 0x5356_4c54;

/// The schema, one entry per version; `MIGRATIONS[n]` takes a database from version `n` to
/// `n + 1`. Append only: a released step is never edited.
pub const MIGRATIONS: &[&str] = &[
    // 1: header, keyslots, sessions and the first per-session tables.
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
     CREATE TABLE keyslots (
         slot INTEGER PRIMARY KEY, kind TEXT NOT NULL,
         m_cost INTEGER NOT NULL, t_cost INTEGER NOT NULL, p_cost INTEGER NOT NULL,
         salt BLOB NOT NULL, wrapped BLOB NOT NULL, check_sum BLOB NOT NULL);
     CREATE TABLE sessions (
         id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
         created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, record BLOB NOT NULL);
     CREATE TABLE dc_options (session INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
         i1 BLOB, i2 BLOB, UNIQUE (session, k));
     CREATE TABLE peers (session INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
         i1 BLOB, i2 BLOB, UNIQUE (session, k));
     CREATE TABLE state (session INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
         i1 BLOB, i2 BLOB, UNIQUE (session, k));
     CREATE TABLE channels (session INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
         i1 BLOB, i2 BLOB, UNIQUE (session, k));",
    // 2: Telethon's sent-file cache, and blind-index lookups of peers by username and phone.
    "CREATE TABLE sent_files (session INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,
         i1 BLOB, i2 BLOB, UNIQUE (session, k));
     CREATE INDEX peers_username ON peers (session, i1) WHERE i1 IS NOT NULL;
     CREATE INDEX peers_phone ON peers (session, i2) WHERE i2 IS NOT NULL;",
    // 3: record format 2 (records carry the vault generation, plaintexts padded) and the
    // sealed manifest in `meta` (`engine::manifest`). No table changes: the version bump keeps
    // older builds, which cannot read format-2 records, from opening the vault at all
    // (`UnsupportedFormat`) instead of failing on every rewritten record as `Corrupt`.
    "",
    // 4: the audit log (`engine::audit`): one sealed entry per row, numbered from 1 without
    // gaps; its sealed head (last number and hash) is `meta.audit_head`.
    "CREATE TABLE audit (seq INTEGER PRIMARY KEY, entry BLOB NOT NULL);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;
