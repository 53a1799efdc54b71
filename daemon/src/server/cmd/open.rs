//! `open_session` and `close_session`: authorization and leases.
//!
//! A session may be opened by an admin, its owner uid, or a uid/gid it was granted to (a
//! granted gid admits the peer's primary gid and, on Linux, its supplementary groups, as the
//! kernel reported them with the connection). Access is checked at open; a handle stays
//! valid for the life of its connection.

use session_vault_proto::message::{ErrorCode, Response, WireError};
use session_vault_proto::model::SessionAcl;

use crate::server::conn::{Conn, Handle};
use crate::server::errors::wire;
use crate::vault::VaultError;

fn allowed(conn: &Conn, acl: &SessionAcl) -> bool {
    conn.is_admin()
        || acl.owner_uid == Some(conn.peer.uid)
        || acl.uids.contains(&conn.peer.uid)
        || acl.gids.iter().any(|&g| conn.peer.in_group(g))
}

/// `open_session`.
pub async fn open(
    conn: &Conn,
    name: String,
    exclusive: bool,
    create_if_missing: bool,
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let (sid, created) = match d.vault.open_session(&name).await {
        Ok(sid) => (sid, false),
        Err(VaultError::NoSuchSession { .. }) if create_if_missing => {
            let acl = SessionAcl {
                owner_uid: Some(conn.peer.uid),
                ..SessionAcl::default()
            };
            match d.vault.create_session(&name, acl).await {
                Ok(sid) => {
                    d.sessions_changed().await;
                    (sid, true)
                }
                // Another client created it between our lookup and our create.
                Err(VaultError::NameTaken { .. }) => (d.vault.open_session(&name).await?, false),
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let record = d.vault.session_record(sid).await?;
    if !allowed(conn, &record.acl) {
        return Err(wire(
            ErrorCode::PermissionDenied,
            format!("uid {} may not use session {name:?}", conn.peer.uid),
        ));
    }
    if exclusive {
        d.leases
            .acquire(sid, conn.id, conn.peer.pid)
            .map_err(|busy| {
                wire(
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
    let dc_options = match d.vault.dc_options(sid).await {
        Ok(v) => v,
        Err(e) => {
            if exclusive {
                d.leases.release(sid, conn.id);
            }
            return Err(e.into());
        }
    };
    let handle = conn.add_handle(Handle { sid, exclusive });
    tracing::debug!(conn = conn.id, name = %name, exclusive, created, "session opened");
    Ok(Response::Opened {
        handle,
        created,
        home_dc: record.home_dc,
        dc_options,
    })
}

/// `close_session`: forgets the handle and gives back its lease.
pub fn close(conn: &Conn, handle: u32) -> Result<Response, WireError> {
    let h = conn.remove_handle(handle).ok_or_else(|| {
        wire(
            ErrorCode::NoSuchSession,
            format!("no open session handle {handle}"),
        )
    })?;
    if h.exclusive {
        conn.daemon.leases.release(h.sid, conn.id);
    }
    Ok(Response::Ok)
}
