//! `session-vault-proto`: the Session Vault wire protocol.
//!
//! - [`backup`]: the types of backup, restore and verify;
//! - [`model`]: the session data model shared by the daemon and its clients;
//! - [`message`]: every request, response, event and error, and the protocol version;
//! - [`codec`]: the length-prefixed MessagePack frame codec, generic over tokio's
//!   `AsyncRead`/`AsyncWrite`.
//!
//! No transport, no I/O policy and no cryptography live here; `proto` depends on neither
//! `daemon` nor `client`. `PROTOCOL.md` beside this crate is the written specification.
#![deny(missing_docs)]

pub mod backup;
pub mod codec;
pub mod message;
pub mod model;
pub mod paths;

pub use codec::{DEFAULT_MAX_FRAME, FrameError};
pub use message::{
    ClientFrame, ErrorCode, Event, PROTOCOL_MAJOR, PROTOCOL_MINOR, Request, Response, ServerFrame,
    WireError,
};
