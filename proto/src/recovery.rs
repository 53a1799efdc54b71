//! The recovery key's text form: 128 random bits written as 8 groups of 6 digits, like a
//! BitLocker recovery key (`123456-234567-…`).
//!
//! Each group is a multiple of 11 below 720,896 and carries 16 bits (its value divided by 11):
//! the factor 11 is the group's check. It catches every single mistyped digit (changing one
//! digit changes the value by d·10^k, and 10^k is ±1 modulo 11) and every swap of two
//! adjacent different digits, so a typo is found before the daemon runs its KDF, and
//! [`parse`] says which group is wrong. Groups may be separated by `-`, spaces or nothing.
//!
//! The daemon generates the key ([`RecoveryKey::from_bytes`]) and shows it once; `vaultctl`
//! checks a typed key with [`parse`] and sends its canonical text; the daemon parses it again
//! and uses the 16 bytes as the keyslot's secret.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Random bytes in a recovery key (128 bits).
pub const KEY_BYTES: usize = 16;
/// Groups in the text form.
pub const GROUPS: usize = 8;
/// Digits per group.
pub const GROUP_DIGITS: usize = 6;

/// A recovery key in its canonical text form (`ddddddd-…`): zeroized on drop, redacted in
/// `Debug`. On the wire it is a string.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct RecoveryKey(String);

impl RecoveryKey {
    /// The text form of 16 key bytes.
    pub fn from_bytes(bytes: &[u8; KEY_BYTES]) -> RecoveryKey {
        let mut text = String::with_capacity(GROUPS * (GROUP_DIGITS + 1));
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            if i > 0 {
                text.push('-');
            }
            let value = u32::from(u16::from_be_bytes([pair[0], pair[1]])) * 11;
            let mut digits = [b'0'; GROUP_DIGITS];
            let mut v = value;
            for d in digits.iter_mut().rev() {
                *d = b'0' + u8::try_from(v % 10).unwrap_or(0);
                v /= 10;
            }
            text.extend(digits.iter().map(|&b| char::from(b)));
            digits.zeroize();
        }
        RecoveryKey(text)
    }

    /// Lends the text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryKey(<redacted>)")
    }
}

impl Serialize for RecoveryKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RecoveryKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        Ok(RecoveryKey(text.as_str().to_owned()))
    }
}

/// Why a typed recovery key was refused. Never holds any of its digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Something other than digits, `-` and spaces.
    BadCharacter,
    /// Not 48 digits.
    Length {
        /// Digits found.
        digits: usize,
    },
    /// A group fails its check (1-based).
    Group(usize),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadCharacter => f.write_str(
                "a recovery key holds only digits, in groups separated by '-' or spaces",
            ),
            ParseError::Length { digits } => write!(
                f,
                "a recovery key has {} digits ({GROUPS} groups of {GROUP_DIGITS}); this one has {digits}",
                GROUPS * GROUP_DIGITS
            ),
            ParseError::Group(n) => write!(
                f,
                "group {n} of the recovery key fails its check: a digit in it is mistyped"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// Checks a typed recovery key and returns its 16 bytes.
pub fn parse(text: &str) -> Result<Zeroizing<[u8; KEY_BYTES]>, ParseError> {
    let mut digits = Zeroizing::new([0u8; GROUPS * GROUP_DIGITS]);
    let mut n = 0usize;
    for c in text.chars() {
        match c {
            '0'..='9' => {
                if n < digits.len() {
                    digits[n] = u8::try_from(u32::from(c) - u32::from('0')).unwrap_or(0);
                }
                n += 1;
            }
            '-' | ' ' | '\t' => {}
            _ => return Err(ParseError::BadCharacter),
        }
    }
    if n != GROUPS * GROUP_DIGITS {
        return Err(ParseError::Length { digits: n });
    }
    let mut out = Zeroizing::new([0u8; KEY_BYTES]);
    for (g, group) in digits.chunks_exact(GROUP_DIGITS).enumerate() {
        let mut value = Zeroizing::new(0u32);
        for &d in group {
            *value = *value * 10 + u32::from(d);
        }
        if *value % 11 != 0 || *value / 11 > u32::from(u16::MAX) {
            return Err(ParseError::Group(g + 1));
        }
        let word = u16::try_from(*value / 11).unwrap_or(0).to_be_bytes();
        out[2 * g] = word[0];
        out[2 * g + 1] = word[1];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_catches_every_single_digit_typo() {
        let bytes: [u8; KEY_BYTES] =
            *b"\x00\x01\xff\xfe\x12\x34\x56\x78\x9a\xbc\xde\xf0\x00\x00\xff\xff";
        let key = RecoveryKey::from_bytes(&bytes);
        assert_eq!(key.expose().len(), GROUPS * (GROUP_DIGITS + 1) - 1);
        assert_eq!(*parse(key.expose()).unwrap(), bytes);
        assert_eq!(*parse(&key.expose().replace('-', " ")).unwrap(), bytes);
        assert_eq!(format!("{key:?}"), "RecoveryKey(<redacted>)");
        let text: Vec<char> = key.expose().chars().collect();
        for (i, c) in text.iter().enumerate() {
            let Some(d) = c.to_digit(10) else { continue };
            for other in (0..10).filter(|&o| o != d) {
                let mut typo = text.clone();
                typo[i] = char::from_digit(other, 10).unwrap();
                let typo: String = typo.into_iter().collect();
                assert_eq!(
                    parse(&typo).unwrap_err(),
                    ParseError::Group(i / (GROUP_DIGITS + 1) + 1)
                );
            }
        }
        assert_eq!(
            parse(&key.expose()[1..]).unwrap_err(),
            ParseError::Length { digits: 47 }
        );
        assert_eq!(parse("x").unwrap_err(), ParseError::BadCharacter);
    }
}
