//! Telethon `StringSession` strings: the fuzz input is the decoded payload (DC id, address,
//! port, auth key), encoded here as Telethon does (`1` + URL-safe base64), so that the fuzzer
//! explores the structure rather than the base64 alphabet.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use libfuzzer_sys::fuzz_target;
use session_vault_formats::{Format, Input};

fuzz_target!(|data: &[u8]| {
    let s = format!("1{}", URL_SAFE.encode(data));
    session_vault_fuzz::import_as(|| Input::Bytes(s.as_bytes()), &[Format::TelethonString]);
});
