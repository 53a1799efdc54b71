//! Who may send each request: one table ([`role`]), checked once ([`admit`]) before any
//! handler runs. The `match` has no catch-all arm, so a new kind of request does not compile
//! until it is given a role.

use session_vault_proto::message::{ErrorCode, Request, WireError};

use crate::server::context::Conn;
use crate::server::errors::wire_error;

/// Who may send a request (`PROTOCOL.md` §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Anyone who can connect.
    Anyone,
    /// A uid the named session's ACL admits (owner, granted uid or gid), or an admin; the
    /// handler decides, since it depends on the session (see [`super::open`]).
    SessionAcl,
    /// The connection that opened the handle the request names; the handler's handle lookup
    /// decides (see [`super::data::open_handle`]).
    HandleHolder,
    /// Admin uids only. The string names the request in the refusal.
    Admin(&'static str),
}

/// The [`Role`] of `request`.
pub fn role(request: &Request) -> Role {
    use Request as R;
    match request {
        R::Hello { .. } | R::Status => Role::Anyone,

        R::Init { .. } => Role::Admin("init"),
        R::Unlock { .. } => Role::Admin("unlock"),
        R::Lock => Role::Admin("lock"),
        R::ChangePassphrase { .. } => Role::Admin("passphrase change"),
        R::Rekey { .. } => Role::Admin("rekey"),
        R::ListSessions => Role::Admin("list"),
        R::RenameSession { .. } => Role::Admin("rename"),
        R::DeleteSession { .. } => Role::Admin("delete"),
        R::Grant { .. } => Role::Admin("grant"),
        R::Revoke { .. } => Role::Admin("revoke"),
        R::ImportSession { .. } => Role::Admin("import"),
        R::ExportSession { .. } => Role::Admin("export"),

        R::OpenSession { .. } => Role::SessionAcl,

        R::CloseSession { .. }
        | R::GetHomeDc { .. }
        | R::SetHomeDc { .. }
        | R::GetDcOptions { .. }
        | R::SetDcOption { .. }
        | R::GetPeer { .. }
        | R::CachePeers { .. }
        | R::GetUpdatesState { .. }
        | R::SetUpdateState { .. }
        | R::GetExtras { .. }
        | R::SetExtras { .. }
        | R::GetSentFile { .. }
        | R::PutSentFile { .. }
        | R::Export { .. }
        | R::Import { .. } => Role::HandleHolder,
    }
}

/// Whether `conn` may send a request of `role`: the check the table makes before dispatch.
/// Roles the handler decides pass here.
pub fn admit(conn: &Conn, role: Role) -> Result<(), WireError> {
    match role {
        Role::Admin(what) if !conn.is_admin() => Err(wire_error(
            ErrorCode::PermissionDenied,
            format!(
                "{what} is an admin request; uid {} is not an admin of this daemon",
                conn.peer.uid
            ),
        )),
        Role::Admin(_) | Role::Anyone | Role::SessionAcl | Role::HandleHolder => Ok(()),
    }
}
