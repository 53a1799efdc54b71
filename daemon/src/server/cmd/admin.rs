//! Admin requests addressed by session name: list, rename, delete, grant/revoke, import,
//! export; disconnect. Revoke, delete and a replacing import end the handles they take away
//! at once (see [`crate::server::handles`]); disconnect ends whole connections.

use session_vault_proto::message::{ErrorCode, Response, SessionListing, WireError};
use session_vault_proto::model::{SessionAcl, SessionData};

use super::open::allowed;
use crate::server::context::Conn;
use crate::server::errors::wire_error;
use crate::server::handles::Ended;
use crate::vault::IfExists;

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
    tracing::info!(uid = conn.peer.uid, old = %old.escape_debug(), new = %new.escape_debug(), "session renamed");
    Ok(Response::Ok)
}

/// `delete_session`; refused while a connection holds the session's lease, unless `force`.
/// Every handle still open on the session is ended (with its lease): the next request on it
/// gets `no_such_session` saying the session was deleted.
pub async fn delete(conn: &Conn, name: String, force: bool) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let sid = d.vault.open_session(&name).await?;
    if !force {
        if let Some(holder_pid) = d.leases.holder(sid) {
            return Err(wire_error(
                ErrorCode::SessionBusy { holder_pid },
                format!(
                    "session {name:?} is open by {}; stop that process first, or delete with \
                     force to end its handle",
                    holder_pid.map_or("another client".to_owned(), |p| format!("pid {p}"))
                ),
            ));
        }
    }
    d.vault.delete_session(&name).await?;
    let ended = d
        .handles
        .end_session(sid, Ended::Deleted, &d.leases, |_| false);
    d.sessions_changed().await;
    tracing::info!(uid = conn.peer.uid, name = %name.escape_debug(), force, ended, "session deleted");
    Ok(Response::Ok)
}

/// What `grant` and `revoke` do to a uid's or gid's access to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `grant`: add it to the session's ACL.
    Grant,
    /// `revoke`: take it out, and end the handles of connections no longer allowed.
    Revoke,
}

/// `grant` and `revoke`: exactly one of `uid`, `gid`.
pub async fn set_access(
    conn: &Conn,
    name: String,
    uid: Option<u32>,
    gid: Option<u32>,
    access: Access,
) -> Result<Response, WireError> {
    if uid.is_some() == gid.is_some() {
        return Err(wire_error(
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
    if access == Access::Grant {
        list.push(id);
    }
    d.vault.set_acl(sid, acl.clone()).await?;
    // A revoke takes effect at once: handles of connections no longer allowed end now.
    let ended = match access {
        Access::Grant => 0,
        Access::Revoke => d
            .handles
            .end_session(sid, Ended::Revoked, &d.leases, |peer| {
                d.config.admin_uids.contains(&peer.uid) || allowed(peer, &acl)
            }),
    };
    if ended > 0 {
        // What the ended handles sent before is stored before the answer; nothing after (a
        // batch in slices looks its handle up before each).
        d.vault.settle().await?;
    }
    tracing::info!(uid = conn.peer.uid, name = %name.escape_debug(), ?uid, ?gid, ?access, ended, "session access changed");
    Ok(Response::Ok)
}

/// `import_session`: all or nothing, durable. Replacing a session whose lease is held is
/// refused unless `force`; the replaced session's handles are ended either way.
pub async fn import(
    conn: &Conn,
    name: String,
    data: SessionData,
    replace: bool,
    owner_uid: Option<u32>,
    force: bool,
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let mut replaced = None;
    if replace {
        if let Ok(sid) = d.vault.open_session(&name).await {
            if let (false, Some(holder_pid)) = (force, d.leases.holder(sid)) {
                return Err(wire_error(
                    ErrorCode::SessionBusy { holder_pid },
                    format!(
                        "session {name:?} is open; it cannot be replaced now (or replace with \
                         force to end its handle)"
                    ),
                ));
            }
            replaced = Some(sid);
        }
    }
    let acl = SessionAcl {
        owner_uid: Some(owner_uid.unwrap_or(conn.peer.uid)),
        ..SessionAcl::default()
    };
    let if_exists = if replace {
        IfExists::Replace
    } else {
        IfExists::Refuse
    };
    let sid = d.vault.import(&name, data, if_exists, acl).await?;
    let ended = match replaced {
        Some(old) if old != sid => d
            .handles
            .end_session(old, Ended::Replaced, &d.leases, |_| false),
        _ => 0,
    };
    d.sessions_changed().await;
    tracing::info!(uid = conn.peer.uid, name = %name.escape_debug(), force, ended, "session imported");
    Ok(Response::Ok)
}

/// `export_session`.
pub async fn export(conn: &Conn, name: String) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let sid = d.vault.open_session(&name).await?;
    let data = d.vault.export(sid).await?;
    tracing::info!(uid = conn.peer.uid, name = %name.escape_debug(), "session exported");
    Ok(Response::SessionData(data))
}

/// `disconnect`: ends the connections holding a handle on session `session` and/or of
/// process `pid` (every target given must match), never the requesting one. Their handles
/// end first, leases with them, so that the session is free when this is answered; then
/// each connection is told to stop reading and close (see [`crate::server::clients`]).
pub async fn disconnect(
    conn: &Conn,
    session: Option<String>,
    pid: Option<u32>,
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let mut targets: Vec<u64> = match (&session, pid) {
        (None, None) => {
            return Err(wire_error(
                ErrorCode::InvalidRequest,
                "give a session name, a pid, or both",
            ));
        }
        (Some(name), _) => {
            let sid = d.vault.open_session(name).await?;
            let mut holding = d.handles.holding(sid);
            if let Some(pid) = pid {
                let of_pid = d.clients.of_pid(pid);
                holding.retain(|c| of_pid.contains(c));
            }
            holding
        }
        (None, Some(pid)) => d.clients.of_pid(pid),
    };
    targets.retain(|&c| c != conn.id);
    targets.sort_unstable();
    targets.dedup();
    let mut ended_conns: u32 = 0;
    let mut ended_handles = 0;
    for target in targets {
        ended_handles += d
            .handles
            .end_connection(target, Ended::Disconnected, &d.leases);
        if d.clients.kick(target) {
            ended_conns += 1;
        }
    }
    if ended_handles > 0 {
        // As for a revoke: what they sent before is stored before the answer, nothing after.
        d.vault.settle().await?;
    }
    tracing::info!(
        uid = conn.peer.uid,
        session = %session.as_deref().unwrap_or("-").escape_debug(),
        ?pid,
        connections = ended_conns,
        handles = ended_handles,
        "clients disconnected"
    );
    Ok(Response::Disconnected {
        connections: ended_conns,
    })
}
