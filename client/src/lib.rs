//! `session-vault-client`: talk to a Session Vault daemon.
//!
//! - [`VaultSession`]: a `grammers_session::Session` whose contents live in the vault, so a
//!   grammers bot swaps `SqliteSession::open(path)` for `VaultSession::connect(name)`. Built
//!   with [`VaultSession::builder`] (socket, create-if-missing, lease, unlock policy), it
//!   reconnects when the daemon restarts and, holding the session's lease, answers repeat
//!   reads from a bounded write-through cache. [`VaultSession::export`],
//!   [`VaultSession::import`] and [`VaultSession::import_from`] move whole sessions between
//!   the vault and grammers' own storages;
//! - [`Connection`]: one local-socket connection carrying concurrent requests (request ids),
//!   with the handshake done at connect. `vaultctl` and `VaultSession` stand on it.
//!
//! Of the workspace it depends on `session-vault-proto` only; beyond it on `grammers-session`,
//! tokio, and `interprocess` for the socket.
//!
//! ```no_run
//! # async fn f() -> Result<(), session_vault_client::VaultError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use session_vault_client::VaultSession;
//!
//! let session = Arc::new(
//!     VaultSession::builder("~/mybot")               // the name in the vault: "<uid>/mybot"
//!         .create_if_missing(true)                    // default false: NoSuchSession
//!         .exclusive(true)                            // default true: hold the lease
//!         .wait_for_unlock(Duration::from_secs(600))  // default: fail at once with Locked
//!         .connect()
//!         .await?,
//! );
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod cache;
mod connection;
mod convert;
mod error;
mod grammers;
mod link;
mod session;
mod transfer;
mod warm;

pub use connection::{ClientError, Connection};
pub use error::VaultError;
pub use session::{
    DEFAULT_PEER_CACHE, DEFAULT_RECONNECT_TIMEOUT, VaultSession, VaultSessionBuilder,
};
pub use warm::WarmStart;
