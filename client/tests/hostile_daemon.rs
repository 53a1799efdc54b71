//! The client against a daemon that answers wrongly: a warm start whose `list_peers` cursor
//! never moves must end (failed), not ask for ever.

#![cfg(unix)]

use std::time::Duration;

use session_vault_client::VaultSession;
use session_vault_proto::codec::{self, DEFAULT_MAX_FRAME};
use session_vault_proto::message::{ClientFrame, Request, Response, ServerFrame, VaultState};
use tokio::net::{UnixListener, UnixStream};

async fn send(stream: &mut UnixStream, id: u32, response: Response) {
    codec::write_message(stream, &ServerFrame { id, response })
        .await
        .expect("fake daemon writes");
}

async fn next_request(stream: &mut UnixStream) -> Option<ClientFrame> {
    codec::read_message(stream, DEFAULT_MAX_FRAME)
        .await
        .ok()
        .flatten()
}

/// Answers the handshake and the open, then every `list_peers` with an empty page and the
/// same cursor; returns how many `list_peers` it was asked.
async fn stuck_cursor_daemon(listener: UnixListener) -> u32 {
    let (mut s, _) = listener.accept().await.expect("accepts");
    let hello = next_request(&mut s).await.expect("hello");
    let welcome = Response::Welcome {
        protocol_major: 1,
        protocol_minor: 7,
        server: "fake".into(),
        vault_state: VaultState::Unlocked,
    };
    send(&mut s, hello.id, welcome).await;
    let open = next_request(&mut s).await.expect("open");
    let opened = Response::Opened {
        handle: 1,
        created: false,
        home_dc: 2,
        dc_options: vec![],
        name: Some("s".into()),
    };
    send(&mut s, open.id, opened).await;
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
    let dir = std::env::temp_dir().join(format!("svhd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("s");
    let _ = std::fs::remove_file(&path);
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
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        warm.failed.as_deref().is_some_and(|f| f.contains("cursor")),
        "{:?}",
        warm.failed
    );
    assert_eq!(asked, 1, "asked once, not again for the same cursor");
}
