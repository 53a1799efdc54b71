//! Engine tests: round trips, passphrases, tampering, plaintext scans, crash consistency,
//! migrations. Each test works on its own temp dir with the cheap test KDF.

mod support;

mod roundtrip;
