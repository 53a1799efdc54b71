//! Engine tests: round trips, passphrases, tampering, plaintext scans, crash consistency,
//! migrations, vaults written by earlier builds, durability classes and operation semantics.
//! Each test works on its own temp dir with the cheap test KDF
//! ([`crate::vault::KdfParams::insecure_fast_for_tests`], asked for by name).

mod support;

mod backup;
mod bounded_jobs;
mod crash;
mod durability;
mod format_compat;
mod migrations;
mod passphrase;
mod peer_inserts;
mod peer_maps;
mod peer_rows;
mod peers;
mod plaintext;
mod postgres;
mod recovery;
mod rollback;
mod roundtrip;
mod semantics;
mod tamper;
