//! Taking a session away takes it away at once (security issue 13, item 9): `revoke` ends the
//! handles and lease of a connection that is no longer allowed, `vaultctl rm --force` and a
//! forced replacing import end every holder's, against the real binaries.

use session_vault_client::{ClientError, Connection};
use session_vault_proto::message::{ErrorCode, Request, Response};
use session_vault_proto::model::SessionData;

use crate::util::child::{As, ChildClient};
use crate::util::*;

/// Runs `requests` as the other uid, on one connection, and returns the responses.
fn as_other(env: &Env, requests: &[Request]) -> Vec<Response> {
    let child = ChildClient::spawn(env, As::Other, requests, false);
    let out = requests.iter().map(|_| child.response()).collect();
    child.finish();
    out
}

fn ok(r: &Response, what: &str) {
    assert!(matches!(r, Response::Ok), "{what}: {r:?}");
}

/// The `no_such_session` of a request on a handle the daemon ended, with its reason.
#[track_caller]
fn ended(r: Result<Response, ClientError>, reason: &str) {
    match r {
        Err(ClientError::Daemon(e)) => {
            assert_eq!(e.code, ErrorCode::NoSuchSession, "{}", e.message);
            assert!(e.message.contains(reason), "{}", e.message);
        }
        other => panic!("the handle still works: {other:?}"),
    }
}

#[tokio::test]
async fn revoke_ends_a_live_handle_and_its_lease_at_once() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    // The other uid is the only admin here, so this process (root) is an ordinary bot that
    // holds a handle on a session it was granted.
    let env = Env::new();
    let _d = env.start_with(&["--admin-uid", &OTHER_UID.to_string()]);
    env.open_socket_to_everyone();
    let open = |exclusive| Request::OpenSession {
        name: "shared".into(),
        exclusive,
        create_if_missing: false,
    };
    let r = as_other(
        &env,
        &[
            Request::Init {
                passphrase: passphrase(PASS),
                kdf: Some(CHEAP_KDF_SPEC),
            },
            Request::OpenSession {
                name: "shared".into(),
                exclusive: false,
                create_if_missing: true,
            },
            Request::Grant {
                name: "shared".into(),
                uid: Some(0),
                gid: None,
            },
        ],
    );
    ok(&r[0], "init");
    assert!(matches!(r[1], Response::Opened { .. }), "{:?}", r[1]);
    ok(&r[2], "grant");

    let bot: Connection = env.connect().await;
    let h = opened(bot.call(open(true)).await);
    let r = bot.call(Request::GetHomeDc { handle: h }).await;
    assert!(matches!(r, Ok(Response::HomeDc(2))), "granted: {r:?}");

    let r = as_other(
        &env,
        &[Request::Revoke {
            name: "shared".into(),
            uid: Some(0),
            gid: None,
        }],
    );
    ok(&r[0], "revoke");
    // The very next request on the handle is refused: nothing more is read or written.
    ended(bot.call(Request::GetHomeDc { handle: h }).await, "revoked");
    ended(
        bot.call(Request::SetHomeDc {
            handle: h,
            dc_id: 5,
        })
        .await,
        "revoked",
    );
    // Its lease went with it: another exclusive open gets the session.
    let r = as_other(&env, &[open(true), Request::GetHomeDc { handle: 1 }]);
    assert!(
        matches!(r[0], Response::Opened { .. }),
        "lease freed: {:?}",
        r[0]
    );
    assert!(
        matches!(r[1], Response::HomeDc(2)),
        "not written: {:?}",
        r[1]
    );
    // Closing the ended handle is fine; reopening is refused.
    let r = bot.call(Request::CloseSession { handle: h }).await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    assert_eq!(
        err_code(bot.call(open(false)).await),
        ErrorCode::NoSuchSession
    );
}

#[tokio::test]
async fn rm_force_ends_the_holders_handle_and_lease_and_deletes() {
    let env = Env::new();
    let _d = env.start_and_init();
    let c = env.connect().await;
    let holder = env.connect().await;
    let h = open_session(&holder, "bot", true).await;

    let refused = env.ctl(&["rm", "bot", "--yes"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "refused while held: {}",
        stderr(&refused)
    );

    assert_success(&env.ctl(&["rm", "bot", "--yes", "--force"]), "rm --force");
    ended(
        holder.call(Request::GetHomeDc { handle: h }).await,
        "deleted",
    );
    // No stale lease: a new session of that name opens exclusively at once.
    let r = c
        .call(Request::OpenSession {
            name: "bot".into(),
            exclusive: true,
            create_if_missing: true,
        })
        .await;
    assert!(
        matches!(r, Ok(Response::Opened { created: true, .. })),
        "{r:?}"
    );
    // The refusal said how to go on.
    assert!(stderr(&refused).contains("force"), "{}", stderr(&refused));
}

#[tokio::test]
async fn a_forced_replacing_import_ends_the_holders_handle() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let holder = env.connect().await;
    let h = open_session(&holder, "bot", true).await;
    let import = |force| Request::ImportSession {
        name: "bot".into(),
        data: SessionData {
            home_dc: 4,
            ..SessionData::default()
        },
        replace: true,
        owner_uid: None,
        force,
    };
    assert!(matches!(
        err_code(c.call(import(false)).await),
        ErrorCode::SessionBusy { .. }
    ));
    let r = c.call(import(true)).await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    ended(
        holder.call(Request::GetHomeDc { handle: h }).await,
        "replaced",
    );
    let h2 = open_session(&c, "bot", true).await;
    let r = c.call(Request::GetHomeDc { handle: h2 }).await;
    assert!(matches!(r, Ok(Response::HomeDc(4))), "{r:?}");
}
