//! Typed errors of well-formed requests: wrong passphrase (throttled), locked and
//! uninitialized vaults, unknown sessions and handles, names taken. After each, the daemon
//! keeps serving.

use std::time::{Duration, Instant};

use session_vault_proto::message::{
    ErrorCode, Event, PROTOCOL_MAJOR, Request, Response, VaultState,
};
use session_vault_proto::model::{AuthKey, DcOption, SessionData};

use crate::util::raw::{Raw, hello};
use crate::util::*;

fn bad_passphrase_delay(code: ErrorCode) -> u64 {
    match code {
        ErrorCode::BadPassphrase { retry_after_ms, .. } => retry_after_ms,
        other => panic!("expected bad_passphrase, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passphrase_is_refused_and_the_next_attempt_delayed() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    assert!(matches!(c.call(Request::Lock).await, Ok(Response::Ok)));
    let wrong = || unlock_request("not the passphrase");
    let right = || unlock_request(PASS);

    let r = c.request(wrong()).await;
    let Ok(Response::Error(e)) = &r else {
        panic!("{r:?}")
    };
    assert!(
        !e.message.contains("not the passphrase"),
        "the message quotes the passphrase: {}",
        e.message
    );
    let first_delay = bad_passphrase_delay(e.code.clone());
    assert!(first_delay > 0, "retry_after_ms is 0 after a failure");

    // Within the delay, an attempt is not queued but refused at once, unchecked: even the
    // right passphrase. Meanwhile the daemon serves.
    let t = Instant::now();
    let early = bad_passphrase_delay(err_code(c.call(right()).await));
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(400),
        "an attempt within the delay was answered after {took:?}: queued, not refused"
    );
    assert!(
        0 < early && early <= first_delay,
        "early attempt: retry after {early} ms (the failure earned {first_delay} ms)"
    );
    let (status, took) = env.assert_serving().await;
    assert_eq!(status.state, VaultState::Locked);
    assert!(
        took < Duration::from_millis(400),
        "status took {took:?} after an unlock attempt was throttled"
    );

    // Once the delay has passed, an attempt is judged: a second wrong one earns a longer
    // delay (the early one did not count).
    tokio::time::sleep(Duration::from_millis(early)).await;
    let second_delay = bad_passphrase_delay(err_code(c.call(wrong()).await));
    assert!(
        second_delay > first_delay,
        "delay does not grow: {first_delay} then {second_delay} ms"
    );
    assert!(
        second_delay <= 2 * first_delay,
        "the unchecked attempt counted as a failure: {first_delay} then {second_delay} ms"
    );

    // The right passphrase is accepted once the second delay passed, and resets the count.
    tokio::time::sleep(Duration::from_millis(second_delay)).await;
    let r = c.call(right()).await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let (status, _) = env.assert_serving().await;
    assert_eq!(status.state, VaultState::Unlocked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_vault_refuses_session_requests_until_unlocked() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let h = open_session(&c, "bot", true).await;
    assert!(matches!(
        c.call(Request::SetHomeDc {
            handle: h,
            dc_id: 4
        })
        .await,
        Ok(Response::Ok)
    ));
    let watcher = env.connect().await;
    let mut events = watcher.events();
    // A round trip first: the daemon subscribes a connection to events only after its
    // welcome (see `every_state_change_after_the_welcome_is_pushed`).
    watcher.call(Request::Status).await.unwrap();

    assert!(matches!(c.call(Request::Lock).await, Ok(Response::Ok)));
    let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a locked event within 10 s");
    assert_eq!(ev.unwrap(), Event::Locked);

    // An open handle, a new open, and admin reads all get `locked`.
    assert_eq!(
        err_code(c.call(Request::GetHomeDc { handle: h }).await),
        ErrorCode::Locked
    );
    let key = AuthKey::new([7; 256]);
    let r = c
        .call(Request::SetDcOption {
            handle: h,
            option: DcOption {
                id: 2,
                ipv4: None,
                ipv6: None,
                auth_key: Some(key),
            },
        })
        .await;
    assert_eq!(err_code(r), ErrorCode::Locked);
    let other = env.connect().await;
    let r = other
        .call(Request::OpenSession {
            name: "bot".into(),
            exclusive: false,
            create_if_missing: false,
        })
        .await;
    assert_eq!(err_code(r), ErrorCode::Locked);
    let r = other
        .call(Request::OpenSession {
            name: "new".into(),
            exclusive: false,
            create_if_missing: true,
        })
        .await;
    assert_eq!(err_code(r), ErrorCode::Locked);
    assert_eq!(
        err_code(other.call(Request::ListSessions).await),
        ErrorCode::Locked
    );
    assert_eq!(
        err_code(
            other
                .call(Request::ExportSession { name: "bot".into() })
                .await
        ),
        ErrorCode::Locked
    );
    let (status, _) = env.assert_serving().await;
    assert_eq!(status.state, VaultState::Locked);
    assert_eq!(
        status.sessions, None,
        "a locked vault tells no session count"
    );

    // After unlock the same handle serves again, with the data written before the lock.
    assert!(matches!(unlock_with(&other, PASS).await, Ok(Response::Ok)));
    let r = c.call(Request::GetHomeDc { handle: h }).await;
    assert!(matches!(r, Ok(Response::HomeDc(4))), "{r:?}");
}

#[tokio::test]
async fn an_uninitialized_vault_says_so() {
    let env = Env::new();
    let _d = env.start();
    let c = env.connect().await;
    assert_eq!(c.vault_state_at_connect(), VaultState::Uninitialized);
    let r = c
        .call(Request::OpenSession {
            name: "bot".into(),
            exclusive: true,
            create_if_missing: true,
        })
        .await;
    assert_eq!(err_code(r), ErrorCode::Uninitialized);
    let r = unlock_with(&c, PASS).await;
    assert_eq!(err_code(r), ErrorCode::Uninitialized);
    assert_eq!(
        err_code(c.call(Request::ListSessions).await),
        ErrorCode::Uninitialized
    );
    let (status, _) = env.assert_serving().await;
    assert_eq!(status.state, VaultState::Uninitialized);

    env.init_proto(&c).await;
    let r = c
        .call(Request::Init {
            passphrase: passphrase("another"),
            kdf: Some(CHEAP_KDF_SPEC),
        })
        .await;
    assert_eq!(err_code(r), ErrorCode::AlreadyInitialized);
    // The first passphrase still opens the vault.
    assert!(matches!(c.call(Request::Lock).await, Ok(Response::Ok)));
    unlock_proto(&c).await;
}

#[tokio::test]
async fn unknown_sessions_and_handles_are_no_such_session() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let ghost = || "ghost".to_owned();
    let requests = vec![
        Request::OpenSession {
            name: ghost(),
            exclusive: true,
            create_if_missing: false,
        },
        Request::OpenSession {
            name: ghost(),
            exclusive: false,
            create_if_missing: false,
        },
        Request::RenameSession {
            old: ghost(),
            new: "x".into(),
        },
        Request::DeleteSession {
            name: ghost(),
            force: false,
        },
        Request::ExportSession { name: ghost() },
        Request::Grant {
            name: ghost(),
            uid: Some(1000),
            gid: None,
        },
        Request::Revoke {
            name: ghost(),
            uid: Some(1000),
            gid: None,
        },
        Request::GetHomeDc { handle: 999 },
        Request::GetDcOptions { handle: 999 },
        Request::SetHomeDc {
            handle: 999,
            dc_id: 1,
        },
        Request::CloseSession { handle: 999 },
        Request::Export {
            handle: 999,
            without_peers: false,
        },
    ];
    for r in requests {
        let what = format!("{r:?}");
        assert_eq!(
            err_code(c.call(r).await),
            ErrorCode::NoSuchSession,
            "{what}"
        );
    }
    // A closed handle is unknown too, and no session was created by any of this.
    let h = open_session(&c, "real", false).await;
    assert!(matches!(
        c.call(Request::CloseSession { handle: h }).await,
        Ok(Response::Ok)
    ));
    assert_eq!(
        err_code(c.call(Request::GetHomeDc { handle: h }).await),
        ErrorCode::NoSuchSession
    );
    let Ok(Response::Sessions(list)) = c.call(Request::ListSessions).await else {
        panic!("list")
    };
    let names: Vec<_> = list.iter().map(|s| s.summary.name.as_str()).collect();
    assert_eq!(names, ["real"]);
    let (status, _) = env.assert_serving().await;
    assert_eq!(status.sessions, Some(1));
}

#[tokio::test]
async fn names_taken_by_rename_or_import_are_refused() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    for (name, dc) in [("a", 3), ("b", 4)] {
        let h = open_session(&c, name, false).await;
        let r = c
            .call(Request::SetHomeDc {
                handle: h,
                dc_id: dc,
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    }
    let r = c
        .call(Request::RenameSession {
            old: "a".into(),
            new: "b".into(),
        })
        .await;
    assert_eq!(err_code(r), ErrorCode::NameTaken);

    let data = SessionData {
        home_dc: 5,
        ..SessionData::default()
    };
    let import = |replace| Request::ImportSession {
        name: "b".into(),
        data: data.clone(),
        replace,
        owner_uid: None,
        force: false,
    };
    assert_eq!(err_code(c.call(import(false)).await), ErrorCode::NameTaken);

    // Nothing changed: both sessions keep their own data.
    let home_dc = |name: &str| {
        let c = c.clone();
        let name = name.to_owned();
        async move {
            match c.call(Request::ExportSession { name }).await {
                Ok(Response::SessionData(d)) => d.home_dc,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(home_dc("a").await, 3);
    assert_eq!(home_dc("b").await, 4);

    // Opening an existing name with create_if_missing opens it, it does not fail or clobber.
    let r = c
        .call(Request::OpenSession {
            name: "a".into(),
            exclusive: false,
            create_if_missing: true,
        })
        .await;
    assert!(
        matches!(
            r,
            Ok(Response::Opened {
                created: false,
                home_dc: 3,
                ..
            })
        ),
        "{r:?}"
    );

    // With replace, the import wins.
    assert!(matches!(c.call(import(true)).await, Ok(Response::Ok)));
    assert_eq!(home_dc("b").await, 5);

    // Bad names are invalid requests, not "taken" or "missing".
    for bad in ["", " padded ", "new\nline"] {
        let r = c
            .call(Request::RenameSession {
                old: "a".into(),
                new: bad.into(),
            })
            .await;
        assert_eq!(err_code(r), ErrorCode::InvalidRequest, "rename to {bad:?}");
        let r = c
            .call(Request::OpenSession {
                name: bad.into(),
                exclusive: false,
                create_if_missing: true,
            })
            .await;
        assert_eq!(err_code(r), ErrorCode::InvalidRequest, "open {bad:?}");
    }
    let (status, _) = env.assert_serving().await;
    assert_eq!(status.sessions, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_after_the_welcome_is_pushed() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let mut raced = 0;
    for i in 0..300 {
        // A new connection's handshake races a lock.
        let socket = env.socket();
        let watcher = tokio::spawn(async move {
            let mut r = Raw::connect(&socket).await;
            match r.call(1, hello(PROTOCOL_MAJOR)).await {
                Response::Welcome { vault_state, .. } => (r, vault_state),
                other => panic!("{other:?}"),
            }
        });
        assert!(matches!(c.call(Request::Lock).await, Ok(Response::Ok)));
        let (mut r, state) = watcher.await.unwrap();
        if state == VaultState::Unlocked {
            // Welcomed as unlocked before the lock: the lock must follow as an event.
            raced += 1;
            let f = tokio::time::timeout(Duration::from_secs(2), r.recv()).await;
            assert!(
                matches!(&f, Ok(Some(f)) if matches!(f.response, Response::Event(Event::Locked))),
                "round {i}: welcomed as unlocked, then no locked event: {f:?}"
            );
        }
        unlock_proto(&c).await;
    }
    println!("{raced} handshakes raced a lock; each got its event");
}
