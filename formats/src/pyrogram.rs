//! Pyrogram: the `FileStorage` SQLite file and the session string.
//!
//! Checked against `pyrogram/storage/{storage,sqlite_storage,file_storage,memory_storage}.py`
//! of Pyrogram 1.0.7, 1.4.16 and 2.0.106, and the forks pyrofork 2.3.69 and kurigram 2.2.26.
//!
//! File schema versions (the `version(number)` table):
//!
//! | v | change | importer |
//! | - | ------ | -------- |
//! | 1 | `sessions(dc_id, test_mode, auth_key, date, user_id, is_bot)`, `peers(id, access_hash, type, username, phone_number, last_update_on)` | peers skipped: Pyrogram deletes them on upgrade |
//! | 2 | peers cleared | read |
//! | 3 | `sessions.api_id` (Pyrogram 2) | read |
//! | 4–7 | forks only (pyrofork: `update_state`, `usernames`; kurigram: `usernames(id, username)`, `sessions.server_address/port`) | read by column name; fork update state not imported |
//!
//! Peer ids are marked (Bot API) ids; `type` is `user`, `bot`, `group`, `channel` or
//! `supergroup`; groups carry access hash 0; usernames are stored lower-case. Pyrogram keeps
//! no DC address (it has a table of its own), so the vault's table of Telegram's DCs is used
//! (Pyrogram's test DCs in test mode).
//!
//! Strings, URL-safe base64 without padding of:
//! - 351 characters: `>B?256sI?` (DC, test mode, key, 32-bit user id, bot), Pyrogram < 1.4;
//! - 356 characters: `>B?256sQ?` (64-bit user id), Pyrogram 1.4–1.x;
//! - 362 characters: `>BI?256sQ?` (DC, API id, test mode, key, user id, bot), Pyrogram ≥ 2.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use base64::Engine as _;
use session_vault_proto::model::{
    AuthKey, ChannelKind, DcOption, Peer, PeerKind, SelfUser, SessionData, SessionExtras,
    UpdatesState,
};
use zeroize::Zeroizing;

use super::peer_rows::{PeerQuery, unreadable};
use super::sqlite_io::{SqliteSource, text_value};
use super::telethon::auth_key_from;
use super::telethon_string::lost_by_strings;
use super::{
    ErrorKind, Format, FormatError, Imported, Progress, dc_table_with, home_option, known_dc, mark,
};

/// Lengths of the three string layouts.
pub(crate) const STRING_LENGTHS: [usize; 3] = [351, 356, 362];

/// The newest file version known (kurigram's; Pyrogram itself stops at 3).
const NEWEST_VERSION: i64 = 7;

const F: Format = Format::PyrogramSqlite;
const FS: Format = Format::PyrogramString;

fn sql_err(e: rusqlite::Error) -> FormatError {
    unreadable(F, e)
}

/// Pyrogram's DC table: production (`PROD`, `PROD_IPV6`) or test (`TEST`, `TEST_IPV6`, port 80)
/// addresses of DC `id`.
fn pyrogram_dc(id: i32, test_mode: bool) -> Option<DcOption> {
    if !test_mode {
        return known_dc(id);
    }
    let (v4, v6) = match id {
        1 => (Ipv4Addr::new(149, 154, 175, 10), 0xf001),
        2 => (Ipv4Addr::new(149, 154, 167, 40), 0xf002),
        3 => (Ipv4Addr::new(149, 154, 175, 117), 0xf003),
        _ => return None,
    };
    let prefix: [u16; 2] = if id == 2 {
        [0x67c, 0x4e8]
    } else {
        [0xb28, 0xf23d]
    };
    Some(DcOption {
        id,
        ipv4: Some(SocketAddrV4::new(v4, 80)),
        ipv6: Some(SocketAddrV6::new(
            Ipv6Addr::new(0x2001, prefix[0], prefix[1], v6, 0, 0, 0, 0xe),
            80,
            0,
            0,
        )),
        auth_key: None,
    })
}

fn dc_options(home: DcOption, test_mode: bool) -> Vec<DcOption> {
    if test_mode {
        let mut dcs: Vec<DcOption> = (1..=3)
            .filter(|&i| i != home.id)
            .filter_map(|i| pyrogram_dc(i, true))
            .collect();
        dcs.push(home);
        dcs.sort_by_key(|d| d.id);
        dcs
    } else {
        dc_table_with(home)
    }
}

fn home_dc(
    format: Format,
    dc: i64,
    test_mode: bool,
    key: AuthKey,
) -> Result<DcOption, FormatError> {
    let mut home = i32::try_from(dc)
        .ok()
        .and_then(|id| pyrogram_dc(id, test_mode))
        .ok_or_else(|| {
            FormatError::malformed(
                format,
                format!(
                    "DC id {dc} is not one of Telegram's {} DCs",
                    if test_mode { "test" } else { "production" }
                ),
            )
        })?;
    home.auth_key = Some(key);
    Ok(home)
}

pub(crate) fn parse_sqlite(
    db: &SqliteSource,
    progress: Progress<'_>,
) -> Result<Imported, FormatError> {
    let conn = db.conn();
    if !db.has_table("sessions").map_err(sql_err)? {
        return Err(FormatError::new(
            F,
            ErrorKind::NotThisFormat,
            "no `sessions` table",
        ));
    }
    let version: i64 = if db.has_table("version").map_err(sql_err)? {
        conn.query_row("SELECT number FROM version", [], |r| r.get(0))
            .map_err(|e| {
                FormatError::malformed(F, format!("the version table is unreadable: {e}"))
            })?
    } else {
        return Err(FormatError::new(
            F,
            ErrorKind::NotThisFormat,
            "no `version` table",
        ));
    };
    if !(1..=NEWEST_VERSION).contains(&version) {
        return Err(FormatError::new(
            F,
            ErrorKind::UnsupportedVersion,
            format!(
                "schema version {version} is not one this importer knows (Pyrogram 1 to 3, \
                 forks up to {NEWEST_VERSION})"
            ),
        ));
    }
    let mut notes = Vec::new();
    let cols = db.columns("sessions").map_err(sql_err)?;
    let col = |c: &'static str| {
        if cols.iter().any(|x| x == c) {
            c
        } else {
            "NULL"
        }
    };
    let sql = format!(
        "SELECT dc_id, {}, test_mode, auth_key, user_id, is_bot, {}, {} FROM sessions",
        col("api_id"),
        col("server_address"),
        col("port")
    );
    let row = conn
        .query_row(&sql, [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<bool>>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?.map(Zeroizing::new),
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<bool>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<i64>>(7)?,
            ))
        })
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => {
                FormatError::no_auth_key(F, "the sessions table is empty")
            }
            e => sql_err(e),
        })?;
    let (dc, api_id, test_mode, key, user_id, is_bot, address, port) = row;
    let test_mode = test_mode.unwrap_or(false);
    let key = auth_key_from(key.as_deref().map_or(&[][..], |k| &k[..]), F)?;
    let mut home = home_dc(F, dc, test_mode, key)?;
    if let (Some(addr), Some(port)) = (address, port.and_then(|p| u16::try_from(p).ok())) {
        // kurigram ≥ v7 records the address it uses.
        if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
            let mut at = super::dc_at(home.id, ip, port);
            at.auth_key = home.auth_key.take();
            home = at;
        }
    }
    let api_id = api_id.and_then(|a| i32::try_from(a).ok());

    let mut peers = Vec::new();
    if db.has_table("peers").map_err(sql_err)? {
        if version == 1 {
            let n = db.count("peers").unwrap_or(0);
            if n > 0 {
                notes.push(format!(
                    "{n} cached peers of a schema v1 file were skipped (Pyrogram deletes them on \
                     upgrade)"
                ));
            }
        } else {
            peers = read_peers(db, &mut notes, progress)?;
        }
    }
    if let Some(me) = user_id {
        for p in peers
            .iter_mut()
            .filter(|p| p.kind == PeerKind::User && p.id == me)
        {
            p.is_self = Some(true);
        }
    }
    if db.has_table("update_state").map_err(sql_err)? && db.count("update_state").unwrap_or(0) > 0 {
        notes.push("the update state of a Pyrogram fork's file was not imported".into());
    }
    Ok(Imported {
        data: SessionData {
            home_dc: home.id,
            dc_options: dc_options(home, test_mode),
            self_user: user_id.filter(|&u| u > 0).map(|id| SelfUser {
                id,
                bot: is_bot.unwrap_or(false),
            }),
            peers,
            updates_state: UpdatesState::default(),
            sent_files: Vec::new(),
            extras: SessionExtras {
                takeout_id: None,
                tmp_auth_key: None,
                api_id,
                test_mode,
            },
        },
        format: F,
        version: Some(format!("schema v{version}")),
        notes,
    })
}

fn read_peers(
    db: &SqliteSource,
    notes: &mut Vec<String>,
    progress: Progress<'_>,
) -> Result<Vec<Peer>, FormatError> {
    let cols = db.columns("peers").map_err(sql_err)?;
    let col = |c: &'static str| {
        if cols.iter().any(|x| x == c) {
            c
        } else {
            "NULL"
        }
    };
    let order = if cols.iter().any(|x| x == "last_update_on") {
        "last_update_on, rowid"
    } else {
        "rowid"
    };
    let query = PeerQuery {
        format: F,
        table: "peers",
        sql: &format!(
            "SELECT id, access_hash, type, {}, {} FROM peers ORDER BY {order}",
            col("username"),
            col("phone_number"),
        ),
        noun: "peers",
    };
    let mut peers = query.read(db, notes, progress, |r, peer| {
        let ty: Option<String> = r.get(2).map_err(sql_err)?;
        match (peer.kind, ty.as_deref()) {
            (PeerKind::User, Some("bot")) => peer.bot = Some(true),
            (PeerKind::User, Some("user")) => peer.bot = Some(false),
            (PeerKind::Channel, Some("channel")) => {
                peer.channel_kind = Some(ChannelKind::Broadcast)
            }
            (PeerKind::Channel, Some("supergroup")) => {
                peer.channel_kind = Some(ChannelKind::Megagroup)
            }
            _ => {}
        }
        peer.username = r
            .get::<_, Option<String>>(3)
            .map_err(sql_err)?
            .filter(|s| !s.is_empty());
        peer.phone = text_value(r.get_ref(4).map_err(sql_err)?).filter(|s| !s.is_empty());
        Ok(())
    })?;
    // Forks keep usernames in a table of their own.
    if db.has_table("usernames").map_err(sql_err)? {
        let ucols = db.columns("usernames").map_err(sql_err)?;
        let sql = if ucols.iter().any(|c| c == "peer_id") {
            "SELECT peer_id, id FROM usernames" // pyrofork: id is the username
        } else {
            "SELECT id, username FROM usernames" // kurigram
        };
        let index: HashMap<i64, usize> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (mark(p.kind, p.id), i))
            .collect();
        let mut stmt = db.conn().prepare(sql).map_err(sql_err)?;
        let mut rows = stmt.query([]).map_err(sql_err)?;
        while let Some(r) = rows.next().map_err(sql_err)? {
            let (Ok(Some(marked)), Ok(Some(name))) =
                (r.get::<_, Option<i64>>(0), r.get::<_, Option<String>>(1))
            else {
                continue;
            };
            if let Some(&i) = index.get(&marked) {
                peers[i].username.get_or_insert(name);
            }
        }
    }
    Ok(peers)
}

// ---- strings ------------------------------------------------------------------------------

pub(crate) fn parse_string(s: &str) -> Result<Imported, FormatError> {
    let bare = s.trim_end_matches('=');
    if !STRING_LENGTHS.contains(&bare.len()) {
        return Err(FormatError::malformed(
            FS,
            format!(
                "the string has {} characters; a Pyrogram string has 351, 356 or 362",
                bare.len()
            ),
        ));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let raw = Zeroizing::new(
        engine
            .decode(bare)
            .map_err(|e| FormatError::malformed(FS, format!("not valid URL-safe base64: {e}")))?,
    );
    let (dc, api_id, rest) = match bare.len() {
        362 => (
            raw[0],
            Some(u32::from_be_bytes(raw[1..5].try_into().expect("4 bytes"))),
            &raw[5..],
        ),
        _ => (raw[0], None, &raw[1..]),
    };
    let test_mode = rest[0] != 0;
    let key = auth_key_from(&rest[1..257], FS)?;
    let user_id = match rest.len() - 257 {
        5 => i64::from(u32::from_be_bytes(
            rest[257..261].try_into().expect("4 bytes"),
        )),
        9 => i64::from_be_bytes(rest[257..265].try_into().expect("8 bytes")),
        n => {
            return Err(FormatError::malformed(
                FS,
                format!("{n} bytes after the key"),
            ));
        }
    };
    let bot = rest[rest.len() - 1] != 0;
    let home = home_dc(FS, i64::from(dc), test_mode, key)?;
    let api_id = api_id
        .and_then(|a| i32::try_from(a).ok())
        .filter(|&a| a != 0);
    Ok(Imported {
        data: SessionData {
            home_dc: home.id,
            dc_options: dc_options(home, test_mode),
            self_user: (user_id > 0).then_some(SelfUser { id: user_id, bot }),
            peers: Vec::new(),
            updates_state: UpdatesState::default(),
            sent_files: Vec::new(),
            extras: SessionExtras {
                takeout_id: None,
                tmp_auth_key: None,
                api_id,
                test_mode,
            },
        },
        format: FS,
        version: Some(format!("{} characters", bare.len())),
        notes: vec![
            "a Pyrogram string holds no DC address (Telegram's known address of the DC was \
             used), peers or update state"
                .into(),
        ],
    })
}

/// The current (362-character) layout, as Pyrogram 2's `export_session_string` writes it.
pub(crate) fn export_string(
    data: &SessionData,
) -> Result<(Zeroizing<String>, Vec<String>), FormatError> {
    let home = home_option(data, FS)?;
    let dc = u8::try_from(home.id).map_err(|_| {
        FormatError::malformed(FS, format!("DC id {} does not fit a byte", home.id))
    })?;
    let mut lost = lost_by_strings(data);
    let api_id = match data.extras.api_id {
        Some(a) => u32::try_from(a).map_err(|_| {
            FormatError::malformed(
                FS,
                format!("api_id {a} is negative: it does not fit the string"),
            )
        })?,
        None => {
            lost.push("the API id, unknown here: written as 0 (pass api_id to the Client)".into());
            0
        }
    };
    let (user_id, bot) = match data.self_user {
        Some(u) => (u.id, u.bot),
        None => {
            lost.push("the user id, unknown here: written as 0".into());
            (0, false)
        }
    };
    let mut raw = Zeroizing::new(Vec::with_capacity(271));
    raw.push(dc);
    raw.extend_from_slice(&api_id.to_be_bytes());
    raw.push(u8::from(data.extras.test_mode));
    raw.extend_from_slice(
        home.auth_key
            .as_ref()
            .expect("home_option has a key")
            .as_bytes(),
    );
    raw.extend_from_slice(&user_id.to_be_bytes());
    raw.push(u8::from(bot));
    let mut out = Zeroizing::new(String::with_capacity(362));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&raw[..], &mut out);
    Ok((out, lost))
}
