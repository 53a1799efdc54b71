//! `grant --gid G` admits every member of G: a uid whose supplementary groups (read from the
//! kernel with the connection, `SO_PEERGROUPS`) hold G opens the session, as one whose
//! primary gid is G does; the same uid without G is refused (with the one answer a non-admin gets for what is not its own, `no_such_session`).

use session_vault_proto::message::{ErrorCode, Request, Response};

use crate::util::child::{As, ChildClient};
use crate::util::*;

/// A group no account here uses, granted in these tests.
const GROUP: u32 = 4300;
/// Another unused group, held but never granted.
const OTHER_GROUP: u32 = 4301;

fn open_as(env: &Env, who: As) -> Response {
    let child = ChildClient::spawn(
        env,
        who,
        &[Request::OpenSession {
            name: "rootbot".into(),
            exclusive: false,
            create_if_missing: false,
        }],
        false,
    );
    let r = child.response();
    child.finish();
    r
}

#[tokio::test]
async fn a_gid_grant_admits_members_by_supplementary_group() {
    if !can_switch_uid() {
        eprintln!("SKIPPED supplementary-group test: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    open_session(&c, "rootbot", false).await;
    let r = c
        .call(Request::Grant {
            name: "rootbot".into(),
            uid: None,
            gid: Some(GROUP),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "grant: {r:?}");
    env.open_socket_to_everyone();

    let member = |groups: &'static [u32]| As::User {
        uid: OTHER_UID,
        gid: OTHER_UID,
        groups,
    };
    let r = open_as(&env, member(&[OTHER_GROUP, GROUP]));
    assert!(
        matches!(r, Response::Opened { created: false, .. }),
        "a member by supplementary group: {r:?}"
    );
    let r = open_as(
        &env,
        As::User {
            uid: OTHER_UID,
            gid: GROUP,
            groups: &[],
        },
    );
    assert!(
        matches!(r, Response::Opened { .. }),
        "a member by primary group: {r:?}"
    );
    for (what, groups) in [
        ("no supplementary groups", &[][..]),
        ("other groups only", &[OTHER_GROUP][..]),
    ] {
        let r = open_as(&env, member(groups));
        assert!(
            matches!(&r, Response::Error(e) if e.code == ErrorCode::NoSuchSession),
            "{what}: {r:?}"
        );
    }

    // A revoke takes the supplementary members' access away too.
    let r = c
        .call(Request::Revoke {
            name: "rootbot".into(),
            uid: None,
            gid: Some(GROUP),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "revoke: {r:?}");
    let r = open_as(&env, member(&[GROUP]));
    assert!(
        matches!(&r, Response::Error(e) if e.code == ErrorCode::NoSuchSession),
        "after the revoke: {r:?}"
    );
}
