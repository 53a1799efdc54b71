//! Every importer on bytes in memory (what `vaultctl import -` reads from standard input):
//! format detection, then each format forced. SQLite images are staged in a private temporary
//! file by the importer itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_vault_formats::{Format, Input};

fuzz_target!(|data: &[u8]| {
    session_vault_fuzz::import_as(|| Input::Bytes(data), &Format::ALL);
});
