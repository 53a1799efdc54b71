//! Unit tests of the format parsers and writers: the committed fixtures (written by the real
//! libraries, see `tests/fixtures/make_fixtures.sh`), older schema versions rebuilt from the
//! DDL in the libraries' source, every kind of bad input, round trips, and a proptest that
//! arbitrary input never panics a parser.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use proptest::prelude::*;
use rusqlite::Connection;
use session_vault_proto::model::{ChannelKind, PeerKind, SessionData};

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

fn read_path(path: &Path, format: Option<Format>) -> Result<Imported, FormatError> {
    import(Input::Path(path), format, &mut no_progress())
}

fn read_bytes(bytes: &[u8], format: Option<Format>) -> Result<Imported, FormatError> {
    import(Input::Bytes(bytes), format, &mut no_progress())
}

fn key(mul: usize, add: usize) -> Vec<u8> {
    (0..256).map(|i| ((i * mul + add) % 256) as u8).collect()
}

fn home_key(data: &SessionData) -> Vec<u8> {
    data.dc_options
        .iter()
        .find(|d| d.id == data.home_dc)
        .and_then(|d| d.auth_key.as_ref())
        .expect("home key")
        .as_bytes()
        .to_vec()
}

// ---- fixtures written by the real libraries -------------------------------------------------

#[test]
fn telethon_v8_fixture() {
    let path = fixture("telethon-v8.session");
    let before = std::fs::read(&path).unwrap();
    let imp = read_path(&path, None).unwrap();
    assert_eq!(imp.format, Format::TelethonSqlite);
    assert_eq!(imp.version.as_deref(), Some("schema v8"));
    let d = &imp.data;
    assert_eq!(d.home_dc, 2);
    assert_eq!(home_key(d), key(3, 1));
    let home = d.dc_options.iter().find(|o| o.id == 2).unwrap();
    assert_eq!(home.ipv4.unwrap().to_string(), "149.154.167.51:443");
    assert_eq!(d.extras.takeout_id, Some(4242));
    assert_eq!(
        d.extras
            .tmp_auth_key
            .as_ref()
            .unwrap()
            .key
            .as_bytes()
            .to_vec(),
        key(7, 3)
    );
    assert_eq!(d.self_user.unwrap().id, 777_000_111);
    assert_eq!(d.peers.len(), 6);
    let news = d.peers.iter().find(|p| p.id == 1_234_567_890).unwrap();
    assert_eq!(news.kind, PeerKind::Channel);
    assert_eq!(news.access_hash, Some(-8_888_888_888));
    let chat = d.peers.iter().find(|p| p.id == 4_567_890).unwrap();
    assert_eq!((chat.kind, chat.access_hash), (PeerKind::Chat, None));
    let me = d.peers.iter().find(|p| p.id == 777_000_111).unwrap();
    assert_eq!(me.is_self, Some(true));
    assert_eq!(me.phone.as_deref(), Some("15550000001"));
    assert_eq!(d.updates_state.pts, 100);
    assert_eq!(d.updates_state.channels.len(), 1);
    assert_eq!(d.sent_files.len(), 2);
    // Read-only and immutable: the file is untouched and no side file appeared.
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!fixture("telethon-v8.session-journal").exists());
    assert!(!fixture("telethon-v8.session-wal").exists());
}

#[test]
fn telethon_v7_ipv6_fixture() {
    let imp = read_path(&fixture("telethon-v7-ipv6.session"), None).unwrap();
    let home = imp.data.dc_options.iter().find(|o| o.id == 4).unwrap();
    assert_eq!(home.ipv6.unwrap().to_string(), "[2001:67c:4e8:f004::a]:443");
    assert_eq!(home.ipv4, None);
    assert_eq!(imp.data.extras.tmp_auth_key, None);
    assert_eq!(imp.data.extras.takeout_id, None);
}

#[test]
fn strings_round_trip_byte_for_byte() {
    for (name, format) in [
        ("telethon-ipv4.string", Format::TelethonString),
        ("telethon-ipv6.string", Format::TelethonString),
        ("pyrogram-362.string", Format::PyrogramString),
    ] {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let imp = read_bytes(text.as_bytes(), None).unwrap();
        assert_eq!(imp.format, format, "{name}");
        let (out, _) = export_string(&imp.data, format).unwrap();
        assert_eq!(&*out, text.trim(), "{name}");
    }
}

#[test]
fn telethon_string_without_padding() {
    let text = std::fs::read_to_string(fixture("telethon-ipv4.string")).unwrap();
    let bare = text.trim().trim_end_matches('=');
    assert_eq!(bare.len(), 352);
    let a = read_bytes(bare.as_bytes(), None).unwrap();
    let b = read_bytes(text.as_bytes(), None).unwrap();
    assert_eq!(a.data, b.data);
    assert!(a.version.unwrap().contains("padding missing"));
}

#[test]
fn pyrogram_old_strings() {
    let s351 = read_bytes(
        &std::fs::read(fixture("pyrogram-351.string")).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(s351.data.home_dc, 1);
    assert_eq!(s351.data.self_user.unwrap().id, 77_000_333);
    assert!(s351.data.self_user.unwrap().bot);
    assert_eq!(home_key(&s351.data), key(41, 3));
    let s356 = read_bytes(
        &std::fs::read(fixture("pyrogram-356.string")).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(s356.data.self_user.unwrap().id, 5_000_000_444);
    assert_eq!(s356.data.extras.api_id, None);
}

#[test]
fn pyrogram_file_fixture() {
    let imp = read_path(&fixture("pyrogram.session"), None).unwrap();
    assert_eq!(imp.format, Format::PyrogramSqlite);
    let d = &imp.data;
    assert_eq!((d.home_dc, d.extras.api_id), (2, Some(123_456)));
    assert_eq!(home_key(d), key(37, 5));
    let mega = d.peers.iter().find(|p| p.id == 2_222_222_222).unwrap();
    assert_eq!(mega.channel_kind, Some(ChannelKind::Megagroup));
    let bot = d.peers.iter().find(|p| p.id == 987_654_321).unwrap();
    assert_eq!(bot.bot, Some(true));
}

#[test]
fn grammers_fixtures() {
    let g = read_path(&fixture("grammers-011.sqlite"), None).unwrap();
    assert_eq!(g.format, Format::GrammersSqlite);
    assert_eq!(g.data.home_dc, 4);
    assert_eq!(g.data.peers.len(), 7);
    assert_eq!(g.data.self_user.unwrap().id, 555_000_333);
    let giga = g.data.peers.iter().find(|p| p.id == 3_333_333_333).unwrap();
    assert_eq!(giga.channel_kind, Some(ChannelKind::Gigagroup));

    let old = read_path(&fixture("grammers-07.session"), None).unwrap();
    assert_eq!(old.format, Format::GrammersTl);
    let dc4 = old.data.dc_options.iter().find(|d| d.id == 4).unwrap();
    // Written by 0.7 as from_le_bytes(octets): read in that order, not reversed.
    assert_eq!(dc4.ipv4.unwrap().to_string(), "149.154.167.91:443");
    let dc5 = old.data.dc_options.iter().find(|d| d.id == 5).unwrap();
    assert_eq!(dc5.ipv6.unwrap().to_string(), "[2001:b28:f23f:f005::a]:443");
    assert_eq!(
        dc5.auth_key.as_ref().unwrap().as_bytes().to_vec(),
        key(17, 3)
    );

    let new = read_path(&fixture("grammers-08.session"), None).unwrap();
    let dc4 = new.data.dc_options.iter().find(|d| d.id == 4).unwrap();
    assert_eq!(dc4.ipv4.unwrap().to_string(), "149.154.167.92:443");
    assert_eq!(dc4.ipv6.unwrap().to_string(), "[2001:67c:4e8:f004::a]:443");
    assert!(new.data.self_user.unwrap().bot);
}

#[test]
fn sqlite_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (src, format) in [
        ("telethon-v8.session", Format::TelethonSqlite),
        ("grammers-011.sqlite", Format::GrammersSqlite),
    ] {
        let orig = read_path(&fixture(src), None).unwrap();
        let out = dir.path().join(format!("out-{src}"));
        export_file(&orig.data, format, &out).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{src}");
        }
        let back = read_path(&out, Some(format)).unwrap();
        assert_eq!(back.data.home_dc, orig.data.home_dc);
        assert_eq!(home_key(&back.data), home_key(&orig.data));
        assert_eq!(back.data.self_user, orig.data.self_user);
        assert_eq!(back.data.updates_state, orig.data.updates_state, "{src}");
        let ids = |d: &SessionData| {
            let mut v: Vec<_> = d.peers.iter().map(|p| (p.key(), p.access_hash)).collect();
            v.sort_by_key(|(k, _)| (k.id, k.kind as u8));
            v
        };
        assert_eq!(ids(&back.data), ids(&orig.data), "{src}");
        // An existing file is never overwritten.
        assert!(export_file(&orig.data, format, &out).is_err());
    }
}

// ---- older schema versions, rebuilt from the DDL in the libraries' source -----------------

/// A Telethon file of schema `version`, with the tables that version had.
fn telethon_file(dir: &Path, version: i64, auth_key: &[u8]) -> PathBuf {
    let path = dir.join(format!("v{version}.session"));
    let c = Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE version (version integer primary key);")
        .unwrap();
    c.execute("INSERT INTO version VALUES (?1)", [version])
        .unwrap();
    let sessions = match version {
        ..=4 => {
            "sessions (dc_id integer primary key, server_address text, port integer, auth_key blob)"
        }
        5..=7 => {
            "sessions (dc_id integer primary key, server_address text, port integer, auth_key blob, takeout_id integer)"
        }
        _ => {
            "sessions (dc_id integer primary key, server_address text, port integer, auth_key blob, takeout_id integer, tmp_auth_key blob)"
        }
    };
    c.execute_batch(&format!("CREATE TABLE {sessions};"))
        .unwrap();
    let entities = if version >= 7 {
        "entities (id integer primary key, hash integer not null, username text, phone integer, name text, date integer)"
    } else {
        "entities (id integer primary key, hash integer not null, username text, phone integer, name text)"
    };
    c.execute_batch(&format!("CREATE TABLE {entities};"))
        .unwrap();
    if version >= 2 {
        c.execute_batch(
            "CREATE TABLE sent_files (md5_digest blob, file_size integer, type integer, \
             id integer, hash integer, primary key(md5_digest, file_size, type));",
        )
        .unwrap();
        c.execute("INSERT INTO sent_files VALUES (x'00', 1, 0, 2, 3)", [])
            .unwrap();
    }
    if version >= 4 {
        c.execute_batch(
            "CREATE TABLE update_state (id integer primary key, pts integer, qts integer, \
             date integer, seq integer); INSERT INTO update_state VALUES (0, 5, 6, 7, 8);",
        )
        .unwrap();
    }
    let n_cols = match version {
        ..=4 => 4,
        5..=7 => 5,
        _ => 6,
    };
    let placeholders = ["?1", "?2", "?3", "?4", "NULL", "NULL"][..n_cols].join(", ");
    c.execute(
        &format!("INSERT INTO sessions VALUES ({placeholders})"),
        rusqlite::params![3, "149.154.175.100", 443, auth_key],
    )
    .unwrap();
    let row = if version >= 7 {
        "INSERT INTO entities VALUES (123, 456, 'alice', '15551234567', 'Alice', 1)"
    } else {
        "INSERT INTO entities VALUES (123, 456, 'alice', '15551234567', 'Alice')"
    };
    c.execute(row, []).unwrap();
    path
}

#[test]
fn every_telethon_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    for version in 1..=8 {
        let path = telethon_file(dir.path(), version, &key(1, 1));
        let imp = read_path(&path, None).unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(imp.format, Format::TelethonSqlite);
        assert_eq!(imp.data.home_dc, 3);
        assert_eq!(home_key(&imp.data), key(1, 1));
        // Telethon drops entities below v6 and the v2 sent-file cache.
        assert_eq!(
            imp.data.peers.len(),
            usize::from(version >= 6),
            "v{version}"
        );
        assert_eq!(
            imp.data.sent_files.len(),
            usize::from(version >= 3),
            "v{version}"
        );
        assert_eq!(imp.data.updates_state.pts, if version >= 4 { 5 } else { 0 });
    }
}

#[test]
fn telethon_update_state_takes_float_dates_and_refuses_what_overflows_32_bits() {
    let dir = tempfile::tempdir().unwrap();
    let path = telethon_file(dir.path(), 8, &key(1, 1));
    let c = Connection::open(&path).unwrap();
    // Telethon writes `date` as `datetime.timestamp()`, a float.
    c.execute(
        "UPDATE update_state SET date = 1700000000.75 WHERE id = 0",
        [],
    )
    .unwrap();
    c.execute("INSERT INTO update_state VALUES (77, 9, 0, 0, 0)", [])
        .unwrap();
    drop(c);
    let d = read_path(&path, None).unwrap().data;
    assert_eq!(d.updates_state.date, 1_700_000_000);
    assert_eq!(d.updates_state.channels.len(), 1);
    assert_eq!(d.updates_state.channels[0].pts, 9);

    let c = Connection::open(&path).unwrap();
    c.execute("UPDATE update_state SET pts = 4294967296 WHERE id = 77", [])
        .unwrap();
    drop(c);
    let e = read_path(&path, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Malformed);
    assert!(e.to_string().contains("update_state pts"), "{e}");
}

#[test]
fn can_write_names_exactly_the_formats_the_writers_take() {
    let data = read_path(&fixture("telethon-v8.session"), None)
        .unwrap()
        .data;
    let dir = tempfile::tempdir().unwrap();
    for f in Format::ALL {
        let written = if f.is_string() {
            export_string(&data, f).is_ok()
        } else {
            export_file(&data, f, &dir.path().join(f.name())).is_ok()
        };
        assert_eq!(written, f.can_write(), "{f}");
        assert_eq!(Format::from_name(f.name()), Some(f));
    }
}

#[test]
fn a_negative_api_id_is_refused_not_wrapped() {
    let mut data = read_path(&fixture("pyrogram-362.string"), None)
        .unwrap()
        .data;
    data.extras.api_id = Some(-5);
    let e = export_string(&data, Format::PyrogramString).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Malformed);
    assert!(e.to_string().contains("api_id -5"), "{e}");
}

#[test]
fn telethon_future_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = telethon_file(dir.path(), 8, &key(1, 1));
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE version SET version = 9", [])
        .unwrap();
    let err = read_path(&path, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnsupportedVersion);
    assert_eq!(err.format, Some(Format::TelethonSqlite));
    assert!(err.to_string().contains("schema version 9"), "{err}");
}

#[test]
fn sessions_without_an_auth_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = telethon_file(dir.path(), 7, b"");
    let err = read_path(&path, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NoAuthKey, "{err}");

    let zero = "1".to_owned()
        + &base64::engine::general_purpose::URL_SAFE.encode(
            [
                [2u8].as_slice(),
                &[149, 154, 167, 51],
                &[1, 187],
                &[0u8; 256],
            ]
            .concat(),
        );
    let err = read_bytes(zero.as_bytes(), None).unwrap_err();
    assert_eq!(
        (err.kind, err.format),
        (ErrorKind::NoAuthKey, Some(Format::TelethonString))
    );

    let pyro = dir.path().join("p.session");
    let c = Connection::open(&pyro).unwrap();
    c.execute_batch(
        "CREATE TABLE sessions (dc_id INTEGER PRIMARY KEY, api_id INTEGER, test_mode INTEGER, \
         auth_key BLOB, date INTEGER NOT NULL, user_id INTEGER, is_bot INTEGER);
         CREATE TABLE peers (id INTEGER PRIMARY KEY, access_hash INTEGER, type INTEGER NOT NULL,
         username TEXT, phone_number TEXT, last_update_on INTEGER);
         CREATE TABLE version (number INTEGER PRIMARY KEY);
         INSERT INTO version VALUES (3);
         INSERT INTO sessions VALUES (2, NULL, NULL, NULL, 0, NULL, NULL);",
    )
    .unwrap();
    drop(c);
    let err = read_path(&pyro, None).unwrap_err();
    assert_eq!(
        (err.kind, err.format),
        (ErrorKind::NoAuthKey, Some(Format::PyrogramSqlite))
    );
}

#[test]
fn pyrogram_v1_and_v2_files() {
    let dir = tempfile::tempdir().unwrap();
    for version in [1, 2, 99] {
        let path = dir.path().join(format!("p{version}.session"));
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE sessions (dc_id INTEGER PRIMARY KEY, test_mode INTEGER, auth_key BLOB,
             date INTEGER NOT NULL, user_id INTEGER, is_bot INTEGER);
             CREATE TABLE peers (id INTEGER PRIMARY KEY, access_hash INTEGER, type INTEGER NOT NULL,
             username TEXT, phone_number TEXT, last_update_on INTEGER);
             CREATE TABLE version (number INTEGER PRIMARY KEY);
             INSERT INTO peers VALUES (-1001234567890, 77, 'channel', 'news', NULL, 1);",
        )
        .unwrap();
        c.execute("INSERT INTO version VALUES (?1)", [version])
            .unwrap();
        c.execute(
            "INSERT INTO sessions VALUES (4, 0, ?1, 0, 42, 1)",
            [key(9, 9)],
        )
        .unwrap();
        drop(c);
        let r = read_path(&path, None);
        if version == 99 {
            assert_eq!(r.unwrap_err().kind, ErrorKind::UnsupportedVersion);
            continue;
        }
        let imp = r.unwrap();
        assert_eq!(imp.data.home_dc, 4);
        assert_eq!(imp.data.self_user.unwrap().id, 42);
        assert_eq!(imp.data.peers.len(), usize::from(version == 2));
    }
}

// ---- bad input ----------------------------------------------------------------------------

#[test]
fn bad_strings_name_the_format_and_the_problem() {
    let good = std::fs::read_to_string(fixture("telethon-ipv4.string")).unwrap();
    let good = good.trim();
    // Wrong length.
    let err = read_bytes(&good.as_bytes()[..300], Some(Format::TelethonString)).unwrap_err();
    assert_eq!(err.format, Some(Format::TelethonString));
    assert!(err.to_string().contains("characters"), "{err}");
    // Wrong base64.
    let mut bad = good.to_owned();
    bad.replace_range(10..11, "!");
    let err = read_bytes(bad.as_bytes(), Some(Format::TelethonString)).unwrap_err();
    assert!(err.to_string().contains("base64"), "{err}");
    // Auto-detection of a string that is neither.
    let err = read_bytes(b"hello world", None).unwrap_err();
    assert_eq!(err.format, None);
    let err = read_bytes(&[b'A'; 200], None).unwrap_err();
    assert!(err.to_string().contains("200 characters"), "{err}");
    // Pyrogram wrong length.
    let err = read_bytes(&[b'A'; 300], Some(Format::PyrogramString)).unwrap_err();
    assert_eq!(err.format, Some(Format::PyrogramString));
}

#[test]
fn truncated_and_corrupt_files() {
    let bytes = std::fs::read(fixture("telethon-v8.session")).unwrap();
    for cut in [16, 100, 4096, bytes.len() / 2] {
        let err = read_bytes(&bytes[..cut], None).unwrap_err();
        assert!(
            matches!(
                err.kind,
                ErrorKind::Malformed | ErrorKind::NotThisFormat | ErrorKind::Io
            ),
            "cut {cut}: {err:?}"
        );
    }
    let mut flipped = bytes.clone();
    for b in &mut flipped[100..4096] {
        *b ^= 0x5a;
    }
    assert!(read_bytes(&flipped, None).is_err());
    let tl = std::fs::read(fixture("grammers-08.session")).unwrap();
    for cut in [4, 20, tl.len() - 1] {
        let err = read_bytes(&tl[..cut], None).unwrap_err();
        assert_eq!(err.format, Some(Format::GrammersTl));
    }
    let err = read_bytes(b"not a session at all\x00\x01", None).unwrap_err();
    assert_eq!(err.format, None);
}

#[test]
fn a_wal_beside_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.session");
    std::fs::copy(fixture("telethon-v8.session"), &path).unwrap();
    std::fs::write(dir.path().join("t.session-wal"), b"pending").unwrap();
    let err = read_path(&path, None).unwrap_err();
    assert!(err.to_string().contains("write-ahead log"), "{err}");
}

#[test]
fn marked_ids() {
    assert_eq!(unmark(123), Some((PeerKind::User, 123)));
    assert_eq!(unmark(-123), Some((PeerKind::Chat, 123)));
    assert_eq!(
        unmark(-1_001_234_567_890),
        Some((PeerKind::Channel, 1_234_567_890))
    );
    assert_eq!(unmark(0), None);
    assert_eq!(unmark(-1_000_000_000_000), None);
    assert_eq!(unmark(i64::MIN), None);
    for (k, id) in [
        (PeerKind::User, 5),
        (PeerKind::Chat, 6),
        (PeerKind::Channel, 7),
    ] {
        assert_eq!(unmark(mark(k, id)), Some((k, id)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read_bytes(&bytes, None);
        for f in Format::ALL {
            let _ = read_bytes(&bytes, Some(f));
        }
    }

    #[test]
    fn arbitrary_strings_of_session_lengths_never_panic(
        s in "[A-Za-z0-9_=-]{351,370}",
        lead in prop_oneof![Just(""), Just("1")],
    ) {
        let s = format!("{lead}{s}");
        let _ = read_bytes(s.as_bytes(), None);
        let _ = read_bytes(s.as_bytes(), Some(Format::TelethonString));
        let _ = read_bytes(s.as_bytes(), Some(Format::PyrogramString));
    }

    #[test]
    fn damaged_sqlite_images_never_panic(
        offset in 16usize..20_000,
        junk in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let mut bytes = std::fs::read(fixture("pyrogram.session")).unwrap();
        let end = (offset + junk.len()).min(bytes.len());
        let start = offset.min(end);
        bytes[start..end].copy_from_slice(&junk[..end - start]);
        let _ = read_bytes(&bytes, None);
    }

    #[test]
    fn damaged_tl_sessions_never_panic(
        offset in 0usize..600,
        junk in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        let mut bytes = std::fs::read(fixture("grammers-07.session")).unwrap();
        let end = (offset + junk.len()).min(bytes.len());
        let start = offset.min(end);
        bytes[start..end].copy_from_slice(&junk[..end - start]);
        let _ = read_bytes(&bytes, None);
    }
}
