//! The exact MessagePack forms `PROTOCOL.md` promises ("Encoding rules"), pinned byte for
//! byte, and the alternative forms the decoder accepts from other languages' encoders.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use serde::Serialize;
use serde::de::DeserializeOwned;
use session_vault_proto::codec::decode_payload;
use session_vault_proto::message::{
    ClientFrame, ErrorCode, Event, KdfSpec, Passphrase, Request, Response,
};
use session_vault_proto::model::{
    AuthKey, ChannelKind, DcOption, Peer, PeerBatch, PeerKind, SentFile, UpdateStateChange,
};

use crate::{hex, payload, samples, unhex};

fn pinned<T: Serialize>(value: &T, expected_hex: &str) {
    assert_eq!(hex(&payload(value)), hex(&unhex(expected_hex)));
}

fn decodes<T: DeserializeOwned>(hex_text: &str) -> T {
    decode_payload(&unhex(hex_text)).unwrap_or_else(|e| panic!("{hex_text} does not decode: {e}"))
}

fn refused<T: DeserializeOwned + std::fmt::Debug>(hex_text: &str) {
    let r = decode_payload::<T>(&unhex(hex_text));
    assert!(r.is_err(), "{hex_text} decoded: {r:?}");
}

#[test]
fn unit_variants_are_bare_strings() {
    pinned(&Request::Status, "a6 737461747573"); // "status"
    pinned(&Response::Ok, "a2 6f6b"); // "ok"
    pinned(&ErrorCode::Locked, "a6 6c6f636b6564"); // "locked"
    pinned(&Event::ShuttingDown, "ad 7368757474696e675f646f776e"); // "shutting_down"
}

#[test]
fn unit_variants_are_also_accepted_as_a_map_to_nil() {
    let r: Request = decodes("81 a6 737461747573 c0"); // {"status": nil}
    assert!(matches!(r, Request::Status));
}

#[test]
fn newtype_variants_are_one_entry_maps() {
    pinned(&Response::HomeDc(2), "81 a7 686f6d655f6463 02"); // {"home_dc": 2}
    pinned(&Response::Peer(None), "81 a4 70656572 c0"); // {"peer": nil}
    pinned(
        &Response::Event(Event::Locked),
        "81 a5 6576656e74 a6 6c6f636b6564",
    ); // {"event": "locked"}
}

#[test]
fn struct_variants_are_one_entry_maps_of_named_fields() {
    pinned(
        &Request::GetHomeDc { handle: 1 },
        "81 ab 6765745f686f6d655f6463 81 a6 68616e646c65 01", // {"get_home_dc": {"handle": 1}}
    );
    pinned(
        &ErrorCode::SessionBusy {
            holder_pid: Some(42),
        },
        "81 ac 73657373696f6e5f62757379 81 aa 686f6c6465725f706964 2a",
    );
    pinned(
        &UpdateStateChange::Secondary { qts: 1 },
        "81 a9 7365636f6e64617279 81 a3 717473 01",
    );
}

#[test]
fn structs_are_maps_in_field_order() {
    pinned(
        &KdfSpec {
            m_cost_kib: 65536,
            t_cost: 3,
            p_cost: 1,
        },
        "83 aa 6d5f636f73745f6b6962 ce 00010000 a6 745f636f7374 03 a6 705f636f7374 01",
    );
}

#[test]
fn fields_are_accepted_in_any_order_and_unknown_ones_ignored() {
    // {"request": "status", "future_field": [1, 2], "id": 5}
    let f: ClientFrame = decodes(
        "83 a7 72657175657374 a6 737461747573 ac 6675747572655f6669656c64 92 01 02 a2 6964 05",
    );
    assert_eq!(f.id, 5);
    assert!(matches!(f.request, Request::Status));
}

#[test]
fn missing_optional_fields_are_none_but_required_ones_are_errors() {
    // {"init": {"passphrase": "pw"}}: no "kdf".
    let r: Request = decodes("81 a4 696e6974 81 aa 70617373706872617365 a2 7077");
    match r {
        Request::Init { passphrase, kdf } => {
            assert_eq!(passphrase.expose(), b"pw");
            assert!(kdf.is_none());
        }
        other => panic!("{other:?}"),
    }
    // {"get_home_dc": {}}: "handle" is required.
    refused::<Request>("81 ab 6765745f686f6d655f6463 80");
}

#[test]
fn none_is_nil_and_some_is_the_bare_value() {
    pinned(&None::<u32>, "c0");
    pinned(&Some(5u32), "05");
    pinned(
        &Request::Grant {
            name: "a".into(),
            uid: Some(1000),
            gid: None,
        },
        "81 a5 6772616e74 83 a4 6e616d65 a1 61 a3 756964 cd 03e8 a3 676964 c0",
    );
}

#[test]
fn integers_use_the_smallest_format_whatever_their_type() {
    pinned(&0i64, "00");
    pinned(&127i64, "7f");
    pinned(&128i64, "cc 80"); // positive signed values use the unsigned formats
    pinned(&200i32, "cc c8");
    pinned(&70_000i32, "ce 00011170");
    pinned(&-1i64, "ff");
    pinned(&-32i64, "e0");
    pinned(&-33i64, "d0 df");
    pinned(&-200i64, "d1 ff38");
    pinned(&i64::MIN, "d3 8000000000000000");
    pinned(&i64::MAX, "cf 7fffffffffffffff");
    pinned(&u32::MAX, "ce ffffffff");
    pinned(&(1u64 << 40), "cf 0000010000000000");
}

#[test]
fn integers_are_accepted_in_any_format_that_fits() {
    // {"get_home_dc": {"handle": <n>}} with n in a needlessly wide format.
    for n in [
        "01",
        "cc 01",
        "cd 0001",
        "ce 00000001",
        "cf 0000000000000001",
        "d0 01",
        "d3 0000000000000001",
    ] {
        let r: Request = decodes(&format!(
            "81 ab 6765745f686f6d655f6463 81 a6 68616e646c65 {n}"
        ));
        assert!(matches!(r, Request::GetHomeDc { handle: 1 }), "{n}");
    }
    // Out of range for u32, negative, or a float: refused.
    for n in ["cf 0000000100000000", "ff", "cb 3ff0000000000000"] {
        refused::<Request>(&format!(
            "81 ab 6765745f686f6d655f6463 81 a6 68616e646c65 {n}"
        ));
    }
}

#[test]
fn booleans_and_strings() {
    pinned(&true, "c3");
    pinned(&false, "c2");
    pinned(&"é", "a2 c3a9");
    pinned(&"x".repeat(32), &format!("d9 20 {}", "78".repeat(32)));
}

#[test]
fn auth_keys_are_bin_256() {
    let key = samples::auth_key();
    let bytes: String = (0..=255u8).map(|b| format!("{b:02x}")).collect();
    pinned(&key, &format!("c5 0100 {bytes}"));
    // Also accepted: an array of 256 integers.
    let mut array = vec![0xdc, 0x01, 0x00];
    array.extend(key.as_bytes().iter().flat_map(
        |&b| {
            if b < 0x80 { vec![b] } else { vec![0xcc, b] }
        },
    ));
    let decoded: AuthKey = decode_payload(&array).expect("an array of 256 integers");
    assert_eq!(decoded, key);
}

#[test]
fn auth_keys_of_the_wrong_length_are_refused() {
    assert!(AuthKey::from_slice(&[0u8; 255]).is_none());
    assert!(AuthKey::from_slice(&[0u8; 257]).is_none());
    assert!(AuthKey::from_slice(&[]).is_none());
    for len in [0usize, 1, 255, 257, 512] {
        let mut bin = vec![0xc5];
        bin.extend_from_slice(&(len as u16).to_be_bytes());
        bin.extend(std::iter::repeat_n(7u8, len));
        assert!(decode_payload::<AuthKey>(&bin).is_err(), "bin of {len}");
        let mut array = vec![0xdc];
        array.extend_from_slice(&(len as u16).to_be_bytes());
        array.extend(std::iter::repeat_n(7u8, len));
        assert!(decode_payload::<AuthKey>(&array).is_err(), "array of {len}");
    }
    // Nor as a string, an integer or nil.
    refused::<AuthKey>("a3 616263");
    refused::<AuthKey>("07");
    refused::<AuthKey>("c0");
    // Inside a DC option too.
    let mut option = unhex("84 a2 6964 02 a4 69707634 c0 a4 69707636 c0 a8 617574685f6b6579 c4 ff");
    option.extend(std::iter::repeat_n(0u8, 255));
    assert!(decode_payload::<DcOption>(&option).is_err());
}

#[test]
fn passphrases_are_bin_and_also_accepted_as_str() {
    pinned(
        &Passphrase::new(b"hunter2".to_vec()),
        "c4 07 68756e74657232",
    );
    let from_str: Passphrase = decodes("a7 68756e74657232");
    assert_eq!(from_str.expose(), b"hunter2");
    let from_bin: Passphrase = decodes("c4 03 ff0080");
    assert_eq!(from_bin.expose(), [0xff, 0x00, 0x80]);
    refused::<Passphrase>("93 01 02 03");
}

#[test]
fn byte_vectors_are_arrays_of_integers_and_also_accepted_as_bin() {
    let file = SentFile {
        md5_digest: vec![1, 2, 0xff],
        file_size: 10,
        file_type: 0,
        id: 5,
        hash: -5,
    };
    pinned(
        &file,
        "85 aa 6d64355f646967657374 93 01 02 ccff a9 66696c655f73697a65 0a a9 66696c655f74797065 00 a2 6964 05 a4 68617368 fb",
    );
    let from_bin: SentFile = decodes(
        "85 aa 6d64355f646967657374 c4 03 0102ff a9 66696c655f73697a65 0a a9 66696c655f74797065 00 a2 6964 05 a4 68617368 fb",
    );
    assert_eq!(from_bin, file);
}

#[test]
fn ipv4_addresses_are_octets_and_port() {
    let addr = SocketAddrV4::new(Ipv4Addr::new(149, 154, 167, 41), 443);
    // [[149, 154, 167, 41], 443]
    pinned(&addr, "92 94 cc95 cc9a cca7 29 cd 01bb");
    // Also accepted: the four octets as bin.
    let from_bin: SocketAddrV4 = decodes("92 c4 04 959aa729 cd 01bb");
    assert_eq!(from_bin, addr);
    refused::<SocketAddrV4>("a9 312e322e332e343a35"); // "1.2.3.4:5": no strings
    refused::<SocketAddrV4>("92 93 01 02 03 05"); // three octets
}

#[test]
fn ipv6_addresses_are_octets_and_port_without_flow_or_scope() {
    let ip = Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xa);
    let addr = SocketAddrV6::new(ip, 443, 0, 0);
    // [[0x20, 0x01, 0x06, 0x7c, …, 0x0a], 443]: an array16 of 16 integers.
    pinned(
        &addr,
        "92 dc 0010 20 01 06 7c 04 cce8 ccf0 02 00 00 00 00 00 00 00 0a cd 01bb",
    );
    // Flow info and scope id are not sent: they come back as 0.
    let with_scope = SocketAddrV6::new(ip, 443, 7, 9);
    let back: SocketAddrV6 = decode_payload(&payload(&with_scope)).expect("decodes");
    assert_eq!(back, addr);
    // Also accepted: the sixteen octets as bin.
    let from_bin: SocketAddrV6 = decodes(&format!("92 c4 10 {} cd 01bb", hex(&ip.octets())));
    assert_eq!(from_bin, addr);
}

#[test]
fn a_dc_option_without_addresses_or_key() {
    pinned(
        &DcOption {
            id: 5,
            ipv4: None,
            ipv6: None,
            auth_key: None,
        },
        "84 a2 6964 05 a4 69707634 c0 a4 69707636 c0 a8 617574685f6b6579 c0",
    );
}

#[test]
fn a_minimal_peer() {
    pinned(
        &Peer::new(PeerKind::User, 1),
        "89 a4 6b696e64 a4 75736572 a2 6964 01 ab 6163636573735f68617368 c0 a3 626f74 c0 \
         a7 69735f73656c66 c0 ac 6368616e6e656c5f6b696e64 c0 a8 757365726e616d65 c0 \
         a5 70686f6e65 c0 a4 6e616d65 c0",
    );
}

/// A peer with every field known, each value distinct, so that a field read into its
/// neighbour's place shows.
fn full_peer() -> Peer {
    let mut p = Peer::new(PeerKind::Channel, 4_000_000_001);
    p.access_hash = Some(-77);
    p.bot = Some(true);
    p.is_self = Some(false);
    p.channel_kind = Some(ChannelKind::Megagroup);
    p.username = Some("durov".into());
    p.phone = Some("15550001".into());
    p.name = Some("Pavel".into());
    p
}

#[test]
fn cache_peers_may_carry_each_peer_as_an_array_of_its_fields() {
    // PROTOCOL.md §4's example: user 5, nothing else known.
    let minimal = PeerBatch::new(vec![Peer::new(PeerKind::User, 5)], true);
    pinned(&minimal, "91 99 a4 75736572 05 c0 c0 c0 c0 c0 c0 c0");
    // Every field where the derived decoder reads it, and the same peer as the map form.
    let full = PeerBatch::new(vec![full_peer(), Peer::new(PeerKind::Chat, 9)], true);
    let compact = payload(&full);
    let named = payload(&PeerBatch::from(full.peers.clone()));
    assert!(
        compact.len() * 2 < named.len(),
        "{} vs {}",
        compact.len(),
        named.len()
    );
    let back: PeerBatch = decode_payload(&compact).expect("decodes");
    assert_eq!(back.peers, full.peers);
    assert!(!back.compact, "decoding does not claim a form");
    // One request may mix the forms, peer by peer.
    let one_map = payload(&Peer::new(PeerKind::User, 5));
    let mut mixed = vec![0x92];
    mixed.extend_from_slice(&one_map);
    mixed.extend_from_slice(&unhex("99 a4 75736572 06 c0 c0 c0 c0 c0 c0 c0"));
    let both: PeerBatch = decode_payload(&mixed).expect("mixed forms decode");
    assert_eq!(both.peers.iter().map(|p| p.id).collect::<Vec<_>>(), [5, 6]);
    // Only arrays of exactly nine fields.
    refused::<PeerBatch>("91 98 a4 75736572 05 c0 c0 c0 c0 c0 c0");
    refused::<PeerBatch>("91 9a a4 75736572 05 c0 c0 c0 c0 c0 c0 c0 c0");
    // The field order is the map form's: a string where the id goes is refused.
    refused::<PeerBatch>("91 99 a4 75736572 a1 35 c0 c0 c0 c0 c0 c0 c0");
    // In a request, and through the frame's own decoding.
    let request = Request::CachePeers {
        handle: 3,
        peers: PeerBatch::new(vec![full_peer()], true),
    };
    match decode_payload(&payload(&request)).expect("request decodes") {
        Request::CachePeers { handle: 3, peers } => assert_eq!(peers.peers, [full_peer()]),
        other => panic!("decoded as {other:?}"),
    }
}

#[test]
fn malformed_variants_are_refused() {
    refused::<Request>("a6 737461747573 c0"); // trailing nil after "status"
    refused::<Request>("a7 73746174757378"); // "statusx"
    refused::<Request>("81 a5 68656c6c6f c0"); // {"hello": nil}: hello has fields
    refused::<Request>("82 a6 737461747573 c0 a4 6c6f636b c0"); // two variants in one map
    refused::<Request>("90"); // an empty array
}

#[test]
fn bad_passphrase_omits_unchecked_when_false_so_older_peers_read_the_same_bytes() {
    // {"bad_passphrase": {"retry_after_ms": 500}}: what daemons sent before `unchecked`.
    let before = "81 ae 6261645f70617373706872617365 81 ae 72657472795f61667465725f6d73 cd 01f4";
    pinned(
        &ErrorCode::BadPassphrase {
            retry_after_ms: 500,
            unchecked: false,
        },
        before,
    );
    assert_eq!(
        decodes::<ErrorCode>(before),
        ErrorCode::BadPassphrase {
            retry_after_ms: 500,
            unchecked: false,
        }
    );
    // {"bad_passphrase": {"retry_after_ms": 250, "unchecked": true}}
    pinned(
        &ErrorCode::BadPassphrase {
            retry_after_ms: 250,
            unchecked: true,
        },
        "81 ae 6261645f70617373706872617365 82 ae 72657472795f61667465725f6d73 cc fa a9 756e636865636b6564 c3",
    );
}

#[test]
fn fields_added_later_read_as_their_default_when_absent() {
    // {"delete_session": {"name": "b"}}: what clients sent before `force`.
    let r: Request = decodes("81 ae 64656c6574655f73657373696f6e 81 a4 6e616d65 a1 62");
    assert!(
        matches!(&r, Request::DeleteSession { name, force: false } if name == "b"),
        "{r:?}"
    );
    // {"opened": {"handle": 1, "created": false, "home_dc": 2, "dc_options": []}}: what
    // daemons sent before `name`.
    let r: Response = decodes(
        "81 a6 6f70656e6564 84 a6 68616e646c65 01 a7 63726561746564 c2 a7 686f6d655f6463 02 \
         aa 64635f6f7074696f6e73 90",
    );
    assert!(
        matches!(
            &r,
            Response::Opened {
                handle: 1,
                name: None,
                ..
            }
        ),
        "{r:?}"
    );
}
