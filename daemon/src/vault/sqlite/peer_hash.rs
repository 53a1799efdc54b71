//! The hashers of the peer maps ([`super::peer_keys`]): cheap where SipHash showed, and
//! safe there because what they hash is not chosen by clients; and [`KeyMap`], a map of blind
//! keys in shards, so that no insert rehashes a whole session's map at once.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::peer_keys::Key;

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

/// Shards of a [`KeyMap`]: a power of two.
const SHARDS: usize = 16;

/// A map of blind keys (uniform HMAC outputs) to rowids, in [`SHARDS`] hash tables chosen by a
/// key byte the tables' hasher does not read. A table doubles (rehashing every entry) when it
/// fills: one table of a 2.6M-peer session did so in one insert, holding every session's
/// requests for 46 ms; a shard holds a sixteenth of it, and the shards, filled alike, grow
/// one or two at a time over consecutive writes.
pub struct KeyMap {
    /// Boxed: a map is moved between threads and kept per session (16 empty tables are
    /// 512 bytes).
    shards: Box<[HashMap<Key, i64, BuildHasherDefault<KeyHasher>>; SHARDS]>,
}

impl Default for KeyMap {
    fn default() -> Self {
        KeyMap {
            shards: Box::new(std::array::from_fn(|_| HashMap::default())),
        }
    }
}

impl KeyMap {
    fn shard(k: &Key) -> usize {
        // Byte 8: past the eight bytes `KeyHasher` reads, as uniform as they are.
        usize::from(k[8]) % SHARDS
    }

    /// Entries held (asked when a map is read or dropped, not per peer).
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// The rowid of `k`.
    pub fn get(&self, k: &Key) -> Option<i64> {
        self.shards[Self::shard(k)].get(k).copied()
    }

    /// Maps `k` to `id`; the rowid it had, if any.
    pub fn insert(&mut self, k: Key, id: i64) -> Option<i64> {
        self.shards[Self::shard(&k)].insert(k, id)
    }

    /// Unmaps `k`; the rowid it had, if any.
    pub fn remove(&mut self, k: &Key) -> Option<i64> {
        self.shards[Self::shard(k)].remove(k)
    }

    /// Takes every entry out, shard by shard.
    pub fn drain(&mut self) -> impl Iterator<Item = (Key, i64)> + '_ {
        self.shards.iter_mut().flat_map(HashMap::drain)
    }

    /// The most entries one shard holds (tests of the spread).
    #[cfg(test)]
    pub fn largest_shard(&self) -> usize {
        self.shards.iter().map(HashMap::len).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::KeyMap;

    #[test]
    fn a_key_map_is_a_map_whose_keys_spread_over_its_shards() {
        let mut m = KeyMap::default();
        let key = |i: u32| {
            // Uniform-looking keys, as HMAC outputs are.
            let mut k = [0u8; 16];
            let mut x = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d;
            for b in &mut k {
                x ^= x >> 29;
                x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
                *b = (x >> 56) as u8;
            }
            k
        };
        for i in 0..16_000 {
            assert_eq!(m.insert(key(i), i64::from(i)), None);
        }
        assert_eq!(m.insert(key(7), 70), Some(7));
        assert_eq!(m.len(), 16_000);
        assert_eq!(m.get(&key(7)), Some(70));
        assert_eq!(m.get(&key(16_001)), None);
        assert_eq!(m.remove(&key(7)), Some(70));
        assert_eq!(m.remove(&key(7)), None);
        assert_eq!((m.len(), m.get(&key(7))), (15_999, None));
        // About a sixteenth in each shard.
        assert!(m.largest_shard() < 1_300, "{}", m.largest_shard());
        let mut drained: Vec<i64> = m.drain().map(|(_, id)| id).collect();
        drained.sort_unstable();
        assert_eq!(drained, (0..16_000).filter(|&i| i != 7).collect::<Vec<_>>());
        assert_eq!(m.len(), 0);
    }
}
