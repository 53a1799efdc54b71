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
    // 5: peers numbered in insertion order within each session's range of rowids (session id
    // × 2³² + n), without the `UNIQUE (session, k)` index, whose random keys made every group
    // commit rewrite most of its leaves; the store finds a peer's row by key through a map in
    // memory (`sqlite::peer_keys`). Existing rows keep their order.
    // The rowid is a declared column (`id`), which no `VACUUM` renumbers.
    "CREATE TABLE peers_v5 (id INTEGER PRIMARY KEY, session INTEGER NOT NULL,
         k BLOB NOT NULL, v BLOB NOT NULL, i1 BLOB, i2 BLOB);
     INSERT INTO peers_v5 (id, session, k, v, i1, i2)
         SELECT session * 4294967296 + row_number() OVER (PARTITION BY session ORDER BY rowid),
                session, k, v, i1, i2
         FROM peers;
     DROP TABLE peers;
     ALTER TABLE peers_v5 RENAME TO peers;
     CREATE INDEX peers_username ON peers (session, i1) WHERE i1 IS NOT NULL;
     CREATE INDEX peers_phone ON peers (session, i2) WHERE i2 IS NOT NULL;",
    // 6: peers found by username and phone through the same map in memory (their blind index
    // values, random like the keys, made each new named peer two random B-tree inserts and
    // each group commit a rewrite of those indexes' leaves); the columns stay.
    "DROP INDEX peers_username;
     DROP INDEX peers_phone;",
];

/// The first schema version whose peers are numbered in insertion order per session and found
/// through [`super::peer_keys`].
pub const PEERS_BY_ROWID: u32 = 5;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;
