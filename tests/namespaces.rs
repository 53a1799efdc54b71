//! Attacks on session names (security issue 13, item 2), against the real binaries: another uid
//! (through `setpriv`) squatting a name an admin's bot will create, probing which names
//! exist, filling the vault; names that hide characters, and an old vault's look-alike names
//! in `vaultctl list`. The socket is opened to everyone (0666 in a 0755 dir), so that what is
//! tested is the daemon's own check.

use std::path::Path;

use session_vault_proto::message::{ErrorCode, Request, Response};
use session_vault_proto::model::DcOption;

use crate::util::child::{As, ChildClient};
use crate::util::*;

fn open_req(name: &str, create: bool) -> Request {
    Request::OpenSession {
        name: name.into(),
        exclusive: false,
        create_if_missing: create,
    }
}

/// Runs `requests` as the other uid, on one connection, and returns the responses.
fn as_other(env: &Env, requests: &[Request]) -> Vec<Response> {
    let child = ChildClient::spawn(env, As::Other, requests, false);
    let out = requests.iter().map(|_| child.response()).collect();
    child.finish();
    out
}

fn error_of(r: &Response) -> (ErrorCode, String) {
    match r {
        Response::Error(e) => (e.code.clone(), e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn sessions(c: &session_vault_client::Connection) -> Vec<(String, Option<u32>)> {
    match c.call(Request::ListSessions).await {
        Ok(Response::Sessions(l)) => l
            .into_iter()
            .map(|s| (s.summary.name, s.summary.owner_uid))
            .collect(),
        other => panic!("list: {other:?}"),
    }
}

fn key_option() -> DcOption {
    let mut dc = session_vault_proto::model::SessionData::default().dc_options[1].clone();
    dc.auth_key = Some(session_vault_proto::model::AuthKey::new([7u8; 256]));
    dc
}

#[tokio::test]
async fn a_uid_cannot_squat_the_name_an_admin_bot_will_create() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    env.open_socket_to_everyone();

    // The squatter creates the name first, then would wait for the bot's auth key.
    let r = as_other(&env, &[open_req("adminbot", true)]).remove(0);
    let (code, message) = error_of(&r);
    assert_eq!(code, ErrorCode::NoSuchSession, "squat refused: {message}");
    assert!(message.contains(&format!("\"{OTHER_UID}/\"")), "{message}");

    // The admin's bot starts: it creates its own session and writes its key there.
    let r = c.call(open_req("adminbot", true)).await.unwrap();
    let Response::Opened {
        handle, created, ..
    } = r
    else {
        panic!("admin open: {r:?}")
    };
    assert!(
        created,
        "the admin's bot got a session made by someone else"
    );
    c.call(Request::SetDcOption {
        handle,
        option: key_option(),
    })
    .await
    .unwrap();
    assert_eq!(
        sessions(&c).await,
        vec![("adminbot".to_owned(), Some(0))],
        "one session, the admin's"
    );
    // And the squatter cannot read it.
    let r = as_other(&env, &[open_req("adminbot", false)]).remove(0);
    assert_eq!(error_of(&r).0, ErrorCode::NoSuchSession);
}

#[tokio::test]
async fn create_if_missing_never_opens_a_session_another_uid_owns() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    env.open_socket_to_everyone();
    // The other uid prepares a session in its own namespace, and hopes an admin's bot is
    // configured (or tricked) to use that name.
    let trap = format!("{OTHER_UID}/bot");
    let r = as_other(&env, &[open_req(&trap, true)]).remove(0);
    assert!(
        matches!(&r, Response::Opened { created: true, .. }),
        "a uid creates in its own namespace: {r:?}"
    );

    let r = c.call(open_req(&trap, true)).await;
    match r {
        Err(session_vault_client::ClientError::Daemon(e)) => {
            assert_eq!(e.code, ErrorCode::PermissionDenied, "{}", e.message);
            assert!(
                e.message.contains(&format!("uid {OTHER_UID}")),
                "{}",
                e.message
            );
            assert!(
                e.message.contains("without create_if_missing"),
                "{}",
                e.message
            );
        }
        other => panic!("an admin's create_if_missing opened another uid's session: {other:?}"),
    }
    // Without create_if_missing an admin still may, knowingly.
    let r = c.call(open_req(&trap, false)).await;
    assert!(
        matches!(r, Ok(Response::Opened { created: false, .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_non_admin_gets_the_same_bytes_for_missing_and_not_its_own() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    env.open_socket_to_everyone();
    let probes = [open_req("payroll", false), open_req("payroll", true)];
    let encode = |r: &Response| rmp_serde::to_vec_named(r).expect("encode");

    let missing = as_other(&env, &probes);
    open_session(&c, "payroll", false).await;
    let existing = as_other(&env, &probes);
    for (m, e) in missing.iter().zip(&existing) {
        assert_eq!(error_of(m).0, ErrorCode::NoSuchSession, "{m:?}");
        assert_eq!(
            encode(m),
            encode(e),
            "a non-admin tells a missing name from another uid's session:\n{m:?}\n{e:?}"
        );
    }
    // With and without create_if_missing alike.
    assert_eq!(encode(&missing[0]), encode(&missing[1]));
}

#[tokio::test]
async fn a_non_admin_uid_creates_at_most_max_sessions_per_uid() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env
        .start_initialized(&["--max-sessions-per-uid", "2"])
        .await;
    env.open_socket_to_everyone();
    let r = as_other(
        &env,
        &[
            open_req("~/a", true),
            open_req("~/b", true),
            open_req("~/c", true),
            // Opening what it has is not creating.
            open_req("~/a", true),
        ],
    );
    assert!(
        matches!(r[0], Response::Opened { created: true, .. }),
        "{:?}",
        r[0]
    );
    assert!(
        matches!(r[1], Response::Opened { created: true, .. }),
        "{:?}",
        r[1]
    );
    let (code, message) = error_of(&r[2]);
    assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
    assert!(message.contains("max_sessions_per_uid = 2"), "{message}");
    assert!(
        matches!(r[3], Response::Opened { created: false, .. }),
        "{:?}",
        r[3]
    );

    // Admins are not capped; a deleted session frees room.
    for n in ["r1", "r2", "r3"] {
        open_session(&c, n, false).await;
    }
    let r = c
        .call(Request::DeleteSession {
            name: format!("{OTHER_UID}/a"),
            force: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let r = as_other(&env, &[open_req("~/c", true)]).remove(0);
    assert!(matches!(r, Response::Opened { created: true, .. }), "{r:?}");
    assert_eq!(sessions(&c).await.len(), 5);
}

#[tokio::test]
async fn names_with_invisible_or_reordering_characters_are_refused() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    open_session(&c, "plain", false).await;
    for bad in [
        "admin\u{202E}tob",
        "my\u{200B}bot",
        "\u{3164}",
        "bot\u{FE0F}",
        "bot\u{E0041}",
        "bot\u{00A0}x",
    ] {
        let odd = bad
            .chars()
            .find(|c| !c.is_ascii())
            .expect("a non-ASCII character");
        let code = format!("U+{:04X}", odd as u32);
        for r in [
            c.call(open_req(bad, true)).await,
            c.call(Request::RenameSession {
                old: "plain".into(),
                new: bad.into(),
            })
            .await,
        ] {
            match r {
                Err(session_vault_client::ClientError::Daemon(e)) => {
                    assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad:?}: {}", e.message);
                    assert!(e.message.contains(&code), "{bad:?}: {}", e.message);
                    assert!(!e.message.contains(odd), "raw in message: {}", e.message);
                }
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
    }
    // `~/` is the caller's namespace in open_session, so no stored name starts with it.
    let r = c
        .call(Request::RenameSession {
            old: "plain".into(),
            new: "~/x".into(),
        })
        .await;
    assert_eq!(err_code(r), ErrorCode::InvalidRequest);
    let names: Vec<String> = sessions(&c).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["plain"]);
}

/// A vault written by vaultd 66325a1, which let these names in: `vaultctl init` (passphrase
/// [`PASS`], the cheap KDF), then `vaultctl import tests/fixtures/pyrogram-362.string --name N`
/// for `mybot`, `my\u{443}bot` and `admin\u{202E}tob`, then SIGTERM.
const OLD_VAULT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/vault-66325a1-lookalike-names.db"
);

#[tokio::test]
async fn an_old_vaults_lookalike_names_are_listed_escaped_and_can_be_renamed() {
    let env = Env::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::copy(Path::new(OLD_VAULT), env.vault_db()).expect("copy the old vault");
    let _d = env.start();
    assert_success(&env.unlock(PASS), "unlock the old vault");

    let out = env.ctl(&["list"]);
    assert_success(&out, "list");
    let text = stdout(&out);
    assert!(
        text.is_ascii(),
        "list shows a raw look-alike or invisible character:\n{text}"
    );
    assert!(text.contains(r"admin\u{202e}tob *"), "{text}");
    assert!(text.contains(r"my\u{443}bot *"), "{text}");
    assert!(text.contains("\nmybot "), "{text}");
    assert!(text.contains("* name shown escaped"), "{text}");

    let out = env.ctl(&["list", "--json"]);
    assert_success(&out, "list --json");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |n: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("{n:?} in {v}"))
            .clone()
    };
    assert_eq!(row("admin\u{202E}tob")["name_escaped"], r"admin\u{202e}tob");
    assert_eq!(row("mybot")["name_escaped"], serde_json::Value::Null);

    // An admin fixes the name; the session keeps its contents.
    assert_success(
        &env.ctl(&["rename", "admin\u{202E}tob", "admin-bot"]),
        "rename the hidden name",
    );
    let text = stdout(&env.ctl(&["list"]));
    assert!(text.contains("\nadmin-bot "), "{text}");
    assert!(!text.contains("202e"), "{text}");
}

#[tokio::test]
async fn the_client_learns_the_full_name_of_a_home_session() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let s = session_vault_client::VaultSession::builder("~/bot")
        .socket(env.socket())
        .create_if_missing(true)
        .connect()
        .await
        .expect("open ~/bot");
    assert_eq!(s.name(), format!("{me}/bot"));
    let names: Vec<String> = sessions(&c).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [format!("{me}/bot")]);
}
