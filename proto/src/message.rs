//! Requests, responses, events and errors: every message of the protocol, in one file.
//!
//! Each frame's payload is one MessagePack map with named fields ([`ClientFrame`] from the
//! client, [`ServerFrame`] from the daemon). Enums are externally tagged with snake_case
//! names: a variant with fields is a one-entry map `{"name": {fields…}}`, a variant without
//! fields is the bare string `"name"`. `proto/PROTOCOL.md` is the written specification.
//!
//! Each request variant's doc line says which response it gets on success; any request may
//! instead get [`Response::Error`].

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::audit::AuditPage;
use crate::backup::{Blob, MigrateInfo, RestoreInfo, TransferInfo, VerifyReport};
use crate::model::{
    DcOption, Peer, SentFile, SessionData, SessionExtras, SessionSummary, UpdatesState,
};
use crate::recovery::RecoveryKey;

mod request;
pub use request::{PeerQuery, Request};

/// Protocol major version: bumped by hand on any incompatible change. A client and a daemon
/// of different majors refuse each other in the handshake.
pub const PROTOCOL_MAJOR: u16 = 1;
/// Protocol minor version: bumped by hand when messages are added compatibly.
pub const PROTOCOL_MINOR: u16 = 8;

/// The most peers one [`Response::PeerPage`] carries: far below the frame limit (a peer with
/// every field set is a few hundred bytes).
pub const PEER_PAGE_MAX: u32 = 1_000;

/// Request id reserved for server-pushed events.
pub const EVENT_ID: u32 = 0;

/// A passphrase in transit: zeroized on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Passphrase(Vec<u8>);

impl Passphrase {
    /// Wraps passphrase bytes (UTF-8 text as typed, without a trailing newline).
    pub fn new(bytes: Vec<u8>) -> Self {
        Passphrase(bytes)
    }

    /// Lends the bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

impl Serialize for Passphrase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Passphrase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Passphrase;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("passphrase bytes or string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Passphrase, E> {
                Ok(Passphrase(v.to_vec()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Passphrase, E> {
                Ok(Passphrase(v.as_bytes().to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Argon2id cost parameters a client may ask `init` or `passwd` to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfSpec {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

/// One frame from the client: a request and the id its response will echo.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Chosen by the client, echoed in the response; 0 is reserved for events.
    pub id: u32,
    /// The request.
    pub request: Request,
}

/// One frame from the daemon: a response to request `id`, or an event when `id` is 0.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerFrame {
    /// The request id this answers, or [`EVENT_ID`].
    pub id: u32,
    /// The response or event.
    pub response: Response,
}

/// The vault's state as the wire names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaultState {
    /// No keyslot yet: `init` it.
    Uninitialized,
    /// Keys wiped.
    Locked,
    /// Serving sessions.
    Unlocked,
}

impl VaultState {
    /// Lower-case name (`uninitialized`, `locked`, `unlocked`).
    pub fn as_str(self) -> &'static str {
        match self {
            VaultState::Uninitialized => "uninitialized",
            VaultState::Locked => "locked",
            VaultState::Unlocked => "unlocked",
        }
    }
}

/// Daemon and vault state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Vault state.
    pub state: VaultState,
    /// Path of the vault file.
    pub vault_path: String,
    /// Number of sessions, when unlocked.
    pub sessions: Option<u64>,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Daemon version.
    pub version: String,
    /// Daemon pid.
    pub pid: u32,
    /// Open client connections.
    pub connections: u64,
    /// Whether the vault has a recovery keyslot; `None` while uninitialized and from
    /// daemons before minor 3.
    #[serde(default)]
    pub recovery_key: Option<bool>,
}

/// A session as `list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionListing {
    /// What the vault knows.
    pub summary: SessionSummary,
    /// Pid of the process holding the lease, if the session is open exclusively.
    pub lease_holder_pid: Option<u32>,
}

/// What the daemon answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Handshake accepted.
    Welcome {
        /// Daemon's [`PROTOCOL_MAJOR`].
        protocol_major: u16,
        /// Daemon's [`PROTOCOL_MINOR`].
        protocol_minor: u16,
        /// Free text naming the daemon (`vaultd 0.1.0`).
        server: String,
        /// Vault state at the time of the handshake.
        vault_state: VaultState,
    },
    /// Done, nothing to return.
    Ok,
    /// To [`Request::Status`].
    Status(StatusInfo),
    /// To [`Request::ListSessions`].
    Sessions(Vec<SessionListing>),
    /// To [`Request::OpenSession`]: a handle, and what grammers needs synchronously.
    Opened {
        /// Handle for later session requests on this connection.
        handle: u32,
        /// Whether the session was created by this open.
        created: bool,
        /// Home DC.
        home_dc: i32,
        /// DC options.
        dc_options: Vec<DcOption>,
        /// The session's full name (a `~/` prefix expanded to `<uid>/`). `None` from daemons
        /// before it was added.
        #[serde(default)]
        name: Option<String>,
    },
    /// To [`Request::GetHomeDc`].
    HomeDc(i32),
    /// To [`Request::GetDcOptions`].
    DcOptions(Vec<DcOption>),
    /// To [`Request::GetPeer`].
    Peer(Option<Peer>),
    /// To [`Request::ListPeers`]: a page of peers, newest first, and the cursor of the next
    /// page (`None`: this was the last). Minor 5.
    PeerPage {
        /// The peers.
        peers: Vec<Peer>,
        /// `before` for the next page.
        next: Option<i64>,
    },
    /// To [`Request::GetUpdatesState`].
    UpdatesState(UpdatesState),
    /// To [`Request::GetExtras`].
    Extras(SessionExtras),
    /// To [`Request::GetSentFile`].
    SentFile(Option<SentFile>),
    /// To [`Request::Export`] and [`Request::ExportSession`].
    SessionData(SessionData),
    /// To [`Request::BackupBegin`], [`Request::RestoreBegin`], [`Request::ImportBegin`] and
    /// [`Request::ExportBegin`].
    Transfer(TransferInfo),
    /// To [`Request::BackupChunk`] and [`Request::ExportChunk`].
    Chunk(Blob),
    /// To [`Request::Verify`].
    Verified(VerifyReport),
    /// To [`Request::RestoreCommit`].
    Restored(RestoreInfo),
    /// To [`Request::MigrateStore`]: what was copied and verified. Minor 6.
    Migrated(MigrateInfo),
    /// To [`Request::Disconnect`].
    Disconnected {
        /// How many connections were ended (0: no client matched).
        connections: u32,
    },
    /// To [`Request::AddRecoveryKey`]: the new recovery key, shown once. Minor 3.
    RecoveryKey(RecoveryKey),
    /// To [`Request::Audit`]: a page of the audit log and what its verification found.
    /// Minor 4.
    AuditPage(AuditPage),
    /// The request failed.
    Error(WireError),
    /// Pushed by the daemon with id 0.
    Event(Event),
}

/// Server-pushed events (frames with id 0).
///
/// A later minor version may add events: one this version does not know decodes as
/// [`Event::Other`], which a client ignores (the `compat` module has the decoder).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The vault was locked; session requests now get `Locked`.
    Locked,
    /// The vault was unlocked.
    Unlocked,
    /// The daemon is shutting down; reconnect later.
    ShuttingDown,
    /// An admin ended this connection (`vaultctl disconnect`): the daemon closes it next, and
    /// a client should not reconnect on its own. Minor 4.
    DisconnectedByAdmin,
    /// An event of a later minor version, by its wire name; its content, if any, is not
    /// kept. Encodes as the bare name.
    Other(String),
}

/// A typed error and a message a person can read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// What went wrong, for code to match on.
    pub code: ErrorCode,
    /// What went wrong, for a person; never holds a secret.
    pub message: String,
}

/// Error codes a client can match on.
///
/// Encoded as snake_case names like the other enums. A later minor version may add codes:
/// one this version does not know decodes as [`ErrorCode::Other`], which a client treats
/// as a generic failure (the `compat` module has the decoder).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The vault is locked.
    Locked,
    /// The vault has not been initialized.
    Uninitialized,
    /// `init` on an initialized vault.
    AlreadyInitialized,
    /// No session by that name (or the handle is not open).
    NoSuchSession,
    /// A session by that name exists.
    NameTaken,
    /// Another connection holds the session's lease.
    SessionBusy {
        /// Pid of the lease holder, where known.
        holder_pid: Option<u32>,
    },
    /// The requesting uid may not do this.
    PermissionDenied,
    /// Wrong passphrase, or an attempt not checked because it came too soon after a wrong
    /// one; no attempt is checked before `retry_after_ms` passed.
    BadPassphrase {
        /// Milliseconds until the next attempt is considered.
        retry_after_ms: u64,
        /// The attempt was refused without checking its passphrase (it came too soon), so
        /// it may be sent again after `retry_after_ms`; `false` (and absent on the wire,
        /// as from daemons before this field): the passphrase was checked and is wrong.
        /// Omitted from the wire when `false`.
        unchecked: bool,
    },
    /// The new passphrase is unacceptable (e.g. empty).
    WeakPassphrase,
    /// The request is malformed or names something invalid.
    InvalidRequest,
    /// A frame above the size limit; the connection is closed.
    FrameTooLarge {
        /// The limit in bytes.
        limit: u32,
    },
    /// Protocol major versions differ; the connection is closed.
    ProtocolMismatch {
        /// The daemon's major version.
        server_major: u16,
    },
    /// A record failed authentication: tampered with or damaged.
    Corrupt,
    /// The storage failed (disk full, read-only, I/O).
    Storage,
    /// The request is known but not supported here.
    Unsupported,
    /// The daemon is shutting down.
    ShuttingDown,
    /// A bug or an unexpected condition in the daemon.
    Internal,
    /// A code of a later minor version, by its wire name; its fields, if any, are not kept.
    /// Encodes as the bare name, so it round-trips a code without fields unchanged.
    Other(String),
}

impl ErrorCode {
    /// The code's wire name (`locked`, `session_busy`, …; for [`ErrorCode::Other`], the
    /// name it came with).
    pub fn name(&self) -> &str {
        match self {
            ErrorCode::Locked => "locked",
            ErrorCode::Uninitialized => "uninitialized",
            ErrorCode::AlreadyInitialized => "already_initialized",
            ErrorCode::NoSuchSession => "no_such_session",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::SessionBusy { .. } => "session_busy",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::BadPassphrase { .. } => "bad_passphrase",
            ErrorCode::WeakPassphrase => "weak_passphrase",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::FrameTooLarge { .. } => "frame_too_large",
            ErrorCode::ProtocolMismatch { .. } => "protocol_mismatch",
            ErrorCode::Corrupt => "corrupt",
            ErrorCode::Storage => "storage",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::Other(name) => name,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}
