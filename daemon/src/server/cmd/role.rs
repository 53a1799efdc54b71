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
        R::ImportBegin { .. } | R::ImportChunk { .. } | R::ImportCommit { .. } => {
            Role::Admin("import")
        }
        R::ExportBegin { .. } | R::ExportChunk { .. } => Role::Admin("export"),
        R::BackupBegin | R::BackupChunk { .. } => Role::Admin("backup"),
        R::RestoreBegin { .. } | R::RestoreChunk { .. } | R::RestoreCommit { .. } => {
            Role::Admin("restore")
        }
        R::TransferEnd { .. } => Role::Admin("backup"),
        R::Verify => Role::Admin("verify"),
        R::MigrateStore { .. } => Role::Admin("migrate-store"),
        R::Disconnect { .. } => Role::Admin("disconnect"),
        R::AddRecoveryKey | R::RemoveRecoveryKey => Role::Admin("recovery key"),
        R::Audit { .. } => Role::Admin("audit"),

        R::OpenSession { .. } => Role::SessionAcl,

        R::CloseSession { .. }
        | R::GetHomeDc { .. }
        | R::SetHomeDc { .. }
        | R::GetDcOptions { .. }
        | R::SetDcOption { .. }
        | R::GetPeer { .. }
        | R::ListPeers { .. }
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

/// One value of every request, kept complete by the proto crate's own test
/// (`the_samples_cover_every_variant`).
#[cfg(test)]
#[path = "../../../../proto/tests/proto/samples.rs"]
#[allow(dead_code)]
mod samples;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use session_vault_proto::message::{ErrorCode, Response};

    use super::samples::{requests, wire_name};
    use super::*;
    use crate::server::config::{Config, Overrides};
    use crate::server::transport::PeerInfo;
    use crate::server::{Daemon, cmd, datadir};

    /// The request names `PROTOCOL.md` lists in the §8 bullet that starts with `bullet`.
    fn protocol_lists(bullet: &str) -> BTreeSet<String> {
        let spec = include_str!("../../../../proto/PROTOCOL.md");
        let start = spec
            .find(&format!("- **{bullet}**"))
            .unwrap_or_else(|| panic!("PROTOCOL.md has no bullet {bullet:?}"));
        let rest = &spec[start..];
        let text = &rest[..rest[2..].find("\n- ").map_or(rest.len(), |e| e + 2)];
        // The request names are the backticked words before the bullet's first full stop.
        let text = &text[..text.find(". ").unwrap_or(text.len())];
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    fn names_with(pick: impl Fn(Role) -> bool) -> BTreeSet<String> {
        requests()
            .iter()
            .filter(|r| pick(role(r)))
            .map(wire_name)
            .collect()
    }

    #[test]
    fn the_role_table_agrees_with_the_protocol() {
        let admin = names_with(|r| matches!(r, Role::Admin(_)));
        assert_eq!(admin, protocol_lists("Admin requests"));
        assert_eq!(admin.len(), 29, "{admin:?}");
        let anyone = names_with(|r| r == Role::Anyone);
        assert_eq!(anyone, protocol_lists("Anyone who can connect"));
        assert_eq!(
            names_with(|r| r == Role::SessionAcl),
            ["open_session".to_owned()].into()
        );
    }

    /// Every kind of request gets its role's answer from `dispatch`: admin requests are
    /// refused to a non-admin before their handler runs, with the message clients see;
    /// no other request is refused as an admin request.
    #[tokio::test]
    async fn dispatch_refuses_exactly_the_admin_requests_to_a_non_admin() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = Config::resolve(Overrides {
            socket: Some(dir.path().join("v.sock")),
            data_dir: Some(dir.path().join("data")),
            admin_uids: vec![0],
            insecure_allow_weak_kdf: true,
            ..Overrides::default()
        })
        .expect("config");
        std::fs::create_dir(&config.data_dir).expect("data dir");
        let lock = datadir::DataDirLock::acquire(&config.data_dir).expect("data dir lock");
        let daemon = Daemon::open(config, lock).expect("open the daemon");
        let uid = 4_000_123;
        let conn = Conn {
            id: 1,
            peer: PeerInfo {
                uid,
                gid: uid,
                groups: Vec::new(),
                pid: None,
            },
            process: crate::server::peer_process::ProcessIdent::unknown(),
            daemon: Arc::clone(&daemon),
        };
        assert!(!conn.is_admin());
        for request in requests() {
            let name = wire_name(&request);
            let role = role(&request);
            let answer = cmd::dispatch(&conn, request).await;
            let refused = match &answer {
                Response::Error(e) if e.message.contains("is an admin request") => {
                    assert_eq!(e.code, ErrorCode::PermissionDenied, "{name}: {e}");
                    Some(e.message.clone())
                }
                _ => None,
            };
            match role {
                Role::Admin(what) => assert_eq!(
                    refused.as_deref(),
                    Some(
                        format!(
                            "{what} is an admin request; uid {uid} is not an admin of this daemon"
                        )
                        .as_str()
                    ),
                    "{name}: {answer:?}"
                ),
                _ => assert_eq!(refused, None, "{name}"),
            }
        }
        // The vault was not touched: `init` did not run.
        let status = daemon.vault.status().await.expect("status");
        assert_eq!(
            status.state,
            session_vault_proto::message::VaultState::Uninitialized
        );
    }
}
