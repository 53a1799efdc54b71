//! `session-vault-proto`: the Session Vault wire protocol.
//!
//! - [`audit`]: the audit log's entries and pages;
//! - [`backup`]: the types of backup, restore and verify;
//! - [`model`]: the session data model shared by the daemon and its clients;
//! - [`message`]: every request, response, event and error, and the protocol version;
//! - [`codec`]: the length-prefixed MessagePack frame codec, generic over tokio's
//!   `AsyncRead`/`AsyncWrite`;
//! - [`paths`]: where the daemon's socket is by default, shared by the daemon and its
//!   clients (it reads the environment and checks which socket files exist), and on Windows
//!   the named pipe's;
//! - [`sid`]: Windows SIDs as the numeric user and group ids of ACLs (Cygwin's mapping).
//!
//! No transport and no cryptography live here: the codec reads and writes whatever stream
//! it is given, and opening the socket is the daemon's and the client's business. `proto`
//! depends on neither `daemon` nor `client`. `PROTOCOL.md` beside this crate is the written
//! specification.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

pub mod audit;
pub mod backup;
pub mod codec;
mod compat;
pub mod message;
pub mod model;
pub mod paths;
pub mod recovery;
pub mod sid;
mod since;

pub use codec::{DEFAULT_MAX_FRAME, FrameError};
pub use message::{
    ClientFrame, ErrorCode, Event, PROTOCOL_MAJOR, PROTOCOL_MINOR, Request, Response, ServerFrame,
    WireError,
};
