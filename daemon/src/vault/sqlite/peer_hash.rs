//! The hashers of the peer maps ([`super::peer_keys`]): cheap where SipHash showed, and
//! safe there because what they hash is not chosen by clients.

use std::hash::Hasher;

/// Hashes a blind key by its first eight bytes: an HMAC output, uniform and unknown to
/// whoever chooses the peers without the vault's keys, so no flooding of one bucket.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 16]`'s `Hash` writes the 16 bytes in one call.
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }
}

/// Hashes a session id (`AUTOINCREMENT`, not chosen by clients) by one multiplication: the
/// maps of sessions are looked up several times per peer written, where SipHash showed.
#[derive(Default)]
pub struct SessionHasher(u64);

impl Hasher for SessionHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_i64(&mut self, n: i64) {
        // Fibonacci hashing: the high bits, which the table's tags use, depend on every bit.
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
