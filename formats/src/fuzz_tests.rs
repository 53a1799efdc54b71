//! Proptest fuzzing of the importers, complementing the proptests at the end of `tests.rs`
//! (arbitrary bytes in memory through every format, arbitrary session-length strings, damaged
//! Pyrogram SQLite and grammers TL images), which are not repeated here.
//!
//! Added here: damaged and truncated images of *every* SQLite fixture (Telethon v7 and v8,
//! Pyrogram, grammers), and every input read both from memory and from a file (the
//! `Input::Path` route opens the file and reads it through its descriptor, with the `-wal`
//! check on the way), each case within a time bound (no hang). Memory is bounded by the `cargo fuzz` runs (`fuzz/`,
//! `-rss_limit_mb`), not here.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// Longest a single import may take, in a debug build on a loaded machine.
const LIMIT: Duration = Duration::from_secs(5);

/// The SQLite fixtures, written by the real libraries.
const SQLITE_FIXTURES: [&str; 4] = [
    "telethon-v8.session",
    "telethon-v7-ipv6.session",
    "pyrogram.session",
    "grammers-011.sqlite",
];

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Imports `bytes` from memory and from a file, detected and as each format; every run must
/// return (an error is fine) within [`LIMIT`].
fn import_everywhere(bytes: &[u8], dir: &Path) {
    let path: PathBuf = dir.join("input.session");
    std::fs::write(&path, bytes).expect("write the input file");
    let mut formats = vec![None];
    formats.extend(Format::ALL.map(Some));
    for format in formats {
        for input in [Input::Bytes(bytes), Input::Path(&path)] {
            let t = Instant::now();
            let _ = import(input, format, &mut |_, _| {});
            assert!(
                t.elapsed() < LIMIT,
                "import as {format:?} took {:?}",
                t.elapsed()
            );
        }
    }
}

/// Overwrites `bytes[offset..]` with `junk` (clipped to the image).
fn damage(mut bytes: Vec<u8>, offset: usize, junk: &[u8]) -> Vec<u8> {
    let start = offset.min(bytes.len());
    let end = (start + junk.len()).min(bytes.len());
    bytes[start..end].copy_from_slice(&junk[..end - start]);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn damaged_sqlite_images_of_every_library_never_panic(
        which in 0..SQLITE_FIXTURES.len(),
        offset in 0usize..64 * 1024,
        junk in proptest::collection::vec(any::<u8>(), 1..256),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = damage(fixture(SQLITE_FIXTURES[which]), offset, &junk);
        import_everywhere(&bytes, dir.path());
    }

    #[test]
    fn truncated_sqlite_images_of_every_library_never_panic(
        which in 0..SQLITE_FIXTURES.len(),
        keep in 0.0f64..1.0,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = fixture(SQLITE_FIXTURES[which]);
        let cut = (bytes.len() as f64 * keep) as usize;
        import_everywhere(&bytes[..cut], dir.path());
    }

    #[test]
    fn sqlite_headers_followed_by_anything_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..8192),
    ) {
        // Detection sends these down the SQLite path; SQLite must refuse them cleanly.
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = sqlite_io::SQLITE_MAGIC.to_vec();
        bytes.extend(tail);
        import_everywhere(&bytes, dir.path());
    }

    #[test]
    fn arbitrary_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let dir = tempfile::tempdir().unwrap();
        import_everywhere(&bytes, dir.path());
    }

    #[test]
    fn damaged_session_strings_never_panic(
        which in 0..5usize,
        offset in 0usize..400,
        junk in "[A-Za-z0-9_=-]{1,16}",
    ) {
        let name = [
            "telethon-ipv4.string",
            "telethon-ipv6.string",
            "pyrogram-351.string",
            "pyrogram-356.string",
            "pyrogram-362.string",
        ][which];
        let dir = tempfile::tempdir().unwrap();
        let text = String::from_utf8(fixture(name)).unwrap();
        let bytes = damage(text.trim().as_bytes().to_vec(), offset, junk.as_bytes());
        import_everywhere(&bytes, dir.path());
    }
}
