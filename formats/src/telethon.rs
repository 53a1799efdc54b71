//! Telethon: the `SQLiteSession` file (the string lives in [`super::telethon_string`]).
//!
//! Checked against `telethon/sessions/sqlite.py`, `memory.py` and `string.py` of Telethon
//! 0.16, 0.17, 0.18, 1.4, 1.40, 1.41, 1.42, 1.43, 1.44 and 1.45, and against
//! `client/telegrambaseclient.py` (1.40/1.45) for the self-user convention.
//!
//! SQLite schema versions (the `version` table), from the migrations in `sqlite.py`:
//!
//! | v | change | importer |
//! | - | ------ | -------- |
//! | 1 | `sessions(dc_id, server_address, port, auth_key)`, `entities(id, hash, username, phone, name)` | read |
//! | 2 | an older `sent_files` table | its rows are skipped: Telethon drops that table on upgrade |
//! | 3 | `sent_files(md5_digest, file_size, type, id, hash)` | read |
//! | 4 | `update_state(id, pts, qts, date, seq)` | read |
//! | 5 | `sessions.takeout_id` | read |
//! | 6 | entities deleted ("potentially all access hashes for User and Channel are wrong") | entities of files below v6 are skipped, as Telethon would delete them |
//! | 7 | `entities.date` | newest row wins a username |
//! | 8 | `sessions.tmp_auth_key` (Telethon ≥ 1.43; written when `store_tmp_auth_key_on_disk`) | read; written empty |
//!
//! Files above v8 are refused: a future Telethon may have changed what columns mean.
//!
//! Conventions honoured: entity ids are marked (users positive, chats `-id`, channels
//! `-100…`); chats carry hash 0 (no access hash); usernames are stored lower-case; the
//! logged-in user is the row with id 0 whose hash is the user's id (Telethon's
//! `_save_states_and_entities`); `update_state` row 0 is the account state and every other
//! row a channel's pts. Telethon does not record whether the account is a bot.
//!
//! `StringSession`: `'1'` + URL-safe base64 of `>B{4|16}sH256s` (DC id, packed IP, port,
//! key): 353 characters for IPv4 and 369 for IPv6 with padding, which copies often lose.

use std::net::IpAddr;
use std::path::Path;

use rusqlite::{Connection, params};
use session_vault_proto::model::{
    AuthKey, ChannelState, DcOption, Peer, PeerKind, SelfUser, SentFile, SessionData,
    SessionExtras, TmpAuthKey, UpdatesState,
};
use zeroize::Zeroizing;

use super::peer_rows::{PeerQuery, unreadable};
use super::sqlite_io::{SqliteSource, text_value, write_database};
use super::telethon_string::home_address;
use super::{
    ErrorKind, Format, FormatError, Imported, Progress, dc_at, dc_table_with, home_option,
    known_dc, mark,
};

/// The newest schema version this importer knows.
pub(crate) const CURRENT_VERSION: i64 = 8;

const F: Format = Format::TelethonSqlite;

fn sql_err(e: rusqlite::Error) -> FormatError {
    unreadable(F, e)
}

pub(crate) fn parse_sqlite(
    db: &SqliteSource,
    progress: Progress<'_>,
) -> Result<Imported, FormatError> {
    let version = schema_version(db)?;
    let mut notes = Vec::new();
    let session = read_session_row(db, &mut notes)?;
    let (self_id, peers) = read_entities(db, version, &mut notes, progress)?;
    let updates_state = read_update_state(db)?;
    let sent_files = read_sent_files(db, version, &mut notes)?;
    Ok(Imported {
        data: SessionData {
            home_dc: session.home.id,
            dc_options: dc_table_with(session.home),
            self_user: self_id.map(|id| SelfUser { id, bot: false }),
            peers,
            updates_state,
            sent_files,
            extras: SessionExtras {
                takeout_id: session.takeout_id,
                tmp_auth_key: session.tmp_auth_key,
                api_id: None,
                test_mode: false,
            },
        },
        format: F,
        version: Some(format!("schema v{version}")),
        notes,
    })
}

/// The schema version (the `version` table), refused outside 1 to [`CURRENT_VERSION`].
fn schema_version(db: &SqliteSource) -> Result<i64, FormatError> {
    if !db.has_table("version").map_err(sql_err)? || !db.has_table("sessions").map_err(sql_err)? {
        return Err(FormatError::new(
            F,
            ErrorKind::NotThisFormat,
            "no `version` and `sessions` tables: not a Telethon session",
        ));
    }
    let version: i64 = db
        .conn()
        .query_row("SELECT version FROM version", [], |r| r.get(0))
        .map_err(|e| FormatError::malformed(F, format!("the version table is unreadable: {e}")))?;
    if version > CURRENT_VERSION {
        return Err(FormatError::new(
            F,
            ErrorKind::UnsupportedVersion,
            format!(
                "schema version {version} is newer than this importer knows (1 to \
                 {CURRENT_VERSION}); update Session Vault, or open the session once with the \
                 Telethon that wrote it and export a string"
            ),
        ));
    }
    if version < 1 {
        return Err(FormatError::malformed(
            F,
            format!("schema version {version} is not valid"),
        ));
    }
    Ok(version)
}

/// What the `sessions` row holds.
struct SessionRow {
    /// The home DC, with its address and auth key.
    home: DcOption,
    takeout_id: Option<i64>,
    tmp_auth_key: Option<TmpAuthKey>,
}

/// The first row of `sessions` (Telethon writes one): home DC, address, keys, takeout id.
fn read_session_row(db: &SqliteSource, notes: &mut Vec<String>) -> Result<SessionRow, FormatError> {
    let cols = db.columns("sessions").map_err(sql_err)?;
    let col = |c: &'static str| {
        if cols.iter().any(|x| x == c) {
            c
        } else {
            "NULL"
        }
    };
    let sql = format!(
        "SELECT dc_id, server_address, port, auth_key, {}, {} FROM sessions",
        col("takeout_id"),
        col("tmp_auth_key")
    );
    let mut stmt = db.conn().prepare(&sql).map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let Some(row) = rows.next().map_err(sql_err)? else {
        return Err(FormatError::no_auth_key(
            F,
            "the sessions table is empty: this session was never logged in",
        ));
    };
    let dc_id: i64 = row.get(0).map_err(sql_err)?;
    let address: Option<String> = row.get(1).map_err(sql_err)?;
    let port: Option<i64> = row.get(2).map_err(sql_err)?;
    let key = Zeroizing::new(
        row.get::<_, Option<Vec<u8>>>(3)
            .map_err(sql_err)?
            .unwrap_or_default(),
    );
    let takeout_id: Option<i64> = row.get(4).map_err(sql_err)?;
    let tmp_key = Zeroizing::new(
        row.get::<_, Option<Vec<u8>>>(5)
            .map_err(sql_err)?
            .unwrap_or_default(),
    );
    if rows.next().map_err(sql_err)?.is_some() {
        notes.push("the sessions table has more than one row; the first was imported".into());
    }
    let home_dc = i32::try_from(dc_id)
        .ok()
        .filter(|d| (1..=1000).contains(d))
        .ok_or_else(|| FormatError::malformed(F, format!("DC id {dc_id} is not valid")))?;
    let auth_key = auth_key_from(&key, F)?;
    let mut home = match (
        address.as_deref().and_then(|a| a.parse::<IpAddr>().ok()),
        port.and_then(|p| u16::try_from(p).ok()),
    ) {
        (Some(ip), Some(port)) => dc_at(home_dc, ip, port),
        _ => {
            notes.push(format!(
                "the DC address {:?} is not an IP address and port; Telegram's known address \
                 of DC {home_dc} was used",
                address.unwrap_or_default()
            ));
            known_dc(home_dc).ok_or_else(|| {
                FormatError::malformed(F, format!("DC {home_dc} has no usable address"))
            })?
        }
    };
    home.auth_key = Some(auth_key);
    let tmp_auth_key = if tmp_key.iter().any(|&b| b != 0) {
        let key = AuthKey::from_slice(&tmp_key).ok_or_else(|| {
            FormatError::malformed(
                F,
                format!("tmp_auth_key is {} bytes long, not 256", tmp_key.len()),
            )
        })?;
        Some(TmpAuthKey {
            dc_id: home_dc,
            key,
            expires_at: None,
        })
    } else {
        None
    };
    Ok(SessionRow {
        home,
        takeout_id,
        tmp_auth_key,
    })
}

/// The entities table: the self id (row 0, whose hash is the user's id) and the peers,
/// oldest first so that the newest row of a username is written last and keeps it. Files
/// below schema v6 give none: Telethon deletes their entities on upgrade.
fn read_entities(
    db: &SqliteSource,
    version: i64,
    notes: &mut Vec<String>,
    progress: Progress<'_>,
) -> Result<(Option<i64>, Vec<Peer>), FormatError> {
    if !db.has_table("entities").map_err(sql_err)? {
        return Ok((None, Vec::new()));
    }
    if version < 6 {
        let n = db.count("entities").unwrap_or(0);
        if n > 0 {
            notes.push(format!(
                "{n} cached entities were skipped: Telethon deletes the entities of files older \
                 than schema v6 on upgrade, as their access hashes may be wrong"
            ));
        }
        return Ok((None, Vec::new()));
    }
    let has_date = db
        .columns("entities")
        .map_err(sql_err)?
        .iter()
        .any(|c| c == "date");
    let order = if has_date {
        "ORDER BY date IS NOT NULL, date, rowid"
    } else {
        "ORDER BY rowid"
    };
    // The newest row 0 names the logged-in user (the column is a primary key: one at most).
    let self_id = db
        .conn()
        .prepare(&format!("SELECT hash FROM entities WHERE id = 0 {order}"))
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, Option<i64>>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_err)?
        .into_iter()
        .next_back()
        .flatten()
        .filter(|&h| h > 0);
    let query = PeerQuery {
        format: F,
        table: "entities",
        sql: &format!("SELECT id, hash, username, phone, name FROM entities WHERE id != 0 {order}"),
        noun: "entities",
    };
    let mut peers = query.read(db, notes, progress, |r, peer| {
        peer.username = text_value(r.get_ref(2).map_err(sql_err)?).filter(|s| !s.is_empty());
        peer.phone = text_value(r.get_ref(3).map_err(sql_err)?).filter(|s| !s.is_empty());
        peer.name = text_value(r.get_ref(4).map_err(sql_err)?).filter(|s| !s.is_empty());
        Ok(())
    })?;
    if let Some(me) = self_id {
        for p in peers
            .iter_mut()
            .filter(|p| p.kind == PeerKind::User && p.id == me)
        {
            p.is_self = Some(true);
        }
        notes.push(
            "Telethon does not record whether the account is a bot; it was imported as a user \
             account (a bot fixes this itself when it next logs in)"
                .into(),
        );
    }
    Ok((self_id, peers))
}

/// The `update_state` table (v4): row 0 is the account's state, every other a channel's pts.
fn read_update_state(db: &SqliteSource) -> Result<UpdatesState, FormatError> {
    let mut state = UpdatesState::default();
    if !db.has_table("update_state").map_err(sql_err)? {
        return Ok(state);
    }
    let mut stmt = db
        .conn()
        .prepare("SELECT id, pts, qts, date, seq FROM update_state ORDER BY rowid")
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    while let Some(r) = rows.next().map_err(sql_err)? {
        let id: i64 = r.get(0).map_err(sql_err)?;
        // Telethon writes `date` as a float timestamp; the counters as integers.
        let int = |i, field: &str| -> Result<i32, FormatError> {
            let v = r.get::<_, Option<f64>>(i).map_err(sql_err)?.unwrap_or(0.0);
            whole_i32(v).ok_or_else(|| {
                FormatError::malformed(
                    F,
                    format!("update_state {field} {v} of row {id} does not fit 32 bits"),
                )
            })
        };
        if id == 0 {
            state.pts = int(1, "pts")?;
            state.qts = int(2, "qts")?;
            state.date = int(3, "date")?;
            state.seq = int(4, "seq")?;
        } else {
            state.channels.push(ChannelState {
                id,
                pts: int(1, "pts")?,
            });
        }
    }
    Ok(state)
}

/// `v` without its fraction, if it is a number within `i32`.
fn whole_i32(v: f64) -> Option<i32> {
    let v = v.trunc();
    // Checked: every whole f64 in this range converts exactly.
    if (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&v) {
        Some(v as i32)
    } else {
        None // out of range, infinite or NaN
    }
}

/// The `sent_files` table (v3; a v2 file's older table is skipped, as Telethon drops it).
fn read_sent_files(
    db: &SqliteSource,
    version: i64,
    notes: &mut Vec<String>,
) -> Result<Vec<SentFile>, FormatError> {
    if !db.has_table("sent_files").map_err(sql_err)? {
        return Ok(Vec::new());
    }
    if version <= 2 {
        notes.push(
            "the sent-file cache of a schema v2 file was skipped (Telethon drops it on upgrade)"
                .into(),
        );
        return Ok(Vec::new());
    }
    let mut stmt = db
        .conn()
        .prepare("SELECT md5_digest, file_size, type, id, hash FROM sent_files")
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut files = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        files.push(SentFile {
            md5_digest: r
                .get::<_, Option<Vec<u8>>>(0)
                .map_err(sql_err)?
                .unwrap_or_default(),
            file_size: r.get::<_, Option<i64>>(1).map_err(sql_err)?.unwrap_or(0),
            file_type: r.get::<_, Option<i32>>(2).map_err(sql_err)?.unwrap_or(0),
            id: r.get::<_, Option<i64>>(3).map_err(sql_err)?.unwrap_or(0),
            hash: r.get::<_, Option<i64>>(4).map_err(sql_err)?.unwrap_or(0),
        });
    }
    Ok(files)
}

pub(crate) fn auth_key_from(key: &[u8], format: Format) -> Result<AuthKey, FormatError> {
    if key.iter().all(|&b| b == 0) {
        return Err(FormatError::no_auth_key(
            format,
            "the session holds no auth key: it was never logged in, or was logged out",
        ));
    }
    AuthKey::from_slice(key).ok_or_else(|| {
        FormatError::malformed(
            format,
            format!("the auth key is {} bytes long, not 256", key.len()),
        )
    })
}

// ---- writing a SQLite session -------------------------------------------------------------

/// Telethon 1.45's `SQLiteSession` tables (schema v8), as it creates them.
const SCHEMA_V8: &str = "
CREATE TABLE version (version integer primary key);
CREATE TABLE sessions (
    dc_id integer primary key,
    server_address text,
    port integer,
    auth_key blob,
    takeout_id integer,
    tmp_auth_key blob
);
CREATE TABLE entities (
    id integer primary key,
    hash integer not null,
    username text,
    phone integer,
    name text,
    date integer
);
CREATE TABLE sent_files (
    md5_digest blob,
    file_size integer,
    type integer,
    id integer,
    hash integer,
    primary key(md5_digest, file_size, type)
);
CREATE TABLE update_state (
    id integer primary key,
    pts integer,
    qts integer,
    date integer,
    seq integer
);
";

pub(crate) fn export_sqlite(data: &SessionData, path: &Path) -> Result<Vec<String>, FormatError> {
    let home = home_option(data, F)?;
    let (ip, port) = home_address(home, F)?;
    let err = |e: rusqlite::Error| {
        FormatError::new(F, ErrorKind::Io, format!("cannot build the file: {e}"))
    };
    let conn = Connection::open_in_memory().map_err(err)?;
    conn.execute_batch(SCHEMA_V8).map_err(err)?;
    let tx = conn.unchecked_transaction().map_err(err)?;
    tx.execute("INSERT INTO version VALUES (?1)", [CURRENT_VERSION])
        .map_err(err)?;
    let tmp: &[u8] = match &data.extras.tmp_auth_key {
        Some(t) if t.dc_id == home.id => t.key.as_bytes(),
        _ => b"",
    };
    tx.execute(
        "INSERT INTO sessions VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            home.id,
            ip.to_string(),
            port,
            &home
                .auth_key
                .as_ref()
                .expect("home_option has a key")
                .as_bytes()[..],
            data.extras.takeout_id,
            tmp
        ],
    )
    .map_err(err)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0);
    let mut lost = Vec::new();
    let mut no_hash = 0;
    {
        let mut ins = tx
            .prepare("INSERT OR REPLACE INTO entities VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .map_err(err)?;
        if let Some(me) = data.self_user {
            ins.execute(params![
                0,
                me.id,
                None::<String>,
                None::<String>,
                None::<String>,
                now
            ])
            .map_err(err)?;
        }
        for p in &data.peers {
            let hash = match (p.kind, p.access_hash) {
                (PeerKind::Chat, _) => 0,
                (_, Some(h)) => h,
                (_, None) => {
                    no_hash += 1;
                    continue;
                }
            };
            ins.execute(params![
                mark(p.kind, p.id),
                hash,
                p.username.as_deref().map(str::to_lowercase),
                p.phone,
                p.name,
                now
            ])
            .map_err(err)?;
        }
        let mut st = tx
            .prepare("INSERT OR REPLACE INTO update_state VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(err)?;
        let u = &data.updates_state;
        if *u != UpdatesState::default() {
            st.execute(params![0, u.pts, u.qts, u.date, u.seq])
                .map_err(err)?;
        }
        for c in &u.channels {
            st.execute(params![c.id, c.pts, 0, u.date, 0])
                .map_err(err)?;
        }
        let mut sf = tx
            .prepare("INSERT OR REPLACE INTO sent_files VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(err)?;
        for f in &data.sent_files {
            sf.execute(params![
                f.md5_digest,
                f.file_size,
                f.file_type,
                f.id,
                f.hash
            ])
            .map_err(err)?;
        }
    }
    tx.commit().map_err(err)?;
    if no_hash > 0 {
        lost.push(format!(
            "{no_hash} users or channels without an access hash (Telethon requires one)"
        ));
    }
    let other_keys = data
        .dc_options
        .iter()
        .filter(|d| d.id != data.home_dc && d.auth_key.is_some())
        .count();
    if other_keys > 0 {
        lost.push(format!(
            "the auth keys of {other_keys} other DCs (a Telethon file keeps one DC)"
        ));
    }
    if data.self_user.is_some_and(|u| u.bot) {
        lost.push("the bot flag of the account (Telethon does not store it)".into());
    }
    write_database(&conn, path).map_err(|e| {
        FormatError::new(
            F,
            ErrorKind::Io,
            format!("cannot write {}: {e}", path.display()),
        )
    })?;
    Ok(lost)
}
