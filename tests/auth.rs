//! Authorization by peer credentials: another uid (run through `setpriv`) may ask `status`
//! and use its own sessions, is refused admin requests, is told others' sessions do not exist
//! (the one `no_such_session` answer of a non-admin), and gains a session by a grant to its
//! uid or gid. The socket is opened to everyone (0666 in a 0755 dir) for these tests, so that
//! what is tested is the daemon's own check.

use session_vault_proto::message::{ErrorCode, Request, Response, VaultState};
use session_vault_proto::model::SessionData;

use crate::util::child::{As, ChildClient};
use crate::util::*;

fn open_req(name: &str, exclusive: bool, create: bool) -> Request {
    Request::OpenSession {
        name: name.into(),
        exclusive,
        create_if_missing: create,
    }
}

fn denied(r: Response, what: &str) {
    match r {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::PermissionDenied, "{what}: {}", e.message);
            assert!(
                e.message.contains(&OTHER_UID.to_string()),
                "{what}: {}",
                e.message
            );
        }
        other => panic!("{what}: expected permission_denied, got {other:?}"),
    }
}

/// The answer a non-admin gets for a session it may not use: the same as for a missing one.
fn unavailable(r: Response, what: &str) {
    match r {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::NoSuchSession, "{what}: {}", e.message);
            assert!(
                e.message.contains(&format!("uid {OTHER_UID}")),
                "{what}: {}",
                e.message
            );
        }
        other => panic!("{what}: expected no_such_session, got {other:?}"),
    }
}

/// Runs `requests` as the other uid and returns the responses.
fn as_other(env: &Env, requests: &[Request]) -> Vec<Response> {
    let child = ChildClient::spawn(env, As::Other, requests, false);
    let out = requests.iter().map(|_| child.response()).collect();
    child.finish();
    out
}

#[tokio::test]
async fn another_uid_is_refused_admin_requests_and_others_sessions() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let h = open_session(&c, "rootbot", false).await;
    c.call(Request::SetHomeDc {
        handle: h,
        dc_id: 4,
    })
    .await
    .unwrap();
    env.open_socket_to_everyone();

    let admin: Vec<(&str, Request)> = vec![
        ("lock", Request::Lock),
        ("unlock", unlock_request(PASS)),
        (
            "init",
            Request::Init {
                passphrase: passphrase(PASS),
                kdf: Some(CHEAP_KDF_SPEC),
            },
        ),
        (
            "change passphrase",
            Request::ChangePassphrase {
                recovery: false,
                old: passphrase(PASS),
                new: passphrase("mine now"),
                kdf: Some(CHEAP_KDF_SPEC),
            },
        ),
        ("list", Request::ListSessions),
        (
            "rename",
            Request::RenameSession {
                old: "rootbot".into(),
                new: "stolen".into(),
            },
        ),
        (
            "delete",
            Request::DeleteSession {
                name: "rootbot".into(),
                force: false,
            },
        ),
        (
            "grant",
            Request::Grant {
                name: "rootbot".into(),
                uid: Some(OTHER_UID),
                gid: None,
            },
        ),
        (
            "revoke",
            Request::Revoke {
                name: "rootbot".into(),
                uid: Some(0),
                gid: None,
            },
        ),
        (
            "import",
            Request::ImportSession {
                name: "rootbot".into(),
                data: SessionData::default(),
                replace: true,
                owner_uid: Some(OTHER_UID),
                force: false,
            },
        ),
        (
            "export",
            Request::ExportSession {
                name: "rootbot".into(),
            },
        ),
    ];
    let mut requests = vec![Request::Status];
    let names: Vec<&str> = admin.iter().map(|(n, _)| *n).collect();
    requests.extend(admin.into_iter().map(|(_, r)| r));
    requests.push(open_req("rootbot", false, false));
    requests.push(open_req("rootbot", true, false));
    requests.push(open_req("~/nobodybot", true, true));
    requests.push(Request::GetHomeDc { handle: 1 });

    let mut resp = as_other(&env, &requests).into_iter();
    let status = resp.next().unwrap();
    assert!(
        matches!(&status, Response::Status(s) if s.state == VaultState::Unlocked),
        "anyone may ask status: {status:?}"
    );
    for name in names {
        denied(resp.next().unwrap(), name);
    }
    unavailable(resp.next().unwrap(), "shared open of root's session");
    unavailable(resp.next().unwrap(), "exclusive open of root's session");
    let own = format!("{OTHER_UID}/nobodybot");
    let r = resp.next().unwrap();
    assert!(
        matches!(&r, Response::Opened { created: true, name: Some(n), .. } if *n == own),
        "a uid may create a session in its own namespace: {r:?}"
    );
    let r = resp.next().unwrap();
    assert!(matches!(r, Response::HomeDc(2)), "and use it: {r:?}");

    // Nothing the other uid tried took effect.
    let (status, _) = env.assert_serving().await;
    assert_eq!(status.state, VaultState::Unlocked);
    let Ok(Response::Sessions(list)) = c.call(Request::ListSessions).await else {
        panic!("list")
    };
    let summary = |n: &str| {
        list.iter()
            .find(|s| s.summary.name == n)
            .unwrap_or_else(|| panic!("{n} listed"))
            .summary
            .clone()
    };
    assert_eq!(summary("rootbot").home_dc, 4);
    assert_eq!(summary("rootbot").owner_uid, Some(0));
    assert_eq!(summary(&own).owner_uid, Some(OTHER_UID));
    assert_eq!(list.len(), 2);
    // The passphrase was not changed.
    c.call(Request::Lock).await.unwrap();
    unlock_proto(&c).await;
}

#[tokio::test]
async fn a_grant_to_a_uid_or_gid_opens_a_session_and_a_revoke_closes_it() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    open_session(&c, "rootbot", false).await;
    env.open_socket_to_everyone();
    let use_it = [
        open_req("rootbot", true, false),
        Request::SetHomeDc {
            handle: 1,
            dc_id: 3,
        },
    ];
    let try_open = |what: &str| {
        let r = as_other(&env, &use_it[..1]).remove(0);
        unavailable(r, what);
    };
    let grant = |uid, gid, allow| {
        let c = c.clone();
        async move {
            let r = if allow {
                Request::Grant {
                    name: "rootbot".into(),
                    uid,
                    gid,
                }
            } else {
                Request::Revoke {
                    name: "rootbot".into(),
                    uid,
                    gid,
                }
            };
            let r = c.call(r).await;
            assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
        }
    };

    try_open("before any grant");
    grant(Some(OTHER_UID), None, true).await;
    let r = as_other(&env, &use_it);
    assert!(
        matches!(r[0], Response::Opened { created: false, .. }),
        "{:?}",
        r[0]
    );
    assert!(matches!(r[1], Response::Ok), "{:?}", r[1]);
    grant(Some(OTHER_UID), None, false).await;
    try_open("after the uid's revoke");

    grant(None, Some(OTHER_UID), true).await;
    let r = as_other(&env, &use_it[..1]);
    assert!(
        matches!(r[0], Response::Opened { home_dc: 3, .. }),
        "{:?}",
        r[0]
    );
    grant(None, Some(OTHER_UID), false).await;
    try_open("after the gid's revoke");

    // Grant takes exactly one of uid and gid.
    for (uid, gid) in [(None, None), (Some(1), Some(1))] {
        let r = c
            .call(Request::Grant {
                name: "rootbot".into(),
                uid,
                gid,
            })
            .await;
        assert_eq!(err_code(r), ErrorCode::InvalidRequest);
    }
    env.assert_serving().await;
}

#[tokio::test]
async fn admin_uid_replaces_the_default_admins() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let _d = env.start_with(&["--admin-uid", &OTHER_UID.to_string()]);
    env.open_socket_to_everyone();
    let c = env.connect().await;
    let r = c
        .call(Request::Init {
            passphrase: passphrase(PASS),
            kdf: Some(CHEAP_KDF_SPEC),
        })
        .await;
    assert_eq!(
        err_code(r),
        ErrorCode::PermissionDenied,
        "root is no admin here"
    );
    let r = as_other(
        &env,
        &[
            Request::Init {
                passphrase: passphrase(PASS),
                kdf: Some(CHEAP_KDF_SPEC),
            },
            Request::ListSessions,
        ],
    );
    assert!(matches!(r[0], Response::Ok), "{:?}", r[0]);
    assert!(
        matches!(&r[1], Response::Sessions(l) if l.is_empty()),
        "{:?}",
        r[1]
    );
}
