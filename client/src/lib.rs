//! `session-vault-client`: talk to a Session Vault daemon.
//!
//! - [`Connection`]: one local-socket connection carrying concurrent requests (request ids),
//!   with the handshake done at connect. `vaultctl` and `VaultSession` stand on it.
//!
//! Depends on `session-vault-proto` only (plus the transport crate).
#![deny(missing_docs)]

mod connection;

pub use connection::{ClientError, Connection};
