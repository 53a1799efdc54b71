//! grammers' binary `TlSession` files (0.4 … 0.8), parsed as that format directly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_vault_formats::{Format, Input};

fuzz_target!(|data: &[u8]| {
    session_vault_fuzz::import_as(|| Input::Bytes(data), &[Format::GrammersTl]);
});
