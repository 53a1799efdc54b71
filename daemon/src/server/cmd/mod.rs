//! Request handlers, one module per kind, dispatched from one `match`.
//!
//! - [`status`]: `status` (anyone);
//! - [`keys`]: `init`, `unlock`, `lock`, `change_passphrase`, `rekey` (admins; throttled);
//! - [`admin`]: list, rename, delete, grant, revoke, import, export by name (admins);
//! - [`open`]: `open_session`, `close_session` (owner, granted uids/gids, admins);
//! - [`data`]: reads and writes on an open session handle;
//! - [`backup`]: backup, restore and verify transfers (admins).

pub mod admin;
pub mod backup;
pub mod data;
pub mod keys;
pub mod open;
pub mod status;

use session_vault_proto::message::{ErrorCode, Request, Response, WireError};

use super::conn::Conn;
use super::errors::wire;

/// Runs one request; errors become [`Response::Error`].
pub async fn dispatch(conn: &Conn, request: Request) -> Response {
    match run(conn, request).await {
        Ok(r) => r,
        Err(e) => Response::Error(e),
    }
}

/// What a request costs the storage thread, for the connection's limits (see
/// [`crate::server::conn::answers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Touches a few rows: everything a bot sends while it runs (peers, update state, DC
    /// options, …), and the small admin requests.
    Cheap,
    /// Grows with a whole session or with the vault, and changes nothing: `export`,
    /// `export_session`, `list_sessions`. Its answer is its only effect, so it is skipped
    /// when nobody is left to read it.
    HeavyRead,
    /// Grows with a whole session, and writes: `import`, `import_session`, `delete_session`.
    HeavyWrite,
}

/// The [`Weight`] of `request`. Passphrase requests are cheap in this sense: the throttle
/// judges one unlock or passphrase change at a time, and `init` runs Argon2 only on a vault
/// that has no passphrase yet.
pub fn weight(request: &Request) -> Weight {
    use Request as R;
    match request {
        R::ListSessions | R::ExportSession { .. } | R::Export { .. } | R::Verify => {
            Weight::HeavyRead
        }
        R::DeleteSession { .. } | R::ImportSession { .. } | R::Import { .. } | R::Rekey { .. } => {
            Weight::HeavyWrite
        }
        _ => Weight::Cheap,
    }
}

fn require_admin(conn: &Conn, what: &str) -> Result<(), WireError> {
    if conn.is_admin() {
        Ok(())
    } else {
        Err(wire(
            ErrorCode::PermissionDenied,
            format!(
                "{what} is an admin request; uid {} is not an admin of this daemon",
                conn.peer.uid
            ),
        ))
    }
}

async fn run(conn: &Conn, request: Request) -> Result<Response, WireError> {
    use Request as R;
    match request {
        R::Hello { .. } => Err(wire(
            ErrorCode::InvalidRequest,
            "hello was already exchanged",
        )),
        R::Status => status::status(conn).await,

        R::Init { passphrase, kdf } => {
            require_admin(conn, "init")?;
            keys::init(conn, passphrase, kdf).await
        }
        R::Unlock { passphrase } => {
            require_admin(conn, "unlock")?;
            keys::unlock(conn, passphrase).await
        }
        R::Lock => {
            require_admin(conn, "lock")?;
            keys::lock(conn).await
        }
        R::ChangePassphrase { old, new, kdf } => {
            require_admin(conn, "passphrase change")?;
            keys::change_passphrase(conn, old, new, kdf).await
        }
        R::Rekey { passphrase, kdf } => {
            require_admin(conn, "rekey")?;
            keys::rekey(conn, passphrase, kdf).await
        }

        R::ListSessions => {
            require_admin(conn, "list")?;
            admin::list(conn).await
        }
        R::RenameSession { old, new } => {
            require_admin(conn, "rename")?;
            admin::rename(conn, old, new).await
        }
        R::DeleteSession { name, force } => {
            require_admin(conn, "delete")?;
            admin::delete(conn, name, force).await
        }
        R::Grant { name, uid, gid } => {
            require_admin(conn, "grant")?;
            admin::grant(conn, name, uid, gid, true).await
        }
        R::Revoke { name, uid, gid } => {
            require_admin(conn, "revoke")?;
            admin::grant(conn, name, uid, gid, false).await
        }
        R::ImportSession {
            name,
            data,
            replace,
            owner_uid,
            force,
        } => {
            require_admin(conn, "import")?;
            admin::import(conn, name, data, replace, owner_uid, force).await
        }
        R::ExportSession { name } => {
            require_admin(conn, "export")?;
            admin::export(conn, name).await
        }
        R::BackupBegin => {
            require_admin(conn, "backup")?;
            backup::backup_begin(conn).await
        }
        R::BackupChunk { id, offset } => {
            require_admin(conn, "backup")?;
            backup::backup_chunk(conn, id, offset).await
        }
        R::RestoreBegin { size, sha256 } => {
            require_admin(conn, "restore")?;
            backup::restore_begin(conn, size, sha256).await
        }
        R::RestoreChunk { id, offset, data } => {
            require_admin(conn, "restore")?;
            backup::restore_chunk(conn, id, offset, data).await
        }
        R::RestoreCommit { id, passphrase } => {
            require_admin(conn, "restore")?;
            backup::restore_commit(conn, id, passphrase).await
        }
        R::TransferEnd { id } => {
            require_admin(conn, "backup")?;
            backup::transfer_end(conn, id)
        }
        R::Verify => {
            require_admin(conn, "verify")?;
            backup::verify(conn).await
        }

        R::OpenSession {
            name,
            exclusive,
            create_if_missing,
        } => open::open(conn, name, exclusive, create_if_missing).await,
        R::CloseSession { handle } => open::close(conn, handle),

        R::GetHomeDc { handle } => data::get_home_dc(conn, handle).await,
        R::SetHomeDc { handle, dc_id } => data::set_home_dc(conn, handle, dc_id).await,
        R::GetDcOptions { handle } => data::get_dc_options(conn, handle).await,
        R::SetDcOption { handle, option } => data::set_dc_option(conn, handle, option).await,
        R::GetPeer { handle, query } => data::get_peer(conn, handle, query).await,
        R::CachePeers { handle, peers } => data::cache_peers(conn, handle, peers).await,
        R::GetUpdatesState { handle } => data::get_updates_state(conn, handle).await,
        R::SetUpdateState { handle, change } => data::set_update_state(conn, handle, change).await,
        R::GetExtras { handle } => data::get_extras(conn, handle).await,
        R::SetExtras { handle, extras } => data::set_extras(conn, handle, extras).await,
        R::GetSentFile {
            handle,
            md5_digest,
            file_size,
            file_type,
        } => data::get_sent_file(conn, handle, md5_digest, file_size, file_type).await,
        R::PutSentFile { handle, file } => data::put_sent_file(conn, handle, file).await,
        R::Export { handle } => data::export(conn, handle).await,
        R::Import { handle, data: d } => data::import(conn, handle, d).await,
    }
}
