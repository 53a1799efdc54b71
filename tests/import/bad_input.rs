//! Bad input is refused with a message naming the format tried and what was wrong, and the
//! vault is unchanged.

use std::path::{Path, PathBuf};

use super::{fixture, import_ok, import_stdin, session_names, started};
use crate::util::{Env, stderr};

/// A copy of fixture `name` in the env's temp dir, changed by `edit` (SQL on it).
fn edited_copy(env: &Env, name: &str, sql: &str) -> PathBuf {
    let path = env.path().join(format!("edited-{name}"));
    std::fs::copy(fixture(name), &path).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
    path
}

fn write(env: &Env, name: &str, bytes: &[u8]) -> PathBuf {
    let path = env.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs `vaultctl import` on `path` and checks it is refused with exit 2 and `words` in the
/// message.
fn refused(env: &Env, path: &Path, extra: &[&str], words: &[&str]) {
    let mut args = vec!["import", path.to_str().unwrap(), "--name", "bad"];
    args.extend_from_slice(extra);
    let out = env.ctl(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{path:?}: {err}");
    for w in words {
        assert!(err.contains(w), "{path:?}: {w:?} not in {err}");
    }
    assert!(err.contains("nothing was sent"), "{err}");
}

#[tokio::test]
async fn every_bad_input_is_refused_and_the_vault_is_unchanged() {
    let (env, _d) = started();
    import_ok(
        &env,
        fixture("pyrogram.session").to_str().unwrap(),
        "good",
        &[],
    );
    let c = env.connect().await;
    let before = session_names(&c).await;

    // Not a session at all.
    let text = write(&env, "notes.txt", b"shopping list: eggs, milk\n");
    refused(&env, &text, &[], &["unrecognized session"]);
    let png = write(&env, "pic.session", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    refused(&env, &png, &[], &["unrecognized session"]);
    // A SQLite database of something else.
    let other = env.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    refused(
        &env,
        &other,
        &[],
        &["not a Telethon, Pyrogram or grammers session"],
    );
    // Truncated and corrupt SQLite files.
    let full = std::fs::read(fixture("telethon-v8.session")).unwrap();
    let cut = write(&env, "cut.session", &full[..full.len() / 3]);
    refused(&env, &cut, &[], &["corrupt"]);
    let mut junk = full.clone();
    for b in &mut junk[100..8192] {
        *b = 0xa5;
    }
    let corrupt = write(&env, "corrupt.session", &junk);
    refused(&env, &corrupt, &[], &["corrupt"]);
    // The wrong --format for a good file.
    refused(
        &env,
        &fixture("telethon-v8.session"),
        &["--format", "pyrogram-sqlite"],
        &["pyrogram-sqlite", "--format pyrogram-sqlite"],
    );
    // A Telethon file from a future version.
    let future = edited_copy(
        &env,
        "telethon-v8.session",
        "UPDATE version SET version = 9;",
    );
    refused(&env, &future, &[], &["telethon-sqlite", "schema version 9"]);
    // Sessions without an auth key.
    let logged_out = edited_copy(
        &env,
        "telethon-v8.session",
        "UPDATE sessions SET auth_key = x'';",
    );
    refused(&env, &logged_out, &[], &["telethon-sqlite", "no auth key"]);
    let pyro = edited_copy(
        &env,
        "pyrogram.session",
        "UPDATE sessions SET auth_key = NULL;",
    );
    refused(&env, &pyro, &[], &["pyrogram-sqlite", "no auth key"]);
    let grammers = edited_copy(
        &env,
        "grammers-011.sqlite",
        "UPDATE dc_option SET auth_key = NULL;",
    );
    refused(&env, &grammers, &[], &["grammers-sqlite", "no auth key"]);
    // Truncated TL session.
    let tl = std::fs::read(fixture("grammers-08.session")).unwrap();
    let tl_cut = write(&env, "tl.session", &tl[..tl.len() - 10]);
    refused(&env, &tl_cut, &[], &["grammers-tl", "truncated"]);

    // Strings: wrong length, wrong base64, no key; from stdin.
    let good = std::fs::read_to_string(fixture("telethon-ipv4.string")).unwrap();
    let good = good.trim();
    let mut bad_b64 = good.to_owned();
    bad_b64.replace_range(40..41, "*");
    let zero_key = {
        use base64::Engine as _;
        let raw = [&[2u8, 149, 154, 167, 51, 1, 187][..], &[0u8; 256]].concat();
        format!("1{}", base64::engine::general_purpose::URL_SAFE.encode(raw))
    };
    for (input, format, words) in [
        (
            &good[..340],
            "telethon-string",
            &["telethon-string", "characters"][..],
        ),
        (
            bad_b64.as_str(),
            "telethon-string",
            &["telethon-string"][..],
        ),
        (
            zero_key.as_str(),
            "auto",
            &["telethon-string", "no auth key"][..],
        ),
        (
            &good[1..300],
            "pyrogram-string",
            &["pyrogram-string", "351, 356 or 362"][..],
        ),
        (
            "AAAA",
            "auto",
            &["unrecognized session", "4 characters"][..],
        ),
    ] {
        let out = import_stdin(&env, input.as_bytes(), "bad", &["--format", format]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{input:?}: {err}");
        for w in words {
            assert!(err.contains(w), "{w:?} not in {err}");
        }
    }
    // A path that does not exist is not taken for a string.
    let out = env.ctl(&["import", "/nonexistent/bot.session", "--name", "bad"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no such file"));

    assert_eq!(session_names(&c).await, before, "the vault changed");
}
