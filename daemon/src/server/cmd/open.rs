//! `open_session` and `close_session`: authorization, namespaces and leases.
//!
//! A session may be opened by an admin, its owner uid, or a uid/gid it was granted to (a
//! granted gid admits the peer's primary gid and, on Linux, its supplementary groups, as the
//! kernel reported them with the connection). A handle stays valid until it is closed,
//! its connection ends, or an admin act ends it (revoke, delete, replace: see
//! [`crate::server::handles`]).
//!
//! Creating (`create_if_missing` on a missing name) is open to admins for any name, and to
//! any other uid `U` only in its namespace, names starting with `U/`, up to
//! `max_sessions_per_uid` of them. `~/` at the start of a name stands for the caller's
//! namespace, for every caller. So a uid can neither squat a name an admin's bot will create,
//! nor fill the vault.
//!
//! `create_if_missing` means "my session": an existing session opens with it only for its
//! owner, a granted uid or gid, or (for admins) when it is owned by an admin uid. An admin bot
//! therefore never writes its auth key into a session some other uid prepared for it.
//!
//! A uid that is not an admin gets one answer, byte for byte, whether the name does not exist,
//! exists but is not its own, or is outside its namespace: it cannot probe for names. Both
//! paths do the same kind of work (see [`crate::vault::engine::names`]).

use session_vault_proto::message::{ErrorCode, Response, WireError};
use session_vault_proto::model::SessionAcl;

use crate::server::context::Conn;
use crate::server::errors::wire_error;
use crate::server::handles::{HandleEntry, HandleId, Lookup};
use crate::server::transport::PeerInfo;
use crate::vault::EngineError;
use crate::vault::engine::names::{self, QuotaFull};

use super::data::not_open;

/// How often an open looks again when an admin act ended handles while it decided.
const OPEN_TRIES: usize = 8;

/// The most handles one connection may have (open, or ended and not yet closed). A bot
/// holds one; without a bound, a client opening its own session again and again grew the
/// daemon's handle table for the life of its connection. Opens pipelined on one connection
/// may pass it by as many as the connection has requests in flight.
pub const MAX_HANDLES_PER_CONNECTION: usize = 4096;

/// The most handles the connections of one non-admin uid may have together: without it, a
/// uid's 256 connections could hold a million handles (~370 bytes each) between them.
pub const MAX_HANDLES_PER_UID: usize = 16384;

/// Whether `peer` owns, or was granted, a session with `acl` (admins aside).
pub fn allowed(peer: &PeerInfo, acl: &SessionAcl) -> bool {
    acl.owner_uid == Some(peer.uid)
        || acl.uids.contains(&peer.uid)
        || acl.gids.iter().any(|&g| peer.in_group(g))
}

/// The one answer a non-admin gets for a name that is missing, not its own, or outside its
/// namespace.
fn unavailable(uid: u32, name: &str) -> WireError {
    let ns = names::namespace(uid);
    wire_error(
        ErrorCode::NoSuchSession,
        format!(
            "no session named {name:?} is available to uid {uid} (non-admin uids may create \
             sessions only under {ns:?} or \"~/\")"
        ),
    )
}

/// `open_session`.
pub async fn open(
    conn: &Conn,
    name: String,
    exclusive: bool,
    create_if_missing: bool,
) -> Result<Response, WireError> {
    let name = names::expand_home(&name, conn.peer.uid);
    if conn.daemon.handles.count(conn.id) >= MAX_HANDLES_PER_CONNECTION {
        return Err(wire_error(
            ErrorCode::PermissionDenied,
            format!(
                "this connection has {MAX_HANDLES_PER_CONNECTION} session handles, the most \
                 one connection may hold; close some (close_session) and try again"
            ),
        ));
    }
    if !conn.is_admin() && conn.daemon.handles.count_uid(conn.peer.uid) >= MAX_HANDLES_PER_UID {
        return Err(wire_error(
            ErrorCode::PermissionDenied,
            format!(
                "uid {} has {MAX_HANDLES_PER_UID} session handles on its connections, the most \
                 a non-admin uid may hold; close some (close_session) and try again",
                conn.peer.uid
            ),
        ));
    }
    for _ in 0..OPEN_TRIES {
        if let Some(opened) = try_open(conn, &name, exclusive, create_if_missing).await? {
            return Ok(opened);
        }
    }
    Err(wire_error(
        ErrorCode::SessionBusy { holder_pid: None },
        format!("session {name:?} kept changing while it was being opened (admin acts); try again"),
    ))
}

/// One attempt; `None` when it must look again (the session was created or its handles
/// ended meanwhile).
async fn try_open(
    conn: &Conn,
    name: &str,
    exclusive: bool,
    create_if_missing: bool,
) -> Result<Option<Response>, WireError> {
    let d = &conn.daemon;
    let (uid, admin) = (conn.peer.uid, conn.is_admin());
    // Read before the ACL: a revoke after this point makes `add` below refuse.
    let epoch = d.handles.epoch();
    let found = match d.vault.lookup_for_open(name).await {
        Ok(found) => found,
        // A damaged record must not tell a non-admin that the name exists.
        Err(e @ EngineError::Corrupt { .. }) if !admin => {
            tracing::error!(uid, error = %e, "session record unreadable while authorizing an open");
            return Err(unavailable(uid, name));
        }
        Err(e) => return Err(e.into()),
    };
    let (sid, home_dc, created) = match found {
        Some((sid, record)) => {
            let acl = &record.acl;
            if !allowed(&conn.peer, acl) {
                if !admin {
                    return Err(unavailable(uid, name));
                }
                let admin_owned = acl
                    .owner_uid
                    .is_some_and(|o| d.config.admin_uids.contains(&o));
                if create_if_missing && !admin_owned {
                    let owner = acl
                        .owner_uid
                        .map_or("no uid".to_owned(), |o| format!("uid {o}"));
                    return Err(wire_error(
                        ErrorCode::PermissionDenied,
                        format!(
                            "session {name:?} exists and belongs to {owner}, not to uid {uid}: \
                             create_if_missing opens only your own or granted sessions; open it \
                             without create_if_missing to use it as an admin"
                        ),
                    ));
                }
            }
            (sid, record.home_dc, false)
        }
        None if !create_if_missing => {
            return Err(if admin {
                EngineError::NoSuchSession { name: name.into() }.into()
            } else {
                unavailable(uid, name)
            });
        }
        None => {
            let quota = if admin {
                None
            } else {
                let ns = names::namespace(uid);
                match name.strip_prefix(&ns) {
                    // The rest must be a name of its own (no leading space, not empty).
                    Some(rest) if crate::vault::engine::validate_name(rest).is_ok() => {}
                    _ => return Err(unavailable(uid, name)),
                }
                Some((ns, d.config.max_sessions_per_uid))
            };
            let acl = SessionAcl {
                owner_uid: Some(uid),
                ..SessionAcl::default()
            };
            match d.vault.create_session_within(name, acl, quota).await {
                Ok(Ok(sid)) => {
                    d.sessions_changed().await;
                    tracing::info!(uid, name = %name.escape_debug(), "session created");
                    (sid, d.vault.session_record(sid).await?.home_dc, true)
                }
                Ok(Err(QuotaFull { count })) => {
                    let max = d.config.max_sessions_per_uid;
                    return Err(wire_error(
                        ErrorCode::PermissionDenied,
                        format!(
                            "uid {uid} has {count} sessions under \"{uid}/\", the most this daemon \
                             allows a non-admin uid (max_sessions_per_uid = {max}); an admin can \
                             delete some or raise the limit"
                        ),
                    ));
                }
                // Another client created it between our lookup and our create: decide again.
                Err(EngineError::NameTaken { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    };
    if exclusive {
        d.leases
            .acquire(sid, conn.id, conn.peer.pid)
            .map_err(|busy| {
                wire_error(
                    ErrorCode::SessionBusy {
                        holder_pid: busy.holder_pid,
                    },
                    format!(
                        "session {name:?} is in use by {}",
                        busy.holder_pid
                            .map_or("another client".to_owned(), |p| format!("pid {p}"))
                    ),
                )
            })?;
    }
    if exclusive && d.vault.is_postgres() {
        let taken =
            crate::server::host_leases::acquire(d, sid, name, conn.peer.pid, conn.peer.uid).await;
        if let Err(e) = taken {
            d.leases.release(sid, conn.id);
            return Err(e);
        }
    }
    let release = || {
        if exclusive {
            d.leases.release(sid, conn.id);
        }
    };
    // The session's peer look-ups stay cheap from the first (not fatal: the session's keys
    // are still served, and a damaged peers table answers each look-up as corrupt).
    if let Err(e) = d.vault.prepare_peers(sid).await {
        tracing::warn!(error = %e, "could not prepare the session's peer look-ups");
    }
    let dc_options = match d.vault.dc_options(sid).await {
        Ok(v) => v,
        Err(e) => {
            release();
            return Err(e.into());
        }
    };
    let Some(handle) = d.handles.add(
        conn.id,
        conn.peer.clone(),
        HandleEntry { sid, exclusive },
        epoch,
    ) else {
        release();
        return Ok(None);
    };
    tracing::debug!(conn = conn.id, name = %name.escape_debug(), exclusive, created, "session opened");
    Ok(Some(Response::Opened {
        handle: handle.0,
        created,
        home_dc,
        dc_options,
        name: Some(name.to_owned()),
    }))
}

/// `close_session`: forgets the handle and gives back its lease. Closing a handle the daemon
/// ended (revoke, delete, replace) is fine: it is forgotten.
pub fn close(conn: &Conn, handle: HandleId) -> Result<Response, WireError> {
    let d = &conn.daemon;
    match d.handles.close(conn.id, handle, &d.leases) {
        Lookup::Open(_) | Lookup::Ended(_) => Ok(Response::Ok),
        Lookup::Unknown => Err(not_open(handle, Lookup::Unknown)),
    }
}
