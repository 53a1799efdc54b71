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
    DcOption, Peer, PeerKey, SentFile, SessionData, SessionExtras, SessionSummary,
    UpdateStateChange, UpdatesState,
};
use crate::recovery::RecoveryKey;

/// Protocol major version: bumped by hand on any incompatible change. A client and a daemon
/// of different majors refuse each other in the handshake.
pub const PROTOCOL_MAJOR: u16 = 1;
/// Protocol minor version: bumped by hand when messages are added compatibly.
pub const PROTOCOL_MINOR: u16 = 7;

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

/// How to name a peer in [`Request::GetPeer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerQuery {
    /// By kind and bare id.
    Key(PeerKey),
    /// The logged-in user (grammers' `PeerId::self_user()`).
    SelfUser,
    /// By username, case-insensitively, with or without `@`.
    Username(String),
    /// By phone number (digits compared).
    Phone(String),
}

/// Everything a client can ask.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// First frame on every connection. → [`Response::Welcome`].
    Hello {
        /// Client's [`PROTOCOL_MAJOR`].
        protocol_major: u16,
        /// Client's [`PROTOCOL_MINOR`].
        protocol_minor: u16,
        /// Free text naming the client (e.g. `vaultctl 0.1.0`), for logs.
        client: String,
    },
    /// Daemon and vault state. → [`Response::Status`]. Anyone may ask.
    Status,

    // ---- admin requests (admin uids only) ----------------------------------------------
    /// Initialize an empty vault and leave it unlocked. → [`Response::Ok`].
    Init {
        /// The passphrase of keyslot 0.
        passphrase: Passphrase,
        /// KDF cost; the daemon's default (strong) when absent.
        kdf: Option<KdfSpec>,
    },
    /// Unlock. → [`Response::Ok`]; `BadPassphrase` with a retry delay when wrong.
    Unlock {
        /// The passphrase, or with `recovery` the recovery key's text.
        passphrase: Passphrase,
        /// `passphrase` is the recovery key (`crate::recovery`): only the recovery keyslot is
        /// tried. Absent on the wire means `false`. Minor 3.
        #[serde(default)]
        recovery: bool,
    },
    /// Flush and wipe the keys. → [`Response::Ok`].
    Lock,
    /// Rewrite the keyslot `old` opens for `new`. → [`Response::Ok`].
    ChangePassphrase {
        /// Current passphrase, or with `recovery` the recovery key's text.
        old: Passphrase,
        /// New passphrase.
        new: Passphrase,
        /// KDF cost of the new keyslot; the daemon's default when absent.
        kdf: Option<KdfSpec>,
        /// `old` is the recovery key: the passphrase keyslot (0) is rewritten for `new`, the
        /// recovery keyslot stays (the forgotten-passphrase case). Absent means `false`.
        /// Minor 3.
        #[serde(default)]
        recovery: bool,
    },
    /// Replace the vault's data-encryption key: every record re-sealed under a new random
    /// key, every keyslot replaced by one new keyslot 0 for `passphrase`, in one transaction.
    /// `passphrase` must open a current keyslot (throttled like `unlock`); the vault must be
    /// unlocked. → [`Response::Ok`]. Added in protocol minor 1.
    Rekey {
        /// The current passphrase, which the new keyslot is sealed for.
        passphrase: Passphrase,
        /// KDF cost of the new keyslot; the daemon's default when absent.
        #[serde(default)]
        kdf: Option<KdfSpec>,
    },
    /// Summaries of every session. → [`Response::Sessions`].
    ListSessions,
    /// Rename a session. → [`Response::Ok`].
    RenameSession {
        /// Current name.
        old: String,
        /// New name.
        new: String,
    },
    /// Delete a session and everything in it. → [`Response::Ok`].
    ///
    /// Refused with `SessionBusy` while a connection holds the session's lease, unless
    /// `force`: then every handle open on the session is ended first (its lease with it).
    DeleteSession {
        /// Name.
        name: String,
        /// End the handles and lease held on the session instead of refusing. Absent on the
        /// wire means `false` (clients before it was added).
        #[serde(default)]
        force: bool,
    },
    /// Allow a uid or gid to use a session. → [`Response::Ok`].
    Grant {
        /// Session name.
        name: String,
        /// Uid to allow.
        uid: Option<u32>,
        /// Gid to allow.
        gid: Option<u32>,
    },
    /// Withdraw a grant. → [`Response::Ok`].
    Revoke {
        /// Session name.
        name: String,
        /// Uid to remove.
        uid: Option<u32>,
        /// Gid to remove.
        gid: Option<u32>,
    },
    /// Store a whole session in one durable transaction. → [`Response::Ok`].
    ImportSession {
        /// Name to store it under.
        name: String,
        /// The session.
        data: SessionData,
        /// Replace an existing session of that name (else `NameTaken`).
        replace: bool,
        /// Owner uid; the requesting uid when absent.
        owner_uid: Option<u32>,
        /// With `replace`: end the handles and lease held on the session being replaced
        /// instead of refusing with `SessionBusy`. Absent on the wire means `false`.
        #[serde(default)]
        force: bool,
    },
    /// Everything a session holds. → [`Response::SessionData`].
    ExportSession {
        /// Name.
        name: String,
    },
    /// Take an online backup into a private file of the daemon's (locked or unlocked: the
    /// copy is ciphertext) and hold it for reading. → [`Response::Transfer`]. Minor 2.
    BackupBegin,
    /// Up to [`crate::backup::CHUNK_MAX`] bytes of backup `id` from `offset` (fewer at the
    /// end, none past it). → [`Response::Chunk`]. Minor 2.
    BackupChunk {
        /// From `backup_begin`.
        id: u64,
        /// Byte offset.
        offset: u64,
    },
    /// Announce a file to restore. → [`Response::Transfer`] (echoing it). Minor 2.
    RestoreBegin {
        /// Its length in bytes.
        size: u64,
        /// Its SHA-256.
        sha256: Blob,
    },
    /// The next bytes of restore `id`, in order. → [`Response::Ok`]. Minor 2.
    RestoreChunk {
        /// From `restore_begin`.
        id: u64,
        /// Byte offset: the bytes received so far.
        offset: u64,
        /// At most [`crate::backup::CHUNK_MAX`] bytes.
        data: Blob,
    },
    /// Check the restore file (size, hash, a vault, intact, every record authenticated with
    /// `passphrase`), then replace the vault with it; the vault must be locked or
    /// uninitialized and stays locked. → [`Response::Restored`]. Minor 2.
    RestoreCommit {
        /// From `restore_begin`.
        id: u64,
        /// The backup's passphrase (throttled like `unlock`), or with `recovery` its recovery
        /// key's text.
        passphrase: Passphrase,
        /// `passphrase` is the backup's recovery key: only its recovery keyslot is tried.
        /// Minor 4; absent means false.
        #[serde(default)]
        recovery: bool,
    },
    /// Ends a backup, restore, import or export transfer and deletes its file or buffer.
    /// → [`Response::Ok`]. Minor 2 (import and export: minor 4).
    TransferEnd {
        /// The transfer.
        id: u64,
    },
    /// Read and authenticate every record of the unlocked vault. → [`Response::Verified`].
    /// Minor 2.
    Verify,
    /// Copy the vault, as its sealed rows (no key involved), into the empty PostgreSQL
    /// database `url`, in one target transaction: every row is read back and compared with
    /// the source before it commits, so the target holds the whole vault or nothing. The
    /// vault must be locked (else `invalid_request`) and stays so; the daemon keeps running
    /// on its current store. A target that holds a vault is refused (`invalid_request`).
    /// → [`Response::Migrated`]. Minor 6.
    MigrateStore {
        /// The target's connection string (`postgres://user@host/db`), without a password
        /// (one in it is refused).
        url: String,
        /// The target database's password, if it asks for one (zeroized; never logged).
        password: Option<Passphrase>,
    },
    /// Announce a session import sent in chunks: `size` bytes of one MessagePack
    /// [`SessionData`] (as `import_session`'s `data`) with their SHA-256, and what
    /// `import_session` would take besides. Nothing is stored before `import_commit`.
    /// → [`Response::Transfer`] (echoing them). Minor 4.
    ImportBegin {
        /// Name of the session to create (or replace).
        name: String,
        /// Length in bytes of the encoded [`SessionData`].
        size: u64,
        /// Its SHA-256.
        sha256: Blob,
        /// Replace an existing session of that name.
        replace: bool,
        /// Owner uid; the requesting uid when absent.
        owner_uid: Option<u32>,
        /// With `replace`: end the handles and lease held on the session being replaced.
        #[serde(default)]
        force: bool,
    },
    /// The next bytes of import `id`, in order. → [`Response::Ok`]. Minor 4.
    ImportChunk {
        /// From `import_begin`.
        id: u64,
        /// Byte offset: the bytes sent so far.
        offset: u64,
        /// At most [`crate::backup::CHUNK_MAX`] bytes.
        data: Blob,
    },
    /// Check import `id` (whole, its SHA-256 as announced, a valid [`SessionData`]) and store
    /// the session in one durable transaction, as `import_session`; the transfer ends either
    /// way. → [`Response::Ok`]. Minor 4.
    ImportCommit {
        /// From `import_begin`.
        id: u64,
    },
    /// Export a session to be read in chunks: the daemon encodes its [`SessionData`] as one
    /// MessagePack value and holds it for this connection. → [`Response::Transfer`] (its size
    /// and SHA-256). Minor 4.
    ExportBegin {
        /// Name.
        name: String,
    },
    /// Up to [`crate::backup::CHUNK_MAX`] bytes of export `id` from `offset` (fewer at the
    /// end, none past it). → [`Response::Chunk`]. Minor 4.
    ExportChunk {
        /// From `export_begin`.
        id: u64,
        /// Byte offset.
        offset: u64,
    },
    /// End the connections of clients: those holding a handle on session `session` and/or
    /// those of process `pid` (a connection must match every target given; at least one is
    /// required). Their handles end at once (their leases are given back before the answer)
    /// and the daemon closes the connections. → [`Response::Disconnected`]. Minor 3.
    Disconnect {
        /// A session name: connections with a handle on it.
        session: Option<String>,
        /// A peer pid: connections of that process.
        pid: Option<u32>,
    },
    /// Create the recovery keyslot, replacing any earlier one, for a new random recovery key;
    /// the vault must be unlocked. → [`Response::RecoveryKey`], the only time the key is
    /// shown. Minor 3.
    AddRecoveryKey,
    /// Delete the recovery keyslot. → [`Response::Ok`]; `InvalidRequest` when there is none.
    /// Minor 3.
    RemoveRecoveryKey,
    /// Read a page of the audit log, verifying its chain as it goes: up to `limit` entries
    /// after entry `after_seq`, of which those passing the filters are returned; the vault
    /// must be unlocked. → [`Response::AuditPage`]. Minor 4.
    Audit {
        /// Start after this entry (0: from the beginning).
        after_seq: u64,
        /// Read at most this many entries (the daemon caps it at 1000; 0 means 1000).
        limit: u32,
        /// Only entries at or after this Unix second.
        since: Option<i64>,
        /// Only entries naming this session.
        session: Option<String>,
    },

    // ---- session requests (owner, granted uids/gids, or admins) -------------------------
    /// Open a session on this connection. → [`Response::Opened`].
    ///
    /// With `exclusive`, the connection holds the session's lease until it closes the
    /// session or disconnects; another exclusive open gets `SessionBusy`.
    OpenSession {
        /// Name.
        name: String,
        /// Take the lease.
        exclusive: bool,
        /// Create the session (owned by the requesting uid) if it does not exist. A name
        /// starting with `~/` is the caller's own namespace (`<uid>/`); a uid that is not an
        /// admin may create sessions there only. With it, an existing session opens only for
        /// its owner or a granted uid/gid: "my session", never someone else's.
        create_if_missing: bool,
    },
    /// Close a handle (and free its lease). → [`Response::Ok`].
    CloseSession {
        /// Handle from `Opened`.
        handle: u32,
    },
    /// → [`Response::HomeDc`].
    GetHomeDc {
        /// Session handle.
        handle: u32,
    },
    /// Durable. → [`Response::Ok`].
    SetHomeDc {
        /// Session handle.
        handle: u32,
        /// New home DC.
        dc_id: i32,
    },
    /// → [`Response::DcOptions`].
    GetDcOptions {
        /// Session handle.
        handle: u32,
    },
    /// Durable (auth keys live here). → [`Response::Ok`]; `invalid_request` for a new DC id
    /// once the session keeps 64 DC options.
    SetDcOption {
        /// Session handle.
        handle: u32,
        /// The option.
        option: DcOption,
    },
    /// → [`Response::Peer`].
    GetPeer {
        /// Session handle.
        handle: u32,
        /// Which peer.
        query: PeerQuery,
    },
    /// A page of the session's cached peers, most recently added first (a peer re-cached
    /// keeps its place), for a client's warm start: up to `limit` peers (the daemon caps it
    /// at [`PEER_PAGE_MAX`]; 0 means that many) older than cursor `before` (absent: from the
    /// newest). Only for a handle holding the session's lease (else `permission_denied`).
    /// → [`Response::PeerPage`]. Minor 5.
    ListPeers {
        /// Session handle.
        handle: u32,
        /// The `next` cursor of the previous page; absent for the first page.
        before: Option<i64>,
        /// Most peers to return.
        limit: u32,
    },
    /// Cache class; merges like grammers' `extend_info`. → [`Response::Ok`].
    CachePeers {
        /// Session handle.
        handle: u32,
        /// Peers to merge in.
        peers: Vec<Peer>,
    },
    /// → [`Response::UpdatesState`].
    GetUpdatesState {
        /// Session handle.
        handle: u32,
    },
    /// Cache class. → [`Response::Ok`].
    SetUpdateState {
        /// Session handle.
        handle: u32,
        /// The change.
        change: UpdateStateChange,
    },
    /// → [`Response::Extras`].
    GetExtras {
        /// Session handle.
        handle: u32,
    },
    /// Durable. → [`Response::Ok`].
    SetExtras {
        /// Session handle.
        handle: u32,
        /// New extras.
        extras: SessionExtras,
    },
    /// → [`Response::SentFile`].
    GetSentFile {
        /// Session handle.
        handle: u32,
        /// MD5 of the file.
        md5_digest: Vec<u8>,
        /// Size in bytes.
        file_size: i64,
        /// Telethon's type code.
        file_type: i32,
    },
    /// Cache class. → [`Response::Ok`].
    PutSentFile {
        /// Session handle.
        handle: u32,
        /// The entry.
        file: SentFile,
    },
    /// Everything the open session holds. → [`Response::SessionData`].
    Export {
        /// Session handle.
        handle: u32,
        /// Everything but the peers (`peers` empty): a lease holder then reads them with
        /// [`Request::ListPeers`], in pages of bounded size, instead of in one frame as big as
        /// the session. Absent on the wire means `false`. Minor 7.
        #[serde(default)]
        without_peers: bool,
    },
    /// Replace everything the open session holds, in one durable transaction.
    /// → [`Response::Ok`].
    Import {
        /// Session handle.
        handle: u32,
        /// The new contents.
        data: SessionData,
    },
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
