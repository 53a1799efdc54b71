//! Cryptography of the vault: the KDF, keyslots, record sealing and blind indexes.
//!
//! - Passphrase → Argon2id (parameters stored with the keyslot) → KEK.
//! - One random 32-byte DEK per vault, stored only wrapped by a KEK in a keyslot
//!   (XChaCha20-Poly1305; AAD binds the vault id, the slot number and the KDF parameters).
//! - HKDF-SHA256 derives from the DEK a record key and a blind-index key.
//! - Every stored value is sealed as `version ‖ nonce(24) ‖ ciphertext ‖ tag(16)` with AAD
//!   `vault id ‖ table ‖ session id ‖ row key ‖ format version`, each length-prefixed.
//! - Blind indexes are HMAC-SHA256 under the index key, truncated to 16 bytes.
//!
//! Only audited RustCrypto primitives are used; nothing here is hand-rolled. Every function
//! that runs Argon2 is blocking and must be called off the async runtime (`spawn_blocking`).

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::error::{Result, VaultError};

/// Version byte at the start of every sealed record; bound in the AAD too. Version 1: the
/// plaintext is MessagePack of the record's type, structs as arrays (written now) or as maps
/// keyed by field name (written by earlier builds); both decode alike (`engine::record`).
pub const RECORD_FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Length of a blind index.
pub const BLIND_LEN: usize = 16;

/// Length of the vault id.
pub const VAULT_ID_LEN: usize = 16;

/// Locks the pages holding `value` in RAM (`mlock`) so that they are never swapped out.
/// Best effort: where the OS refuses (e.g. `RLIMIT_MEMLOCK` reached) the key still works
/// and stays zeroized on drop. Pages are not unlocked again: they may hold other keys, and
/// `mlock` does not count references.
pub fn lock_in_memory<T: ?Sized>(value: &T) {
    #[cfg(unix)]
    {
        let len = std::mem::size_of_val(value);
        if len == 0 {
            return;
        }
        let ptr = value as *const T as *const u8 as *const libc::c_void;
        // SAFETY: mlock only changes the residency of the pages spanning [ptr, ptr+len), which
        // belong to the live object `value`; it reads and writes no memory.
        let rc = unsafe { libc::mlock(ptr, len) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "mlock of key memory refused");
        }
    }
    #[cfg(not(unix))]
    let _ = value;
}

/// A 32-byte secret key: heap-allocated, locked in RAM where allowed, zeroized on drop,
/// never printed.
pub struct SecretKey(Box<[u8; 32]>);

impl SecretKey {
    fn zeroed() -> Self {
        let key = SecretKey(Box::new([0u8; 32]));
        lock_in_memory(&*key.0);
        key
    }

    /// A fresh key from the OS's CSPRNG.
    pub fn random() -> Result<Self> {
        let mut key = Self::zeroed();
        fill_random(&mut key.0[..])?;
        Ok(key)
    }

    /// Lends the key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Self::zeroed();
        if bytes.len() != 32 {
            return None;
        }
        key.0.copy_from_slice(bytes);
        Some(key)
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Fills `buf` from the OS's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| VaultError::Storage {
        kind: super::error::StorageErrorKind::Other,
        message: format!("the OS random number generator failed: {e}"),
    })
}

/// Argon2id cost parameters, stored with each keyslot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// The strong default: m = 64 MiB, t = 3, p = 1.
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// A deliberately weak setting for tests and benchmarks only (m = 64 KiB, t = 1).
    /// Never the default anywhere: callers must ask for it by name.
    pub fn insecure_fast_for_tests() -> Self {
        KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        }
    }

    fn argon2(&self) -> Result<argon2::Argon2<'static>> {
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| VaultError::Invalid(format!("bad KDF parameters: {e}")))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

/// A stored keyslot: a wrapped DEK and what is needed to rederive its KEK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyslot {
    /// Slot number (0 is the passphrase slot made by `init`).
    pub slot: u32,
    /// What unlocks it, e.g. `passphrase`.
    pub kind: String,
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Argon2 salt (16 random bytes).
    pub salt: Vec<u8>,
    /// `nonce ‖ ciphertext ‖ tag` of the DEK.
    pub wrapped: Vec<u8>,
    /// SHA-256 over every other field: tells damage or a naive edit (`Corrupt`) apart from a
    /// wrong passphrase. Not a security boundary — the AEAD's AAD is.
    pub check: Vec<u8>,
}

impl Keyslot {
    fn aad(vault_id: &[u8], slot: u32, kind: &str, kdf: &KdfParams, salt: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(96);
        push_field(&mut aad, b"session-vault keyslot v1");
        push_field(&mut aad, vault_id);
        push_field(&mut aad, &slot.to_be_bytes());
        push_field(&mut aad, kind.as_bytes());
        push_field(&mut aad, b"argon2id-v19");
        push_field(&mut aad, &kdf.m_cost_kib.to_be_bytes());
        push_field(&mut aad, &kdf.t_cost.to_be_bytes());
        push_field(&mut aad, &kdf.p_cost.to_be_bytes());
        push_field(&mut aad, salt);
        aad
    }

    fn checksum(&self, vault_id: &[u8]) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(Self::aad(
            vault_id, self.slot, &self.kind, &self.kdf, &self.salt,
        ));
        h.update(&self.wrapped);
        h.finalize().to_vec()
    }

    /// Wraps `dek` under a KEK derived from `passphrase` with `kdf` and a fresh salt.
    /// Blocking (Argon2): call from `spawn_blocking`.
    pub fn seal(
        vault_id: &[u8],
        slot: u32,
        kind: &str,
        kdf: KdfParams,
        passphrase: &[u8],
        dek: &SecretKey,
    ) -> Result<Keyslot> {
        if passphrase.is_empty() {
            return Err(VaultError::WeakPassphrase("the passphrase is empty"));
        }
        let mut salt = vec![0u8; 16];
        fill_random(&mut salt)?;
        let kek = derive_kek(&kdf, passphrase, &salt)?;
        let aad = Self::aad(vault_id, slot, kind, &kdf, &salt);
        let wrapped = seal_raw(&kek, &aad, dek.expose())?;
        let mut ks = Keyslot {
            slot,
            kind: kind.to_owned(),
            kdf,
            salt,
            wrapped,
            check: Vec::new(),
        };
        ks.check = ks.checksum(vault_id);
        Ok(ks)
    }

    /// Unwraps the DEK with `passphrase`. `Corrupt` if the slot was damaged or edited,
    /// `BadPassphrase` if the passphrase does not open it. Blocking (Argon2).
    pub fn open(&self, vault_id: &[u8], passphrase: &[u8]) -> Result<SecretKey> {
        let corrupt = |reason| VaultError::Corrupt {
            table: "keyslots",
            session_id: 0,
            row: self.slot.to_string(),
            reason,
        };
        if self.check != self.checksum(vault_id) {
            return Err(corrupt("keyslot parameters or wrapped key were altered"));
        }
        // Refuse parameters weaker than Argon2 itself accepts before spending time on them.
        let kek = derive_kek(&self.kdf, passphrase, &self.salt)
            .map_err(|_| corrupt("keyslot KDF parameters are invalid"))?;
        let aad = Self::aad(vault_id, self.slot, &self.kind, &self.kdf, &self.salt);
        let dek = open_raw(&kek, &aad, &self.wrapped).ok_or(VaultError::BadPassphrase)?;
        SecretKey::from_slice(&dek).ok_or_else(|| corrupt("wrapped key has the wrong length"))
    }
}

/// Argon2id(passphrase, salt) → 32-byte KEK. Blocking.
fn derive_kek(kdf: &KdfParams, passphrase: &[u8], salt: &[u8]) -> Result<SecretKey> {
    let mut kek = SecretKey::zeroed();
    kdf.argon2()?
        .hash_password_into(passphrase, salt, &mut kek.0[..])
        .map_err(|e| VaultError::Invalid(format!("key derivation failed: {e}")))?;
    Ok(kek)
}

fn push_field(buf: &mut Vec<u8>, field: &[u8]) {
    buf.extend_from_slice(&(field.len() as u32).to_be_bytes());
    buf.extend_from_slice(field);
}

fn seal_raw(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| VaultError::Invalid("encryption failed".into()))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open_raw(key: &SecretKey, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

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
    fn corrupt(&self, reason: &'static str) -> VaultError {
        let n = self.row.len().min(8);
        let row = self.row[..n].iter().map(|b| format!("{b:02x}")).collect();
        VaultError::Corrupt {
            table: self.table,
            session_id: self.session_id,
            row,
            reason,
        }
    }
}

/// The unlocked key set: DEK and its HKDF subkeys. Dropping it wipes all three.
pub struct Keys {
    vault_id: [u8; VAULT_ID_LEN],
    // Kept so that new keyslots can wrap it (passphrase change, recovery keys).
    dek: SecretKey,
    record: XChaCha20Poly1305,
    index: Hmac<Sha256>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// Derives the subkeys of `dek` for the vault `vault_id`, boxed and locked in RAM.
    pub fn derive(vault_id: [u8; VAULT_ID_LEN], dek: SecretKey) -> Box<Self> {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(&vault_id), dek.expose());
        let mut record_key = Zeroizing::new([0u8; 32]);
        let mut index_key = Zeroizing::new([0u8; 32]);
        // Both expansions ask for 32 bytes, far below HKDF-SHA256's 8160-byte limit.
        hk.expand(b"session-vault records v1", &mut record_key[..])
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hk.expand(b"session-vault blind index v1", &mut index_key[..])
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let record = XChaCha20Poly1305::new((&*record_key).into());
        let index = <Hmac<Sha256> as Mac>::new_from_slice(&index_key[..])
            .expect("HMAC accepts keys of any length");
        let keys = Box::new(Keys {
            vault_id,
            dek,
            record,
            index,
        });
        lock_in_memory(&*keys);
        keys
    }

    /// The DEK, to wrap into a new keyslot.
    pub fn dek(&self) -> &SecretKey {
        &self.dek
    }

    fn record_aad(&self, place: &RecordPlace<'_>) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + place.row.len());
        push_field(&mut aad, &self.vault_id);
        push_field(&mut aad, place.table.as_bytes());
        push_field(&mut aad, &place.session_id.to_be_bytes());
        push_field(&mut aad, place.row);
        push_field(&mut aad, &[RECORD_FORMAT]);
        aad
    }

    /// Seals `plaintext` for `place`.
    pub fn seal(&self, place: &RecordPlace<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let aad = self.record_aad(place);
        // Encrypted in place in the output, sized exactly once: no second buffer, no copy.
        let head = 1 + NONCE_LEN;
        let mut out = Vec::with_capacity(head + plaintext.len() + TAG_LEN);
        out.push(RECORD_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        match self.record.encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            &aad,
            &mut out[head..],
        ) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(out)
            }
            Err(_) => {
                // Never leave the plaintext behind in a buffer that does not zeroize itself.
                out.zeroize();
                Err(VaultError::Invalid("encryption failed".into()))
            }
        }
    }

    /// Opens a record sealed for `place`; `Corrupt` if it was altered, moved or damaged.
    pub fn open(&self, place: &RecordPlace<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(place.corrupt("empty record"));
        };
        if version != RECORD_FORMAT {
            return Err(place.corrupt("unknown record format version"));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(place.corrupt("record too short"));
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let aad = self.record_aad(place);
        self.record
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| place.corrupt("authentication failed (altered, moved or damaged)"))
    }

    /// The blind index of `value` in `(table, session_id, field)`.
    pub fn blind(
        &self,
        table: &str,
        session_id: i64,
        field: &str,
        value: &[u8],
    ) -> [u8; BLIND_LEN] {
        // The same length-prefixed fields as `push_field` writes, fed to the MAC as they come
        // (no buffer holding the value).
        let mut mac = self.index.clone();
        for part in [
            table.as_bytes(),
            &session_id.to_be_bytes(),
            field.as_bytes(),
            value,
        ] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; BLIND_LEN];
        out.copy_from_slice(&full[..BLIND_LEN]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Box<Keys> {
        Keys::derive([7u8; VAULT_ID_LEN], SecretKey::random().unwrap())
    }

    #[test]
    fn record_round_trip_and_binding() {
        let k = keys();
        let place = RecordPlace {
            table: "peers",
            session_id: 1,
            row: b"row-a",
        };
        let sealed = k.seal(&place, b"secret").unwrap();
        assert_eq!(sealed.len(), 1 + NONCE_LEN + b"secret".len() + TAG_LEN);
        assert_eq!(&k.open(&place, &sealed).unwrap()[..], b"secret");
        // The layout is `version ‖ nonce ‖ ciphertext ‖ tag`, as XChaCha20-Poly1305's
        // combined form (ciphertext ‖ tag) under the record key and AAD.
        let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
        let combined = k
            .record
            .encrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: b"secret",
                    aad: &k.record_aad(&place),
                },
            )
            .unwrap();
        assert_eq!(ct, &combined[..]);
        for other in [
            RecordPlace {
                row: b"row-b",
                ..place
            },
            RecordPlace {
                session_id: 2,
                ..place
            },
            RecordPlace {
                table: "dc_options",
                ..place
            },
        ] {
            assert!(matches!(
                k.open(&other, &sealed),
                Err(VaultError::Corrupt { .. })
            ));
        }
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(k.open(&place, &bad), Err(VaultError::Corrupt { .. })),
                "byte {i}"
            );
        }
    }

    #[test]
    fn blind_is_the_hmac_of_the_length_prefixed_fields() {
        let k = keys();
        let mut buf = Vec::new();
        for part in [&b"peers"[..], &7i64.to_be_bytes(), b"key", b"\x01value"] {
            push_field(&mut buf, part);
        }
        let mut mac = k.index.clone();
        mac.update(&buf);
        let want = mac.finalize().into_bytes();
        assert_eq!(
            k.blind("peers", 7, "key", b"\x01value")[..],
            want[..BLIND_LEN]
        );
        // Field boundaries count: moving a byte from one field to the next changes the index.
        assert_ne!(
            k.blind("peers", 7, "key", b"v"),
            k.blind("peers", 7, "ke", b"yv")
        );
    }

    #[test]
    fn keyslot_round_trip_wrong_passphrase_and_edits() {
        let vid = [3u8; VAULT_ID_LEN];
        let dek = SecretKey::random().unwrap();
        let kdf = KdfParams::insecure_fast_for_tests();
        let ks = Keyslot::seal(&vid, 0, "passphrase", kdf, b"hunter2", &dek).unwrap();
        assert_eq!(ks.open(&vid, b"hunter2").unwrap().expose(), dek.expose());
        assert!(matches!(
            ks.open(&vid, b"hunter3"),
            Err(VaultError::BadPassphrase)
        ));
        let mut edited = ks.clone();
        edited.kdf.t_cost += 1;
        assert!(matches!(
            edited.open(&vid, b"hunter2"),
            Err(VaultError::Corrupt { .. })
        ));
        // An attacker who also fixes the checksum still cannot make the slot decode.
        edited.check = edited.checksum(&vid);
        assert!(edited.open(&vid, b"hunter2").is_err());
        assert!(matches!(
            ks.open(&[4u8; VAULT_ID_LEN], b"hunter2"),
            Err(VaultError::Corrupt { .. })
        ));
    }

    #[test]
    fn default_kdf_is_strong() {
        let d = KdfParams::default();
        assert!(d.m_cost_kib >= 64 * 1024 && d.t_cost >= 3 && d.p_cost >= 1);
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = SecretKey::random().unwrap();
        let shown = format!("{k:?} {:?}", keys());
        assert_eq!(shown, "SecretKey(<redacted>) Keys(<redacted>)");
    }
}
