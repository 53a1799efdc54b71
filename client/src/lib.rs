//! `session-vault-client`: a `grammers_session::Session` served by a Session Vault daemon.
//!
//! Depends on `session-vault-proto` only. The `VaultSession` type arrives with the client issue.
#![deny(missing_docs)]
