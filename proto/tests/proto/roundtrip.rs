//! Every request and response through `write_message` → a tokio duplex pipe → `read_frame`
//! → `decode_payload`, and back to the same bytes.

use std::collections::BTreeSet;

use serde::Serialize;
use serde::de::DeserializeOwned;
use session_vault_proto::codec::{
    DEFAULT_MAX_FRAME, decode_payload, encode_frame, read_frame, read_message, write_message,
};
use session_vault_proto::message::{ClientFrame, ErrorCode, Event, Request, Response};

use crate::probe;
use crate::samples::{self, wire_name};

/// Writes every frame into a small duplex pipe (so reads come in pieces) from one task and
/// reads them back in another; checks each payload is the frame's own encoding and that
/// decoding and encoding again gives the same bytes.
async fn through_the_pipe<T>(frames: Vec<T>)
where
    T: Serialize + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let expected: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| encode_frame(f).expect("encodes").to_vec())
        .collect();
    let (mut client, mut server) = tokio::io::duplex(61);
    let writer = tokio::spawn(async move {
        for f in &frames {
            write_message(&mut client, f).await.expect("writes");
        }
        // Dropping `client` ends the stream: the reader sees a clean EOF.
    });
    for want in &expected {
        let payload = read_frame(&mut server, DEFAULT_MAX_FRAME)
            .await
            .expect("reads")
            .expect("a frame, not EOF");
        assert_eq!(
            &payload[..],
            &want[4..],
            "payload differs from the frame written"
        );
        let decoded: T = decode_payload(&payload).expect("decodes");
        let again = encode_frame(&decoded).expect("encodes again");
        assert_eq!(
            &again[..],
            &want[..],
            "not the same bytes after a round trip: {decoded:?}"
        );
    }
    assert!(
        read_frame(&mut server, DEFAULT_MAX_FRAME)
            .await
            .expect("clean EOF")
            .is_none()
    );
    writer.await.expect("writer task");
}

#[tokio::test]
async fn every_request_round_trips() {
    through_the_pipe(samples::client_frames()).await;
}

#[tokio::test]
async fn every_response_round_trips() {
    through_the_pipe(samples::server_frames()).await;
}

#[tokio::test]
async fn read_message_decodes_what_write_message_wrote() {
    let (mut a, mut b) = tokio::io::duplex(1024);
    let frame = ClientFrame {
        id: 9,
        request: Request::GetHomeDc { handle: 3 },
    };
    write_message(&mut a, &frame).await.expect("writes");
    drop(a);
    let got: ClientFrame = read_message(&mut b, DEFAULT_MAX_FRAME)
        .await
        .expect("reads")
        .expect("one message");
    assert_eq!(got.id, 9);
    assert!(matches!(got.request, Request::GetHomeDc { handle: 3 }));
    let eof: Option<ClientFrame> = read_message(&mut b, DEFAULT_MAX_FRAME)
        .await
        .expect("clean EOF");
    assert!(eof.is_none());
}

/// Values that compare equal survive the trip exactly (Debug equality is weaker: secrets
/// are redacted there, which is why the tests above compare bytes).
#[test]
fn decoded_values_are_equal_to_the_originals() {
    for response in samples::responses() {
        let bytes = crate::payload(&response);
        let back: Response = decode_payload(&bytes).expect("decodes");
        match (&response, &back) {
            (Response::SessionData(a), Response::SessionData(b)) => assert_eq!(a, b),
            (Response::Error(a), Response::Error(b)) => assert_eq!(a, b),
            (Response::Event(a), Response::Event(b)) => assert_eq!(a, b),
            (Response::Status(a), Response::Status(b)) => assert_eq!(a, b),
            (Response::Peer(a), Response::Peer(b)) => assert_eq!(a, b),
            (Response::DcOptions(a), Response::DcOptions(b)) => assert_eq!(a, b),
            (Response::Extras(a), Response::Extras(b)) => assert_eq!(a, b),
            _ => assert_eq!(format!("{response:?}"), format!("{back:?}")),
        }
    }
}

fn names<T: std::fmt::Debug>(values: &[T]) -> BTreeSet<String> {
    values.iter().map(wire_name).collect()
}

fn all<T: DeserializeOwned>() -> BTreeSet<String> {
    probe::variants::<T>()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A variant added to `message.rs` without a sample here fails this test.
#[test]
fn the_samples_cover_every_variant() {
    assert_eq!(names(&samples::requests()), all::<Request>());
    assert_eq!(names(&samples::responses()), all::<Response>());
    assert_eq!(names(&samples::error_codes()), all::<ErrorCode>());
    assert_eq!(names(&samples::events()), all::<Event>());
}

/// Each value's encoding opens with its tag, and the tag is the name the tests (and
/// `PROTOCOL.md`) use: a unit variant is exactly the string, any other a one-entry map
/// whose key is the string.
fn opens_with_its_name<T: serde::Serialize + std::fmt::Debug>(value: &T) {
    let name = wire_name(value);
    assert!(name.len() < 32, "{name}: a fixstr");
    let mut tag = vec![0xa0 | name.len() as u8];
    tag.extend_from_slice(name.as_bytes());
    let bytes = crate::payload(value);
    let unit = bytes == tag;
    let map = bytes.first() == Some(&0x81) && bytes[1..].starts_with(&tag);
    assert!(unit || map, "{value:?} does not open with the tag {name:?}");
}

#[test]
fn wire_names_are_the_encoded_tags() {
    samples::requests().iter().for_each(opens_with_its_name);
    samples::responses().iter().for_each(opens_with_its_name);
    samples::error_codes().iter().for_each(opens_with_its_name);
    samples::events().iter().for_each(opens_with_its_name);
}

#[test]
fn request_wire_names_and_minors_agree_with_the_encoding() {
    for r in samples::requests() {
        assert_eq!(r.wire_name(), wire_name(&r), "{r:?}");
        assert!(
            r.minor_needed() <= session_vault_proto::PROTOCOL_MINOR,
            "{r:?}"
        );
    }
    let needs = |name: &str| {
        samples::requests()
            .into_iter()
            .find(|r| r.wire_name() == name)
            .unwrap()
            .minor_needed()
    };
    assert_eq!(needs("status"), 0);
    assert_eq!(needs("rekey"), 1);
    assert_eq!(needs("verify"), 2);
    assert_eq!(needs("disconnect"), 3);
    assert_eq!(needs("import_begin"), 4);
}
