//! Integration tests of `session-vault-proto`: one binary, one module per concern.
//!
//! - [`samples`]: a value of every request, response, error code and event;
//! - [`probe`]: serde's own list of an enum's variants and a struct's fields, so that the
//!   tests notice a message added to `message.rs` without a sample or documentation;
//! - [`alloc`]: a test allocator that records the largest allocation of a thread;
//! - [`roundtrip`]: every message through the frame codec and back;
//! - [`codec`]: framing edge cases (EOF, truncation, limits, trailing bytes, depth);
//! - [`encoding`]: the exact MessagePack forms `PROTOCOL.md` promises;
//! - [`doc`]: `PROTOCOL.md`'s hex dumps and its coverage of every message;
//! - [`fuzz`]: arbitrary and mutated bytes never panic the decoder;
//! - [`future`]: frames of a later minor version (new error codes, events, fields) decode;
//! - [`secrets`]: passphrases and keys never show in `Debug` or error texts.

mod alloc;
mod codec;
mod doc;
mod encoding;
mod future;
mod fuzz;
mod probe;
mod roundtrip;
mod samples;
mod secrets;

/// Lower-case hex, bytes separated by spaces.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses hex digits, ignoring whitespace.
pub fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(
        digits.len() % 2 == 0,
        "odd number of hex digits in {text:?}"
    );
    digits
        .chunks(2)
        .map(|pair| {
            u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16)
                .unwrap_or_else(|_| panic!("not hex: {pair:?}"))
        })
        .collect()
}

/// A message's MessagePack payload (the frame without its length prefix).
pub fn payload<T: serde::Serialize>(message: &T) -> Vec<u8> {
    let frame = session_vault_proto::codec::encode_frame(message).expect("encodes");
    frame[4..].to_vec()
}
