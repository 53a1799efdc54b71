//! The client against a daemon that answers wrongly: a warm start whose `list_peers` cursor
//! never moves must end (failed), not ask for ever.

#![cfg(unix)]

use std::time::Duration;

use session_vault_client::VaultSession;
use session_vault_proto::message::{Request, Response};
use tokio::net::UnixListener;

mod fake;
use fake::{accept_and_open, next_request, remove, send, socket_path};

/// Answers the handshake and the open, then every `list_peers` with an empty page and the
/// same cursor; returns how many `list_peers` it was asked.
async fn stuck_cursor_daemon(listener: UnixListener) -> u32 {
    let mut s = accept_and_open(&listener).await;
    let mut asked = 0;
    while let Some(f) = next_request(&mut s).await {
        if let Request::ListPeers { .. } = f.request {
            asked += 1;
        }
        let page = Response::PeerPage {
            peers: vec![],
            next: Some(5),
        };
        send(&mut s, f.id, page).await;
    }
    asked
}

#[tokio::test]
async fn a_warm_start_whose_cursor_does_not_move_ends_failed() {
    let path = socket_path("hd");
    let listener = UnixListener::bind(&path).expect("binds");
    let daemon = tokio::spawn(stuck_cursor_daemon(listener));
    let session = VaultSession::builder("s")
        .socket(&path)
        .connect()
        .await
        .expect("opens");
    let warm = tokio::time::timeout(Duration::from_secs(10), session.warm_start())
        .await
        .expect("the warm start ends");
    drop(session);
    let asked = daemon.await.expect("fake daemon ran");
    remove(&path);
    assert!(
        warm.failed.as_deref().is_some_and(|f| f.contains("cursor")),
        "{:?}",
        warm.failed
    );
    assert_eq!(asked, 1, "asked once, not again for the same cursor");
}
