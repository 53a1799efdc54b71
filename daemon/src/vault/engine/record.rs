//! The plaintext of a sealed record: MessagePack (`rmp-serde`) of the record's type.
//!
//! Records are written **positionally**: a struct is an array of its fields in declaration
//! order, without field names (they were about two-thirds of a peer record). Vaults written
//! before that hold structs as maps keyed by field name. rmp-serde's struct decoding accepts
//! both forms (it follows the MessagePack marker, array or map), at any depth, so both read
//! with the same [`decode`], in this build and in builds before it.
//!
//! The record format version ([`RECORD_FORMAT`](crate::vault::crypto::RECORD_FORMAT), the
//! byte in front of every sealed record and in its AAD) does not change with this encoding:
//! version 1 and version 2 both mean "MessagePack of the record type, structs as arrays or
//! maps". Version 2 added the vault generation and padding around the plaintext
//! ([`crate::vault::crypto::records`]); it came with schema version 3, so that builds which
//! cannot read it refuse the whole vault (`UnsupportedFormat`) rather than report rewritten
//! records as `Corrupt`.
//!
//! What positional records ask of the stored types (the `session_vault_proto::model` types and
//! [`SessionRecord`](super::SessionRecord), [`ScalarState`](super::ScalarState)):
//! - never reorder, remove or retype a field: an old record would decode into the wrong
//!   field, or fail. `positional_layout_is_pinned` below fails if that happens;
//! - add fields at the end only, with `#[serde(default)]` (a shorter array then decodes; a
//!   missing field without it is an error, even an `Option`).

// No `as` here: a length or number that changes width goes through `From`/`try_from`, so a
// value that does not fit is an error or a stated invariant, never a silent truncation.
#![warn(
    clippy::as_conversions,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use serde::{Serialize, de::DeserializeOwned};
use session_vault_proto::codec::ZeroizingWriter;
use zeroize::Zeroizing;

use crate::vault::crypto::RecordPlace;
use crate::vault::error::{EngineError, Result};

/// Room for most records at once (a peer takes about 40 bytes; a DC option with its auth key
/// about 300, which grows the buffer once).
const INITIAL_CAPACITY: usize = 128;

/// A record's plaintext: structs as arrays (see the module docs), in a buffer that leaves no
/// copy behind when it grows.
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = ZeroizingWriter(Zeroizing::new(Vec::with_capacity(INITIAL_CAPACITY)));
    rmp_serde::encode::write(&mut out, value)
        .map_err(|e| EngineError::Invalid(format!("cannot encode record: {e}")))?;
    Ok(out.0)
}

/// A record from its plaintext, structs as arrays or as maps (see the module docs).
pub(super) fn decode<T: DeserializeOwned>(place: &RecordPlace<'_>, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|_| EngineError::Corrupt {
        table: place.table,
        session_id: place.session_id,
        row: String::new(),
        reason: "record decrypted but does not decode",
    })
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use session_vault_proto::model::{
        AuthKey, ChannelKind, ChannelState, DcOption, Peer, PeerKind, SelfUser, SentFile,
        SessionAcl, SessionExtras, TmpAuthKey,
    };

    use super::*;
    use crate::vault::engine::{ScalarState, SessionRecord};

    const PLACE: RecordPlace<'static> = RecordPlace {
        table: "peers",
        session_id: 1,
        row: b"k",
    };

    fn peer() -> Peer {
        Peer {
            access_hash: Some(-2),
            bot: Some(true),
            is_self: Some(false),
            channel_kind: None,
            username: Some("u".into()),
            phone: Some("1".into()),
            name: Some("n".into()),
            ..Peer::new(PeerKind::User, 7)
        }
    }

    fn record() -> SessionRecord {
        SessionRecord {
            home_dc: 4,
            self_user: Some(SelfUser { id: 7, bot: true }),
            extras: SessionExtras {
                takeout_id: Some(3),
                tmp_auth_key: Some(TmpAuthKey {
                    dc_id: 4,
                    key: AuthKey::new([9; 256]),
                    expires_at: None,
                }),
                api_id: Some(5),
                test_mode: true,
            },
            acl: SessionAcl {
                owner_uid: Some(1000),
                uids: vec![1001],
                gids: vec![],
            },
        }
    }

    fn dc() -> DcOption {
        DcOption {
            id: 2,
            ipv4: Some("1.2.3.4:443".parse().unwrap()),
            ipv6: None,
            auth_key: Some(AuthKey::new([1; 256])),
        }
    }

    fn sent_file() -> SentFile {
        SentFile {
            md5_digest: vec![1, 2],
            file_size: 3,
            file_type: 1,
            id: 4,
            hash: -5,
        }
    }

    /// Written positionally, smaller than the named form, and both forms decode to it.
    #[track_caller]
    fn both_forms<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T) {
        let positional = encode(v).unwrap();
        let named = rmp_serde::to_vec_named(v).unwrap();
        assert!(
            positional.len() < named.len(),
            "{} < {}",
            positional.len(),
            named.len()
        );
        // fixarray or array16: a struct without field names.
        assert!(matches!(positional[0], 0x90..=0x9f | 0xdc));
        assert_eq!(&decode::<T>(&PLACE, &positional).unwrap(), v);
        assert_eq!(&decode::<T>(&PLACE, &named).unwrap(), v);
    }

    #[test]
    fn every_record_type_is_written_positionally_and_reads_in_both_forms() {
        both_forms(&record());
        both_forms(&dc());
        both_forms(&peer());
        both_forms(&Peer {
            channel_kind: Some(ChannelKind::Megagroup),
            ..Peer::new(PeerKind::Channel, 8)
        });
        both_forms(&ScalarState {
            pts: 1,
            qts: 2,
            date: 3,
            seq: 4,
        });
        both_forms(&ChannelState { id: 5, pts: 6 });
        both_forms(&sent_file());
    }

    #[test]
    fn a_record_of_another_shape_is_corrupt() {
        let bytes = encode(&ChannelState { id: 5, pts: 6 }).unwrap();
        assert!(matches!(
            decode::<Peer>(&PLACE, &bytes),
            Err(EngineError::Corrupt { .. })
        ));
    }

    /// The positional bytes of each stored type, pinned: reordering, removing or retyping a
    /// field of a stored type changes them, and would misread every record already written.
    /// Add new fields at the end with `#[serde(default)]` (see the module docs), then extend
    /// the expected bytes.
    #[test]
    fn positional_layout_is_pinned() {
        fn hex<T: Serialize>(v: &T) -> String {
            encode(v)
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }
        assert_eq!(hex(&peer()), "99a47573657207fec3c2c0a175a131a16e", "Peer");
        assert_eq!(
            hex(&ChannelState { id: 5, pts: 6 }),
            "920506",
            "ChannelState"
        );
        assert_eq!(
            hex(&ScalarState {
                pts: 1,
                qts: 2,
                date: 3,
                seq: 4
            }),
            "9401020304",
            "ScalarState"
        );
        assert_eq!(hex(&sent_file()), "95920102030104fb", "SentFile");
        // Keys left out: 256 bytes each, their encoding is AuthKey's own (bytes).
        let dc = DcOption {
            auth_key: None,
            ipv6: Some("[::1]:80".parse().unwrap()),
            ..dc()
        };
        assert_eq!(
            hex(&dc),
            "9402929401020304cd01bb92dc00100000000000000000000000000000000150c0",
            "DcOption"
        );
        let mut record = record();
        record.extras.tmp_auth_key = None;
        assert_eq!(
            hex(&record),
            "94049207c39403c005c393cd03e891cd03e990",
            "SessionRecord"
        );
        assert_eq!(
            hex(&AuthKey::new([1; 256]))[..6],
            *"c50100",
            "AuthKey: bin16 of 256 bytes"
        );
    }
}
