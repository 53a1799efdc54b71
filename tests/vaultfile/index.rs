//! Blind-index columns are not covered by a record's AEAD (issue 13, item 7): swapping two
//! peers' username (or phone) index values in `vault.db` must make the lookup `corrupt`, not
//! return the other peer and its access hash (which the code before the fix did).

use session_vault_proto::message::{ErrorCode, PeerQuery, Request, Response};
use session_vault_proto::model::{Peer, PeerKind};

use super::*;

fn named(id: i64, username: &str, phone: &str) -> Peer {
    Peer {
        access_hash: Some(id * 31),
        username: Some(username.into()),
        phone: Some(phone.into()),
        ..Peer::new(PeerKind::User, id)
    }
}

#[tokio::test]
async fn swapped_index_values_are_corrupt_not_another_peer() {
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let h = handle(&c, "bot").await;
    let (alice, bob) = (
        named(101, "alice", "+1 555 0101"),
        named(202, "bob", "+1 555 0202"),
    );
    ok(
        &c,
        Request::CachePeers {
            handle: h,
            peers: vec![alice.clone(), bob.clone()].into(),
        },
        "cache peers",
    )
    .await;
    // Lookups answer the right peers before the swap.
    match c
        .call(Request::GetPeer {
            handle: h,
            query: PeerQuery::Username("alice".into()),
        })
        .await
    {
        Ok(Response::Peer(Some(p))) => assert_eq!(p, alice),
        other => panic!("{other:?}"),
    }
    drop(c);
    stop(d);

    let db = rusqlite::Connection::open(env.vault_db()).expect("open vault.db");
    // Swap the two rows' username and phone index values (i1, i2).
    let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = db
        .prepare("SELECT rowid, i1, i2 FROM peers ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    db.execute("UPDATE peers SET i1 = NULL, i2 = NULL", [])
        .unwrap();
    for (me, other) in [(0, 1), (1, 0)] {
        db.execute(
            "UPDATE peers SET i1 = ?2, i2 = ?3 WHERE rowid = ?1",
            rusqlite::params![rows[me].0, rows[other].1, rows[other].2],
        )
        .unwrap();
    }
    drop(db);

    let _d = env.start();
    let c = env.connect().await;
    assert!(matches!(unlock_with(&c, PASS).await, Ok(Response::Ok)));
    let h = handle(&c, "bot").await;
    for query in [
        PeerQuery::Username("alice".into()),
        PeerQuery::Username("bob".into()),
        PeerQuery::Phone("15550101".into()),
    ] {
        let r = c
            .call(Request::GetPeer {
                handle: h,
                query: query.clone(),
            })
            .await;
        if let Ok(Response::Peer(Some(p))) = &r {
            panic!(
                "{query:?} answered peer {} (access hash {:?})",
                p.id, p.access_hash
            );
        }
        assert_eq!(err_code(r), ErrorCode::Corrupt, "{query:?}");
    }
    // Lookups by identity are unaffected (their row key is in the AEAD).
    match c
        .call(Request::GetPeer {
            handle: h,
            query: PeerQuery::Key(session_vault_proto::model::PeerKey {
                kind: PeerKind::User,
                id: 101,
            }),
        })
        .await
    {
        Ok(Response::Peer(Some(p))) => assert_eq!(p, alice),
        other => panic!("{other:?}"),
    }
}
