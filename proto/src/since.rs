//! Which protocol minor version each request needs ([`Request::minor_needed`]), so that a
//! client can tell a daemon too old for a request apart from a failure of the request (such
//! a daemon answers `invalid_request`, or, for a field it does not know, ignores the field).

use crate::message::Request;

impl Request {
    /// The lowest daemon minor version (of [`crate::PROTOCOL_MAJOR`]) that understands this
    /// request as meant, fields included: a `recovery` unlock needs 3, since a daemon of 1.2
    /// would ignore the flag and try the recovery key as a passphrase.
    pub fn minor_needed(&self) -> u16 {
        use Request as R;
        match self {
            R::Unlock { recovery, .. } | R::ChangePassphrase { recovery, .. } => {
                if *recovery {
                    3
                } else {
                    0
                }
            }
            R::RestoreCommit { recovery: true, .. } => 4,
            R::Rekey { .. } => 1,
            R::BackupBegin
            | R::BackupChunk { .. }
            | R::RestoreBegin { .. }
            | R::RestoreChunk { .. }
            | R::RestoreCommit { .. }
            | R::TransferEnd { .. }
            | R::Verify => 2,
            R::Disconnect { .. } | R::AddRecoveryKey | R::RemoveRecoveryKey => 3,
            R::ImportBegin { .. }
            | R::ImportChunk { .. }
            | R::ImportCommit { .. }
            | R::ExportBegin { .. }
            | R::ExportChunk { .. }
            | R::Audit { .. } => 4,
            R::ListPeers { .. } => 5,
            R::MigrateStore { .. } => 6,
            // A daemon of 1.6 would ignore the flag and send every peer.
            R::Export {
                without_peers: true,
                ..
            } => 7,
            R::Hello { .. }
            | R::Status
            | R::Init { .. }
            | R::Lock
            | R::ListSessions
            | R::RenameSession { .. }
            | R::DeleteSession { .. }
            | R::Grant { .. }
            | R::Revoke { .. }
            | R::ImportSession { .. }
            | R::ExportSession { .. }
            | R::OpenSession { .. }
            | R::CloseSession { .. }
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
            | R::Import { .. } => 0,
        }
    }

    /// The request's wire name (`import_begin`), for messages.
    pub fn wire_name(&self) -> String {
        // The Debug output starts with the variant's name (fields are redacted where secret).
        let debug = format!("{self:?}");
        let end = debug
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(debug.len());
        let mut name = String::new();
        for (i, c) in debug[..end].chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_lowercase());
            } else {
                name.push(c);
            }
        }
        name
    }
}
