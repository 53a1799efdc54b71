//! Frames of a later minor version decode: what `PROTOCOL.md` §6 lets a minor version add
//! (error codes, events, optional fields) must not make this version's decoder fail.
//!
//! The later version's messages are written here as serde types of their own, encoded the
//! way the daemon encodes (`write_named`), as a daemon of protocol 1.2 would send them.

use serde::Serialize;
use session_vault_proto::codec::{decode_payload, encode_frame};
use session_vault_proto::message::{
    ErrorCode, Event, Response, ServerFrame, StatusInfo, VaultState, WireError,
};

use crate::{payload, samples};

/// `ServerFrame` of the later version.
#[derive(Serialize)]
struct Frame<R> {
    id: u32,
    response: R,
    /// A field the later version added to every frame.
    trace: Option<&'static str>,
}

/// The later version's responses that this test sends.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Later<C, E> {
    Error {
        code: C,
        message: &'static str,
        /// An optional field added to `WireError`.
        details: Vec<u32>,
    },
    Event(E),
    Status(LaterStatus),
    Welcome {
        protocol_major: u16,
        protocol_minor: u16,
        server: &'static str,
        vault_state: &'static str,
        features: Vec<&'static str>,
    },
}

/// `StatusInfo` with a field of the later version.
#[derive(Serialize)]
struct LaterStatus {
    state: &'static str,
    vault_path: &'static str,
    sessions: Option<u64>,
    uptime_secs: u64,
    version: &'static str,
    pid: u32,
    connections: u64,
    memory_bytes: u64,
}

/// Error codes and events of the later version, with and without fields.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum LaterName {
    QuotaExceeded,
    RateLimited {
        retry_after_ms: u64,
        scope: Vec<&'static str>,
    },
    SessionBusy {
        holder_pid: Option<u32>,
        holder_uid: u32,
    },
    SessionRenamed {
        old: &'static str,
        new: &'static str,
    },
    Locked,
}

fn decode<R: Serialize>(id: u32, response: R) -> ServerFrame {
    let frame = Frame {
        id,
        response,
        trace: Some("t-1"),
    };
    decode_payload(&payload(&frame)).expect("a later minor version's frame decodes")
}

fn error(code: LaterName) -> WireError {
    let response = Later::<_, ()>::Error {
        code,
        message: "later",
        details: vec![1, 2, 3],
    };
    match decode(7, response) {
        ServerFrame {
            id: 7,
            response: Response::Error(e),
        } => e,
        other => panic!("not an error frame: {other:?}"),
    }
}

fn event(name: LaterName) -> Event {
    match decode(0, Later::<(), _>::Event(name)) {
        ServerFrame {
            id: 0,
            response: Response::Event(e),
        } => e,
        other => panic!("not an event frame: {other:?}"),
    }
}

#[test]
fn an_unknown_error_code_decodes_as_other_with_its_name() {
    let e = error(LaterName::QuotaExceeded);
    assert_eq!(e.code, ErrorCode::Other("quota_exceeded".into()));
    assert_eq!(e.message, "later");
    assert_eq!(e.code.name(), "quota_exceeded");
}

#[test]
fn an_unknown_error_code_with_fields_decodes_as_other_and_its_fields_are_skipped() {
    let e = error(LaterName::RateLimited {
        retry_after_ms: 70_000,
        scope: vec!["uid", "session"],
    });
    assert_eq!(e.code, ErrorCode::Other("rate_limited".into()));
    // The fields after the code were read from the right place.
    assert_eq!(e.message, "later");
}

#[test]
fn a_known_error_code_with_a_field_added_later_keeps_its_known_fields() {
    let e = error(LaterName::SessionBusy {
        holder_pid: Some(42),
        holder_uid: 1000,
    });
    assert_eq!(
        e.code,
        ErrorCode::SessionBusy {
            holder_pid: Some(42)
        }
    );
    assert_eq!(error(LaterName::Locked).code, ErrorCode::Locked);
}

#[test]
fn an_unknown_event_decodes_as_other_with_or_without_content() {
    assert_eq!(
        event(LaterName::QuotaExceeded),
        Event::Other("quota_exceeded".into())
    );
    assert_eq!(
        event(LaterName::SessionRenamed { old: "a", new: "b" }),
        Event::Other("session_renamed".into())
    );
    assert_eq!(event(LaterName::Locked), Event::Locked);
}

#[test]
fn known_responses_with_fields_added_later_decode() {
    let status = LaterStatus {
        state: "unlocked",
        vault_path: "/v.db",
        sessions: Some(3),
        uptime_secs: 9,
        version: "0.2.0",
        pid: 4242,
        connections: 1,
        memory_bytes: 1 << 20,
    };
    let frame = decode(2, Later::<(), ()>::Status(status));
    let Response::Status(StatusInfo {
        state, sessions, ..
    }) = frame.response
    else {
        panic!("not a status: {:?}", frame.response);
    };
    assert_eq!((state, sessions), (VaultState::Unlocked, Some(3)));

    let welcome = Later::<(), ()>::Welcome {
        protocol_major: 1,
        protocol_minor: 2,
        server: "vaultd 0.2.0",
        vault_state: "locked",
        features: vec!["rate_limits"],
    };
    assert!(matches!(
        decode(1, welcome).response,
        Response::Welcome {
            protocol_minor: 2,
            vault_state: VaultState::Locked,
            ..
        }
    ));
}

#[test]
fn other_encodes_as_the_bare_name_and_round_trips() {
    for code in [
        ErrorCode::Other("quota_exceeded".into()),
        ErrorCode::Other("locked".into()),
    ] {
        // "quota_exceeded" / "locked": a str, like a known code without fields.
        let bytes = payload(&code);
        assert_eq!(
            bytes[0],
            0xa0 | u8::try_from(code.name().len()).expect("a short name")
        );
        assert_eq!(&bytes[1..], code.name().as_bytes());
    }
    let code = ErrorCode::Other("quota_exceeded".into());
    assert_eq!(decode_payload::<ErrorCode>(&payload(&code)).unwrap(), code);
    let event = Event::Other("session_renamed".into());
    assert_eq!(decode_payload::<Event>(&payload(&event)).unwrap(), event);
    // An `Other` holding a known name is that known code on the wire.
    assert_eq!(
        decode_payload::<ErrorCode>(&payload(&ErrorCode::Other("locked".into()))).unwrap(),
        ErrorCode::Locked
    );
    assert!(encode_frame(&Response::Event(Event::Other("x".into()))).is_ok());
}

#[test]
fn a_known_code_with_malformed_fields_is_still_an_error() {
    // {"session_busy": {"holder_pid": "x"}}: a known name is decoded strictly.
    let bad = crate::unhex("81 ac 73657373696f6e5f62757379 81 aa 686f6c6465725f706964 a1 78");
    assert!(decode_payload::<ErrorCode>(&bad).is_err());
    // "session_busy" bare: the code has fields.
    let bare = crate::unhex("ac 73657373696f6e5f62757379");
    assert!(decode_payload::<ErrorCode>(&bare).is_err());
    // An unknown name whose content is truncated does not decode either.
    let truncated = crate::unhex("81 a3 6e6577 82 a1 61 01");
    assert!(decode_payload::<ErrorCode>(&truncated).is_err());
    // Not a name at all.
    assert!(decode_payload::<ErrorCode>(&crate::unhex("07")).is_err());
}

#[test]
fn every_code_s_name_is_its_wire_name() {
    for code in samples::error_codes() {
        let bytes = payload(&code);
        // A bare str, or a one-entry map whose key is the name.
        let name_at = if bytes[0] == 0x81 { 1 } else { 0 };
        let len = usize::from(bytes[name_at] & 0x1f);
        assert_eq!(
            &bytes[name_at + 1..name_at + 1 + len],
            code.name().as_bytes(),
            "{code:?}"
        );
    }
}
