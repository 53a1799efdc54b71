//! The plain baseline: an unencrypted session database with plain columns, written the way
//! a bot's own session file would be, with the vault store's pragmas.

use std::path::Path;
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, params};
use session_vault_proto::model::{ChannelKind, DcOption, Peer, PeerKey, PeerKind};

use super::FLUSH;

/// An unencrypted session database with plain columns, as a bot's own session file would be.
pub(super) struct Plain {
    pub(super) conn: Connection,
    in_txn: bool,
    dirty_since: Option<Instant>,
}

const PLAIN_SCHEMA: &str = "
    CREATE TABLE peers (
        session INTEGER NOT NULL, kind INTEGER NOT NULL, id INTEGER NOT NULL,
        access_hash INTEGER, bot INTEGER, is_self INTEGER, channel_kind INTEGER,
        username TEXT, username_lc TEXT, phone TEXT, name TEXT,
        PRIMARY KEY (session, kind, id));
    CREATE INDEX peers_username ON peers (session, username_lc) WHERE username_lc IS NOT NULL;
    CREATE TABLE dc_options (
        session INTEGER NOT NULL, id INTEGER NOT NULL,
        ipv4 TEXT, ipv6 TEXT, auth_key BLOB, PRIMARY KEY (session, id));
    CREATE TABLE channel_state (
        session INTEGER NOT NULL, id INTEGER NOT NULL, pts INTEGER NOT NULL,
        PRIMARY KEY (session, id));";

fn kind_int(k: PeerKind) -> i64 {
    match k {
        PeerKind::User => 1,
        PeerKind::Chat => 2,
        PeerKind::Channel => 3,
    }
}

fn kind_of(i: i64) -> PeerKind {
    match i {
        2 => PeerKind::Chat,
        3 => PeerKind::Channel,
        _ => PeerKind::User,
    }
}

fn channel_kind_int(k: ChannelKind) -> i64 {
    match k {
        ChannelKind::Broadcast => 1,
        ChannelKind::Megagroup => 2,
        ChannelKind::Gigagroup => 3,
        ChannelKind::Community => 4,
    }
}

fn channel_kind_of(i: i64) -> ChannelKind {
    match i {
        1 => ChannelKind::Broadcast,
        3 => ChannelKind::Gigagroup,
        4 => ChannelKind::Community,
        _ => ChannelKind::Megagroup,
    }
}

fn plain_peer(r: &rusqlite::Row<'_>) -> rusqlite::Result<Peer> {
    Ok(Peer {
        kind: kind_of(r.get(0)?),
        id: r.get(1)?,
        access_hash: r.get(2)?,
        bot: r.get(3)?,
        is_self: r.get(4)?,
        channel_kind: r.get::<_, Option<i64>>(5)?.map(channel_kind_of),
        username: r.get(6)?,
        phone: r.get(7)?,
        name: r.get(8)?,
    })
}

/// The vault's normalization (lower case, no leading `@`), so both sides do the same work.
fn normalize_username(u: &str) -> String {
    u.trim_start_matches('@').to_lowercase()
}

impl Plain {
    pub(super) fn open(path: &Path) -> Plain {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA secure_delete = ON;",
        )
        .unwrap();
        conn.execute_batch(PLAIN_SCHEMA).unwrap();
        conn.set_prepared_statement_cache_capacity(64);
        Plain {
            conn,
            in_txn: false,
            dirty_since: None,
        }
    }

    /// Runs `f` like the vault runs a cache-class write: inside one open transaction that is
    /// committed (fsynced) once it has been dirty for the flush interval.
    pub(super) fn cache_write(&mut self, f: impl FnOnce(&Connection)) {
        if !self.in_txn {
            self.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            self.in_txn = true;
        }
        f(&self.conn);
        let since = *self.dirty_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= FLUSH {
            self.flush();
        }
    }

    /// Commits whatever `cache_write` left open.
    pub(super) fn flush(&mut self) {
        if self.in_txn {
            self.conn.execute_batch("COMMIT").unwrap();
            self.in_txn = false;
            self.dirty_since = None;
        }
    }

    /// Upserts peers, merging like the vault (a known field wins, an unknown one is kept).
    pub(super) fn upsert_peers(conn: &Connection, session: i64, peers: &[Peer]) {
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO peers (session, kind, id, access_hash, bot, is_self, channel_kind,
                                    username, username_lc, phone, name)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (session, kind, id) DO UPDATE SET
                    access_hash = coalesce(excluded.access_hash, access_hash),
                    bot = coalesce(excluded.bot, bot),
                    is_self = coalesce(excluded.is_self, is_self),
                    channel_kind = coalesce(excluded.channel_kind, channel_kind),
                    username = coalesce(excluded.username, username),
                    username_lc = coalesce(excluded.username_lc, username_lc),
                    phone = coalesce(excluded.phone, phone),
                    name = coalesce(excluded.name, name)",
            )
            .unwrap();
        for p in peers {
            stmt.execute(params![
                session,
                kind_int(p.kind),
                p.id,
                p.access_hash,
                p.bot,
                p.is_self,
                p.channel_kind.map(channel_kind_int),
                p.username,
                p.username.as_deref().map(normalize_username),
                p.phone,
                p.name,
            ])
            .unwrap();
        }
    }

    pub(super) fn peer(&self, session: i64, key: PeerKey) -> Option<Peer> {
        self.conn
            .prepare_cached(
                "SELECT kind, id, access_hash, bot, is_self, channel_kind, username, phone, name
                 FROM peers WHERE session = ?1 AND kind = ?2 AND id = ?3",
            )
            .unwrap()
            .query_row(params![session, kind_int(key.kind), key.id], plain_peer)
            .optional()
            .unwrap()
    }

    pub(super) fn peer_by_username(&self, session: i64, username: &str) -> Option<Peer> {
        let u = normalize_username(username);
        if u.is_empty() {
            return None;
        }
        self.conn
            .prepare_cached(
                "SELECT kind, id, access_hash, bot, is_self, channel_kind, username, phone, name
                 FROM peers WHERE session = ?1 AND username_lc = ?2",
            )
            .unwrap()
            .query_row(params![session, u], plain_peer)
            .optional()
            .unwrap()
    }

    pub(super) fn set_dc_option(conn: &Connection, session: i64, dc: &DcOption) {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO dc_options (session, id, ipv4, ipv6, auth_key)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .unwrap()
        .execute(params![
            session,
            dc.id,
            dc.ipv4.map(|a| a.to_string()),
            dc.ipv6.map(|a| a.to_string()),
            dc.auth_key.as_ref().map(|k| &k.as_bytes()[..]),
        ])
        .unwrap();
    }

    pub(super) fn set_channel_pts(conn: &Connection, session: i64, id: i64, pts: i32) {
        conn.prepare_cached("UPDATE channel_state SET pts = ?3 WHERE session = ?1 AND id = ?2")
            .unwrap()
            .execute(params![session, id, pts])
            .unwrap();
    }
}
