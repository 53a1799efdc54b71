//! An exclusive session whose handle the daemon ended (its lease across
//! hosts lapsed, access revoked, session deleted or replaced) must not go on answering from
//! its in-process cache: the cache is only sound while this client holds the lease.
//!
//! A fake daemon answers the handshake, the open and one `get_peer`, then ends the handle:
//! every later request gets `no_such_session` ("its lease lapsed … open it again"), as
//! vaultd answers after `Ended::LeaseLost`.

#![cfg(unix)]

use std::sync::Arc;

use grammers_session::Session;
use grammers_session::types::PeerId;
use session_vault_client::VaultError;
use session_vault_proto::message::{ErrorCode, Request, Response, WireError};
use session_vault_proto::model::{Peer, PeerKind};
use tokio::net::UnixListener;

mod fake;
use fake::{accept_and_open, connect, next_request, remove, send, socket_path};

/// Serves one connection; returns how many requests came after the handle was ended.
async fn ending_daemon(listener: UnixListener) -> u32 {
    let mut s = accept_and_open(&listener).await;
    let get = next_request(&mut s).await.expect("get_peer");
    assert!(matches!(get.request, Request::GetPeer { .. }));
    let mut peer = Peer::new(PeerKind::User, 42);
    peer.access_hash = Some(111);
    peer.bot = Some(false);
    send(&mut s, get.id, Response::Peer(Some(peer))).await;
    // The handle is ended from here on.
    let mut after = 0;
    while let Some(f) = next_request(&mut s).await {
        after += 1;
        send(
            &mut s,
            f.id,
            Response::Error(WireError {
                code: ErrorCode::NoSuchSession,
                message: "handle 1 is no longer open: its lease lapsed while this vaultd was \
                          paused or cut off from the database (another host may have taken \
                          the session over); open it again"
                    .into(),
            }),
        )
        .await;
    }
    after
}

#[tokio::test]
async fn an_ended_handle_is_not_answered_from_the_cache() {
    let path = socket_path("eh");
    let listener = UnixListener::bind(&path).expect("binds");
    let daemon = tokio::spawn(ending_daemon(listener));

    let session = Arc::new(connect(&path).await);
    let id = PeerId::user(42).expect("a user id");
    assert!(session.peer(id).await.expect("first read").is_some());

    // A write: the daemon says the handle is gone (its lease lapsed).
    let err = session.set_home_dc_id(4).await.expect_err("refused");
    assert!(matches!(err, VaultError::NoSuchSession { .. }), "{err:?}");

    // The cache's premise (this client holds the lease) is gone: the read must not be
    // answered in-process as if nothing happened.
    let again = session.peer(id).await;
    drop(session);
    let after = daemon.await.expect("fake daemon ran");
    remove(&path);
    let answered = match &again {
        Ok(Some(_)) => "a peer",
        Ok(None) => "no peer",
        Err(_) => "an error",
    };
    assert!(
        again.is_err() || after >= 2,
        "peer() after the handle ended was answered from the cache with {answered} \
         ({after} request(s) reached the daemon after the end)"
    );
}

/// After a lapsed lease, another host may be using the session's auth key: grammers asks
/// `home_dc_id` / `dc_option` before every request, and the only way the client can stop it
/// from sending with the key (AUTH_KEY_DUPLICATED kills it for both hosts) is to fail them.
#[tokio::test]
async fn an_ended_lease_stops_serving_the_dc_copy() {
    let path = socket_path("eh");
    let listener = UnixListener::bind(&path).expect("binds");
    let daemon = tokio::spawn(ending_daemon(listener));

    let session = connect(&path).await;
    let id = PeerId::user(42).expect("a user id");
    assert!(session.peer(id).await.expect("first read").is_some());
    let err = session.set_home_dc_id(4).await.expect_err("refused");
    assert!(matches!(err, VaultError::NoSuchSession { .. }), "{err:?}");

    let home = session.home_dc_id();
    let dc = session.dc_option(2);
    drop(session);
    let _ = daemon.await;
    remove(&path);
    assert!(
        home.is_err() && dc.is_err(),
        "the DC copy is still served after the lease lapsed: home_dc_id ok = {}, dc_option ok = {}",
        home.is_ok(),
        dc.is_ok()
    );
}
