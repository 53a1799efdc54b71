//! A raw protocol client: frames written and read by hand on a Unix socket, for the tests
//! that must send what a well-behaved client never would (garbage, oversized or half frames,
//! unknown requests, a wrong protocol version).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use session_vault_proto::codec;
use session_vault_proto::message::{
    ClientFrame, ErrorCode, PROTOCOL_MAJOR, PROTOCOL_MINOR, Request, Response, ServerFrame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long a raw read waits for the daemon before the test fails.
pub const READ_LIMIT: Duration = Duration::from_secs(10);

/// One raw connection.
pub struct Raw {
    pub stream: UnixStream,
}

impl Raw {
    /// Connects without saying anything.
    pub async fn connect(socket: &Path) -> Raw {
        let stream = UnixStream::connect(socket)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        Raw { stream }
    }

    /// Connects and completes the handshake.
    pub async fn connect_hello(socket: &Path) -> Raw {
        let mut r = Raw::connect(socket).await;
        r.hello().await;
        r
    }

    /// Sends `Hello` (id 1) with the current protocol version and expects `Welcome`.
    pub async fn hello(&mut self) {
        self.send_request(1, hello(PROTOCOL_MAJOR)).await;
        let f = self.recv().await.expect("welcome");
        assert_eq!(f.id, 1);
        assert!(
            matches!(f.response, Response::Welcome { .. }),
            "{:?}",
            f.response
        );
    }

    /// Writes bytes as they are.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to vaultd");
        self.stream.flush().await.expect("flush to vaultd");
    }

    /// Writes one frame around `payload` (length prefix added).
    pub async fn send_payload(&mut self, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.send_bytes(&frame).await;
    }

    /// Writes any serializable value as one MessagePack frame (named fields).
    pub async fn send_value<T: Serialize>(&mut self, value: &T) {
        let frame = codec::encode_frame(value).expect("encode frame");
        self.send_bytes(&frame).await;
    }

    /// Writes one request frame.
    pub async fn send_request(&mut self, id: u32, request: Request) {
        self.send_value(&ClientFrame { id, request }).await;
    }

    /// Reads one frame; `None` on a clean EOF. Fails the test after [`READ_LIMIT`].
    pub async fn recv(&mut self) -> Option<ServerFrame> {
        tokio::time::timeout(
            READ_LIMIT,
            codec::read_message(&mut self.stream, codec::DEFAULT_MAX_FRAME),
        )
        .await
        .expect("vaultd answers within the read limit")
        .expect("a well-formed frame from vaultd")
    }

    /// Sends `request` with `id` and returns the response, checking that it echoes `id`.
    pub async fn call(&mut self, id: u32, request: Request) -> Response {
        self.send_request(id, request).await;
        let f = self.recv().await.expect("a response, not EOF");
        assert_eq!(
            f.id, id,
            "response id echoes the request id: {:?}",
            f.response
        );
        f.response
    }

    /// Reads the next frame and returns its id and error code; fails on anything else.
    pub async fn recv_error(&mut self) -> (u32, ErrorCode) {
        let f = self.recv().await.expect("an error frame, not EOF");
        match f.response {
            Response::Error(e) => {
                assert!(!e.message.is_empty());
                (f.id, e.code)
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Asserts the daemon closed the connection: EOF (or a reset) within [`READ_LIMIT`].
    pub async fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(READ_LIMIT, self.stream.read(&mut buf))
            .await
            .expect("vaultd closes the connection within the read limit");
        match n {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("expected the connection closed, got {n} more bytes"),
            Err(e) => panic!("expected the connection closed, got {e}"),
        }
    }
}

/// A `Hello` of protocol `major`.
pub fn hello(major: u16) -> Request {
    Request::Hello {
        protocol_major: major,
        protocol_minor: PROTOCOL_MINOR,
        client: "raw-test".into(),
    }
}
