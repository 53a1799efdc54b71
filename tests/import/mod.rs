//! `vaultctl import` and `vaultctl export` against a real daemon, with the fixtures that the
//! real Telethon, Pyrogram and grammers libraries wrote (`tests/fixtures/make_fixtures.sh`).
//!
//! - `formats`: each format imported, then read back over the protocol and compared with the
//!   fixture's JSON of expected values;
//! - `export`: exported back, byte for byte (strings) or field by field (files), and loaded
//!   with the real library when the fixture venv is there (skipped with a message if not);
//! - `bad_input`: every kind of bad input is refused and the vault is unchanged;
//! - `large`: a Telethon file with 100,000 entities, timed;
//! - `attacks`: the author of a session file against root's `vaultctl import` (symbolic and
//!   hard links, a path swapped before the shred through [`proxy`], FIFOs, other owners).

mod attacks;
mod bad_input;
mod export;
mod formats;
pub(crate) mod large;
mod proxy;

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;
use session_vault_client::Connection;
use session_vault_proto::message::{Request, Response};
use session_vault_proto::model::{PeerKind, SessionData};

use crate::util::{Daemon, Env, assert_success, stdout};

/// The fixtures directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A fixture file's path.
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// The expected values of fixture `key` from the JSON file `json`.
pub fn expected(json: &str, key: &str) -> Value {
    let text = std::fs::read_to_string(fixture(json)).expect("fixture JSON");
    let all: Value = serde_json::from_str(&text).expect("valid fixture JSON");
    all[key].clone()
}

/// A started, initialized (and so unlocked) daemon.
pub fn started() -> (Env, Daemon) {
    let env = Env::new();
    let d = env.start_and_init();
    (env, d)
}

/// `vaultctl import SOURCE --name NAME EXTRA…`, asserted to succeed; its stdout.
pub fn import_ok(env: &Env, source: &str, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["import", source, "--name", name];
    args.extend_from_slice(extra);
    let out = env.ctl(&args);
    assert_success(&out, &format!("vaultctl import {source}"));
    stdout(&out)
}

/// `vaultctl import - --name NAME` with `input` on stdin.
pub fn import_stdin(env: &Env, input: &[u8], name: &str, extra: &[&str]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut args = vec!["import", "-", "--name", name];
    args.extend_from_slice(extra);
    let mut child = env
        .ctl_cmd(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vaultctl");
    // vaultctl may refuse before reading its input (e.g. `--shred` with `-`): a closed pipe
    // is its answer, not a test failure; the exit status and stderr tell the rest.
    match child.stdin.take().expect("piped stdin").write_all(input) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("write stdin: {e}"),
    }
    child.wait_with_output().expect("vaultctl output")
}

/// Opens session `name` (not exclusively) and reads everything it holds over the protocol.
pub async fn read_back(c: &Connection, name: &str) -> (u32, SessionData) {
    let handle = match c
        .call(Request::OpenSession {
            name: name.into(),
            exclusive: false,
            create_if_missing: false,
        })
        .await
    {
        Ok(Response::Opened { handle, .. }) => handle,
        other => panic!("open {name}: {other:?}"),
    };
    match c
        .call(Request::Export {
            handle,
            without_peers: false,
        })
        .await
    {
        Ok(Response::SessionData(d)) => (handle, d),
        other => panic!("export {name}: {other:?}"),
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex of the auth key of DC `dc` in `data`, if any.
pub fn key_hex(data: &SessionData, dc: i32) -> Option<String> {
    data.dc_options
        .iter()
        .find(|d| d.id == dc)
        .and_then(|d| d.auth_key.as_ref())
        .map(|k| hex(k.as_bytes()))
}

/// `user`, `chat` or `channel`.
pub fn kind_name(kind: PeerKind) -> &'static str {
    match kind {
        PeerKind::User => "user",
        PeerKind::Chat => "chat",
        PeerKind::Channel => "channel",
    }
}

/// Asserts that the peers of `data` are exactly `expected` (a JSON array of objects with
/// kind, id and optionally access_hash, username, phone, name, bot, channel_kind), usernames
/// compared case-insensitively.
pub fn assert_peers(data: &SessionData, expected: &Value) {
    let expected = expected.as_array().expect("peers array");
    assert_eq!(data.peers.len(), expected.len(), "peer count");
    for e in expected {
        let id = e["id"].as_i64().unwrap();
        let kind = e["kind"].as_str().unwrap();
        let p = data
            .peers
            .iter()
            .find(|p| p.id == id && kind_name(p.kind) == kind)
            .unwrap_or_else(|| panic!("peer {kind} {id} missing"));
        assert_eq!(p.access_hash, e["access_hash"].as_i64(), "{kind} {id} hash");
        if let Some(u) = e.get("username") {
            assert_eq!(
                p.username.as_deref().map(str::to_lowercase),
                u.as_str().map(str::to_lowercase),
                "{kind} {id} username"
            );
        }
        if let Some(ph) = e.get("phone") {
            assert_eq!(p.phone.as_deref(), ph.as_str(), "{kind} {id} phone");
        }
        if let Some(n) = e.get("name") {
            assert_eq!(p.name.as_deref(), n.as_str(), "{kind} {id} name");
        }
        if e.get("bot").and_then(Value::as_bool) == Some(true) {
            assert_eq!(p.bot, Some(true), "{kind} {id} bot");
        }
        if let Some(ck) = e.get("channel_kind").and_then(Value::as_str) {
            let got = p.channel_kind.map(|k| format!("{k:?}").to_lowercase());
            assert_eq!(got.as_deref(), Some(ck), "{kind} {id} channel kind");
        }
    }
}

/// Names of the sessions in the vault, sorted.
pub async fn session_names(c: &Connection) -> Vec<String> {
    match c.call(Request::ListSessions).await {
        Ok(Response::Sessions(list)) => {
            let mut names: Vec<String> = list.into_iter().map(|s| s.summary.name).collect();
            names.sort();
            names
        }
        other => panic!("list: {other:?}"),
    }
}

/// The fixture venv's Python, when `make_fixtures.sh` has been run on this machine.
pub fn fixture_python() -> Option<PathBuf> {
    let base = std::env::var_os("SESSION_VAULT_FIXTURE_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/session-vault/fixture-venv"))
        })?;
    let py = base.join("current/bin/python");
    py.exists().then_some(py)
}
