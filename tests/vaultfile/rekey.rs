//! `vaultctl rekey` (issue 13, item 6): a new data key, every record re-sealed, every earlier
//! keyslot useless, open handles kept; all or nothing across a SIGKILL.

use session_vault_proto::message::{ErrorCode, PeerQuery, Request, Response};
use session_vault_proto::model::{Peer, PeerKind};

use super::*;

fn peer(i: i64) -> Peer {
    Peer {
        access_hash: Some(i * 7919),
        username: Some(format!("user{i}")),
        ..Peer::new(PeerKind::User, 1_000 + i)
    }
}

async fn cache_peers(c: &Connection, h: u32, from: i64, to: i64) {
    let mut i = from;
    while i < to {
        let end = (i + 2_000).min(to);
        ok(
            c,
            Request::CachePeers {
                handle: h,
                peers: (i..end).map(peer).collect(),
            },
            "cache peers",
        )
        .await;
        i = end;
    }
}

fn rekey_cmd(env: &Env, pass: &str) -> std::process::Output {
    let pf = env.secret_file("rekey-pass", pass);
    let mut args = vec!["rekey", "--passphrase-file", pf.to_str().unwrap()];
    args.extend(CHEAP_KDF);
    env.ctl(&args)
}

/// After `passwd` and `rekey`, the old passphrase fails, the pre-rekey keyslots put back open
/// nothing, and the data and an open handle survive the rekey.
#[tokio::test]
async fn after_rekey_no_earlier_keyslot_opens_anything() {
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let h = handle(&c, "bot").await;
    ok(
        &c,
        Request::SetDcOption {
            handle: h,
            option: dc(2, Some(9)),
        },
        "set dc",
    )
    .await;
    cache_peers(&c, h, 0, 300).await;
    drop(c);
    stop(d);
    let old = save_copy(&env, "before-rekey.db");

    let d = env.start();
    let c = env.connect().await;
    assert!(matches!(unlock_with(&c, PASS).await, Ok(Response::Ok)));
    let h = handle(&c, "bot").await;
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
    // A wrong passphrase is refused and changes nothing.
    assert!(matches!(
        fails(
            &c,
            Request::Rekey {
                passphrase: passphrase(PASS),
                kdf: Some(CHEAP_KDF_SPEC)
            }
        )
        .await,
        ErrorCode::BadPassphrase { .. }
    ));
    // The throttle holds the next attempt back for a moment after a wrong one.
    let mut out = rekey_cmd(&env, NEW_PASS);
    for _ in 0..20 {
        if out.status.success() {
            break;
        }
        out = rekey_cmd(&env, NEW_PASS);
    }
    assert_success(&out, "vaultctl rekey");
    // The handle opened before the rekey still works, and everything is there.
    match c.call(Request::GetDcOptions { handle: h }).await {
        Ok(Response::DcOptions(opts)) => {
            let two = opts.iter().find(|o| o.id == 2).expect("dc 2");
            assert_eq!(two.auth_key, Some(auth_key(9)));
        }
        other => panic!("dc options after rekey: {other:?}"),
    }
    match c
        .call(Request::GetPeer {
            handle: h,
            query: PeerQuery::Username("user299".into()),
        })
        .await
    {
        Ok(Response::Peer(Some(p))) => assert_eq!(p, peer(299)),
        other => panic!("peer after rekey: {other:?}"),
    }
    ok(&c, Request::Lock, "lock").await;
    assert!(matches!(
        err_code(unlock_with(&c, PASS).await),
        ErrorCode::BadPassphrase { .. }
    ));
    drop(c);
    stop(d);

    // The thief puts the keyslot from before the rekey back (the one PASS opens).
    let db = thief(&env, &old);
    db.execute_batch("DELETE FROM keyslots; INSERT INTO keyslots SELECT * FROM old.keyslots;")
        .expect("put the old keyslots back");
    drop(db);
    let _d = env.start();
    let c = env.connect().await;
    let code = err_code(unlock_with(&c, PASS).await);
    assert!(
        matches!(code, ErrorCode::Corrupt | ErrorCode::BadPassphrase { .. }),
        "{code:?}"
    );
    let h = c
        .call(Request::OpenSession {
            name: "bot".into(),
            exclusive: false,
            create_if_missing: false,
        })
        .await;
    assert_eq!(err_code(h), ErrorCode::Locked);
}

/// The state a vault file is in: which keyslot it has, and what a fresh daemon reads from it.
fn keyslot_sum(env: &Env) -> Vec<u8> {
    let db = rusqlite::Connection::open(env.vault_db()).expect("open vault.db");
    db.query_row("SELECT check_sum FROM keyslots", [], |r| r.get(0))
        .expect("one keyslot")
}

/// `vaultd` SIGKILLed at several moments of a rekey of a large vault restarts with the old
/// state or the new one, each complete and consistent.
#[tokio::test]
async fn a_rekey_killed_midway_leaves_the_old_or_the_new_vault() {
    const PEERS: i64 = 5_000;
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let h = handle(&c, "bot").await;
    ok(
        &c,
        Request::SetDcOption {
            handle: h,
            option: dc(4, Some(5)),
        },
        "set dc",
    )
    .await;
    cache_peers(&c, h, 0, PEERS).await;
    drop(c);
    stop(d);
    let mut seen_old = false;
    let mut seen_new = false;
    // First a whole rekey, timed, then kills at fractions of that time (and at once): which
    // state each kill leaves does not matter, only that it is one of the two, whole.
    let mut took = None;
    for fraction in [None, Some(0.0), Some(0.2), Some(0.5), Some(0.8), Some(0.95)] {
        let before = keyslot_sum(&env);
        let d = env.start();
        let c = env.connect().await;
        assert!(matches!(unlock_with(&c, PASS).await, Ok(Response::Ok)));
        let rekey = Request::Rekey {
            passphrase: passphrase(PASS),
            kdf: Some(CHEAP_KDF_SPEC),
        };
        match fraction {
            None => {
                let t = std::time::Instant::now();
                ok(&c, rekey, "rekey").await;
                took = Some(t.elapsed());
                eprintln!("rekey of {PEERS} peers took {:?}", t.elapsed());
                drop(c);
                stop(d);
            }
            Some(f) => {
                let pending = tokio::spawn({
                    let c = c.clone();
                    async move { c.call(rekey).await }
                });
                tokio::time::sleep(took.expect("timed first").mul_f64(f)).await;
                d.kill();
                let _ = pending.await;
                drop(c);
            }
        }
        let delay_ms = fraction.unwrap_or(1.0);
        let after = keyslot_sum(&env);
        if after == before {
            seen_old = true;
        } else {
            seen_new = true;
        }
        let d = env.start();
        let c = env.connect().await;
        assert!(
            matches!(unlock_with(&c, PASS).await, Ok(Response::Ok)),
            "after a kill at {delay_ms} of the rekey"
        );
        let h = handle(&c, "bot").await;
        match c.call(Request::GetDcOptions { handle: h }).await {
            Ok(Response::DcOptions(opts)) => {
                let four = opts.iter().find(|o| o.id == 4).expect("dc 4");
                assert_eq!(four.auth_key, Some(auth_key(5)));
            }
            other => panic!("dc options: {other:?}"),
        }
        match c.call(Request::ListSessions).await {
            Ok(Response::Sessions(s)) => assert_eq!(s[0].summary.peer_count, PEERS as u64),
            other => panic!("list: {other:?}"),
        }
        for i in [0, PEERS / 2, PEERS - 1] {
            match c
                .call(Request::GetPeer {
                    handle: h,
                    query: PeerQuery::Username(format!("user{i}")),
                })
                .await
            {
                Ok(Response::Peer(Some(p))) => assert_eq!(p, peer(i)),
                other => panic!("peer {i} after a kill at {delay_ms} of the rekey: {other:?}"),
            }
        }
        drop(c);
        stop(d);
    }
    assert!(seen_new, "the whole rekey changed the keyslot");
    eprintln!("kill points left the old vault: {seen_old}, the new one: {seen_new}");
}
