//! `PROTOCOL.md` is checked against the crate: its hex dumps are the real encodings, and it
//! names every request, response, error code, event and field.

use serde::de::DeserializeOwned;
use session_vault_proto::audit::{AuditEntry, AuditPage, AuditProblem, AuditProblemKind};
use session_vault_proto::codec::{DEFAULT_MAX_FRAME, MAX_DEPTH};
use session_vault_proto::message::{
    ClientFrame, ErrorCode, Event, KdfSpec, PROTOCOL_MAJOR, PROTOCOL_MINOR, PeerQuery, Request,
    Response, ServerFrame, SessionListing, StatusInfo, VaultState, WireError,
};
use session_vault_proto::model::{
    ChannelKind, ChannelState, DcOption, Peer, PeerKey, PeerKind, SelfUser, SentFile, SessionData,
    SessionExtras, SessionSummary, TmpAuthKey, UpdateStateChange, UpdatesState,
};

use crate::{hex, probe, samples, unhex};

const DOC: &str = include_str!("../../PROTOCOL.md");

/// The documented exchange, in order.
pub fn exchange() -> Vec<(&'static str, Vec<u8>)> {
    let enc = |v: &dyn erased::Encode| v.encode();
    vec![
        (
            "client-hello",
            enc(&ClientFrame {
                id: 1,
                request: Request::Hello {
                    protocol_major: 1,
                    protocol_minor: 0,
                    client: "example 0.1".into(),
                },
            }),
        ),
        (
            "server-welcome",
            enc(&ServerFrame {
                id: 1,
                response: Response::Welcome {
                    protocol_major: 1,
                    protocol_minor: 0,
                    server: "vaultd 0.1.0".into(),
                    vault_state: VaultState::Unlocked,
                },
            }),
        ),
        (
            "client-status",
            enc(&ClientFrame {
                id: 2,
                request: Request::Status,
            }),
        ),
        (
            "server-status",
            enc(&ServerFrame {
                id: 2,
                response: Response::Status(samples::status_info()),
            }),
        ),
    ]
}

mod erased {
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            session_vault_proto::codec::encode_frame(self)
                .expect("encodes")
                .to_vec()
        }
    }
}

/// The bytes of the fenced block that follows `<!-- frame: NAME -->`: the hex digits of
/// each line, up to its `#` comment.
fn documented_frame(name: &str) -> Vec<u8> {
    let marker = format!("<!-- frame: {name} -->");
    let after = DOC
        .split_once(&marker)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {marker}"))
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```text")
        .unwrap_or_else(|| panic!("{marker} is not followed by a ```text block"));
    let block = block.split_once("```").expect("the block ends").0;
    let digits: String = block
        .lines()
        .map(|line| line.split_once('#').map_or(line, |(bytes, _)| bytes))
        .collect::<Vec<_>>()
        .join(" ");
    unhex(&digits)
}

#[test]
fn the_documented_exchange_is_what_the_crate_encodes() {
    for (name, bytes) in exchange() {
        assert_eq!(
            hex(&documented_frame(name)),
            hex(&bytes),
            "PROTOCOL.md's {name} frame is stale; run `cargo test -p session-vault-proto \
             --test proto print_exchange -- --ignored --nocapture`"
        );
    }
}

#[test]
fn the_documented_frames_decode() {
    let hello: ClientFrame =
        session_vault_proto::codec::decode_payload(&documented_frame("client-hello")[4..])
            .expect("decodes");
    assert!(matches!(hello.request, Request::Hello { .. }));
    let status: ServerFrame =
        session_vault_proto::codec::decode_payload(&documented_frame("server-status")[4..])
            .expect("decodes");
    assert!(matches!(status.response, Response::Status(_)));
}

fn named(name: &str) -> bool {
    DOC.contains(&format!("`{name}`"))
}

fn every_variant_is_named<T: DeserializeOwned>() {
    for v in probe::variants::<T>() {
        assert!(
            named(v),
            "PROTOCOL.md does not name {}::{v}",
            std::any::type_name::<T>()
        );
    }
}

#[test]
fn every_message_is_documented() {
    every_variant_is_named::<Request>();
    every_variant_is_named::<Response>();
    every_variant_is_named::<ErrorCode>();
    every_variant_is_named::<Event>();
    every_variant_is_named::<VaultState>();
    every_variant_is_named::<PeerQuery>();
    every_variant_is_named::<PeerKind>();
    every_variant_is_named::<ChannelKind>();
    every_variant_is_named::<UpdateStateChange>();
    every_variant_is_named::<AuditProblemKind>();
}

/// The table row of a variant: the line that starts with ``| `name` |``.
fn row(variant: &str) -> &'static str {
    let start = format!("| `{variant}` |");
    DOC.lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("PROTOCOL.md has no table row for `{variant}`"))
}

/// Checks that `text` names every field, in the order of `fields` (the encoding's order,
/// which PROTOCOL.md promises to list them in).
fn names_in_order(text: &str, fields: &[&str], pattern: impl Fn(&str) -> String, what: &str) {
    let mut last = 0;
    for field in fields {
        let at = text
            .find(&pattern(field))
            .unwrap_or_else(|| panic!("PROTOCOL.md's {what} does not name its field `{field}`"));
        assert!(
            at >= last,
            "PROTOCOL.md's {what} lists `{field}` out of the encoding's order"
        );
        last = at;
    }
}

fn every_field_is_in_its_row<T: DeserializeOwned>() {
    for v in probe::variants::<T>() {
        let fields = probe::variant_fields::<T>(v).unwrap_or_default();
        names_in_order(
            row(v),
            fields,
            |f| format!("`{f}`"),
            &format!("row for `{v}`"),
        );
    }
}

#[test]
fn every_variant_has_a_row_naming_its_fields() {
    every_field_is_in_its_row::<Request>();
    every_field_is_in_its_row::<Response>();
    every_field_is_in_its_row::<ErrorCode>();
    every_field_is_in_its_row::<Event>();
    every_field_is_in_its_row::<UpdateStateChange>();
}

/// The section under the heading ``#### `Name` ``, up to the next heading.
fn section(name: &str) -> &'static str {
    let heading = format!("#### `{name}`\n");
    let body = DOC
        .split_once(&heading)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no section #### `{name}`"))
        .1;
    let end = ["\n#### ", "\n## "]
        .iter()
        .filter_map(|h| body.find(h))
        .min()
        .unwrap_or(body.len());
    &body[..end]
}

fn struct_is_documented<T: DeserializeOwned>() {
    let full = std::any::type_name::<T>();
    let name = full.rsplit("::").next().unwrap_or(full);
    names_in_order(
        section(name),
        probe::fields::<T>(),
        |f| format!("| `{f}` |"),
        &format!("section on `{name}`"),
    );
}

#[test]
fn every_structure_has_a_section_naming_its_fields() {
    struct_is_documented::<ClientFrame>();
    struct_is_documented::<ServerFrame>();
    struct_is_documented::<WireError>();
    struct_is_documented::<KdfSpec>();
    struct_is_documented::<StatusInfo>();
    struct_is_documented::<SessionListing>();
    struct_is_documented::<SessionSummary>();
    struct_is_documented::<DcOption>();
    struct_is_documented::<PeerKey>();
    struct_is_documented::<Peer>();
    struct_is_documented::<SelfUser>();
    struct_is_documented::<ChannelState>();
    struct_is_documented::<UpdatesState>();
    struct_is_documented::<SentFile>();
    struct_is_documented::<TmpAuthKey>();
    struct_is_documented::<SessionExtras>();
    struct_is_documented::<SessionData>();
    struct_is_documented::<AuditEntry>();
    struct_is_documented::<AuditProblem>();
    struct_is_documented::<AuditPage>();
}

#[test]
fn the_documented_constants_are_the_crate_s() {
    assert!(DOC.contains(&format!(
        "Protocol version **{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}**"
    )));
    assert!(DOC.contains(&format!("`PROTOCOL_MAJOR` {PROTOCOL_MAJOR}")));
    assert!(DOC.contains(&format!("`PROTOCOL_MINOR` {PROTOCOL_MINOR}")));
    assert!(DOC.contains(&format!("by default\n**{DEFAULT_MAX_FRAME}** bytes")));
    assert!(DOC.contains(&format!("at most **{MAX_DEPTH}** levels")));
}

#[test]
#[ignore = "prints the documented exchange; run with --ignored --nocapture"]
fn print_exchange() {
    for (name, bytes) in exchange() {
        println!("{name}:");
        for chunk in bytes.chunks(16) {
            println!("{}", crate::hex(chunk));
        }
    }
}
