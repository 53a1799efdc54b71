//! Passphrase strength (`init`, `passwd`, `rekey`): vaultctl estimates it with zxcvbn and
//! refuses a passphrase below the floor with the reason, before anything reaches the daemon,
//! unless `--weak-passphrase` is given.

use std::process::Output;

use crate::util::*;

fn status_state(env: &Env) -> String {
    let out = env.ctl(&["status", "--json"]);
    assert_success(&out, "status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    v["state"].as_str().expect("state").to_owned()
}

fn init_with(env: &Env, passphrase: &str, extra: &[&str]) -> Output {
    let pf = env.secret_file("init-pass", passphrase);
    let mut args = vec!["init", "--passphrase-file", pf.to_str().unwrap()];
    args.extend(CHEAP_KDF);
    args.extend(extra);
    env.ctl(&args)
}

#[test]
fn init_refuses_a_common_password_and_says_why_without_printing_it() {
    let env = Env::new();
    let _d = env.start();
    let out = init_with(&env, "Password123", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("too weak"), "{err}");
    assert!(err.contains("11 characters"), "{err}");
    assert!(err.contains("estimated guesses 10^"), "{err}");
    assert!(err.contains("--weak-passphrase"), "{err}");
    assert!(
        !err.contains("Password123"),
        "the passphrase is printed: {err}"
    );
    assert!(stdout(&out).is_empty());
    // Nothing reached the daemon.
    assert_eq!(status_state(&env), "uninitialized");

    // With the flag: a warning, and the vault is initialized with it.
    let out = init_with(&env, "Password123", &["--weak-passphrase"]);
    assert_success(&out, "init --weak-passphrase");
    let err = stderr(&out);
    assert!(err.contains("warning") && err.contains("weak"), "{err}");
    assert!(!err.contains("Password123"), "{err}");
    assert_eq!(status_state(&env), "unlocked");
    env.ctl(&["lock"]);
    assert_success(
        &env.unlock("Password123"),
        "unlock with the weak passphrase",
    );
}

#[test]
fn passwd_and_rekey_refuse_a_weak_passphrase_and_keep_the_old_one() {
    let env = Env::new();
    let _d = env.start();
    env.init();
    let old = env.secret_file("old", PASS);
    let weak = env.secret_file("weak", "qwertyuiop");
    let passwd = |new: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "passwd",
            "--passphrase-file",
            old.to_str().unwrap(),
            "--new-passphrase-file",
            new.to_str().unwrap(),
        ];
        args.extend(CHEAP_KDF);
        args.extend(extra);
        env.ctl(&args)
    };
    let out = passwd(&weak, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("new passphrase is too weak"),
        "{}",
        stderr(&out)
    );
    // The old passphrase still opens the vault, the weak one does not.
    env.ctl(&["lock"]);
    assert!(!env.unlock("qwertyuiop").status.success());
    assert_success(&env.unlock(PASS), "unlock with the unchanged passphrase");

    // rekey keeps the current passphrase as the only keyslot's: a weak current one is
    // refused too, and accepted with the flag.
    assert_success(
        &passwd(&weak, &["--weak-passphrase"]),
        "passwd --weak-passphrase",
    );
    let rekey = |extra: &[&str]| {
        let mut args = vec!["rekey", "--passphrase-file", weak.to_str().unwrap()];
        args.extend(CHEAP_KDF);
        args.extend(extra);
        env.ctl(&args)
    };
    let out = rekey(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("passphrase is too weak"),
        "{}",
        stderr(&out)
    );
    assert_success(&rekey(&["--weak-passphrase"]), "rekey --weak-passphrase");
}
