//! grammers: the `SqliteSession` file (grammers-session 0.8–0.11) and the older binary TL
//! session (grammers-session 0.4–0.8).
//!
//! `SqliteSession` (checked against `src/storages/sqlite.rs` of grammers-session 0.8.0,
//! 0.9.0, 0.10.0 and 0.11.0, which all create the same tables, `PRAGMA user_version` 1):
//! `dc_home(dc_id)`, `dc_option(dc_id, ipv4 TEXT "a.b.c.d:port", ipv6 TEXT "[…]:port",
//! auth_key BLOB)`, `peer_info(peer_id, hash, subtype)` keyed by the Bot API ("marked") id
//! with `subtype` bits UserSelf 1, UserBot 2, Megagroup 4, Broadcast 8, Gigagroup 12,
//! Community 16 (0.11), `update_state(pts, qts, date, seq)`, `channel_state(peer_id, pts)`.
//!
//! TL session (checked against `build.rs`, `src/lib.rs` of 0.4.0 and 0.7.0 and
//! `src/storages/tl_session.rs` of 0.8.0): boxed TL
//! `session#a73eb8ce flags:# dcs:Vector<DataCenter> user:flags.0?User state:flags.1?UpdateState`,
//! `dataCenter#756d16b6 flags:# id:int ipv4:flags.0?int ipv6:flags.1?int128 port:int
//! auth:flags.2?bytes`, `dataCenterWs#72490a88 flags:# id:int url:string auth:flags.0?bytes`
//! (0.8), `user#672f428d id:long dc:int bot:Bool`, `updateState#d0cadcc1 pts qts date seq
//! channels:Vector<ChannelState>`, `channelState#c2b0f8cd channel_id:long pts:int` (ids
//! computed with grammers-tl-parser from those definitions). 0.4–0.7 stored a DC's IPv4 as
//! `i32::from_le_bytes(octets)` and its IPv6 as the octets, one address per DC; 0.8 stores
//! both, as `to_bits() as i32` and `to_bits().to_le_bytes()` — so each reads the other's
//! addresses byte-reversed. A file whose DCs each carry one address was written by ≤ 0.7,
//! and its addresses are read in that order.

use std::net::{SocketAddrV4, SocketAddrV6};
use std::path::Path;

use rusqlite::{Connection, params};
use session_vault_proto::model::{
    AuthKey, ChannelKind, ChannelState, DcOption, PeerKind, SelfUser, SessionData, SessionExtras,
    UpdatesState, known_dc_options,
};
use zeroize::Zeroizing;

use super::peer_rows::{PeerQuery, unreadable};
use super::sqlite_io::{SqliteSource, write_database};
use super::{ErrorKind, Format, FormatError, Imported, Progress, home_option, known_dc, mark};

const F: Format = Format::GrammersSqlite;

const SUB_USER_SELF: i64 = 1;
const SUB_USER_BOT: i64 = 2;
const SUB_MEGAGROUP: i64 = 4;
const SUB_BROADCAST: i64 = 8;
const SUB_GIGAGROUP: i64 = 12;
const SUB_COMMUNITY: i64 = 16;

fn sql_err(e: rusqlite::Error) -> FormatError {
    unreadable(F, e)
}

/// The kind of a channel from its `subtype` bits (Gigagroup sets two of them).
fn channel_kind(subtype: i64) -> Option<ChannelKind> {
    if subtype & SUB_GIGAGROUP == SUB_GIGAGROUP {
        Some(ChannelKind::Gigagroup)
    } else if subtype & SUB_BROADCAST != 0 {
        Some(ChannelKind::Broadcast)
    } else if subtype & SUB_MEGAGROUP != 0 {
        Some(ChannelKind::Megagroup)
    } else if subtype & SUB_COMMUNITY != 0 {
        Some(ChannelKind::Community)
    } else {
        None
    }
}

pub(super) fn key_from(format: Format, dc: i32, bytes: &[u8]) -> Result<AuthKey, FormatError> {
    AuthKey::from_slice(bytes).ok_or_else(|| {
        FormatError::malformed(
            format,
            format!(
                "the auth key of DC {dc} is {} bytes long, not 256",
                bytes.len()
            ),
        )
    })
}

/// Telegram's table, with the file's DCs replacing their entries; sorted by id.
pub(super) fn merge_known(dcs: Vec<DcOption>) -> Vec<DcOption> {
    let mut all: Vec<DcOption> = known_dc_options()
        .into_iter()
        .filter(|k| !dcs.iter().any(|d| d.id == k.id))
        .collect();
    all.extend(dcs);
    all.sort_by_key(|d| d.id);
    all
}

pub(super) fn no_home_key(format: Format, home: i32, data: &[DcOption]) -> Result<(), FormatError> {
    if data.iter().any(|d| d.id == home && d.auth_key.is_some()) {
        Ok(())
    } else {
        Err(FormatError::no_auth_key(
            format,
            format!(
                "the session holds no auth key for its home DC {home}: it was never logged in, \
                 or was logged out"
            ),
        ))
    }
}

pub(crate) fn parse_sqlite(
    db: &SqliteSource,
    progress: Progress<'_>,
) -> Result<Imported, FormatError> {
    let conn = db.conn();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err)?;
    if version != 1 {
        return Err(FormatError::new(
            F,
            ErrorKind::UnsupportedVersion,
            format!(
                "user_version {version}: grammers-session 0.8 to 0.11 write 1, and this \
                 importer knows no other"
            ),
        ));
    }
    for table in [
        "dc_home",
        "dc_option",
        "peer_info",
        "update_state",
        "channel_state",
    ] {
        if !db.has_table(table).map_err(sql_err)? {
            return Err(FormatError::malformed(
                F,
                format!("the `{table}` table is missing"),
            ));
        }
    }
    let mut notes = Vec::new();
    let home_dc: i32 = conn
        .query_row("SELECT dc_id FROM dc_home LIMIT 1", [], |r| r.get(0))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(session_vault_proto::model::DEFAULT_HOME_DC),
            e => Err(e),
        })
        .map_err(sql_err)?;

    let mut dcs = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT dc_id, ipv4, ipv6, auth_key FROM dc_option ORDER BY dc_id")
            .map_err(sql_err)?;
        let mut rows = stmt.query([]).map_err(sql_err)?;
        while let Some(r) = rows.next().map_err(sql_err)? {
            let id: i32 = r.get(0).map_err(sql_err)?;
            let ipv4: String = r.get(1).map_err(sql_err)?;
            let ipv6: String = r.get(2).map_err(sql_err)?;
            let key: Option<Zeroizing<Vec<u8>>> = r
                .get::<_, Option<Vec<u8>>>(3)
                .map_err(sql_err)?
                .map(Zeroizing::new);
            let bad = |what: &str, v: &str| {
                FormatError::malformed(F, format!("DC {id}: {what} address {v:?} is not valid"))
            };
            dcs.push(DcOption {
                id,
                ipv4: Some(
                    ipv4.parse::<SocketAddrV4>()
                        .map_err(|_| bad("IPv4", &ipv4))?,
                ),
                ipv6: Some(
                    ipv6.parse::<SocketAddrV6>()
                        .map_err(|_| bad("IPv6", &ipv6))?,
                ),
                auth_key: key.map(|k| key_from(F, id, &k)).transpose()?,
            });
        }
    }
    no_home_key(F, home_dc, &dcs)?;

    let mut self_user = None;
    let query = PeerQuery {
        format: F,
        table: "peer_info",
        sql: "SELECT peer_id, hash, subtype FROM peer_info ORDER BY rowid",
        noun: "peers",
    };
    let peers = query.read(db, &mut notes, progress, |r, p| {
        let subtype: Option<i64> = r.get(2).map_err(sql_err)?;
        match p.kind {
            PeerKind::User => {
                p.bot = subtype.map(|s| s & SUB_USER_BOT != 0);
                p.is_self = subtype.map(|s| s & SUB_USER_SELF != 0);
                if p.is_self == Some(true) {
                    self_user = Some(SelfUser {
                        id: p.id,
                        bot: p.bot.unwrap_or(false),
                    });
                }
            }
            PeerKind::Chat => {}
            PeerKind::Channel => p.channel_kind = subtype.and_then(channel_kind),
        }
        Ok(())
    })?;

    let mut updates_state = conn
        .query_row(
            "SELECT pts, qts, date, seq FROM update_state LIMIT 1",
            [],
            |r| {
                Ok(UpdatesState {
                    pts: r.get(0)?,
                    qts: r.get(1)?,
                    date: r.get(2)?,
                    seq: r.get(3)?,
                    channels: Vec::new(),
                })
            },
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(UpdatesState::default()),
            e => Err(e),
        })
        .map_err(sql_err)?;
    let mut stmt = conn
        .prepare("SELECT peer_id, pts FROM channel_state ORDER BY rowid")
        .map_err(sql_err)?;
    updates_state.channels = stmt
        .query_map([], |r| {
            Ok(ChannelState {
                id: r.get(0)?,
                pts: r.get(1)?,
            })
        })
        .map_err(sql_err)?
        .collect::<Result<_, _>>()
        .map_err(sql_err)?;

    Ok(Imported {
        data: SessionData {
            home_dc,
            dc_options: merge_known(dcs),
            self_user,
            peers,
            updates_state,
            sent_files: Vec::new(),
            extras: SessionExtras::default(),
        },
        format: F,
        version: Some(format!("user_version {version}")),
        notes,
    })
}

/// grammers-session 0.11's `SqliteSession` tables, as its migration to version 1 creates them.
const SCHEMA_V1: &str = "
CREATE TABLE dc_home (
    dc_id INTEGER NOT NULL,
    PRIMARY KEY(dc_id));
CREATE TABLE dc_option (
    dc_id INTEGER NOT NULL,
    ipv4 TEXT NOT NULL,
    ipv6 TEXT NOT NULL,
    auth_key BLOB,
    PRIMARY KEY (dc_id));
CREATE TABLE peer_info (
    peer_id INTEGER NOT NULL,
    hash INTEGER,
    subtype INTEGER,
    PRIMARY KEY (peer_id));
CREATE TABLE update_state (
    pts INTEGER NOT NULL,
    qts INTEGER NOT NULL,
    date INTEGER NOT NULL,
    seq INTEGER NOT NULL);
CREATE TABLE channel_state (
    peer_id INTEGER NOT NULL,
    pts INTEGER NOT NULL,
    PRIMARY KEY (peer_id));
PRAGMA user_version = 1;
";

/// Both addresses of a DC, as grammers requires them (it has no "unknown"): the known table's
/// where the session lacks one, else derived from the other family (as the vault client does).
fn both_addresses(dc: &DcOption) -> Option<(SocketAddrV4, SocketAddrV6)> {
    let known = known_dc(dc.id);
    let v4 = dc
        .ipv4
        .or(known.as_ref().and_then(|k| k.ipv4))
        .or_else(|| {
            dc.ipv6.and_then(|a| {
                a.ip()
                    .to_ipv4_mapped()
                    .map(|ip| SocketAddrV4::new(ip, a.port()))
            })
        })?;
    let v6 = dc
        .ipv6
        .or(known.as_ref().and_then(|k| k.ipv6))
        .unwrap_or_else(|| SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0));
    Some((v4, v6))
}

pub(crate) fn export_sqlite(data: &SessionData, path: &Path) -> Result<Vec<String>, FormatError> {
    home_option(data, F)?;
    let err = |e: rusqlite::Error| {
        FormatError::new(F, ErrorKind::Io, format!("cannot build the file: {e}"))
    };
    let conn = Connection::open_in_memory().map_err(err)?;
    conn.execute_batch(SCHEMA_V1).map_err(err)?;
    let tx = conn.unchecked_transaction().map_err(err)?;
    let mut lost = Vec::new();
    tx.execute("INSERT INTO dc_home VALUES (?1)", [data.home_dc])
        .map_err(err)?;
    {
        let mut ins = tx
            .prepare("INSERT OR REPLACE INTO dc_option VALUES (?1, ?2, ?3, ?4)")
            .map_err(err)?;
        for dc in &data.dc_options {
            let Some((v4, v6)) = both_addresses(dc) else {
                lost.push(format!("DC {} (no IPv4 address known)", dc.id));
                continue;
            };
            ins.execute(params![
                dc.id,
                v4.to_string(),
                v6.to_string(),
                dc.auth_key.as_ref().map(|k| &k.as_bytes()[..])
            ])
            .map_err(err)?;
        }
        let mut ins = tx
            .prepare("INSERT OR REPLACE INTO peer_info VALUES (?1, ?2, ?3)")
            .map_err(err)?;
        let mut self_written = false;
        for p in &data.peers {
            let is_self = p.is_self == Some(true)
                || (p.kind == PeerKind::User && data.self_user.is_some_and(|u| u.id == p.id));
            self_written |= is_self && p.kind == PeerKind::User;
            let subtype = match p.kind {
                PeerKind::User => match (p.bot.unwrap_or(false), is_self) {
                    (true, true) => Some(SUB_USER_SELF | SUB_USER_BOT),
                    (true, false) => Some(SUB_USER_BOT),
                    (false, true) => Some(SUB_USER_SELF),
                    (false, false) => None,
                },
                PeerKind::Chat => None,
                PeerKind::Channel => p.channel_kind.map(|k| match k {
                    ChannelKind::Megagroup => SUB_MEGAGROUP,
                    ChannelKind::Broadcast => SUB_BROADCAST,
                    ChannelKind::Gigagroup => SUB_GIGAGROUP,
                    ChannelKind::Community => SUB_COMMUNITY,
                }),
            };
            let hash = match p.kind {
                PeerKind::Chat => None,
                _ => p.access_hash,
            };
            ins.execute(params![mark(p.kind, p.id), hash, subtype])
                .map_err(err)?;
        }
        if let (Some(me), false) = (data.self_user, self_written) {
            let subtype = SUB_USER_SELF | if me.bot { SUB_USER_BOT } else { 0 };
            ins.execute(params![me.id, None::<i64>, subtype])
                .map_err(err)?;
        }
        let u = &data.updates_state;
        tx.execute(
            "INSERT INTO update_state VALUES (?1, ?2, ?3, ?4)",
            params![u.pts, u.qts, u.date, u.seq],
        )
        .map_err(err)?;
        let mut ch = tx
            .prepare("INSERT OR REPLACE INTO channel_state VALUES (?1, ?2)")
            .map_err(err)?;
        for c in &u.channels {
            ch.execute(params![c.id, c.pts]).map_err(err)?;
        }
    }
    tx.commit().map_err(err)?;
    let e = &data.extras;
    if e.takeout_id.is_some() || e.tmp_auth_key.is_some() {
        lost.push("Telethon's takeout id and temporary auth key".into());
    }
    if !data.sent_files.is_empty() {
        lost.push(format!("{} sent-file cache entries", data.sent_files.len()));
    }
    let names = data
        .peers
        .iter()
        .filter(|p| p.username.is_some() || p.phone.is_some() || p.name.is_some())
        .count();
    if names > 0 {
        lost.push(format!(
            "the usernames, phones and names of {names} peers (grammers keeps ids and hashes)"
        ));
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
