//! Pyrogram session strings: the fuzz input is the decoded payload, encoded here as Pyrogram
//! does (URL-safe base64 without padding), so that the fuzzer explores the packed structure.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use session_vault_formats::{Format, Input};

fuzz_target!(|data: &[u8]| {
    let s = URL_SAFE_NO_PAD.encode(data);
    session_vault_fuzz::import_as(|| Input::Bytes(s.as_bytes()), &[Format::PyrogramString]);
});
