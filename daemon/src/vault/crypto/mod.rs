//! Cryptography of the vault: the KDF, keyslots, record sealing and blind indexes.
//!
//! - Passphrase → Argon2id (parameters stored with the keyslot) → KEK.
//! - One random 32-byte DEK per vault, stored only wrapped by a KEK in a keyslot
//!   (XChaCha20-Poly1305; AAD binds the vault id, the slot number and the KDF parameters).
//!   Which keyslots are current is recorded in the sealed manifest (`engine::manifest`), by
//!   each keyslot's checksum, so an old keyslot put back into the file is `Corrupt`.
//! - HKDF-SHA256 derives from the DEK a record key and a blind-index key ([`records`]).
//! - Every stored value is one AEAD record carrying the vault generation at which it was
//!   written ([`records`] documents the two record format versions).
//! - Blind indexes are HMAC-SHA256 under the index key, truncated to 16 bytes.
//!
//! Keys in memory: the DEK and both subkeys live only as [`SecretKey`]s (boxed, `mlock`ed
//! where the OS allows, zeroized on drop). The cipher and MAC states built from them (the
//! XChaCha20 key schedule, HMAC's keyed ipad/opad midstates, HKDF's PRK) are built per call
//! on the stack, and every function that builds one zeroes the stack it used before it
//! returns ([`scrub_stack`]), on whichever thread it ran (storage thread, runtime worker on
//! the inline path, blocking pool): `lock` then leaves no copy of a key behind (an
//! integration test scans the running daemon's memory for them).
//!
//! Only audited RustCrypto primitives are used; nothing here is hand-rolled. Every function
//! that runs Argon2 is blocking and must be called off the async runtime (`spawn_blocking`).

// No `as` here: a length or number that changes width goes through `From`/`try_from`, so a
// value that does not fit is an error or a stated invariant, never a silent truncation.
#![warn(
    clippy::as_conversions,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::error::{EngineError, Result};

pub mod records;

pub use records::{
    BLIND_LEN, Keys, PAD_FIXED, PAD_SMALL, RECORD_FORMAT, RECORD_FORMAT_V1, RecordPlace,
};

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Bytes of stack [`scrub_stack`] zeroes: more than any sealing, opening, MAC or KDF call
/// here uses below its caller (measured: the daemon's memory scan finds no key after `lock`).
pub const SCRUB_BYTES: usize = 16 * 1024;

/// Zeroes [`SCRUB_BYTES`] of the stack below the caller's frame: where the function the
/// caller called just before had its frames, with whatever key schedule, MAC midstate or
/// plaintext they left there. Call it right after such a call returns (see the module docs).
/// About 0.2 µs.
#[inline(never)]
pub fn scrub_stack() {
    let mut buf = [0u8; SCRUB_BYTES];
    // A plain fill that the optimizer must keep: `black_box` claims the bytes are read.
    buf.fill(0);
    std::hint::black_box(&mut buf);
}

/// Runs `f`, then zeroes the stack it used ([`scrub_stack`]), unless a caller above runs it
/// inside [`scrubbed_once`], which zeroes the stack once at its end instead.
#[inline(never)]
pub fn scrubbed<T>(f: impl FnOnce() -> T) -> T {
    let out = run_not_inlined(f);
    if !SCRUB_DEFERRED.with(std::cell::Cell::get) {
        scrub_stack();
    }
    out
}

/// Bytes of stack [`scrubbed_once`] zeroes at its end: the engine's frames between it and
/// the crypto calls it wraps, plus [`SCRUB_BYTES`] for the calls themselves, with room over.
pub const SCRUB_ONCE_BYTES: usize = 64 * 1024;

thread_local! {
    /// A [`scrubbed_once`] is running on this thread: [`scrubbed`] leaves its scrub to it.
    // Already `const`: clippy 1.96 says otherwise on targets whose thread-locals are the OS's
    // (x86_64-win7-windows-gnu), rust-clippy#17566.
    #[cfg_attr(windows, allow(clippy::missing_const_for_thread_local, reason = "rust-clippy#17566"))]
    static SCRUB_DEFERRED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, in which many sealing or MAC calls are made (a batch of peers), and zeroes
/// [`SCRUB_ONCE_BYTES`] of the stack below this frame once, when `f` returns or unwinds,
/// instead of [`SCRUB_BYTES`] after each call: the calls leave the same keys' traces at the
/// same depths, so what matters is that none survives the batch. Zeroing 16 KiB twice per
/// new peer was 4–5% of a peer fill's CPU.
#[inline(never)]
pub fn scrubbed_once<T>(f: impl FnOnce() -> T) -> T {
    struct Scrub {
        outer: bool,
    }
    impl Drop for Scrub {
        fn drop(&mut self) {
            SCRUB_DEFERRED.with(|d| d.set(self.outer));
            if !self.outer {
                scrub_stack_deep();
            }
        }
    }
    let _scrub = Scrub {
        outer: SCRUB_DEFERRED.with(|d| d.replace(true)),
    };
    run_not_inlined(f)
}

/// [`scrub_stack`] over [`SCRUB_ONCE_BYTES`].
#[inline(never)]
fn scrub_stack_deep() {
    let mut buf = [0u8; SCRUB_ONCE_BYTES];
    buf.fill(0);
    std::hint::black_box(&mut buf);
}

/// Keeps `f`'s frames below the caller's, where [`scrub_stack`] will find them.
#[inline(never)]
fn run_not_inlined<T>(f: impl FnOnce() -> T) -> T {
    f()
}

/// The shortest passphrase accepted for a new keyslot, in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// Refuses a passphrase shorter than [`MIN_PASSPHRASE_CHARS`] characters (bytes where it is
/// not UTF-8). A floor, not a strength estimate.
pub fn check_new_passphrase(passphrase: &[u8]) -> Result<()> {
    let chars = std::str::from_utf8(passphrase)
        .map(|s| s.chars().count())
        .unwrap_or(passphrase.len());
    if chars < MIN_PASSPHRASE_CHARS {
        return Err(EngineError::WeakPassphrase(
            "a passphrase must be at least 8 characters long",
        ));
    }
    Ok(())
}

/// Length of the vault id.
pub const VAULT_ID_LEN: usize = 16;

/// Locks the pages holding `value` in RAM (`mlock`, on Windows `VirtualLock`) so that they are never swapped out.
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
        let ptr = std::ptr::from_ref(value).cast::<libc::c_void>();
        // SAFETY: mlock only changes the residency of the pages spanning [ptr, ptr+len), which
        // belong to the live object `value`; it reads and writes no memory.
        let rc = unsafe { libc::mlock(ptr, len) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "mlock of key memory refused");
        }
    }
    #[cfg(windows)]
    {
        let len = std::mem::size_of_val(value);
        if len == 0 {
            return;
        }
        let ptr = std::ptr::from_ref(value).cast::<std::ffi::c_void>();
        // SAFETY: VirtualLock only changes the residency of the pages spanning [ptr, ptr+len),
        // which belong to the live object `value`; it reads and writes no memory.
        let ok = unsafe { windows_sys::Win32::System::Memory::VirtualLock(ptr, len) };
        if ok == 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "VirtualLock of key memory refused");
        }
    }
    #[cfg(not(any(unix, windows)))]
    let _ = value;
}

/// A 32-byte secret key: heap-allocated, locked in RAM where allowed, zeroized on drop,
/// never printed.
pub struct SecretKey(Box<[u8; 32]>);

impl SecretKey {
    pub(crate) fn zeroed() -> Self {
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

    /// Lends the key bytes for writing (filled in place, never moved).
    pub(crate) fn expose_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
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
    getrandom::fill(buf).map_err(|e| EngineError::Storage {
        kind: super::error::StorageErrorKind::Other,
        message: format!("the OS random number generator failed: {e}"),
    })
}

/// Bytes of OS randomness a thread fetches at once for [`fresh_nonce`]: 170 nonces.
const NONCE_POOL_BYTES: usize = 4096;

thread_local! {
    /// This thread's unused OS randomness for nonces, and how much of it was handed out.
    static NONCE_POOL: std::cell::RefCell<(Box<[u8; NONCE_POOL_BYTES]>, usize)> =
        std::cell::RefCell::new((Box::new([0; NONCE_POOL_BYTES]), NONCE_POOL_BYTES));
}

/// A fresh random 24-byte nonce for a record's seal: bytes of the OS's CSPRNG, each handed
/// out once, fetched 4 KiB per thread at a time. One `getrandom` call per record was 3–4% of
/// a peer fill's CPU (the kernel's per-call ChaCha setup). Nonces are stored in the clear
/// beside the ciphertext, so the unused bytes are no secret; what matters is that none is
/// given twice, which the position guarantees (vaultd never forks, so no copy of a pool
/// lives on in another process).
pub fn fresh_nonce() -> Result<[u8; NONCE_LEN]> {
    NONCE_POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (bytes, used) = &mut *pool;
        if *used + NONCE_LEN > NONCE_POOL_BYTES {
            fill_random(&mut bytes[..])?;
            *used = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[*used..*used + NONCE_LEN]);
        *used += NONCE_LEN;
        Ok(nonce)
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
    /// The weakest parameters a new keyslot may get outside tests: OWASP's Argon2id minimum
    /// (m = 19 MiB, t = 2, p = 1). The daemon refuses weaker ones unless started with
    /// `--insecure-allow-weak-kdf`.
    pub const FLOOR: KdfParams = KdfParams {
        m_cost_kib: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };

    /// Whether these parameters are at least [`KdfParams::FLOOR`] in memory and iterations.
    pub fn meets_floor(&self) -> bool {
        self.m_cost_kib >= Self::FLOOR.m_cost_kib
            && self.t_cost >= Self::FLOOR.t_cost
            && self.p_cost >= Self::FLOOR.p_cost
    }

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
            .map_err(|e| EngineError::Invalid(format!("bad KDF parameters: {e}")))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

/// The `kind` of a passphrase keyslot.
pub const KIND_PASSPHRASE: &str = "passphrase";
/// The `kind` of the recovery keyslot (at most one per vault).
pub const KIND_RECOVERY: &str = "recovery";

/// Argon2id parameters of the recovery keyslot: deliberately cheap (1 MiB, one pass). The
/// recovery key is 128 random bits from the OS, not a passphrase: guessing it costs 2^127
/// tries on average whatever the KDF, so a slow KDF would add nothing but unlock time.
/// Argon2id is kept (not HKDF) so that the recovery keyslot has the format of every other.
pub const RECOVERY_KDF: KdfParams = KdfParams {
    m_cost_kib: 1024,
    t_cost: 1,
    p_cost: 1,
};

/// A stored keyslot: a wrapped DEK and what is needed to rederive its KEK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyslot {
    /// Slot number (0 is the passphrase slot made by `init`).
    pub slot: u32,
    /// What unlocks it: [`KIND_PASSPHRASE`] or [`KIND_RECOVERY`].
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

    /// SHA-256 over the slot's AAD and wrapped key: what the manifest records to name the
    /// current version of each keyslot.
    pub fn checksum(&self, vault_id: &[u8]) -> Vec<u8> {
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
            return Err(EngineError::WeakPassphrase("the passphrase is empty"));
        }
        let mut salt = vec![0u8; 16];
        fill_random(&mut salt)?;
        let aad = Self::aad(vault_id, slot, kind, &kdf, &salt);
        let wrapped = scrubbed(|| {
            let kek = derive_kek(&kdf, passphrase, &salt)?;
            seal_raw(&kek, &aad, dek.expose())
        })?;
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

    /// `Corrupt` if the slot's stored checksum does not match its fields (damage or a naive
    /// edit, its kind included); no KDF runs.
    pub fn verify_check(&self, vault_id: &[u8]) -> Result<()> {
        if self.check != self.checksum(vault_id) {
            return Err(EngineError::Corrupt {
                table: "keyslots",
                session_id: 0,
                row: self.slot.to_string(),
                reason: "keyslot parameters or wrapped key were altered",
            });
        }
        Ok(())
    }

    /// Unwraps the DEK with `passphrase`. `Corrupt` if the slot was damaged or edited,
    /// `BadPassphrase` if the passphrase does not open it. Blocking (Argon2).
    pub fn open(&self, vault_id: &[u8], passphrase: &[u8]) -> Result<SecretKey> {
        let corrupt = |reason| EngineError::Corrupt {
            table: "keyslots",
            session_id: 0,
            row: self.slot.to_string(),
            reason,
        };
        self.verify_check(vault_id)?;
        let aad = Self::aad(vault_id, self.slot, &self.kind, &self.kdf, &self.salt);
        scrubbed(|| {
            // Refuse parameters weaker than Argon2 itself accepts before spending time on them.
            let kek = derive_kek(&self.kdf, passphrase, &self.salt)
                .map_err(|_| corrupt("keyslot KDF parameters are invalid"))?;
            let dek = open_raw(&kek, &aad, &self.wrapped).ok_or(EngineError::BadPassphrase)?;
            SecretKey::from_slice(&dek).ok_or_else(|| corrupt("wrapped key has the wrong length"))
        })
    }
}

/// Argon2id(passphrase, salt) → 32-byte KEK. Blocking.
fn derive_kek(kdf: &KdfParams, passphrase: &[u8], salt: &[u8]) -> Result<SecretKey> {
    let mut kek = SecretKey::zeroed();
    kdf.argon2()?
        .hash_password_into(passphrase, salt, &mut kek.0[..])
        .map_err(|e| EngineError::Invalid(format!("key derivation failed: {e}")))?;
    Ok(kek)
}

/// Appends `field` to an AAD or checksum input as `len(u32 BE) ‖ field`.
fn push_field(buf: &mut Vec<u8>, field: &[u8]) {
    buf.extend_from_slice(&len_prefix(field));
    buf.extend_from_slice(field);
}

/// The 4-byte big-endian length prefix of an AAD, checksum or blind-index field.
///
/// Invariant: every such field is shorter than 4 GiB, so the prefix never truncates (a
/// truncated prefix would let two different field splits encode alike). The fixed-size ones
/// (vault id, numbers, labels) trivially; the others come either from a request, whose frame
/// length is itself a `u32` (and capped far lower by the frame limit), or from a row of the
/// vault file, which SQLite caps at `SQLITE_MAX_LENGTH` (1,000,000,000 bytes in the bundled
/// build). A violation is a bug, not an input error, so it panics rather than returning a
/// result: the prefix format is fixed by the vault files already written.
fn len_prefix(field: &[u8]) -> [u8; 4] {
    u32::try_from(field.len())
        .expect("AAD and blind-index fields are shorter than 4 GiB (see len_prefix)")
        .to_be_bytes()
}

fn seal_raw(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let mut out = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN));
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..])
        .map_err(|_| EngineError::Invalid("encryption failed".into()))?;
    out.extend_from_slice(&tag);
    Ok(std::mem::take(&mut *out))
}

fn open_raw(key: &SecretKey, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut plain = Zeroizing::new(ct.to_vec());
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut plain, tag.into())
        .ok()?;
    Some(plain)
}

#[cfg(test)]
mod tests;
