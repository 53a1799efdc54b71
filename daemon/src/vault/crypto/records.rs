//! The unlocked key set ([`Keys`]): sealed records and blind indexes.
//!
//! Record format, the byte in front of every sealed record and bound in its AAD:
//! - **version 2** (written now): `2 ‖ generation(u64 BE) ‖ nonce(24) ‖ ciphertext ‖ tag(16)`,
//!   AAD `vault id ‖ table ‖ session id ‖ row key ‖ 2 ‖ generation`, each length-prefixed. The
//!   generation is the vault generation current when the record was written (see
//!   `engine::manifest`): authenticated, so a record cannot claim another one. The plaintext
//!   is padded before sealing to a multiple of a size class (`plaintext ‖ 0x80 ‖ 0x00…`, ISO/IEC
//!   7816-4), so that the stored length says little: [`PAD_FIXED`] for session records and DC
//!   options (whether a DC holds an auth key no longer shows), [`PAD_SMALL`] for the rest.
//! - **version 1** (builds before it): `1 ‖ nonce ‖ ciphertext ‖ tag`, AAD without the
//!   generation, plaintext unpadded. Still read, as generation 0; rewritten as version 2 the
//!   next time the row is written.
//!
//! In both, the plaintext is MessagePack of the record's type (`engine::record`).
//!
//! Every function here that builds a cipher or MAC state from a key zeroes the stack it used
//! before returning ([`super::scrubbed`]); the keys themselves stay in their [`SecretKey`]
//! boxes.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::{
    NONCE_LEN, SecretKey, TAG_LEN, VAULT_ID_LEN, fresh_nonce, len_prefix, push_field, scrubbed,
};
use crate::vault::error::{EngineError, Result};

/// Record format version written by this build (see the module docs).
pub const RECORD_FORMAT: u8 = 2;
/// The record format of earlier builds, still read (as generation 0).
pub const RECORD_FORMAT_V1: u8 = 1;
/// Length of a blind index.
pub const BLIND_LEN: usize = 16;
/// Size class of session records and DC options: one size whether or not an auth key is in.
pub const PAD_FIXED: usize = 512;
/// Size class of every other record.
pub const PAD_SMALL: usize = 32;

const GEN_LEN: usize = 8;

/// Where a record lives: the parts of its AAD.
#[derive(Clone, Copy, Debug)]
pub struct RecordPlace<'a> {
    /// Table name.
    pub table: &'static str,
    /// Internal session id (0 for vault-wide rows).
    pub session_id: i64,
    /// Row key within the table (a blind index or a fixed label).
    pub row: &'a [u8],
}

impl RecordPlace<'_> {
    /// A `Corrupt` error naming this place.
    pub fn corrupt(&self, reason: &'static str) -> EngineError {
        let n = self.row.len().min(8);
        let row = self.row[..n].iter().map(|b| format!("{b:02x}")).collect();
        EngineError::Corrupt {
            table: self.table,
            session_id: self.session_id,
            row,
            reason,
        }
    }
}

/// An opened record.
pub struct Opened {
    /// The vault generation it was written at (0 for version-1 records).
    pub generation: u64,
    /// Its plaintext, padding removed.
    pub plain: Zeroizing<Vec<u8>>,
}

/// The unlocked key set: the DEK and its HKDF subkeys, as bytes only. Dropping it zeroes
/// the three keys' own buffers (each a [`SecretKey`], zeroized on drop); the vault id beside
/// them is not secret and stays. It wipes no copy made from them: the cipher and MAC states
/// are scrubbed by the functions that build them (`scrub_stack`), and the unwrapped DEK a
/// keyslot's `open` copies in is wiped there.
pub struct Keys {
    vault_id: [u8; VAULT_ID_LEN],
    // Kept so that new keyslots can wrap it (passphrase change, recovery keys).
    dek: SecretKey,
    record: SecretKey,
    index: SecretKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// Derives the subkeys of `dek` for the vault `vault_id`, boxed and locked in RAM.
    pub fn derive(vault_id: [u8; VAULT_ID_LEN], dek: SecretKey) -> Box<Self> {
        let mut record = SecretKey::zeroed();
        let mut index = SecretKey::zeroed();
        scrubbed(|| {
            // The PRK (HKDF's keyed HMAC state) lives on this stack only, scrubbed after.
            let hk = hkdf::Hkdf::<Sha256>::new(Some(&vault_id), dek.expose());
            // Both expansions ask for 32 bytes, far below HKDF-SHA256's 8160-byte limit.
            hk.expand(b"session-vault records v1", record.expose_mut())
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            hk.expand(b"session-vault blind index v1", index.expose_mut())
                .expect("32 bytes is a valid HKDF-SHA256 output length");
        });
        Box::new(Keys {
            vault_id,
            dek,
            record,
            index,
        })
    }

    /// The DEK, to wrap into a new keyslot.
    pub fn dek(&self) -> &SecretKey {
        &self.dek
    }

    /// The vault id these keys belong to.
    pub fn vault_id(&self) -> &[u8; VAULT_ID_LEN] {
        &self.vault_id
    }

    /// A name of the data key these keys come from, safe to store beside the rows: an HMAC
    /// of a constant under the index subkey (like a blind index, under a table name no row
    /// has). Two daemons hold the same data key exactly when their ids are equal; `rekey`
    /// changes it (see `Store::set_data_key_id`).
    pub fn data_key_id(&self) -> [u8; BLIND_LEN] {
        self.blind("meta", 0, "data_key_id", b"")
    }

    fn record_aad(&self, place: &RecordPlace<'_>, version: u8, generation: u64) -> Vec<u8> {
        let mut aad = Vec::with_capacity(72 + place.row.len());
        push_field(&mut aad, &self.vault_id);
        push_field(&mut aad, place.table.as_bytes());
        push_field(&mut aad, &place.session_id.to_be_bytes());
        push_field(&mut aad, place.row);
        push_field(&mut aad, &[version]);
        if version != RECORD_FORMAT_V1 {
            push_field(&mut aad, &generation.to_be_bytes());
        }
        aad
    }

    /// Seals `plaintext` for `place` at vault generation `generation`, padded to a multiple
    /// of `class` bytes ([`PAD_FIXED`] or [`PAD_SMALL`]).
    pub fn seal(
        &self,
        place: &RecordPlace<'_>,
        generation: u64,
        plaintext: &[u8],
        class: usize,
    ) -> Result<Vec<u8>> {
        let nonce = fresh_nonce()?;
        let aad = self.record_aad(place, RECORD_FORMAT, generation);
        // Padded and encrypted in place in the output, sized exactly once: no second buffer.
        let padded = (plaintext.len() + 1).div_ceil(class) * class;
        let head = 1 + GEN_LEN + NONCE_LEN;
        let mut out = Vec::with_capacity(head + padded + TAG_LEN);
        out.push(RECORD_FORMAT);
        out.extend_from_slice(&generation.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        out.push(0x80);
        out.resize(head + padded, 0);
        let sealed = scrubbed(|| {
            XChaCha20Poly1305::new(self.record.expose().into()).encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &aad,
                &mut out[head..],
            )
        });
        match sealed {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(out)
            }
            Err(_) => {
                // Never leave the plaintext behind in a buffer that does not zeroize itself.
                out.zeroize();
                Err(EngineError::Invalid("encryption failed".into()))
            }
        }
    }

    /// Opens a record sealed for `place`; `Corrupt` if it was altered, moved or damaged.
    pub fn open(&self, place: &RecordPlace<'_>, sealed: &[u8]) -> Result<Opened> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(place.corrupt("empty record"));
        };
        let (generation, rest) = match version {
            RECORD_FORMAT_V1 => (0, rest),
            RECORD_FORMAT if rest.len() >= GEN_LEN => {
                let (g, rest) = rest.split_at(GEN_LEN);
                let g: [u8; GEN_LEN] = g.try_into().expect("split at GEN_LEN");
                (u64::from_be_bytes(g), rest)
            }
            RECORD_FORMAT => return Err(place.corrupt("record too short")),
            _ => return Err(place.corrupt("unknown record format version")),
        };
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(place.corrupt("record too short"));
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let aad = self.record_aad(place, version, generation);
        let mut plain = Zeroizing::new(ct.to_vec());
        scrubbed(|| {
            XChaCha20Poly1305::new(self.record.expose().into()).decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aad,
                &mut plain,
                tag.into(),
            )
        })
        .map_err(|_| place.corrupt("authentication failed (altered, moved or damaged)"))?;
        if version != RECORD_FORMAT_V1 {
            // Authenticated, so a bad padding is damage that slipped past nobody: still refuse.
            let end = plain.iter().rposition(|&b| b != 0);
            match end {
                Some(i) if plain[i] == 0x80 => plain.truncate(i),
                _ => return Err(place.corrupt("record padding is malformed")),
            }
        }
        Ok(Opened { generation, plain })
    }

    /// The blind index of `value` in `(table, session_id, field)`. The HMAC state (the index
    /// key's keyed midstates) is built for this call on the stack and scrubbed after it.
    pub fn blind(
        &self,
        table: &str,
        session_id: i64,
        field: &str,
        value: &[u8],
    ) -> [u8; BLIND_LEN] {
        self.with_blinder(table, session_id, field, |b| b.blind(value))
    }

    /// Runs `f` with the blind indexes of `(table, session_id, field)`, for a batch of
    /// values: the HMAC's keyed midstates and the fields before the value are computed once,
    /// so each value costs two SHA-256 compressions instead of four. The [`Blinder`] (keyed
    /// state) lives on the stack of this call's frame, scrubbed when it returns like any
    /// other MAC state here ([`scrubbed`]); threads `f` lends it to clone it onto their own
    /// stacks, which must be scrubbed the same way (`engine::rows::par_map`'s helper is).
    pub fn with_blinder<T>(
        &self,
        table: &str,
        session_id: i64,
        field: &str,
        f: impl FnOnce(&Blinder) -> T,
    ) -> T {
        scrubbed(|| f(&self.blinder(table, session_id, field)))
    }

    fn blinder(&self, table: &str, session_id: i64, field: &str) -> Blinder {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.index.expose())
            .expect("HMAC accepts keys of any length");
        // The same length-prefixed fields as `push_field` writes, fed to the MAC as they
        // come (no buffer holding the value).
        for part in [
            table.as_bytes(),
            &session_id.to_be_bytes(),
            field.as_bytes(),
        ] {
            mac.update(&len_prefix(part));
            mac.update(part);
        }
        Blinder { mac }
    }

    /// The record subkey, for tests that recompute records by hand.
    #[cfg(test)]
    pub(crate) fn record_key(&self) -> &SecretKey {
        &self.record
    }

    /// The index subkey, for tests that recompute blind indexes by hand.
    #[cfg(test)]
    pub(crate) fn index_key(&self) -> &SecretKey {
        &self.index
    }
}

/// Blind indexes of one `(table, session, field)` ([`Keys::with_blinder`]). Keyed state: lent
/// from a scrubbed stack frame only, never cloned or stored; its `Debug` shows nothing of it.
pub struct Blinder {
    mac: Hmac<Sha256>,
}

impl Blinder {
    /// The blind index of `value`: [`Keys::blind`] of the blinder's table, session and field.
    pub fn blind(&self, value: &[u8]) -> [u8; BLIND_LEN] {
        let mut mac = self.mac.clone();
        mac.update(&len_prefix(value));
        mac.update(value);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; BLIND_LEN];
        out.copy_from_slice(&full[..BLIND_LEN]);
        out
    }
}

impl std::fmt::Debug for Blinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Blinder(<keyed>)")
    }
}
