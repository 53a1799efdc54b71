//! Reads and writes on an open session handle: home DC, DC options, peers, update state,
//! extras, sent files, whole-session import/export.

use session_vault_proto::message::{ErrorCode, PeerQuery, Response, WireError};
use session_vault_proto::model::{
    DcOption, Peer, SentFile, SessionData, SessionExtras, UpdateStateChange,
};

use std::sync::Arc;

use crate::server::context::Conn;
use crate::server::errors::wire_error;
use crate::server::handles::{HandleEntry, HandleId, Lookup};
use crate::vault::SessionId;

/// The open handle `handle` of this connection; `no_such_session` (saying why, when the
/// daemon ended it: revoked, deleted, replaced) otherwise.
pub fn open_handle(conn: &Conn, handle: HandleId) -> Result<HandleEntry, WireError> {
    match conn.daemon.handles.get(conn.id, handle) {
        Lookup::Open(h) => Ok(h),
        other => Err(not_open(handle, other)),
    }
}

/// The `no_such_session` answer for a handle that is not open.
pub fn not_open(handle: HandleId, lookup: Lookup) -> WireError {
    let message = match lookup {
        Lookup::Ended(why) => format!(
            "session handle {handle} was ended by the daemon: {}; close it",
            why.reason()
        ),
        _ => format!("no open session handle {handle}"),
    };
    wire_error(ErrorCode::NoSuchSession, message)
}

fn sid(conn: &Conn, handle: HandleId) -> Result<SessionId, WireError> {
    open_handle(conn, handle).map(|h| h.sid)
}

/// [`sid`] for a write: a shared handle may not write a session another connection holds
/// the lease of (`session_busy`), since the holder is promised it is the only writer (its
/// client keeps what it read and wrote, and answers from it).
fn writable(conn: &Conn, handle: HandleId) -> Result<SessionId, WireError> {
    let h = open_handle(conn, handle)?;
    if !h.exclusive {
        if let Some(holder_pid) = conn.daemon.leases.holder_other_than(h.sid, conn.id) {
            return Err(wire_error(
                ErrorCode::SessionBusy { holder_pid },
                format!(
                    "session handle {handle} is shared and the session is held exclusively by {}: \
                     only the holder writes it",
                    holder_pid.map_or("another client".to_owned(), |p| format!("pid {p}"))
                ),
            ));
        }
    }
    Ok(h.sid)
}

/// [`writable`] for a write that grows the session (a new peer or sent file): refused for a
/// non-admin client while the vault's disk is under its reserve ([`under_reserve`]).
fn growable(conn: &Conn, handle: HandleId) -> Result<SessionId, WireError> {
    let sid = writable(conn, handle)?;
    match under_reserve(conn) {
        Some(refusal) => Err(refusal),
        None => Ok(sid),
    }
}

/// For a non-admin client while the vault's disk is under its free-space reserve (see
/// [`crate::server::disk`]): the `storage` error its writes that grow a session get.
fn under_reserve(conn: &Conn) -> Option<WireError> {
    if conn.is_admin() {
        return None;
    }
    let available = conn.daemon.disk.short()?;
    Some(wire_error(
        ErrorCode::Storage,
        format!(
            "the vault's disk has {} MiB free, under its reserve of {} MiB \
             (min_free_disk_mib): writes of non-admin clients that grow a session are refused \
             until an admin frees space; auth keys of known DCs, the home DC and update states \
             of known channels still go through",
            available >> 20,
            conn.daemon.disk.min_free() >> 20
        ),
    ))
}

/// `get_home_dc`.
pub async fn get_home_dc(conn: &Conn, handle: HandleId) -> Result<Response, WireError> {
    let s = sid(conn, handle)?;
    Ok(Response::HomeDc(
        conn.daemon.vault.session_record(s).await?.home_dc,
    ))
}

/// `set_home_dc` (durable).
pub async fn set_home_dc(conn: &Conn, handle: HandleId, dc: i32) -> Result<Response, WireError> {
    conn.daemon
        .vault
        .set_home_dc(writable(conn, handle)?, dc)
        .await?;
    Ok(Response::Ok)
}

/// `get_dc_options`.
pub async fn get_dc_options(conn: &Conn, handle: HandleId) -> Result<Response, WireError> {
    Ok(Response::DcOptions(
        conn.daemon.vault.dc_options(sid(conn, handle)?).await?,
    ))
}

/// `set_dc_option` (durable).
pub async fn set_dc_option(
    conn: &Conn,
    handle: HandleId,
    option: DcOption,
) -> Result<Response, WireError> {
    let sid = writable(conn, handle)?;
    // Under the disk reserve a new auth key of a known DC still goes through, a new DC id
    // (any `i32`, each a row with its 256-byte key) does not.
    if let Some(refusal) = under_reserve(conn) {
        let known = conn.daemon.vault.dc_options(sid).await?;
        if !known.iter().any(|o| o.id == option.id) {
            return Err(refusal);
        }
    }
    conn.daemon.vault.set_dc_option(sid, option).await?;
    Ok(Response::Ok)
}

/// `get_peer`.
pub async fn get_peer(
    conn: &Conn,
    handle: HandleId,
    query: PeerQuery,
) -> Result<Response, WireError> {
    let s = sid(conn, handle)?;
    let v = &conn.daemon.vault;
    let peer = match query {
        PeerQuery::Key(key) => v.peer(s, key).await?,
        PeerQuery::SelfUser => v.self_peer(s).await?,
        PeerQuery::Username(u) => v.peer_by_username(s, &u).await?,
        PeerQuery::Phone(p) => v.peer_by_phone(s, &p).await?,
    };
    Ok(Response::Peer(peer))
}

/// `list_peers`: a page of the session's peers for a warm start; only for the lease holder
/// (whose cache may then trust what it loads: no other writer exists).
pub async fn list_peers(
    conn: &Conn,
    handle: HandleId,
    before: Option<i64>,
    limit: u32,
) -> Result<Response, WireError> {
    let h = open_handle(conn, handle)?;
    if !h.exclusive {
        return Err(wire_error(
            ErrorCode::PermissionDenied,
            format!("list_peers needs an exclusive handle; handle {handle} is shared"),
        ));
    }
    let (peers, next) = conn.daemon.vault.peers_page(h.sid, before, limit).await?;
    Ok(Response::PeerPage { peers, next })
}

/// Peers applied per storage job. The storage thread serves jobs first come, first served,
/// and one job of a whole frame of peers (8,000 of them) holds it for over a second in a
/// debug build: a larger batch is applied in slices of this many, one job each, so that
/// other uids' requests get in between. Each slice merges like the whole batch would, in
/// order; a batch cut short by a storage error has its first slices applied, which a retry
/// (the batch again) merges harmlessly.
pub const PEERS_PER_JOB: usize = 256;

/// `cache_peers` (cache class).
pub async fn cache_peers(
    conn: &Conn,
    handle: HandleId,
    peers: Vec<Peer>,
) -> Result<Response, WireError> {
    growable(conn, handle)?;
    let mut rest = peers;
    // At least one job, even for no peers: it checks the session as before. Each slice is
    // applied only if the handle is still open when the storage thread comes to it, so that
    // a revoke or disconnect (which waits for what was queued before it: `Vault::settle`)
    // stops the batch there: nothing of it lands after the act is answered (the handle's
    // lease may be someone else's by then).
    loop {
        let sid = writable(conn, handle)?;
        let tail = rest.split_off(rest.len().min(PEERS_PER_JOB));
        let slice = std::mem::replace(&mut rest, tail);
        if !conn
            .daemon
            .vault
            .cache_peers_while(sid, slice, still_open(conn, handle))
            .await?
        {
            return Err(ended(conn, handle));
        }
        if rest.is_empty() {
            return Ok(Response::Ok);
        }
    }
}

/// `get_updates_state`.
pub async fn get_updates_state(conn: &Conn, handle: HandleId) -> Result<Response, WireError> {
    Ok(Response::UpdatesState(
        conn.daemon.vault.updates_state(sid(conn, handle)?).await?,
    ))
}

/// `set_update_state` (cache class).
pub async fn set_update_state(
    conn: &Conn,
    handle: HandleId,
    change: UpdateStateChange,
) -> Result<Response, WireError> {
    let sid = writable(conn, handle)?;
    // Under the disk reserve only a change that adds channels is refused: a bot must still
    // store its update state (grammers stops its updates when it cannot).
    if let Some(refusal) = under_reserve(conn) {
        if conn
            .daemon
            .vault
            .update_state_grows(sid, change.clone())
            .await?
        {
            return Err(refusal);
        }
    }
    // A whole state over many channels is several jobs: each checks the handle is still open.
    if !conn
        .daemon
        .vault
        .set_update_state_while(sid, change, still_open(conn, handle))
        .await?
    {
        return Err(ended(conn, handle));
    }
    Ok(Response::Ok)
}

/// The answer to a multi-job write stopped because `handle` ended meanwhile.
fn ended(conn: &Conn, handle: HandleId) -> WireError {
    not_open(handle, conn.daemon.handles.get(conn.id, handle))
}

/// Whether `handle` of `conn` is still open, asked as each job of a multi-job write is
/// applied, in order with the act that may end it (see `Vault::cache_peers_while`).
fn still_open(conn: &Conn, handle: HandleId) -> crate::vault::Still {
    let daemon = Arc::clone(&conn.daemon);
    let id = conn.id;
    Arc::new(move || matches!(daemon.handles.get(id, handle), Lookup::Open(_)))
}

/// `get_extras`.
pub async fn get_extras(conn: &Conn, handle: HandleId) -> Result<Response, WireError> {
    let s = sid(conn, handle)?;
    Ok(Response::Extras(
        conn.daemon.vault.session_record(s).await?.extras,
    ))
}

/// `set_extras` (durable).
pub async fn set_extras(
    conn: &Conn,
    handle: HandleId,
    extras: SessionExtras,
) -> Result<Response, WireError> {
    conn.daemon
        .vault
        .set_extras(writable(conn, handle)?, extras)
        .await?;
    Ok(Response::Ok)
}

/// `get_sent_file`.
pub async fn get_sent_file(
    conn: &Conn,
    handle: HandleId,
    md5: Vec<u8>,
    size: i64,
    file_type: i32,
) -> Result<Response, WireError> {
    let s = sid(conn, handle)?;
    Ok(Response::SentFile(
        conn.daemon.vault.sent_file(s, md5, size, file_type).await?,
    ))
}

/// `put_sent_file` (cache class).
pub async fn put_sent_file(
    conn: &Conn,
    handle: HandleId,
    file: SentFile,
) -> Result<Response, WireError> {
    conn.daemon
        .vault
        .put_sent_file(growable(conn, handle)?, file)
        .await?;
    Ok(Response::Ok)
}

/// The most rows a whole-session `export` of this client may carry: an admin's any, any
/// other's [`crate::vault::EXPORT_ROWS_MAX`] (any uid may fill a session of its own, and an
/// export is decrypted whole into one answer).
fn export_bound(conn: &Conn) -> u64 {
    if conn.is_admin() {
        u64::MAX
    } else {
        crate::vault::EXPORT_ROWS_MAX
    }
}

/// `export` of the open session.
pub async fn export(conn: &Conn, handle: HandleId) -> Result<Response, WireError> {
    Ok(Response::SessionData(
        conn.daemon
            .vault
            .export_at_most(sid(conn, handle)?, export_bound(conn))
            .await?,
    ))
}

/// `export` with `without_peers`: everything but the peers (read with `list_peers`).
pub async fn export_without_peers(conn: &Conn, handle: HandleId) -> Result<Response, WireError> {
    Ok(Response::SessionData(
        conn.daemon
            .vault
            .export_without_peers(sid(conn, handle)?, export_bound(conn))
            .await?,
    ))
}

/// `import` into the open session: replaces everything it holds, in one durable
/// transaction, keeping its name, owner and grants. Needs the session's lease.
pub async fn import(
    conn: &Conn,
    handle: HandleId,
    data: SessionData,
) -> Result<Response, WireError> {
    let h = open_handle(conn, handle)?;
    if !h.exclusive {
        return Err(wire_error(
            ErrorCode::InvalidRequest,
            "import replaces the whole session: open it exclusively first",
        ));
    }
    // Several jobs (the old rows go in slices first): each checks the handle is still open.
    if !conn
        .daemon
        .vault
        .replace_contents_while(h.sid, data, still_open(conn, handle))
        .await?
    {
        return Err(ended(conn, handle));
    }
    Ok(Response::Ok)
}
