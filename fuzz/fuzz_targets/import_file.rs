//! Every importer on a file (what `vaultctl import FILE` reads): the bytes are written to a
//! temporary file, which the importers open in place (SQLite read-only and immutable).

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use session_vault_formats::{Format, Input};

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sv-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz temp dir");
        dir.join("input.session")
    })
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    std::fs::write(p, data).expect("write the fuzz input");
    session_vault_fuzz::import_as(
        || Input::Path(p),
        &[
            Format::TelethonSqlite,
            Format::PyrogramSqlite,
            Format::GrammersSqlite,
            Format::GrammersTl,
        ],
    );
});
