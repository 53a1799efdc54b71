//! Admin requests addressed by session name: list, rename, delete, grant/revoke, import,
//! export.

use session_vault_proto::message::{ErrorCode, Response, SessionListing, WireError};
use session_vault_proto::model::{SessionAcl, SessionData};

use crate::server::conn::Conn;
use crate::server::errors::wire;

/// `list_sessions`, with each session's lease holder.
pub async fn list(conn: &Conn) -> Result<Response, WireError> {
    let d = &conn.daemon;
    // One pass with ids: no lookup by name per session, which a concurrent delete would fail.
    let listed = d.vault.list_sessions_with_ids().await?;
    let out = listed
        .into_iter()
        .map(|(sid, summary)| SessionListing {
            lease_holder_pid: d.leases.holder(sid).flatten(),
            summary,
        })
        .collect();
    Ok(Response::Sessions(out))
}

/// `rename_session`. Open handles follow the session (they hold its id, not its name).
pub async fn rename(conn: &Conn, old: String, new: String) -> Result<Response, WireError> {
    conn.daemon.vault.rename_session(&old, &new).await?;
    tracing::info!(uid = conn.peer.uid, old = %old, new = %new, "session renamed");
    Ok(Response::Ok)
}

/// `delete_session`; refused while a connection holds the session's lease.
pub async fn delete(conn: &Conn, name: String) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let sid = d.vault.open_session(&name).await?;
    if let Some(holder_pid) = d.leases.holder(sid) {
        return Err(wire(
            ErrorCode::SessionBusy { holder_pid },
            format!(
                "session {name:?} is open by {}; stop that process first",
                holder_pid.map_or("another client".to_owned(), |p| format!("pid {p}"))
            ),
        ));
    }
    d.vault.delete_session(&name).await?;
    d.sessions_changed().await;
    tracing::info!(uid = conn.peer.uid, name = %name, "session deleted");
    Ok(Response::Ok)
}

/// `grant` (`allow = true`) and `revoke`: exactly one of `uid`, `gid`.
pub async fn grant(
    conn: &Conn,
    name: String,
    uid: Option<u32>,
    gid: Option<u32>,
    allow: bool,
) -> Result<Response, WireError> {
    if uid.is_some() == gid.is_some() {
        return Err(wire(
            ErrorCode::InvalidRequest,
            "give exactly one of uid and gid",
        ));
    }
    let d = &conn.daemon;
    let sid = d.vault.open_session(&name).await?;
    let mut acl = d.vault.session_record(sid).await?.acl;
    let (list, id) = match (uid, gid) {
        (Some(u), _) => (&mut acl.uids, u),
        (_, Some(g)) => (&mut acl.gids, g),
        _ => unreachable!("checked above: exactly one is set"),
    };
    list.retain(|&x| x != id);
    if allow {
        list.push(id);
    }
    d.vault.set_acl(sid, acl).await?;
    tracing::info!(uid = conn.peer.uid, name = %name, ?uid, ?gid, allow, "session access changed");
    Ok(Response::Ok)
}

/// `import_session`: all or nothing, durable.
pub async fn import(
    conn: &Conn,
    name: String,
    data: SessionData,
    replace: bool,
    owner_uid: Option<u32>,
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    if replace {
        if let Ok(sid) = d.vault.open_session(&name).await {
            if let Some(holder_pid) = d.leases.holder(sid) {
                return Err(wire(
                    ErrorCode::SessionBusy { holder_pid },
                    format!("session {name:?} is open; it cannot be replaced now"),
                ));
            }
        }
    }
    let acl = SessionAcl {
        owner_uid: Some(owner_uid.unwrap_or(conn.peer.uid)),
        ..SessionAcl::default()
    };
    d.vault.import(&name, data, replace, acl).await?;
    d.sessions_changed().await;
    tracing::info!(uid = conn.peer.uid, name = %name, "session imported");
    Ok(Response::Ok)
}

/// `export_session`.
pub async fn export(conn: &Conn, name: String) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let sid = d.vault.open_session(&name).await?;
    let data = d.vault.export(sid).await?;
    tracing::info!(uid = conn.peer.uid, name = %name, "session exported");
    Ok(Response::SessionData(data))
}
