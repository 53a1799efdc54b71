//! Passphrases and auth keys never show in `Debug` output or in decode error texts.

use session_vault_proto::codec::{FrameError, decode_payload};
use session_vault_proto::message::{ClientFrame, Passphrase, Request};
use session_vault_proto::model::AuthKey;

use crate::{samples, unhex};

const SECRET: &str = "hunter2-Secret";

fn assert_hidden(text: &str) {
    assert!(!text.contains(SECRET), "secret in {text}");
    assert!(!text.contains("hunter2"), "secret in {text}");
    // Nor as the list of its bytes ("104, 117, 110, …").
    assert!(!text.contains("104, 117"), "secret bytes in {text}");
}

#[test]
fn passphrase_debug_is_redacted() {
    let p = Passphrase::new(SECRET.as_bytes().to_vec());
    assert_eq!(format!("{p:?}"), "Passphrase(<redacted>)");
    assert_hidden(&format!("{p:#?}"));
    let r = Request::ChangePassphrase {
        recovery: false,
        old: p.clone(),
        new: p,
        kdf: None,
    };
    assert_hidden(&format!("{r:?}"));
    assert_hidden(&format!("{r:#?}"));
    let r = Request::Rekey {
        passphrase: Passphrase::new(SECRET.as_bytes().to_vec()),
        kdf: None,
    };
    assert_hidden(&format!("{r:?}"));
    let r = Request::MigrateStore {
        url: "postgres://vault@db/vault".into(),
        password: Some(Passphrase::new(SECRET.as_bytes().to_vec())),
    };
    assert_hidden(&format!("{r:?}"));
}

#[test]
fn auth_key_debug_is_redacted() {
    let key = AuthKey::new([0x5a; 256]);
    assert_eq!(format!("{key:?}"), "AuthKey(<redacted>)");
    for text in [
        format!("{:?}", samples::dc_option()),
        format!("{:#?}", samples::session_data()),
        format!("{:?}", samples::requests()),
        format!("{:?}", samples::responses()),
    ] {
        assert!(text.contains("AuthKey(<redacted>)"));
        // The sample key's bytes are 0, 1, 2, …: no run of them may show.
        assert!(!text.contains("0, 1, 2, 3"), "key bytes in Debug output");
        assert!(!text.contains("90, 90, 90"), "key bytes in Debug output");
    }
}

fn decode_error(payload: &[u8]) -> String {
    match decode_payload::<ClientFrame>(payload) {
        Err(FrameError::Decode(text)) => text,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

fn str_hex(s: &str) -> String {
    assert!(s.len() < 32);
    format!("{:02x} {}", 0xa0 | s.len(), crate::hex(s.as_bytes()))
}

/// A client that puts a secret where the schema wants something else gets an error that
/// names the kind of value, never the value: error texts reach logs and other processes.
#[test]
fn decode_errors_never_quote_the_payload() {
    let id_and =
        |request_hex: &str| unhex(&format!("82 a2 6964 01 a7 72657175657374 {request_hex}"));
    let s = str_hex(SECRET);
    let cases = [
        // {"unlock": "<secret>"}: a string where the fields map belongs.
        format!("81 a6 756e6c6f636b {s}"),
        // {"unlock": {"passphrase": ["<secret>"]}}: a passphrase in an array.
        format!("81 a6 756e6c6f636b 81 aa 70617373706872617365 91 {s}"),
        // {"set_dc_option": {"handle": 1, "option": {"id": 2, "ipv4": nil, "ipv6": nil,
        //   "auth_key": "<secret>"}}}: a key sent as a string.
        format!(
            "81 ad 7365745f64635f6f7074696f6e 82 a6 68616e646c65 01 a6 6f7074696f6e \
             84 a2 6964 02 a4 69707634 c0 a4 69707636 c0 a8 617574685f6b6579 {s}"
        ),
        // {"get_home_dc": {"handle": "<secret>"}}
        format!("81 ab 6765745f686f6d655f6463 81 a6 68616e646c65 {s}"),
    ];
    for case in &cases {
        let text = decode_error(&id_and(case));
        assert_hidden(&text);
        assert!(!text.is_empty());
    }
    // A secret number (an access hash) where a string belongs: the number is not shown.
    // {"get_peer": {"handle": 1, "query": {"username": -8070450532247928833}}}
    let text = decode_error(&id_and(
        "81 a8 6765745f70656572 82 a6 68616e646c65 01 a5 7175657279 81 a8 757365726e616d65 \
         d3 8fffffffffffffff",
    ));
    assert!(!text.contains("8070450532247928833"), "{text}");
    assert!(text.contains("invalid type: integer, expected"), "{text}");
}

#[test]
fn peer_debug_hides_the_access_hash_and_phone() {
    use session_vault_proto::model::{Peer, PeerKind};
    let mut p = Peer::new(PeerKind::User, 777_001);
    p.access_hash = Some(-8_765_432_109_876_543);
    p.phone = Some("15550123456".into());
    p.username = Some("public_name".into());
    for text in [format!("{p:?}"), format!("{p:#?}")] {
        assert!(!text.contains("8765432109876543"), "access hash in {text}");
        assert!(!text.contains("15550123456"), "phone in {text}");
        // What is not secret still helps debugging.
        assert!(
            text.contains("777001") && text.contains("public_name"),
            "{text}"
        );
        assert!(text.contains("<redacted>"), "{text}");
    }
    // Unknown stays distinguishable from hidden.
    let bare = format!("{:?}", Peer::new(PeerKind::Channel, 5));
    assert!(bare.contains("access_hash: None"), "{bare}");
}
