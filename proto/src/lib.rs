//! `session-vault-proto`: the Session Vault wire protocol.
//!
//! Holds the session data model ([`model`]) shared by the daemon and its clients. No I/O
//! policy and no cryptography live here; `proto` depends on neither `daemon` nor `client`.
#![deny(missing_docs)]

pub mod model;
