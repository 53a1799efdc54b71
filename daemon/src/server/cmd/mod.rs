//! Request handlers, one module per kind, dispatched from one `match` once the request's
//! [`role`] admits its sender.
//!
//! - [`role`]: who may send each request, one table checked before dispatch;
//! - [`status`]: `status` (anyone);
//! - [`keys`]: `init`, `unlock`, `lock`, `change_passphrase`, `rekey` (admins; throttled);
//! - [`admin`]: list, rename, delete, grant, revoke, import, export by name (admins);
//! - [`open`]: `open_session`, `close_session` (owner, granted uids/gids, admins);
//! - [`data`]: reads and writes on an open session handle;
//! - [`backup`]: backup, restore and verify transfers (admins);
//! - [`audit`]: what is recorded in the audit log, and `audit`, which reads it (admins).
//! - [`stream`]: imports and exports of a whole session in chunks (admins).

pub mod admin;
pub mod audit;
pub mod backup;
pub mod data;
pub mod keys;
pub mod open;
pub mod role;
pub mod status;
pub mod stream;

use session_vault_proto::message::{ErrorCode, Request, Response, WireError};
use session_vault_proto::model::UpdateStateChange;

use super::context::Conn;
use super::errors::wire_error;
use super::handles::HandleId;
use admin::Access;

/// Runs one request if its [`role::role`] admits the sender; errors become
/// [`Response::Error`].
pub async fn dispatch(conn: &Conn, request: Request) -> Response {
    let role = role::role(&request);
    let mut act = audit::Act::of(&request, role);
    let admitted = role::admit(conn, role);
    if admitted.is_ok() {
        // Only what the sender may do counts as use (a refused request from a uid without
        // access would otherwise hold off the idle auto-lock for ever).
        conn.daemon.activity.note(&request);
        if let Some(a) = act.take_if(|a| a.before()) {
            act = audit::record_before(conn, a).await;
        }
    }
    let answer = match admitted {
        Ok(()) => run(conn, request).await,
        Err(refused) => Err(refused),
    };
    if let Some(act) = act {
        audit::record(conn, act, &answer).await;
    }
    match answer {
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

/// A `set_update_state` of the whole state with more channels than this weighs as a whole
/// session's write (a big bot's; a usual one follows far fewer channels).
pub const HEAVY_STATE_CHANNELS: usize = 1000;

/// The [`Weight`] of `request`. Passphrase requests are cheap in this sense: the throttle
/// judges one unlock or passphrase change at a time, and `init` runs Argon2 only on a vault
/// that has no passphrase yet.
pub fn weight(request: &Request) -> Weight {
    use Request as R;
    match request {
        // The update state grows with the channels a session follows (a big bot's: tens of
        // thousands); read once at a client's start.
        R::ListSessions
        | R::GetUpdatesState { .. }
        | R::ExportSession { .. }
        | R::ExportBegin { .. }
        | R::Export { .. }
        | R::Verify
        | R::MigrateStore { .. } => Weight::HeavyRead,
        R::SetUpdateState {
            change: UpdateStateChange::All(state),
            ..
        } if state.channels.len() > HEAVY_STATE_CHANNELS => Weight::HeavyWrite,
        R::DeleteSession { .. }
        | R::ImportSession { .. }
        | R::ImportCommit { .. }
        | R::Import { .. }
        | R::Rekey { .. } => Weight::HeavyWrite,
        _ => Weight::Cheap,
    }
}

/// Whether `request` decides on what other daemons sharing the vault may have changed
/// (sessions, names, ACLs, keyslots, the audit log), so that this daemon's view is brought
/// up to date first ([`crate::server::coherence`]; free on SQLite).
fn needs_coherence(request: &Request) -> bool {
    use Request as R;
    matches!(
        request,
        R::OpenSession { .. }
            | R::ListSessions
            | R::RenameSession { .. }
            | R::DeleteSession { .. }
            | R::Grant { .. }
            | R::Revoke { .. }
            | R::ImportSession { .. }
            | R::ExportSession { .. }
            | R::ImportBegin { .. }
            | R::ImportCommit { .. }
            | R::ExportBegin { .. }
            | R::Disconnect { .. }
            | R::Audit { .. }
            | R::ChangePassphrase { .. }
            | R::AddRecoveryKey
            | R::RemoveRecoveryKey
            | R::Rekey { .. }
    )
}

/// Runs a request its role admits. Handle numbers become [`HandleId`]s here, at the edge.
async fn run(conn: &Conn, request: Request) -> Result<Response, WireError> {
    use Request as R;
    if needs_coherence(&request) {
        crate::server::coherence::check_logged(&conn.daemon).await;
    }
    match request {
        R::Hello { .. } => Err(wire_error(
            ErrorCode::InvalidRequest,
            "hello was already exchanged",
        )),
        R::Status => status::status(conn).await,

        R::Init { passphrase, kdf } => keys::init(conn, passphrase, kdf).await,
        R::Unlock {
            passphrase,
            recovery,
        } => keys::unlock(conn, passphrase, recovery).await,
        R::Lock => keys::lock(conn).await,
        R::ChangePassphrase {
            old,
            new,
            kdf,
            recovery,
        } => keys::change_passphrase(conn, old, new, kdf, recovery).await,
        R::AddRecoveryKey => keys::add_recovery_key(conn).await,
        R::RemoveRecoveryKey => keys::remove_recovery_key(conn).await,
        R::Rekey { passphrase, kdf } => keys::rekey(conn, passphrase, kdf).await,

        R::ListSessions => admin::list(conn).await,
        R::RenameSession { old, new } => admin::rename(conn, old, new).await,
        R::DeleteSession { name, force } => admin::delete(conn, name, force).await,
        R::Grant { name, uid, gid } => admin::set_access(conn, name, uid, gid, Access::Grant).await,
        R::Revoke { name, uid, gid } => {
            admin::set_access(conn, name, uid, gid, Access::Revoke).await
        }
        R::ImportSession {
            name,
            data,
            replace,
            owner_uid,
            force,
        } => admin::import(conn, name, data, replace, owner_uid, force).await,
        R::ExportSession { name } => admin::export(conn, name).await,
        R::BackupBegin => backup::backup_begin(conn).await,
        R::BackupChunk { id, offset } => backup::backup_chunk(conn, id, offset).await,
        R::RestoreBegin { size, sha256 } => backup::restore_begin(conn, size, sha256).await,
        R::RestoreChunk { id, offset, data } => backup::restore_chunk(conn, id, offset, data).await,
        R::RestoreCommit {
            id,
            passphrase,
            recovery,
        } => backup::restore_commit(conn, id, passphrase, recovery).await,
        R::TransferEnd { id } => backup::transfer_end(conn, id),
        R::Verify => backup::verify(conn).await,
        R::MigrateStore { url, password } => backup::migrate_store(conn, url, password).await,
        R::ImportBegin {
            name,
            size,
            sha256,
            replace,
            owner_uid,
            force,
        } => {
            let import = stream::Import {
                name,
                replace,
                owner_uid,
                force,
            };
            stream::import_begin(conn, import, size, sha256).await
        }
        R::ImportChunk { id, offset, data } => stream::import_chunk(conn, id, offset, data),
        R::ImportCommit { id } => stream::import_commit(conn, id).await,
        R::ExportBegin { name } => stream::export_begin(conn, name).await,
        R::ExportChunk { id, offset } => stream::export_chunk(conn, id, offset),
        R::Disconnect { session, pid } => admin::disconnect(conn, session, pid).await,
        R::Audit {
            after_seq,
            limit,
            since,
            session,
        } => audit::audit(conn, after_seq, limit, since, session).await,

        R::OpenSession {
            name,
            exclusive,
            create_if_missing,
        } => open::open(conn, name, exclusive, create_if_missing).await,
        R::CloseSession { handle } => open::close(conn, HandleId(handle)),

        R::GetHomeDc { handle } => data::get_home_dc(conn, HandleId(handle)).await,
        R::SetHomeDc { handle, dc_id } => data::set_home_dc(conn, HandleId(handle), dc_id).await,
        R::GetDcOptions { handle } => data::get_dc_options(conn, HandleId(handle)).await,
        R::SetDcOption { handle, option } => {
            data::set_dc_option(conn, HandleId(handle), option).await
        }
        R::GetPeer { handle, query } => data::get_peer(conn, HandleId(handle), query).await,
        R::ListPeers {
            handle,
            before,
            limit,
        } => data::list_peers(conn, HandleId(handle), before, limit).await,
        R::CachePeers { handle, peers } => {
            data::cache_peers(conn, HandleId(handle), peers.peers).await
        }
        R::GetUpdatesState { handle } => data::get_updates_state(conn, HandleId(handle)).await,
        R::SetUpdateState { handle, change } => {
            data::set_update_state(conn, HandleId(handle), change).await
        }
        R::GetExtras { handle } => data::get_extras(conn, HandleId(handle)).await,
        R::SetExtras { handle, extras } => data::set_extras(conn, HandleId(handle), extras).await,
        R::GetSentFile {
            handle,
            md5_digest,
            file_size,
            file_type,
        } => data::get_sent_file(conn, HandleId(handle), md5_digest, file_size, file_type).await,
        R::PutSentFile { handle, file } => data::put_sent_file(conn, HandleId(handle), file).await,
        R::Export {
            handle,
            without_peers: false,
        } => data::export(conn, HandleId(handle)).await,
        R::Export {
            handle,
            without_peers: true,
        } => data::export_without_peers(conn, HandleId(handle)).await,
        R::Import { handle, data: d } => data::import(conn, HandleId(handle), d).await,
    }
}
