//! Malformed input on the wire: garbage payloads, unknown requests, frames over the limit,
//! a wrong protocol version, clients that say nothing or stop in the middle of a frame.
//! Each gets its typed error (or its connection closed), and nobody else is held up.

use std::time::{Duration, Instant};

use serde_json::json;
use session_vault_proto::codec;
use session_vault_proto::message::{
    ClientFrame, ErrorCode, PROTOCOL_MAJOR, Request, Response, VaultState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::raw::{Raw, hello};
use crate::util::*;

/// Sends `payload` as a frame after the handshake and expects `invalid_request` with
/// `want_id`, then a working connection.
async fn expect_invalid(raw: &mut Raw, payload: &[u8], want_id: u32, what: &str) {
    raw.send_payload(payload).await;
    let (id, code) = raw.recv_error().await;
    assert_eq!(code, ErrorCode::InvalidRequest, "{what}");
    assert_eq!(id, want_id, "{what}: response id");
    let r = raw.call(100, Request::Status).await;
    assert!(
        matches!(r, Response::Status(_)),
        "{what}: then status: {r:?}"
    );
}

#[tokio::test]
async fn malformed_payloads_get_invalid_request_and_the_connection_goes_on() {
    let env = Env::new();
    let _d = env.start();
    let mut raw = Raw::connect_hello(&env.socket()).await;

    expect_invalid(&mut raw, &[0xc1, 0xff, 0x00, 0x13], 0, "never-used marker").await;
    expect_invalid(&mut raw, b"", 0, "empty payload").await;
    expect_invalid(&mut raw, b"GET / HTTP/1.1\r\n\r\n", 0, "text").await;
    // Arrays nested far deeper than any message: refused, and no stack overflow.
    let mut deep = vec![0x91u8; 100_000];
    deep.push(0xc0);
    expect_invalid(&mut raw, &deep, 0, "deep nesting").await;
    // A well-formed frame with bytes after it.
    let mut trailing = codec::encode_frame(&ClientFrame {
        id: 5,
        request: Request::Status,
    })
    .unwrap()[4..]
        .to_vec();
    trailing.extend_from_slice(&[0xc0, 0xc0]);
    expect_invalid(&mut raw, &trailing, 0, "trailing bytes").await;
    // The id is echoed whenever it can be read.
    let missing = rmp_serde::to_vec_named(&json!({ "id": 9 })).unwrap();
    expect_invalid(&mut raw, &missing, 9, "no request field").await;
    let wrong_type = rmp_serde::to_vec_named(
        &json!({ "id": 10, "request": { "get_home_dc": { "handle": "one" } } }),
    )
    .unwrap();
    expect_invalid(&mut raw, &wrong_type, 10, "field of the wrong type").await;

    let (status, _) = env.assert_serving().await;
    assert_eq!(status.state, VaultState::Uninitialized);
}

#[tokio::test]
async fn unknown_request_types_get_invalid_request() {
    let env = Env::new();
    let _d = env.start();
    let mut raw = Raw::connect_hello(&env.socket()).await;
    let unknown = [
        json!({ "id": 7, "request": { "frobnicate": { "x": 1 } } }),
        json!({ "id": 8, "request": "frobnicate" }),
        json!({ "id": 11, "request": { "status": {}, "lock": {} } }),
        json!({ "id": 12, "request": 42 }),
    ];
    for v in unknown {
        let id = v["id"].as_u64().unwrap() as u32;
        let payload = rmp_serde::to_vec_named(&v).unwrap();
        expect_invalid(&mut raw, &payload, id, &v.to_string()).await;
    }
    // A second hello is a known request in the wrong place.
    let r = raw.call(13, hello(PROTOCOL_MAJOR)).await;
    assert!(
        matches!(&r, Response::Error(e) if e.code == ErrorCode::InvalidRequest),
        "{r:?}"
    );
    env.assert_serving().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_and_its_connection_closed() {
    let env = Env::new();
    let _d = env.start_with(&["--max-frame-bytes", "4096"]);
    let bystander = env.connect().await;
    let mut raw = Raw::connect_hello(&env.socket()).await;

    // Exactly at the limit is read (and, as garbage, refused without closing).
    expect_invalid(&mut raw, &[0xc1; 4096], 0, "4096-byte frame").await;

    // 1 MiB announced: refused before it is read, then the connection is closed.
    raw.send_bytes(&(1u32 << 20).to_be_bytes()).await;
    // Some of the payload, as a real client would send it; the daemon may have closed the
    // connection already, so this write may fail (EPIPE), which is fine.
    let _ = raw.stream.write_all(&[0u8; 1000]).await;
    let (id, code) = raw.recv_error().await;
    assert_eq!(id, 0);
    assert_eq!(code, ErrorCode::FrameTooLarge { limit: 4096 });
    raw.expect_closed().await;

    // The same before the handshake.
    let mut raw = Raw::connect(&env.socket()).await;
    raw.send_bytes(&4097u32.to_be_bytes()).await;
    let (_, code) = raw.recv_error().await;
    assert_eq!(code, ErrorCode::FrameTooLarge { limit: 4096 });
    raw.expect_closed().await;

    // Others are unaffected.
    let r = bystander.call(Request::Status).await;
    assert!(matches!(r, Ok(Response::Status(_))), "{r:?}");
    env.assert_serving().await;
}

#[tokio::test]
async fn a_wrong_protocol_version_or_a_wrong_first_frame_is_refused() {
    let env = Env::new();
    let _d = env.start();

    let mut raw = Raw::connect(&env.socket()).await;
    raw.send_request(1, hello(99)).await;
    let (id, code) = raw.recv_error().await;
    assert_eq!(id, 1);
    assert_eq!(
        code,
        ErrorCode::ProtocolMismatch {
            server_major: PROTOCOL_MAJOR
        }
    );
    raw.expect_closed().await;

    let mut raw = Raw::connect(&env.socket()).await;
    raw.send_request(4, Request::Status).await;
    let (id, code) = raw.recv_error().await;
    assert_eq!(
        (id, code),
        (4, ErrorCode::InvalidRequest),
        "status before hello"
    );
    raw.expect_closed().await;

    let mut raw = Raw::connect(&env.socket()).await;
    raw.send_payload(b"\xc1garbage").await;
    let (_, code) = raw.recv_error().await;
    assert_eq!(code, ErrorCode::InvalidRequest, "garbage hello");
    raw.expect_closed().await;

    // A newer minor version of the same major is welcome.
    let mut raw = Raw::connect(&env.socket()).await;
    let r = raw
        .call(
            1,
            Request::Hello {
                protocol_major: PROTOCOL_MAJOR,
                protocol_minor: 999,
                client: "future".into(),
            },
        )
        .await;
    assert!(matches!(r, Response::Welcome { .. }), "{r:?}");
    env.assert_serving().await;
}

#[tokio::test]
async fn silent_and_half_frame_clients_do_not_hold_up_others() {
    let env = Env::new();
    let _d = env.start();
    let socket = env.socket();

    let _silent = Raw::connect(&socket).await;
    let mut half_hello = Raw::connect(&socket).await;
    half_hello.send_bytes(&[0, 0, 0, 60, 0x82, 0xa2]).await;
    let mut half_request = Raw::connect_hello(&socket).await;
    let frame = codec::encode_frame(&ClientFrame {
        id: 3,
        request: Request::Status,
    })
    .unwrap();
    let (head, tail) = frame.split_at(frame.len() / 2);
    half_request.send_bytes(head).await;

    let (_, took) = env.assert_serving().await;
    println!("status with a silent, a half-hello and a half-request client: {took:?}");
    assert!(took < Duration::from_secs(2), "status took {took:?}");

    // The rest of the frame arrives: the request is answered as if sent at once.
    half_request.send_bytes(tail).await;
    let f = half_request.recv().await.expect("response");
    assert_eq!(f.id, 3);
    assert!(matches!(f.response, Response::Status(_)));
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_dropped_after_the_handshake_timeout() {
    let env = Env::new();
    let _d = env.start();
    let mut silent = Raw::connect(&env.socket()).await;
    let mut half = Raw::connect(&env.socket()).await;
    half.send_bytes(&[0, 0, 0, 60, 0x82]).await;
    let t = Instant::now();
    for raw in [&mut silent, &mut half] {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(30), raw.stream.read(&mut buf))
            .await
            .expect("dropped within 30 s");
        assert!(matches!(n, Ok(0)), "{n:?}");
    }
    let waited = t.elapsed();
    println!("silent clients dropped after {waited:?}");
    assert!(
        waited >= Duration::from_secs(9),
        "dropped after only {waited:?}"
    );
    env.assert_serving().await;
}
