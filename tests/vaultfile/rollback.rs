//! Rollback of keyslots, ACLs and sessions in `vault.db` (issue 13, item 6). Each test saves
//! a copy of the stopped daemon's file, lets the daemon change something, stops it, puts
//! the old rows back with rusqlite and starts it again: the old state must not be accepted.
//! On the code before the fix (66325a1) each of these was silently accepted.

use session_vault_proto::message::{ErrorCode, Request, Response};

use super::*;
use crate::util::child::{As, ChildClient};

/// After `passwd`, the old keyslot put back no longer unlocks with the old passphrase.
#[tokio::test]
async fn an_old_keyslot_put_back_after_passwd_does_not_unlock() {
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let h = handle(&c, "bot").await;
    ok(
        &c,
        Request::SetDcOption {
            handle: h,
            option: dc(2, Some(1)),
        },
        "set dc",
    )
    .await;
    drop(c);
    stop(d);
    let old = save_copy(&env, "before-passwd.db");

    let d = env.start();
    let c = env.connect().await;
    ok(
        &c,
        Request::ChangePassphrase {
            recovery: false,
            old: passphrase(PASS),
            new: passphrase(NEW_PASS),
            kdf: Some(CHEAP_KDF_SPEC),
        },
        "passwd",
    )
    .await;
    drop(c);
    stop(d);

    // The thief restores the keyslot the old passphrase opens.
    let db = thief(&env, &old);
    db.execute_batch("DELETE FROM keyslots; INSERT INTO keyslots SELECT * FROM old.keyslots;")
        .expect("put the old keyslot back");
    drop(db);

    let _d = env.start();
    let c = env.connect().await;
    let r = unlock_with(&c, PASS).await;
    assert_eq!(
        err_code(r),
        ErrorCode::Corrupt,
        "the old passphrase must not unlock"
    );
    // Nothing was unlocked on the way.
    let h = c
        .call(Request::OpenSession {
            name: "bot".into(),
            exclusive: false,
            create_if_missing: false,
        })
        .await;
    assert_eq!(err_code(h), ErrorCode::Locked);
}

/// After a revoke, the session record with the old ACL put back is `corrupt`: the revoked
/// uid does not get the auth key written after the revoke, and neither does anyone else.
#[tokio::test]
async fn an_old_acl_put_back_after_revoke_is_corrupt() {
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let _ = handle(&c, "bot").await;
    ok(
        &c,
        Request::Grant {
            name: "bot".into(),
            uid: Some(OTHER_UID),
            gid: None,
        },
        "grant",
    )
    .await;
    drop(c);
    stop(d);
    let old = save_copy(&env, "granted.db");

    let d = env.start();
    let c = env.connect().await;
    assert!(matches!(unlock_with(&c, PASS).await, Ok(Response::Ok)));
    ok(
        &c,
        Request::Revoke {
            name: "bot".into(),
            uid: Some(OTHER_UID),
            gid: None,
        },
        "revoke",
    )
    .await;
    let h = handle(&c, "bot").await;
    ok(
        &c,
        Request::SetDcOption {
            handle: h,
            option: dc(2, Some(7)),
        },
        "new auth key",
    )
    .await;
    drop(c);
    stop(d);

    let db = thief(&env, &old);
    let n = db
        .execute(
            "UPDATE sessions SET record = (SELECT record FROM old.sessions WHERE old.sessions.id = sessions.id)",
            [],
        )
        .expect("put the granting record back");
    assert_eq!(n, 1);
    drop(db);

    let _d = env.start();
    let c = env.connect().await;
    assert!(matches!(unlock_with(&c, PASS).await, Ok(Response::Ok)));
    if can_switch_uid() {
        env.open_socket_to_everyone();
        let child = ChildClient::spawn(
            &env,
            As::Other,
            &[Request::OpenSession {
                name: "bot".into(),
                exclusive: false,
                create_if_missing: false,
            }],
            false,
        );
        let r = child.response();
        child.finish();
        // Refused; as a non-admin it gets the one answer for what it may not use (a damaged
        // record cannot say who may), while the admin below is told `corrupt`.
        match r {
            Response::Error(e) => assert_eq!(e.code, ErrorCode::NoSuchSession, "{}", e.message),
            other => panic!("the revoked uid opened the session: {other:?}"),
        }
    }
    let r = c.call(Request::ExportSession { name: "bot".into() }).await;
    assert_eq!(err_code(r), ErrorCode::Corrupt);
}

/// A deleted session put back (its rows copied from an old file) makes `unlock` fail as
/// `corrupt` instead of serving it again.
#[tokio::test]
async fn a_deleted_session_put_back_is_corrupt() {
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    for name in ["keep", "gone"] {
        let h = handle(&c, name).await;
        ok(
            &c,
            Request::SetDcOption {
                handle: h,
                option: dc(2, Some(3)),
            },
            "set dc",
        )
        .await;
    }
    drop(c);
    stop(d);
    let old = save_copy(&env, "two-sessions.db");

    let d = env.start();
    let c = env.connect().await;
    assert!(matches!(unlock_with(&c, PASS).await, Ok(Response::Ok)));
    ok(
        &c,
        Request::DeleteSession {
            name: "gone".into(),
            force: false,
        },
        "delete",
    )
    .await;
    drop(c);
    stop(d);

    let db = thief(&env, &old);
    db.execute_batch(
        "INSERT INTO sessions SELECT * FROM old.sessions WHERE name = 'gone';
         INSERT INTO dc_options SELECT * FROM old.dc_options
             WHERE session = (SELECT id FROM old.sessions WHERE name = 'gone');",
    )
    .expect("put the deleted session back");
    drop(db);

    let _d = env.start();
    let c = env.connect().await;
    assert_eq!(err_code(unlock_with(&c, PASS).await), ErrorCode::Corrupt);
}
