//! `session-vault-daemon`: the Session Vault daemon (`vaultd`) and the encrypted vault engine
//! it stands on.
//!
//! - [`vault`]: crypto and storage engine (keyslots, KDF, record encryption, SQLite schema,
//!   group commit). Depends on `session-vault-proto` for the data model only.
//! - [`server`]: the `vaultd` server (socket, connections, authorization, dispatch).
//! - [`hardening`]: process hardening (core dumps off).
//!
//! The admin CLI is the `vaultctl` crate, a client like any other (it speaks the protocol
//! through `session-vault-client` and never links this crate), and the readers and writers of
//! other libraries' session files are `session-vault-formats`.
//!
//! The binary in `src/bin/` stays thin: it parses arguments and calls this library.

pub mod hardening;
pub mod server;
pub mod vault;
