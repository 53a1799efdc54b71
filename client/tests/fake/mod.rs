//! A fake daemon's pieces for the client tests that need one answering wrongly: a socket
//! path, frames in and out, and the handshake and open of a session (handle 1).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use session_vault_proto::codec::{self, DEFAULT_MAX_FRAME};
use session_vault_proto::message::{ClientFrame, Request, Response, ServerFrame, VaultState};
use tokio::net::{UnixListener, UnixStream};

/// A socket path in a fresh directory of its own (remove it with [`remove`]).
pub fn socket_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sv{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("s")
}

/// The session "s" opened through the fake daemon listening at `path`, without warm start
/// (the fake answers only what each test scripts).
pub async fn connect(path: &std::path::Path) -> session_vault_client::VaultSession {
    session_vault_client::VaultSession::builder("s")
        .socket(path)
        .warm_start(false)
        .connect()
        .await
        .expect("opens")
}

/// Removes the directory of a [`socket_path`].
pub fn remove(path: &std::path::Path) {
    let _ = std::fs::remove_dir_all(path.parent().expect("in a dir"));
}

pub async fn send(stream: &mut UnixStream, id: u32, response: Response) {
    codec::write_message(stream, &ServerFrame { id, response })
        .await
        .expect("fake daemon writes");
}

/// The client's next frame; `None` once it closed.
pub async fn next_request(stream: &mut UnixStream) -> Option<ClientFrame> {
    codec::read_message(stream, DEFAULT_MAX_FRAME)
        .await
        .ok()
        .flatten()
}

/// Accepts one connection and answers its `hello` (protocol 1.7, unlocked) and its
/// `open_session` (handle 1, home DC 2).
pub async fn accept_and_open(listener: &UnixListener) -> UnixStream {
    accept_and_open_at(listener, 7).await
}

/// [`accept_and_open`] as a daemon of protocol minor `minor`.
pub async fn accept_and_open_at(listener: &UnixListener, minor: u16) -> UnixStream {
    let (mut s, _) = listener.accept().await.expect("accepts");
    let hello = next_request(&mut s).await.expect("hello");
    let welcome = Response::Welcome {
        protocol_major: 1,
        protocol_minor: minor,
        server: "fake".into(),
        vault_state: VaultState::Unlocked,
    };
    send(&mut s, hello.id, welcome).await;
    let open = next_request(&mut s).await.expect("open");
    assert!(matches!(open.request, Request::OpenSession { .. }));
    let opened = Response::Opened {
        handle: 1,
        created: false,
        home_dc: 2,
        dc_options: vec![],
        name: Some("s".into()),
    };
    send(&mut s, open.id, opened).await;
    s
}
