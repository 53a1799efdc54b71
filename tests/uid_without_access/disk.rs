//! The vault disk's free-space reserve against a uid filling sessions of its own: under it
//! (here set larger than any disk), a non-admin's writes that grow a session are refused,
//! and those that do not (a known DC's auth key, the home DC, an update state without a
//! new channel) go through.

use session_vault_client::Connection;
use session_vault_proto::message::{ErrorCode, Request, Response};
use session_vault_proto::model::{
    AuthKey, DcOption, Peer, PeerKind, SentFile, UpdateStateChange, UpdatesState,
};

use crate::util::child::{As, ChildClient};
use crate::util::*;

/// A daemon whose reserve is larger than any disk (1 PiB), its socket open to every uid;
/// `requests` (after an `open_session` of `~/mine`, handle 1) sent by [`OTHER_UID`]. Returns
/// the daemon, the admin's connection and the answers to `requests`; `None` without root.
async fn under_the_reserve(
    requests: Vec<Request>,
) -> Option<(Env, Daemon, Connection, Vec<Response>)> {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return None;
    }
    let env = Env::new();
    let (d, c) = env
        .start_initialized(&["--min-free-disk-mib", "1073741824"])
        .await;
    env.open_socket_to_everyone();
    let mut all = vec![Request::OpenSession {
        name: "~/mine".into(),
        exclusive: true,
        create_if_missing: true,
    }];
    all.extend(requests);
    let child = ChildClient::spawn(&env, As::Other, &all, false);
    let mut answers: Vec<Response> = all.iter().map(|_| child.response()).collect();
    child.finish();
    let opened = answers.remove(0);
    assert!(matches!(opened, Response::Opened { .. }), "{opened:?}");
    Some((env, d, c, answers))
}

/// Any uid may fill sessions of its own with peers, without bound: one bot could fill the
/// disk under every other's auth keys. Under the free-space reserve (here set larger than
/// any disk), a non-admin's cache writes that grow a session are refused with `storage`;
/// its durable writes still go through, and so do an admin's cache writes.
#[tokio::test]
async fn under_the_disk_reserve_a_uids_cache_writes_are_refused_and_auth_keys_still_written() {
    let peers = || vec![Peer::new(PeerKind::User, 42)];
    let requests = vec![
        Request::CachePeers {
            handle: 1,
            peers: peers().into(),
        },
        Request::SetUpdateState {
            handle: 1,
            change: UpdateStateChange::Channel { id: 7, pts: 1 },
        },
        Request::PutSentFile {
            handle: 1,
            file: SentFile {
                md5_digest: vec![1; 16],
                file_size: 10,
                file_type: 0,
                id: 1,
                hash: 2,
            },
        },
        Request::SetDcOption {
            handle: 1,
            option: DcOption {
                id: 2,
                ipv4: None,
                ipv6: None,
                auth_key: Some(AuthKey::new([9; 256])),
            },
        },
        Request::SetHomeDc {
            handle: 1,
            dc_id: 2,
        },
    ];
    let Some((_env, _d, c, answers)) = under_the_reserve(requests).await else {
        return;
    };
    for (what, a) in [
        ("cache_peers", &answers[0]),
        ("set_update_state", &answers[1]),
        ("put_sent_file", &answers[2]),
    ] {
        match a {
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::Storage, "{what}: {e:?}");
                assert!(
                    e.message.contains("min_free_disk_mib"),
                    "{what}: {}",
                    e.message
                );
            }
            other => panic!("{what} under the reserve: {other:?}"),
        }
    }
    assert!(
        matches!(answers[3], Response::Ok),
        "set_dc_option: {:?}",
        answers[3]
    );
    assert!(
        matches!(answers[4], Response::Ok),
        "set_home_dc: {:?}",
        answers[4]
    );
    // An admin's cache writes go through.
    let h = open_session(&c, "admin-bot", true).await;
    let r = c
        .call(Request::CachePeers {
            handle: h,
            peers: peers().into(),
        })
        .await;
    assert!(
        matches!(r, Ok(Response::Ok)),
        "an admin's cache_peers: {r:?}"
    );
}

/// Under the disk reserve a non-admin's writes that grow a session are refused. Its
/// `set_dc_option` is a durable write and takes any DC id (an `i32`): a review found one uid
/// adding DC options, a 256-byte auth key each, without bound under a reserve larger than
/// the disk (60 of 60 accepted), filling the room kept for the other bots' auth keys. A new
/// DC id is now refused there; a known DC's new auth key still goes through (Telegram has
/// five DCs, a few more with test and media ones).
#[tokio::test]
async fn under_the_disk_reserve_a_uid_cannot_grow_its_session_with_new_dc_options() {
    const NEW: i32 = 60;
    let requests = (0..NEW)
        .map(|i| Request::SetDcOption {
            handle: 1,
            option: DcOption {
                id: 1000 + i,
                ipv4: None,
                ipv6: None,
                auth_key: Some(AuthKey::new([7; 256])),
            },
        })
        .collect();
    let Some((_env, _d, c, answers)) = under_the_reserve(requests).await else {
        return;
    };
    let accepted = answers.iter().filter(|a| matches!(a, Response::Ok)).count();
    let refused_storage = answers
        .iter()
        .filter(|a| matches!(a, Response::Error(e) if e.code == ErrorCode::Storage))
        .count();
    println!(
        "under the reserve: {accepted} of {NEW} new DC options of uid {OTHER_UID} accepted, \
         {refused_storage} refused with storage"
    );
    assert_eq!(
        (accepted, refused_storage),
        (0, NEW as usize),
        "new DC options under the disk reserve"
    );
    // The admin sees the five a new session holds, no more.
    let r = c
        .call(Request::ExportSession {
            name: format!("{OTHER_UID}/mine"),
        })
        .await;
    match r {
        Ok(Response::SessionData(d)) => assert_eq!(d.dc_options.len(), 5),
        other => panic!("admin export: {other:?}"),
    }
}

/// Under the disk reserve a non-admin's `set_update_state` that cannot grow the session
/// goes through: the primary and secondary state are one row, overwritten (only a new
/// channel's state adds a row). A review found all of them refused, which breaks bots for
/// nothing: grammers 0.11 stores `UpdateState::All` (no channel) right after its first
/// `updates.getState` and returns the error from its updates stream (`updates_receiver.rs`:
/// `.await?`), so a bot started while another uid kept the disk under the reserve got no
/// updates at all.
#[tokio::test]
async fn under_the_disk_reserve_update_states_that_grow_nothing_are_written() {
    let state = |change| Request::SetUpdateState { handle: 1, change };
    let requests = vec![
        state(UpdateStateChange::All(UpdatesState {
            pts: 10,
            qts: 1,
            date: 1_700_000_000,
            seq: 3,
            channels: Vec::new(),
        })),
        state(UpdateStateChange::Primary {
            pts: 11,
            date: 1_700_000_001,
            seq: 4,
        }),
        state(UpdateStateChange::Secondary { qts: 2 }),
    ];
    let Some((_env, _d, _c, answers)) = under_the_reserve(requests).await else {
        return;
    };
    for (what, a) in ["all, no channel", "primary", "secondary"]
        .iter()
        .zip(&answers)
    {
        assert!(
            matches!(a, Response::Ok),
            "set_update_state ({what}) under the reserve: {a:?}"
        );
    }
}
