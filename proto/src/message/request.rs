//! What a client can ask: [`Request`] and its [`PeerQuery`] (split from `message.rs` along
//! this seam to keep files small; the types are `crate::message`'s).

use serde::{Deserialize, Serialize};

use super::{KdfSpec, Passphrase};
// For the links of the docs below, which name the answers and the constants they go with.
#[cfg(doc)]
use super::{PEER_PAGE_MAX, PROTOCOL_MAJOR, PROTOCOL_MINOR, Response};
use crate::backup::Blob;
use crate::model::{
    DcOption, PeerBatch, PeerKey, SentFile, SessionData, SessionExtras, UpdateStateChange,
};

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
        /// Peers to merge in (written as arrays for a daemon of minor 8 or later).
        peers: PeerBatch,
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
