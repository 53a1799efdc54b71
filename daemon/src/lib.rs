//! `session-vault-daemon`: the Session Vault daemon (`vaultd`), its admin CLI (`vaultctl`)
//! and the encrypted vault engine they stand on.
//!
//! - [`vault`]: crypto and storage engine (keyslots, KDF, record encryption, SQLite schema,
//!   group commit). Depends on `session-vault-proto` for the data model only.
//!
//! - [`server`]: the `vaultd` server (socket, connections, authorization, dispatch).
//! - [`hardening`]: process hardening (core dumps off).
//!
//! The binaries in `src/bin/` stay thin: they parse arguments and call this library.

pub mod ctl;
pub mod formats;
pub mod hardening;
pub mod server;
pub mod vault;
