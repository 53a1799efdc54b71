//! The recovery key through `vaultctl`: `init --recovery-key` prints it once; it unlocks the
//! locked vault; a key with one mistyped digit is refused by vaultctl's group check before
//! the daemon is asked; `passwd --recovery-key` replaces a forgotten passphrase;
//! `recovery-key remove` ends it; `status` says whether there is one; the key never reaches
//! the daemon's log; another uid is refused both admin requests.

use std::process::Output;

use session_vault_proto::message::{ErrorCode, Request, Response};

use crate::util::child::{As, ChildClient};
use crate::util::*;

/// The recovery key in `vaultctl`'s output: the line of 8 dash-separated groups of 6 digits.
fn key_in(out: &str) -> String {
    out.lines()
        .map(str::trim)
        .find(|l| {
            l.len() == 8 * 7 - 1
                && l.split('-').all(|g| g.len() == 6)
                && l.chars().all(|c| c.is_ascii_digit() || c == '-')
        })
        .unwrap_or_else(|| panic!("no recovery key in the output:\n{out}"))
        .to_owned()
}

fn init_with_recovery_key(env: &Env) -> String {
    let pf = env.secret_file("pass", PASS);
    let mut args = vec![
        "init",
        "--recovery-key",
        "--passphrase-file",
        pf.to_str().unwrap(),
    ];
    args.extend(CHEAP_KDF);
    let out = env.ctl(&args);
    assert_success(&out, "vaultctl init --recovery-key");
    key_in(&stdout(&out))
}

fn unlock_with_key(env: &Env, key: &str) -> Output {
    let f = env.secret_file("recovery-key", key);
    env.ctl(&[
        "unlock",
        "--recovery-key",
        "--passphrase-file",
        f.to_str().unwrap(),
    ])
}

fn status_line(env: &Env) -> String {
    let out = env.ctl(&["status"]);
    assert_success(&out, "status");
    stdout(&out)
        .lines()
        .find(|l| l.starts_with("recovery:"))
        .expect("a recovery line in status")
        .to_owned()
}

#[test]
fn a_recovery_key_unlocks_until_removed_and_a_typo_is_caught_before_the_daemon() {
    let env = Env::new();
    let d = env.start();
    let key = init_with_recovery_key(&env);
    assert_eq!(status_line(&env), "recovery:    yes");
    let json = stdout(&env.ctl(&["status", "--json"]));
    assert!(json.contains("\"recovery_key\": true"), "{json}");
    assert_success(&env.ctl(&["lock"]), "lock");

    // One digit of group 3 mistyped: vaultctl says which group, exits 2, asks nothing.
    let mut typo: Vec<char> = key.chars().collect();
    let i = 2 * 7 + 3;
    typo[i] = if typo[i] == '9' { '0' } else { '9' };
    let typo: String = typo.into_iter().collect();
    let out = unlock_with_key(&env, &typo);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("group 3"), "{}", stderr(&out));
    assert!(
        !d.log().contains("refused"),
        "the daemon saw no attempt:\n{}",
        d.log()
    );

    let out = unlock_with_key(&env, &key);
    assert_success(&out, "unlock --recovery-key");
    assert!(stdout(&out).contains("The vault is unlocked."));

    let out = env.ctl(&["recovery-key", "remove"]);
    assert_success(&out, "recovery-key remove");
    assert_eq!(status_line(&env), "recovery:    no");
    let out = env.ctl(&["recovery-key", "remove"]);
    assert_eq!(out.status.code(), Some(1), "nothing to remove");
    assert_success(&env.ctl(&["lock"]), "lock");
    let out = unlock_with_key(&env, &key);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a removed key: {}",
        stderr(&out)
    );
    // Past the throttle's delay after that wrong attempt.
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_success(&env.unlock(PASS), "the passphrase still unlocks");

    let log = d.log();
    assert!(!log.contains(&key), "the key is in the daemon's log");
    assert!(!log.contains(&key.replace('-', "")));
}

#[test]
fn a_forgotten_passphrase_is_replaced_with_the_recovery_key() {
    let env = Env::new();
    let _d = env.start();
    let first = init_with_recovery_key(&env);
    // `add` again replaces the key: the first one stops working.
    let out = env.ctl(&["recovery-key", "add"]);
    assert_success(&out, "recovery-key add");
    let key = key_in(&stdout(&out));
    assert_ne!(key, first);
    assert_success(&env.ctl(&["lock"]), "lock");

    let new_pass = "violet mandolin quarry sunrise 83";
    let kf = env.secret_file("recovery-key", &key);
    let nf = env.secret_file("new-pass", new_pass);
    let mut args = vec![
        "passwd",
        "--recovery-key",
        "--passphrase-file",
        kf.to_str().unwrap(),
        "--new-passphrase-file",
        nf.to_str().unwrap(),
        "--weak-passphrase",
    ];
    args.extend(CHEAP_KDF);
    assert_success(&env.ctl(&args), "passwd --recovery-key");
    assert_success(&env.unlock(new_pass), "the new passphrase unlocks");
    assert_success(&env.ctl(&["lock"]), "lock");
    let out = env.unlock(PASS);
    assert_eq!(out.status.code(), Some(1), "the old passphrase is gone");
    std::thread::sleep(std::time::Duration::from_millis(600));
    let out = unlock_with_key(&env, &first);
    assert_eq!(out.status.code(), Some(1), "the replaced key");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_success(
        &unlock_with_key(&env, &key),
        "the recovery key still unlocks",
    );
}

#[tokio::test]
async fn another_uid_may_not_add_or_remove_the_recovery_key() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    env.open_socket_to_everyone();
    let requests = [Request::AddRecoveryKey, Request::RemoveRecoveryKey];
    let child = ChildClient::spawn(&env, As::Other, &requests, false);
    for _ in &requests {
        match child.response() {
            Response::Error(e) => assert_eq!(e.code, ErrorCode::PermissionDenied, "{e}"),
            other => panic!("expected permission_denied, got {other:?}"),
        }
    }
    child.finish();
    let Ok(Response::Status(s)) = c.call(Request::Status).await else {
        panic!("status")
    };
    assert_eq!(s.recovery_key, Some(false));
}

/// `restore --recovery-key`: a backup whose passphrase is forgotten is restored with its
/// recovery key (only the recovery keyslot is tried: the passphrase does not work there, a
/// wrong key is refused and changes nothing), and the restored vault unlocks with it.
#[test]
fn a_backup_is_restored_with_its_recovery_key() {
    let env = Env::new();
    let _d = env.start();
    let key = init_with_recovery_key(&env);
    let c = env.ctl(&["list"]);
    assert_success(&c, "list");
    let backup = env.path().join("b.db");
    assert_success(
        &env.ctl(&["backup", backup.to_str().unwrap()]),
        "vaultctl backup",
    );
    assert_success(&env.ctl(&["lock"]), "lock");
    let restore = |text: &str| {
        let f = env.secret_file("restore-key", text);
        env.ctl(&[
            "restore",
            backup.to_str().unwrap(),
            "--recovery-key",
            "--passphrase-file",
            f.to_str().unwrap(),
        ])
    };
    // The passphrase as a recovery key fails the key's checks before anything is sent.
    let out = restore(PASS);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = restore(&key);
    assert_success(&out, "restore --recovery-key");
    assert!(
        stdout(&out).contains("Restored the vault"),
        "{}",
        stdout(&out)
    );
    assert_success(&unlock_with_key(&env, &key), "unlock the restored vault");
}
