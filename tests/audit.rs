//! The audit log (`vaultctl audit`): admin acts and session opens are recorded with who
//! (uid, pid, executable), what and the result; a failed unlock appears after the next
//! unlock; a deleted, edited or cut-off entry in the vault file is named and exits 1; the
//! filters and `--json`; non-admins are refused; the journal holds no secret.

use std::path::Path;

use serde_json::Value;
use session_vault_proto::backup::CHUNK_MAX;
use session_vault_proto::message::{ErrorCode, Request, Response};

use crate::util::*;

/// `vaultctl audit ARGS… --json`: the entries and the verdict line, and the exit code.
fn audit_json(env: &Env, args: &[&str]) -> (Vec<Value>, Value, Option<i32>) {
    let mut all = vec!["audit", "--json"];
    all.extend(args);
    let out = env.ctl(&all);
    let text = stdout(&out);
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let verdict = lines
        .pop()
        .unwrap_or_else(|| panic!("no verdict line; stderr {}", stderr(&out)));
    (lines, verdict, out.status.code())
}

fn find<'a>(entries: &'a [Value], action: &str, result: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["action"] == action && e["result"] == result)
        .collect()
}

fn unlock_ok(env: &Env) {
    assert_success(&env.unlock(PASS), "unlock");
}

#[tokio::test]
async fn admin_acts_and_session_opens_are_recorded_with_who_and_result() {
    let env = Env::new();
    let _d = env.start_and_init();
    let c = env.connect().await;
    let me = std::process::id();
    let my_exe = std::env::current_exe().unwrap();
    open_session(&c, "bot-a", true).await;
    let missing = c
        .call(Request::OpenSession {
            name: "nope".into(),
            exclusive: false,
            create_if_missing: false,
        })
        .await;
    assert_eq!(err_code(missing), ErrorCode::NoSuchSession);
    assert_success(&env.ctl(&["grant", "bot-a", "--uid", "1234"]), "grant");

    let (entries, verdict, code) = audit_json(&env, &[]);
    assert_eq!(code, Some(0), "{verdict}");
    assert_eq!(verdict["verified"], true, "{verdict}");
    assert_eq!(verdict["entries"], entries.len());
    // Numbered from 1 without gaps, with the stable field names.
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "{e}");
        for field in [
            "seq", "time", "uid", "gid", "pid", "exe", "unit", "action", "session", "detail",
            "result",
        ] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
    }
    let uid = u64::from(rustix::process::geteuid().as_raw());
    let init = find(&entries, "init", "ok");
    assert_eq!(init.len(), 1, "{entries:?}");
    assert_eq!(init[0]["uid"], uid);
    assert!(
        init[0]["exe"].as_str().unwrap().ends_with("vaultctl"),
        "{}",
        init[0]
    );
    let opens = find(&entries, "open_session", "ok");
    assert_eq!(opens.len(), 1, "{entries:?}");
    assert_eq!(opens[0]["pid"], me);
    assert_eq!(opens[0]["exe"], my_exe.to_str().unwrap());
    assert_eq!(opens[0]["session"], "bot-a");
    assert_eq!(opens[0]["detail"], "exclusive create_if_missing");
    let refused = find(&entries, "open_session", "no_such_session");
    assert_eq!(refused.len(), 1, "{entries:?}");
    assert_eq!(refused[0]["session"], "nope");
    let grant = find(&entries, "grant", "ok");
    assert_eq!(grant.len(), 1, "{entries:?}");
    assert_eq!(grant[0]["session"], "bot-a");
    assert_eq!(grant[0]["detail"], "uid 1234");

    // The read itself is an admin act: the next read shows it.
    let (again, _, _) = audit_json(&env, &[]);
    assert_eq!(find(&again, "audit", "ok").len(), 1, "{again:?}");
}

/// A streamed import and export are recorded by what they do and to which session, linked by
/// their transfer id, and their chunks are not recorded one by one.
/// `grant --sid` and `--group-sid` (Windows SIDs) send the ids `session_vault_proto::sid`
/// maps them to, as the audit log shows; a SID without an id is a usage error.
#[tokio::test]
async fn grants_by_windows_sid_send_the_mapped_ids() {
    let env = Env::new();
    let _d = env.start_and_init();
    let c = env.connect().await;
    open_session(&c, "bot-w", true).await;
    let out = env.ctl(&["grant", "bot-w", "--sid", "S-1-5-21-7-8-9-1001"]);
    assert_success(&out, "grant --sid");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SID S-1-5-21-7-8-9-1001 (uid 197609)"),
        "{out:?}"
    );
    assert_success(
        &env.ctl(&["grant", "bot-w", "--group-sid", "S-1-5-32-545"]),
        "grant --group-sid",
    );
    let everyone = env.ctl(&["grant", "bot-w", "--sid", "S-1-1-0"]);
    assert_eq!(everyone.status.code(), Some(2), "{everyone:?}");
    let (entries, _, _) = audit_json(&env, &[]);
    let details: Vec<_> = find(&entries, "grant", "ok")
        .iter()
        .map(|e| e["detail"].clone())
        .collect();
    assert_eq!(details, ["uid 197609", "gid 545"], "{entries:?}");
}

#[tokio::test]
async fn streamed_imports_and_exports_are_recorded_by_session_not_by_chunk() {
    use crate::import::large::{begin, encoded, send_chunks, transfer_id};
    let env = Env::new();
    let _d = env.start_and_init();
    let c = env.connect().await;
    let (bytes, sha) = encoded(5_000);
    assert!(bytes.len() > CHUNK_MAX, "more than one chunk");
    let id = transfer_id(&c, begin("big", &bytes, &sha)).await;
    send_chunks(&c, id, &bytes, bytes.len()).await;
    let r = c.call(Request::ImportCommit { id }).await;
    assert!(r.is_ok(), "{r:?}");
    // Read back in two chunks, then ended.
    let export = transfer_id(&c, Request::ExportBegin { name: "big".into() }).await;
    for offset in [0, CHUNK_MAX as u64] {
        let r = c.call(Request::ExportChunk { id: export, offset }).await;
        assert!(matches!(r, Ok(Response::Chunk(_))), "{r:?}");
    }
    let r = c.call(Request::TransferEnd { id: export }).await;
    assert!(r.is_ok(), "{r:?}");

    let (entries, verdict, code) = audit_json(&env, &[]);
    assert_eq!(code, Some(0), "{verdict}");
    // Nothing fell through to the catch-all name.
    assert!(find(&entries, "admin", "ok").is_empty(), "{entries:?}");
    let begins = find(&entries, "import_begin", "ok");
    assert_eq!(begins.len(), 1, "{entries:?}");
    assert_eq!(begins[0]["session"], "big");
    assert_eq!(
        begins[0]["detail"],
        format!("{} bytes, transfer {id}", bytes.len())
    );
    let commits = find(&entries, "import_commit", "ok");
    assert_eq!(commits.len(), 1, "{entries:?}");
    assert_eq!(commits[0]["detail"], format!("transfer {id}"));
    let exports = find(&entries, "export_begin", "ok");
    assert_eq!(exports.len(), 1, "{entries:?}");
    assert_eq!(exports[0]["session"], "big");
    assert_eq!(exports[0]["detail"], format!("transfer {export}"));
    // init, import begin and commit, export begin and its transfer_end: not one per chunk.
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "init",
            "import_begin",
            "import_commit",
            "export_begin",
            "transfer_end"
        ],
        "{entries:?}"
    );
}

#[test]
fn a_failed_unlock_is_recorded_at_the_next_unlock_and_the_journal_has_no_secret() {
    let env = Env::new();
    let d = env.start_and_init();
    assert_success(&env.ctl(&["lock"]), "lock");
    let wrong = "not the passphrase at all";
    let out = env.unlock(wrong);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The throttle's delay after a failure: vaultctl waits it out by itself.
    unlock_ok(&env);

    let (entries, verdict, code) = audit_json(&env, &[]);
    assert_eq!(code, Some(0), "{verdict}");
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    let at = |pair| {
        actions
            .iter()
            .position(|a| *a == pair)
            .unwrap_or_else(|| panic!("{pair:?} not in {actions:?}"))
    };
    // In the order they happened: lock (recorded before the keys went), the wrong unlock
    // (kept in memory while locked), the right one.
    assert!(at(("lock", "ok")) < at(("unlock", "bad_passphrase")));
    assert!(at(("unlock", "bad_passphrase")) < at(("unlock", "ok")));

    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("audit") && l.contains("bad_passphrase")),
        "the journal has the failed unlock:\n{log}"
    );
    for secret in [PASS, wrong] {
        assert!(!log.contains(secret), "a passphrase is in the journal");
    }
}

/// A vault with a few entries, the daemon stopped; returns the env and the entry count.
fn vault_with_entries() -> (Env, u64) {
    let env = Env::new();
    let d = env.start_and_init();
    for name in ["s1", "s2", "s3"] {
        let out = env.ctl(&["grant", name, "--uid", "1000"]);
        // The sessions do not exist: refused, and recorded all the same.
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    assert_success(&env.ctl(&["list"]), "list");
    let (entries, verdict, _) = audit_json(&env, &[]);
    assert_eq!(verdict["verified"], true);
    assert!(d.terminate().success());
    // The `audit` read above is entry n + 1.
    (env, entries.len() as u64 + 1)
}

fn tamper(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// Restarts, unlocks and runs `vaultctl audit`: exit code and all its output.
fn audit_after(env: &Env) -> (Option<i32>, String) {
    let _d = env.start();
    unlock_ok(env);
    let out = env.ctl(&["audit"]);
    (out.status.code(), stdout(&out) + &stderr(&out))
}

#[test]
fn a_deleted_entry_is_named() {
    let (env, n) = vault_with_entries();
    assert!(n >= 6, "{n}");
    tamper(&env.vault_db(), "DELETE FROM audit WHERE seq = 3");
    let (code, text) = audit_after(&env);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("entry 3 missing"), "{text}");
    assert!(!text.contains("entry 4"), "one finding only:\n{text}");
}

#[test]
fn an_edited_entry_is_named() {
    let (env, _) = vault_with_entries();
    // Flip one byte inside the ciphertext of entry 4.
    let conn = rusqlite::Connection::open(env.vault_db()).unwrap();
    let mut entry: Vec<u8> = conn
        .query_row("SELECT entry FROM audit WHERE seq = 4", [], |r| r.get(0))
        .unwrap();
    entry[40] ^= 1;
    conn.execute("UPDATE audit SET entry = ?1 WHERE seq = 4", [&entry])
        .unwrap();
    drop(conn);
    let (code, text) = audit_after(&env);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("entry 4 altered"), "{text}");
}

#[test]
fn a_replaced_entry_is_named() {
    let (env, _) = vault_with_entries();
    // Entry 2's ciphertext under number 5: it fails authentication there (the number is
    // bound into it).
    tamper(
        &env.vault_db(),
        "UPDATE audit SET entry = (SELECT entry FROM audit WHERE seq = 2) WHERE seq = 5",
    );
    let (code, text) = audit_after(&env);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("entry 5 altered"), "{text}");
}

#[test]
fn a_cut_off_tail_is_named() {
    let (env, n) = vault_with_entries();
    tamper(
        &env.vault_db(),
        &format!("DELETE FROM audit WHERE seq > {}", n - 2),
    );
    let (code, text) = audit_after(&env);
    assert_eq!(code, Some(1), "{text}");
    // The unlock after the cut appended at n + 1: the cut shows as a gap before it.
    assert!(
        text.contains(&format!("entries {}-{n} missing", n - 1)),
        "{text}"
    );

    // Cutting the tail and the sealed head with it is noticed too.
    let (env, n) = vault_with_entries();
    tamper(
        &env.vault_db(),
        &format!(
            "DELETE FROM audit WHERE seq > {}; DELETE FROM meta WHERE k = 'audit_head';",
            n - 2
        ),
    );
    let (code, text) = audit_after(&env);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("sealed head is missing"), "{text}");
}

#[tokio::test]
async fn since_session_and_json_filter_and_format() {
    let env = Env::new();
    let _d = env.start_and_init();
    let c = env.connect().await;
    open_session(&c, "alpha", false).await;
    open_session(&c, "beta", false).await;
    open_session(&c, "alpha", true).await;

    let (entries, verdict, code) = audit_json(&env, &["--session", "alpha"]);
    assert_eq!(code, Some(0));
    assert_eq!(verdict["verified"], true);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e["session"] == "alpha"));
    // Times are RFC 3339 in UTC.
    assert!(entries[0]["time"].as_str().unwrap().ends_with('Z'));

    let (recent, _, _) = audit_json(&env, &["--since", "1h"]);
    assert!(recent.len() >= 4, "{recent:?}");
    let (future, verdict, code) = audit_json(&env, &["--since", "2100-01-01T00:00:00Z"]);
    assert_eq!((future.len(), code), (0, Some(0)));
    assert_eq!(verdict["verified"], true);

    let out = env.ctl(&["audit", "--session", "beta"]);
    assert_success(&out, "audit");
    let text = stdout(&out);
    assert!(text.starts_with("SEQ"), "{text}");
    assert!(
        text.contains("open_session") && text.contains("beta"),
        "{text}"
    );
    assert!(!text.contains("alpha"), "{text}");
    assert!(text.contains("The audit log verifies"), "{text}");

    let out = env.ctl(&["audit", "--since", "soonish"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_non_admin_is_refused_audit() {
    let env = Env::new();
    let d = env.start_and_init();
    assert!(d.terminate().success());
    // This uid is no admin of a daemon whose only admin is another uid.
    let _d = env.start_with(&["--admin-uid", &OTHER_UID.to_string()]);
    let out = env.ctl(&["audit"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("audit is an admin request"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_log_survives_a_rekey_and_a_restart() {
    let env = Env::new();
    let d = env.start_and_init();
    assert_success(&env.ctl(&["list"]), "list");
    let (before, _, _) = audit_json(&env, &[]);
    let pf = env.secret_file("rekey-pass", PASS);
    let mut args = vec!["rekey", "--passphrase-file", pf.to_str().unwrap()];
    args.extend(CHEAP_KDF);
    assert_success(&env.ctl(&args), "rekey");
    assert!(d.terminate().success());
    let _d = env.start();
    unlock_ok(&env);
    let (after, verdict, code) = audit_json(&env, &[]);
    assert_eq!(code, Some(0), "{verdict}");
    assert_eq!(verdict["verified"], true, "{verdict}");
    // Every entry from before is still there, re-sealed under the new key.
    assert_eq!(&after[..before.len()], &before[..]);
    assert_eq!(find(&after, "rekey", "ok").len(), 1, "{after:?}");
}

#[test]
fn an_entry_from_another_copy_of_the_vault_is_named() {
    let (env, n) = vault_with_entries();
    let db = env.vault_db();
    let fork = env.path().join("fork.db");
    std::fs::copy(&db, &fork).unwrap();
    // Two histories from one file: each appends n + 1 (its unlock) and n + 2 (list).
    let run = || {
        let d = env.start();
        unlock_ok(&env);
        assert_success(&env.ctl(&["list"]), "list");
        assert!(d.terminate().success());
    };
    run();
    let entry = |path: &Path, seq: u64| -> Vec<u8> {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("SELECT entry FROM audit WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let first = entry(&db, n + 2);
    std::fs::copy(&fork, &db).unwrap();
    run();
    // The first history's entry n + 2 authenticates in the second (same key, same number)
    // but follows another entry n + 1.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE audit SET entry = ?1 WHERE seq = ?2",
        rusqlite::params![first, n + 2],
    )
    .unwrap();
    drop(conn);
    let (code, text) = audit_after(&env);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("entry {} does not follow", n + 2)),
        "{text}"
    );
}

/// Measures session opens per second (each recorded in the log). Run by hand:
/// `cargo nextest run -p session-vault-daemon --test integration --run-ignored only -E 'test(open_rate)' --no-capture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn open_rate() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let h = open_session(&c, "bot", false).await;
    c.call(Request::CloseSession { handle: h }).await.unwrap();
    const N: u32 = 3_000;
    let t = std::time::Instant::now();
    for _ in 0..N {
        let h = open_session(&c, "bot", true).await;
        c.call(Request::CloseSession { handle: h }).await.unwrap();
    }
    let each = t.elapsed() / N;
    eprintln!("open + close: {each:?} each");
}
