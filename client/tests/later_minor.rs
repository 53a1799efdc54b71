//! A daemon of a later minor version: what it may add (`PROTOCOL.md` §6) does not cost the
//! client its connection.
//!
//! A fake daemon on a Unix socket answers the handshake, then sends, in this order: an event
//! this client does not know (bare and with content), an error with a code this client does
//! not know, and a response of a kind this client does not know, each interleaved with
//! requests that must still succeed on the same connection.

#![cfg(unix)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use session_vault_client::{ClientError, Connection};
use session_vault_proto::codec::{self, DEFAULT_MAX_FRAME};
use session_vault_proto::message::{
    ClientFrame, ErrorCode, Event, Request, Response, ServerFrame, StatusInfo, VaultState,
    WireError,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

/// A socket path of its own for each test, short enough for `sun_path`.
fn socket_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "svc-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("s")
}

fn status() -> Response {
    Response::Status(StatusInfo {
        state: VaultState::Unlocked,
        vault_path: "/v.db".into(),
        sessions: Some(1),
        uptime_secs: 1,
        version: "0.2.0".into(),
        pid: 1,
        connections: 1,
        recovery_key: None,
    })
}

async fn send(stream: &mut UnixStream, id: u32, response: Response) {
    codec::write_message(stream, &ServerFrame { id, response })
        .await
        .expect("fake daemon writes");
}

/// Writes a frame around a hand-made MessagePack payload.
async fn send_raw(stream: &mut UnixStream, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("small payload");
    stream.write_all(&len.to_be_bytes()).await.expect("writes");
    stream.write_all(payload).await.expect("writes");
}

async fn next_request(stream: &mut UnixStream) -> ClientFrame {
    codec::read_message(stream, DEFAULT_MAX_FRAME)
        .await
        .expect("fake daemon reads")
        .expect("the client did not hang up")
}

/// `"s"` then the bytes of `text`, as a MessagePack fixstr.
fn fixstr(text: &str) -> Vec<u8> {
    let mut out = vec![0xa0 | u8::try_from(text.len()).expect("under 32 bytes")];
    out.extend_from_slice(text.as_bytes());
    out
}

/// `{"id": id, "response": response}` with a hand-made response.
fn raw_frame(id: u8, response: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    out.extend(fixstr("id"));
    assert!(id < 0x80, "a positive fixint");
    out.push(id);
    out.extend(fixstr("response"));
    out.extend_from_slice(response);
    out
}

/// The fake daemon: one connection, a script of answers.
async fn later_daemon(listener: UnixListener) {
    let (mut s, _) = listener.accept().await.expect("accepts");
    let hello = next_request(&mut s).await;
    assert!(matches!(hello.request, Request::Hello { .. }));
    send(
        &mut s,
        hello.id,
        Response::Welcome {
            protocol_major: 1,
            protocol_minor: 9,
            server: "vaultd 9.9".into(),
            vault_state: VaultState::Unlocked,
        },
    )
    .await;

    // Request 1: an unknown event first (bare name), then an error of an unknown code.
    let first = next_request(&mut s).await;
    send(
        &mut s,
        0,
        Response::Event(Event::Other("quota_warning".into())),
    )
    .await;
    // {"id": 0, "response": {"event": {"session_renamed": {"old": "a"}}}}: with content.
    let mut event = vec![0x81];
    event.extend(fixstr("event"));
    event.push(0x81);
    event.extend(fixstr("session_renamed"));
    event.push(0x81);
    event.extend(fixstr("old"));
    event.extend(fixstr("a"));
    send_raw(&mut s, &raw_frame(0, &event)).await;
    send(&mut s, 0, Response::Event(Event::Locked)).await;
    send(
        &mut s,
        first.id,
        Response::Error(WireError {
            code: ErrorCode::Other("quota_exceeded".into()),
            message: "over quota".into(),
        }),
    )
    .await;

    // Requests 2 and 3 in flight together: 3 gets a response kind this client does not
    // know, 2 a status afterwards.
    let second = next_request(&mut s).await;
    let third = next_request(&mut s).await;
    let (status_id, unknown_id) = if matches!(second.request, Request::Status) {
        (second.id, third.id)
    } else {
        (third.id, second.id)
    };
    let mut unknown = vec![0x81];
    unknown.extend(fixstr("rate_limits"));
    unknown.push(0x92);
    unknown.extend([0x01, 0x02]);
    send_raw(
        &mut s,
        &raw_frame(u8::try_from(unknown_id).expect("small id"), &unknown),
    )
    .await;
    send(&mut s, status_id, status()).await;

    // Request 4: still served.
    let fourth = next_request(&mut s).await;
    send(&mut s, fourth.id, status()).await;
    // Wait for the client to hang up.
    let _ = codec::read_frame(&mut s, DEFAULT_MAX_FRAME).await;
}

#[tokio::test]
async fn unknown_codes_events_and_responses_keep_the_connection() {
    let path = socket_path();
    let listener = UnixListener::bind(&path).expect("binds");
    let daemon = tokio::spawn(later_daemon(listener));

    let conn = Connection::connect(&path, "later-minor test")
        .await
        .expect("connects");
    let mut events = conn.events();

    // The unknown code reaches the caller as a daemon error with the code's name.
    let err = conn.call(Request::Status).await.expect_err("an error");
    let wire = err.wire().expect("a daemon error");
    assert_eq!(wire.code, ErrorCode::Other("quota_exceeded".into()));
    assert_eq!(wire.message, "over quota");
    assert!(!conn.is_closed());
    // The unknown events were dropped; the known one after them came through.
    assert_eq!(events.try_recv().expect("an event"), Event::Locked);
    assert!(
        events.try_recv().is_err(),
        "unknown events are not passed on"
    );

    // A response this client cannot decode fails its own request only.
    let (status, unknown) =
        tokio::join!(conn.call(Request::Status), conn.call(Request::ListSessions));
    assert!(matches!(status, Ok(Response::Status(_))), "{status:?}");
    assert!(matches!(unknown, Err(ClientError::Frame(_))), "{unknown:?}");

    assert!(matches!(
        conn.call(Request::Status).await,
        Ok(Response::Status(_))
    ));
    assert!(!conn.is_closed());
    drop(conn);
    daemon
        .await
        .expect("the fake daemon's script ran to its end");
    let _ = std::fs::remove_dir_all(path.parent().expect("in a dir"));
}
