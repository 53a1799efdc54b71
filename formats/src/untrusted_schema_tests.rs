//! The importers against a session file whose schema computes what is read. A session file
//! is untrusted input (the threat model's "malicious session file"), and an SQLite image is
//! more than data: its schema may declare generated columns, whose SQL expressions SQLite
//! evaluates on every read, and virtual tables, whose modules read tables of the author's
//! making. Both are refused (found by an adversarial review).

use rusqlite::Connection;

use super::*;

/// A Telethon v8 session of `rows` entities whose `name` column is not stored but computed
/// by the file's own schema: a 1 MB string per row, from a file of a few kilobytes.
fn amplifying_telethon_file(dir: &std::path::Path, rows: i64) -> std::path::PathBuf {
    let path = dir.join("amplify.session");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE version (version integer primary key);
         INSERT INTO version VALUES (8);
         CREATE TABLE sessions (dc_id integer primary key, server_address text, port integer,
             auth_key blob, takeout_id integer, tmp_auth_key blob);
         CREATE TABLE entities (id integer primary key, hash integer not null, username text,
             phone integer, date integer,
             name text GENERATED ALWAYS AS (printf('%.*c', 1000000, 'x')) VIRTUAL);
         CREATE TABLE sent_files (md5_digest blob, file_size integer, type integer,
             id integer, hash integer, primary key(md5_digest, file_size, type));
         CREATE TABLE update_state (id integer primary key, pts integer, qts integer,
             date integer, seq integer);",
    )
    .unwrap();
    c.execute(
        "INSERT INTO sessions VALUES (2, '149.154.167.51', 443, ?1, NULL, NULL)",
        [vec![7u8; 256]],
    )
    .unwrap();
    for id in 1..=rows {
        c.execute(
            "INSERT INTO entities (id, hash, username, phone, date) VALUES (?1, 1, NULL, NULL, 0)",
            [id],
        )
        .unwrap();
    }
    drop(c);
    path
}

/// Everything an import holds is in the file it read: a Telethon file stores each name it
/// has, so the names imported cannot add up to more bytes than the file. Today the schema's
/// generated column makes a 20 kB file import as 200 MB of names (and a file of a few
/// megabytes as more memory than the host has: `vaultctl import`, often run as root, is
/// killed, or takes the host's memory with it).
#[test]
fn a_session_file_cannot_compute_its_own_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = amplifying_telethon_file(dir.path(), 200);
    let file_size = std::fs::metadata(&path).unwrap().len() as usize;
    let imported = import(Input::Path(&path), None, &mut |_, _| {});
    let names: usize = match &imported {
        Ok(imp) => imp
            .data
            .peers
            .iter()
            .map(|p| p.name.as_deref().map_or(0, str::len))
            .sum(),
        Err(_) => 0,
    };
    println!(
        "REVIEW a Telethon file of {file_size} bytes imported as {names} bytes of peer names ({})",
        match &imported {
            Ok(_) => "accepted".to_owned(),
            Err(e) => format!("refused: {e}"),
        }
    );
    assert!(
        names <= file_size,
        "a file of {file_size} bytes imported as {names} bytes of names"
    );
}

/// A Telethon v8 session whose `entities` table is an FTS5 virtual table: SQLite's `type =
/// 'table'` in `sqlite_master` covers virtual tables too, so the importer reads it through
/// the FTS5 module, whose shadow tables (`entities_data`, `entities_idx`, …) the file's
/// author writes as they like. Reading virtual tables of an untrusted database is the attack
/// surface SQLite's own guidance ("Defense against the dark arts") says to close: refuse
/// them, `SQLITE_DBCONFIG_DEFENSIVE`, `trusted_schema = OFF`.
#[test]
fn a_session_file_with_virtual_tables_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vtab.session");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE version (version integer primary key);
         INSERT INTO version VALUES (8);
         CREATE TABLE sessions (dc_id integer primary key, server_address text, port integer,
             auth_key blob, takeout_id integer, tmp_auth_key blob);
         CREATE VIRTUAL TABLE entities USING fts5(id, hash, username, phone, name, date);
         INSERT INTO entities VALUES (123, 456, 'alice', '15551234567', 'Alice', 1);
         CREATE TABLE sent_files (md5_digest blob, file_size integer, type integer,
             id integer, hash integer, primary key(md5_digest, file_size, type));
         CREATE TABLE update_state (id integer primary key, pts integer, qts integer,
             date integer, seq integer);",
    )
    .unwrap();
    c.execute(
        "INSERT INTO sessions VALUES (2, '149.154.167.51', 443, ?1, NULL, NULL)",
        [vec![7u8; 256]],
    )
    .unwrap();
    drop(c);
    let imported = import(Input::Path(&path), None, &mut |_, _| {});
    println!(
        "REVIEW a Telethon file with an FTS5 entities table: {}",
        match &imported {
            Ok(imp) => format!("accepted, {} peers", imp.data.peers.len()),
            Err(e) => format!("refused: {e}"),
        }
    );
    assert!(
        imported.is_err(),
        "a session file with a virtual table was imported"
    );
}
