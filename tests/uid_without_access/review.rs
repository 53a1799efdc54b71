//! Adversarial review of the socket-group member limits (audit sampling of opens, the disk
//! free-space reserve): each test here shows a way around a bound, or a bound costing
//! another uid, and fails on the code it was written against (ignored with the defect).

use session_vault_proto::message::{ErrorCode, Request, Response};
use session_vault_proto::model::{AuthKey, DcOption};

use super::audit_of;
use crate::util::child::{As, ChildClient};
use crate::util::*;

/// A uid granted another owner's session opens its own session past the opens' burst, then
/// the granted one: its open must be recorded by name. (A review found the sampler, per uid
/// and blind to which session, leaving it out: the admin reading the log saw "N more
/// session opens of this uid" on an entry of `~/mine`, nothing naming the granted session.
/// Opens outside the uid's namespace are now sampled per session.)
#[tokio::test]
async fn opens_of_a_granted_session_are_not_hidden_by_the_uids_own_sampled_opens() {
    use session_vault_daemon::server::cmd::audit::OPENS_BURST;
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    env.open_socket_to_everyone();
    let h = open_session(&c, "victim", true).await;
    let r = c.call(Request::CloseSession { handle: h }).await;
    assert!(matches!(r, Ok(Response::Ok)), "close: {r:?}");
    let r = c
        .call(Request::Grant {
            name: "victim".into(),
            uid: Some(OTHER_UID),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "grant: {r:?}");
    let own = OPENS_BURST as usize + 8;
    let mut requests: Vec<Request> = (0..own)
        .map(|_| Request::OpenSession {
            name: "~/mine".into(),
            exclusive: false,
            create_if_missing: true,
        })
        .collect();
    requests.push(Request::OpenSession {
        name: "victim".into(),
        exclusive: false,
        create_if_missing: false,
    });
    let child = ChildClient::spawn(&env, As::Other, &requests, false);
    let answers: Vec<Response> = requests.iter().map(|_| child.response()).collect();
    child.finish();
    assert!(
        answers.iter().all(|a| matches!(a, Response::Opened { .. })),
        "{answers:?}"
    );
    // Cache-class entries are committed within the flush interval.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let entries = audit_of(&c, OTHER_UID).await;
    let opens = entries
        .iter()
        .filter(|e| e.action == "open_session")
        .count();
    let victim = entries
        .iter()
        .filter(|e| e.session.as_deref() == Some("victim"))
        .count();
    println!(
        "{} opens of uid {OTHER_UID} ({own} of its own, 1 of the granted session): {opens} \
         entries, {victim} naming the granted session",
        own + 1
    );
    assert_eq!(
        victim, 1,
        "the open of a session granted by another owner left no entry naming it"
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
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    const NEW: i32 = 60;
    let env = Env::new();
    let (_d, c) = env
        .start_initialized(&["--min-free-disk-mib", "1073741824"])
        .await;
    env.open_socket_to_everyone();
    let mut requests = vec![Request::OpenSession {
        name: "~/mine".into(),
        exclusive: true,
        create_if_missing: true,
    }];
    requests.extend((0..NEW).map(|i| Request::SetDcOption {
        handle: 1,
        option: DcOption {
            id: 1000 + i,
            ipv4: None,
            ipv6: None,
            auth_key: Some(AuthKey::new([7; 256])),
        },
    }));
    let child = ChildClient::spawn(&env, As::Other, &requests, false);
    let answers: Vec<Response> = requests.iter().map(|_| child.response()).collect();
    child.finish();
    assert!(
        matches!(answers[0], Response::Opened { .. }),
        "{:?}",
        answers[0]
    );
    let accepted = answers[1..]
        .iter()
        .filter(|a| matches!(a, Response::Ok))
        .count();
    let refused_storage = answers[1..]
        .iter()
        .filter(|a| matches!(a, Response::Error(e) if e.code == ErrorCode::Storage))
        .count();
    println!(
        "under the reserve: {accepted} of {NEW} new DC options of uid {OTHER_UID} accepted, \
         {refused_storage} refused with storage"
    );
    // The admin sees them stored.
    let r = c
        .call(Request::ExportSession {
            name: format!("{OTHER_UID}/mine"),
        })
        .await;
    if let Ok(Response::SessionData(d)) = &r {
        println!("the session holds {} DC options", d.dc_options.len());
    } else {
        println!("admin export: {r:?}");
    }
    assert!(
        accepted <= 16,
        "{accepted} of {NEW} new DC options accepted under the disk reserve"
    );
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
    use session_vault_proto::model::{UpdateStateChange, UpdatesState};
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, _c) = env
        .start_initialized(&["--min-free-disk-mib", "1073741824"])
        .await;
    env.open_socket_to_everyone();
    let requests = [
        Request::OpenSession {
            name: "~/mine".into(),
            exclusive: true,
            create_if_missing: true,
        },
        Request::SetUpdateState {
            handle: 1,
            change: UpdateStateChange::All(UpdatesState {
                pts: 10,
                qts: 1,
                date: 1_700_000_000,
                seq: 3,
                channels: Vec::new(),
            }),
        },
        Request::SetUpdateState {
            handle: 1,
            change: UpdateStateChange::Primary {
                pts: 11,
                date: 1_700_000_001,
                seq: 4,
            },
        },
        Request::SetUpdateState {
            handle: 1,
            change: UpdateStateChange::Secondary { qts: 2 },
        },
    ];
    let child = ChildClient::spawn(&env, As::Other, &requests, false);
    let answers: Vec<Response> = requests.iter().map(|_| child.response()).collect();
    child.finish();
    assert!(
        matches!(answers[0], Response::Opened { .. }),
        "{:?}",
        answers[0]
    );
    for (what, a) in ["all, no channel", "primary", "secondary"]
        .iter()
        .zip(&answers[1..])
    {
        assert!(
            matches!(a, Response::Ok),
            "set_update_state ({what}) under the reserve: {a:?}"
        );
    }
}
