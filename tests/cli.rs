//! `vaultctl` against a real daemon: exit codes (0 ok, 1 daemon error, 2 usage, 3
//! unreachable), `status`/`list` JSON, `rm`/`rename`/`grant`/`revoke`, and another uid's
//! admin requests refused.

use std::process::{Output, Stdio};

use session_vault_proto::message::{Request, Response};

use crate::util::child::{As, ChildClient};
use crate::util::*;

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

#[track_caller]
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

fn names(env: &Env) -> Vec<String> {
    let out = env.ctl(&["list", "--json"]);
    assert_success(&out, "list --json");
    json(&out)
        .as_array()
        .expect("list --json is an array")
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn status_of_an_uninitialized_vault() {
    let env = Env::new();
    let d = env.start();
    let out = env.ctl(&["status"]);
    assert_success(&out, "status");
    assert!(stdout(&out).contains("uninitialized"), "{}", stdout(&out));

    let out = env.ctl(&["status", "--json"]);
    assert_success(&out, "status --json");
    let v = json(&out);
    assert_eq!(v["state"], "uninitialized");
    assert_eq!(v["vault_path"], env.vault_db().to_str().unwrap());
    assert_eq!(v["sessions"], serde_json::Value::Null);
    assert_eq!(v["pid"], d.pid());
    assert!(v["uptime_secs"].is_u64());
    assert!(v["connections"].as_u64().unwrap() >= 1);
    assert!(!v["version"].as_str().unwrap().is_empty());
}

#[test]
fn no_daemon_is_exit_3_naming_the_socket() {
    let env = Env::new();
    let sock = env.socket().to_str().unwrap().to_owned();
    for args in [&["status"][..], &["status", "--json"], &["list"], &["lock"]] {
        let out = env.ctl(args);
        assert_exit(&out, 3, &format!("{args:?} without a daemon"));
        assert!(stderr(&out).contains(&sock), "{args:?}: {}", stderr(&out));
    }
    // The same with the stale socket of a killed daemon.
    env.start().kill();
    assert!(env.socket().exists());
    let out = env.ctl(&["status"]);
    assert_exit(&out, 3, "status on a stale socket");
    assert!(stderr(&out).contains(&sock), "{}", stderr(&out));
}

#[test]
fn usage_errors_are_exit_2() {
    let env = Env::new();
    let _d = env.start();
    for args in [
        &["frobnicate"][..],
        &["rename", "only-one"],
        &["grant", "bot"],
        &["grant", "bot", "--uid", "1", "--gid", "1"],
        &["grant", "bot", "--uid", "not-a-number"],
        &["status", "--bogus"],
    ] {
        assert_exit(&env.ctl(args), 2, &format!("{args:?}"));
    }
}

#[tokio::test]
async fn rm_needs_yes_without_a_terminal_and_refuses_a_leased_session() {
    let env = Env::new();
    let d = env.start_and_init();
    let c = env.connect().await;
    open_session(&c, "bot", false).await;
    let held = open_session(&c, "held", true).await;

    let out = env.ctl(&["rm", "bot"]);
    assert_exit(&out, 2, "rm without --yes and no TTY");
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(names(&env), ["bot", "held"], "rm without --yes deleted");

    let out = env.ctl(&["rm", "held", "--yes"]);
    assert_exit(&out, 1, "rm of a leased session");
    assert!(
        stderr(&out).contains(&std::process::id().to_string()),
        "names the holder: {}",
        stderr(&out)
    );
    assert_exit(&env.ctl(&["rm", "ghost", "--yes"]), 1, "rm ghost");

    assert_success(&env.ctl(&["rm", "bot", "--yes"]), "rm --yes");
    assert_eq!(names(&env), ["held"]);
    c.call(Request::CloseSession { handle: held })
        .await
        .unwrap();
    assert_success(&env.ctl(&["rm", "-y", "held"]), "rm -y after close");
    assert!(names(&env).is_empty());
    drop(d);
}

#[tokio::test]
async fn list_shows_the_lease_holder_pid() {
    let env = Env::new();
    let _d = env.start_and_init();
    let c = env.connect().await;
    let h = open_session(&c, "mine", true).await;
    c.call(Request::SetHomeDc {
        handle: h,
        dc_id: 4,
    })
    .await
    .unwrap();
    open_session(&c, "shared", false).await;
    let holder = ChildClient::spawn(
        &env,
        As::Me,
        &[Request::OpenSession {
            name: "theirs".into(),
            exclusive: true,
            create_if_missing: true,
        }],
        true,
    );
    assert!(matches!(holder.response(), Response::Opened { .. }));
    holder.wait_ready();

    let out = env.ctl(&["list", "--json"]);
    assert_success(&out, "list --json");
    let v = json(&out);
    let list = v.as_array().unwrap();
    let entry = |n: &str| {
        list.iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("{n} not listed: {v}"))
    };
    assert_eq!(entry("mine")["lease_holder_pid"], std::process::id());
    assert_eq!(entry("theirs")["lease_holder_pid"], holder.pid());
    assert_eq!(entry("shared")["lease_holder_pid"], serde_json::Value::Null);
    let mine = entry("mine");
    assert_eq!(mine["home_dc"], 4);
    assert_eq!(mine["has_auth_key"], false);
    assert_eq!(mine["owner_uid"], 0);
    assert_eq!(mine["peer_count"], 0);
    assert_eq!(mine["user_id"], serde_json::Value::Null);
    assert!(mine["created_at"].as_i64().unwrap() > 0);
    assert!(mine["updated_at"].as_i64().unwrap() >= mine["created_at"].as_i64().unwrap());
    let names: Vec<_> = list.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mine", "shared", "theirs"], "sorted by name");

    // The table shows the pid too.
    let out = env.ctl(&["list"]);
    assert_success(&out, "list");
    assert!(
        stdout(&out).contains(&holder.pid().to_string()),
        "{}",
        stdout(&out)
    );
    let out = env.ctl(&["status", "--json"]);
    assert_eq!(json(&out)["sessions"], 3);
}

#[tokio::test]
async fn rename_moves_a_session_and_refuses_taken_or_missing_names() {
    let env = Env::new();
    let _d = env.start_and_init();
    let c = env.connect().await;
    let h = open_session(&c, "old", true).await;
    open_session(&c, "other", false).await;

    // An open handle follows the session through a rename.
    assert_success(&env.ctl(&["rename", "old", "new"]), "rename");
    assert_eq!(names(&env), ["new", "other"]);
    let r = c
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 5,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let list = json(&env.ctl(&["list", "--json"]));
    assert_eq!(list[0]["home_dc"], 5);
    assert_eq!(list[0]["lease_holder_pid"], std::process::id());

    let out = env.ctl(&["rename", "new", "other"]);
    assert_exit(&out, 1, "rename onto a taken name");
    assert!(stderr(&out).contains("other"), "{}", stderr(&out));
    assert_exit(&env.ctl(&["rename", "ghost", "x"]), 1, "rename ghost");
    assert_eq!(names(&env), ["new", "other"]);
}

/// `vaultctl` run as [`OTHER_UID`].
pub(crate) fn ctl_as_other(env: &Env, args: &[&str], stdin: Stdio) -> Output {
    let exe = executable_by_others(env, &crate::util::vaultctl_bin());
    as_other_uid(&exe)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--socket")
        .arg(env.socket())
        .args(args)
        .stdin(stdin)
        .output()
        .expect("run vaultctl as another uid")
}

#[test]
fn another_uid_gets_permission_denied_from_vaultctl() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let _d = env.start_and_init();
    env.open_socket_to_everyone();
    let pf = env.secret_file("other-pass", PASS);
    let pass = || Stdio::from(std::fs::File::open(&pf).unwrap());

    let out = ctl_as_other(&env, &["status", "--json"], Stdio::null());
    assert_success(&out, "status as another uid");
    assert_eq!(json(&out)["state"], "unlocked");

    let refused = |args: &[&str], stdin: Stdio| {
        let out = ctl_as_other(&env, args, stdin);
        assert_exit(&out, 1, &format!("{args:?} as uid {OTHER_UID}"));
        let err = stderr(&out).to_lowercase();
        assert!(
            err.contains("permission") || err.contains("not an admin"),
            "{args:?}: {err}"
        );
    };
    for args in [
        &["lock"][..],
        &["list"],
        &["list", "--json"],
        &["rm", "x", "--yes"],
        &["rename", "x", "y"],
        &["grant", "x", "--uid", "4242"],
        &["revoke", "x", "--uid", "0"],
    ] {
        refused(args, Stdio::null());
    }
    let out = env.ctl(&["status", "--json"]);
    assert_eq!(
        json(&out)["state"],
        "unlocked",
        "the other uid locked the vault"
    );

    // Unlock, on a locked vault (vaultctl does not send it to an unlocked one).
    assert_success(&env.ctl(&["lock"]), "lock");
    refused(&["unlock", "--passphrase-fd", "0"], pass());
    let out = env.ctl(&["status", "--json"]);
    assert_eq!(
        json(&out)["state"],
        "locked",
        "the other uid unlocked the vault"
    );
}

#[tokio::test]
async fn grant_and_revoke_let_another_uid_open_a_session() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let _d = env.start_and_init();
    let c = env.connect().await;
    open_session(&c, "rootbot", false).await;
    env.open_socket_to_everyone();
    let other = OTHER_UID.to_string();
    let open = [Request::OpenSession {
        name: "rootbot".into(),
        exclusive: true,
        create_if_missing: false,
    }];
    let try_open = || {
        let child = ChildClient::spawn(&env, As::Other, &open, false);
        let r = child.response();
        child.finish();
        r
    };
    // A non-admin is told a session it may not use does not exist (the one answer it gets).
    let is_denied = |r: &Response| matches!(r, Response::Error(e) if e.code == session_vault_proto::message::ErrorCode::NoSuchSession);

    let r = try_open();
    assert!(is_denied(&r), "before grant: {r:?}");
    assert_success(
        &env.ctl(&["grant", "rootbot", "--uid", &other]),
        "grant --uid",
    );
    let r = try_open();
    assert!(matches!(r, Response::Opened { .. }), "after grant: {r:?}");
    assert_success(
        &env.ctl(&["revoke", "rootbot", "--uid", &other]),
        "revoke --uid",
    );
    let r = try_open();
    assert!(is_denied(&r), "after revoke: {r:?}");

    assert_success(
        &env.ctl(&["grant", "rootbot", "--gid", &other]),
        "grant --gid",
    );
    let r = try_open();
    assert!(
        matches!(r, Response::Opened { .. }),
        "after gid grant: {r:?}"
    );
    assert_success(
        &env.ctl(&["revoke", "rootbot", "--gid", &other]),
        "revoke --gid",
    );
    assert!(is_denied(&try_open()));

    assert_exit(
        &env.ctl(&["grant", "ghost", "--uid", &other]),
        1,
        "grant on a missing session",
    );
    // Revoking what was never granted is harmless.
    assert_success(
        &env.ctl(&["revoke", "rootbot", "--uid", "4299"]),
        "revoke unknown uid",
    );
}

#[test]
fn passwd_changes_the_passphrase_and_refuses_a_wrong_one() {
    let env = Env::new();
    let d = env.start_and_init();
    // `init` on an initialized vault is a daemon error.
    let pf = env.secret_file("again", "again");
    let mut args = vec!["init", "--passphrase-file", pf.to_str().unwrap()];
    args.extend(CHEAP_KDF);
    assert_exit(&env.ctl(&args), 1, "second init");

    let wrong = env.secret_file("wrong", "not it");
    let old = env.secret_file("old", PASS);
    let new = env.secret_file("new", "a brand new passphrase");
    let passwd = |current: &std::path::Path| {
        let mut args = vec![
            "passwd",
            "--passphrase-file",
            current.to_str().unwrap(),
            "--new-passphrase-file",
            new.to_str().unwrap(),
        ];
        args.extend(CHEAP_KDF);
        env.ctl(&args)
    };
    let out = passwd(&wrong);
    assert_exit(&out, 1, "passwd with a wrong current passphrase");
    assert!(
        stderr(&out).to_lowercase().contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
    assert_success(&passwd(&old), "passwd");

    // The new passphrase opens the vault, after a restart too; the old one no longer does.
    assert!(d.terminate().success());
    let _d = env.start();
    let out = env.unlock(PASS);
    assert_exit(&out, 1, "unlock with the old passphrase");
    assert_success(
        &env.unlock("a brand new passphrase"),
        "unlock with the new one",
    );
    assert_eq!(json(&env.ctl(&["status", "--json"]))["state"], "unlocked");
}

#[test]
fn a_daemon_that_never_answers_is_exit_3_not_a_hang() {
    let env = Env::new();
    let listener = std::os::unix::net::UnixListener::bind(env.socket()).unwrap();
    // Accept and hold connections without a word, until the test ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    let mut child = env
        .ctl_cmd(&["status"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let status = status.expect("vaultctl status still waiting after 30 s");
    assert_eq!(status.code(), Some(3));
}
