//! Arbitrary bytes fed to `read_frame` and `decode_payload` come back as a value or an
//! error, never a panic, a hang or an abort; and typed values round-trip exactly.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;
use session_vault_proto::codec::{FrameError, decode_payload, encode_frame, read_frame};
use session_vault_proto::message::{ClientFrame, ServerFrame};
use session_vault_proto::model::{
    AuthKey, ChannelKind, ChannelState, DcOption, Peer, PeerKind, SentFile, UpdateStateChange,
    UpdatesState,
};

use crate::samples;

const LIMIT: u32 = 4096;

/// Reads every frame out of `bytes` and decodes each payload as both frame types.
fn feed(bytes: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut reader = bytes;
        loop {
            match read_frame(&mut reader, LIMIT).await {
                Ok(Some(payload)) => {
                    assert!(payload.len() <= LIMIT as usize);
                    let _ = decode_payload::<ClientFrame>(&payload);
                    let _ = decode_payload::<ServerFrame>(&payload);
                }
                Ok(None) => break,
                Err(FrameError::Truncated | FrameError::TooLarge { .. }) => break,
                Err(other) => panic!("unexpected error from a slice: {other:?}"),
            }
        }
    });
}

/// Every sample frame, encoded: seeds for the mutation strategy.
fn seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = samples::client_frames()
        .iter()
        .map(|f| encode_frame(f).expect("encodes").to_vec())
        .collect();
    out.extend(
        samples::server_frames()
            .iter()
            .map(|f| encode_frame(f).expect("encodes").to_vec()),
    );
    out.retain(|f| f.len() <= LIMIT as usize + 4);
    out
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let mut bytes = seeds[i].clone();
            for (at, byte, op) in edits {
                if bytes.len() <= 4 {
                    break;
                }
                // Keep the length prefix consistent for most edits, so the payload decoder
                // (not just the framing) sees the damage.
                let pos = 4 + at.index(bytes.len() - 4);
                match op {
                    0 => bytes[pos] = byte,
                    1 => bytes[pos] ^= 1 << (byte % 8),
                    2 => {
                        bytes.insert(pos, byte);
                    }
                    _ => {
                        bytes.remove(pos);
                    }
                }
            }
            let len = (bytes.len() - 4) as u32;
            bytes[..4].copy_from_slice(&len.to_be_bytes());
            bytes
        })
}

fn framed(payload: Vec<u8>) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend(payload);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Raw bytes: mostly oversized or truncated frames.
    #[test]
    fn raw_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        feed(&bytes);
    }

    /// A well-formed frame around an arbitrary payload: the MessagePack decoder sees it all.
    #[test]
    fn arbitrary_payloads_never_panic(payload in prop::collection::vec(any::<u8>(), 0..4092)) {
        feed(&framed(payload));
    }

    /// Payloads built from MessagePack-ish bytes (markers, small ints, field-name letters)
    /// get further into the decoder than uniform noise.
    #[test]
    fn msgpack_like_payloads_never_panic(payload in prop::collection::vec(
        prop_oneof![
            Just(0x80u8), Just(0x81), Just(0x82), Just(0x90), Just(0x91), Just(0xc0),
            Just(0xc4), Just(0xc5), Just(0xdc), Just(0xde), Just(0xd9), Just(0xa2),
            Just(0xa6), Just(0xcc), Just(0xcd), Just(0xce), Just(0xd3), Just(0xff),
            0u8..0x20, b'a'..=b'z', any::<u8>(),
        ],
        0..512,
    )) {
        feed(&framed(payload));
    }

    /// Real frames with a few bytes changed, inserted or removed.
    #[test]
    fn mutated_frames_never_panic(bytes in mutated()) {
        feed(&bytes);
    }
}

fn peer_kind() -> impl Strategy<Value = PeerKind> {
    prop_oneof![
        Just(PeerKind::User),
        Just(PeerKind::Chat),
        Just(PeerKind::Channel)
    ]
}

fn channel_kind() -> impl Strategy<Value = ChannelKind> {
    prop_oneof![
        Just(ChannelKind::Broadcast),
        Just(ChannelKind::Megagroup),
        Just(ChannelKind::Gigagroup),
        Just(ChannelKind::Community),
    ]
}

fn peer() -> impl Strategy<Value = Peer> {
    (
        peer_kind(),
        any::<i64>(),
        any::<Option<i64>>(),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        prop::option::of(channel_kind()),
        any::<Option<String>>(),
        prop::option::of("[0-9+ ]{0,16}"),
        any::<Option<String>>(),
    )
        .prop_map(
            |(kind, id, access_hash, bot, is_self, channel_kind, username, phone, name)| Peer {
                kind,
                id,
                access_hash,
                bot,
                is_self,
                channel_kind,
                username,
                phone,
                name,
            },
        )
}

fn dc_option() -> impl Strategy<Value = DcOption> {
    (
        any::<i32>(),
        prop::option::of((any::<[u8; 4]>(), any::<u16>())),
        prop::option::of((any::<[u8; 16]>(), any::<u16>())),
        prop::option::of(prop::collection::vec(any::<u8>(), 256)),
    )
        .prop_map(|(id, v4, v6, key)| DcOption {
            id,
            ipv4: v4.map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port)),
            ipv6: v6.map(|(ip, port)| SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0)),
            auth_key: key.map(|k| AuthKey::from_slice(&k).expect("256 bytes")),
        })
}

fn update_change() -> impl Strategy<Value = UpdateStateChange> {
    prop_oneof![
        (
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            prop::collection::vec((any::<i64>(), any::<i32>()), 0..8)
        )
            .prop_map(
                |(pts, qts, date, seq, ch)| UpdateStateChange::All(UpdatesState {
                    pts,
                    qts,
                    date,
                    seq,
                    channels: ch
                        .into_iter()
                        .map(|(id, pts)| ChannelState { id, pts })
                        .collect(),
                })
            ),
        (any::<i32>(), any::<i32>(), any::<i32>())
            .prop_map(|(pts, date, seq)| UpdateStateChange::Primary { pts, date, seq }),
        any::<i32>().prop_map(|qts| UpdateStateChange::Secondary { qts }),
        (any::<i64>(), any::<i32>()).prop_map(|(id, pts)| UpdateStateChange::Channel { id, pts }),
    ]
}

fn sent_file() -> impl Strategy<Value = SentFile> {
    (
        prop::collection::vec(any::<u8>(), 0..32),
        any::<i64>(),
        any::<i32>(),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(|(md5_digest, file_size, file_type, id, hash)| SentFile {
            md5_digest,
            file_size,
            file_type,
            id,
            hash,
        })
}

fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = encode_frame(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T = decode_payload(&frame[4..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn peers_round_trip(p in peer()) { round_trips(&p)?; }

    #[test]
    fn dc_options_round_trip(d in dc_option()) { round_trips(&d)?; }

    #[test]
    fn update_changes_round_trip(c in update_change()) { round_trips(&c)?; }

    #[test]
    fn sent_files_round_trip(f in sent_file()) { round_trips(&f)?; }
}
