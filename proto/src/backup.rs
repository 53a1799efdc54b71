//! The types of backup, restore and verify ([`crate::message::Request::BackupBegin`] and
//! the requests after it): a byte string that travels as MessagePack `bin`, what a transfer
//! is (id, size, SHA-256), and what a verification found.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The most bytes one `backup_chunk` answer or `restore_chunk` request carries: well under
/// the default frame limit (1 MiB), so that a transfer works with any limit of 300 KiB or more.
pub const CHUNK_MAX: usize = 256 * 1024;

/// Bytes that travel as one MessagePack `bin` (not as an array of integers).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A transfer the daemon holds open: a backup copy to read, or a restore file being written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInfo {
    /// Names the transfer in the requests that follow.
    pub id: u64,
    /// The file's length in bytes.
    pub size: u64,
    /// SHA-256 of the whole file (32 bytes).
    pub sha256: Blob,
}

/// One record, or one check, that failed during a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyFailure {
    /// Where: `manifest`, `keyslots`, `database`, or `session NAME: TABLE` (and the row).
    pub place: String,
    /// What was wrong (never plaintext).
    pub reason: String,
}

/// What `verify` (or the check before a restore) read and authenticated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Keyslots, each checked against the manifest.
    pub keyslots: u64,
    /// Sessions, each record authenticated.
    pub sessions: u64,
    /// DC option records (auth keys).
    pub dc_options: u64,
    /// Cached peers.
    pub peers: u64,
    /// Update-state records (the scalar state and per-channel state).
    pub update_states: u64,
    /// Sent-file cache records.
    pub sent_files: u64,
    /// Every record read, the manifest and the session records included.
    pub records: u64,
    /// What failed; empty when everything authenticated.
    pub failures: Vec<VerifyFailure>,
}

/// The answer to `restore_commit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreInfo {
    /// What the restored vault holds, every record authenticated with the passphrase given.
    pub report: VerifyReport,
    /// Where the vault it replaced was kept (in the daemon's data directory); `None` when
    /// there was none (an uninitialized vault was replaced).
    pub previous: Option<String>,
}

/// The answer to `migrate_store`: what was copied into the target database, every row read
/// back from it and found equal to the source before the copy was committed. Minor 6.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateInfo {
    /// The target, as it may be shown (no password).
    pub target: String,
    /// Keyslots copied.
    pub keyslots: u64,
    /// Sessions copied.
    pub sessions: u64,
    /// Rows of the sessions' tables copied (DC options, peers, update state, channels, sent
    /// files).
    pub rows: u64,
    /// Audit log entries copied.
    pub audit_entries: u64,
}

/// Encodes a session as the bytes of a streamed import or export (`import_begin`,
/// `export_begin`): one MessagePack value with named fields, exactly as `import_session`'s
/// `data` travels inside a frame. The buffer is zeroized when dropped (it holds auth keys).
pub fn encode_session(
    data: &crate::model::SessionData,
) -> Result<zeroize::Zeroizing<Vec<u8>>, crate::codec::FrameError> {
    let mut out = crate::codec::ZeroizingWriter(zeroize::Zeroizing::new(Vec::with_capacity(4096)));
    rmp_serde::encode::write_named(&mut out, data)
        .map_err(|e| crate::codec::FrameError::Encode(e.to_string()))?;
    Ok(out.0)
}

/// Decodes the bytes of a streamed import or export, with a frame's rules (one value,
/// nested at most [`crate::codec::MAX_DEPTH`] deep, nothing after it).
pub fn decode_session(bytes: &[u8]) -> Result<crate::model::SessionData, crate::codec::FrameError> {
    crate::codec::decode_payload(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_is_msgpack_bin() {
        let bytes = rmp_serde::to_vec_named(&Blob(vec![0xff; 300])).unwrap();
        // bin 16: 0xc5, then the big-endian length.
        assert_eq!(&bytes[..3], &[0xc5, 0x01, 0x2c]);
        assert_eq!(bytes.len(), 303);
        let back: Blob = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, Blob(vec![0xff; 300]));
    }
}
