//! A value of every request variant (split from `samples.rs` along this seam).

use super::*;

/// Every request variant at least once; enums nested in requests in every variant.
pub fn requests() -> Vec<Request> {
    let h = 7;
    let mut out = vec![
        Request::Hello {
            protocol_major: 1,
            protocol_minor: 0,
            client: "example 0.1".into(),
        },
        Request::Status,
        Request::Init {
            passphrase: pass("correct horse battery staple"),
            kdf: Some(KdfSpec {
                m_cost_kib: 65536,
                t_cost: 3,
                p_cost: 1,
            }),
        },
        Request::Init {
            passphrase: pass(""),
            kdf: None,
        },
        Request::Unlock {
            passphrase: pass("correct horse battery staple"),
            recovery: false,
        },
        Request::Unlock {
            passphrase: pass("000000-000011-000022-000033-000044-000055-000066-000077"),
            recovery: true,
        },
        Request::Lock,
        Request::ChangePassphrase {
            old: pass("old"),
            new: Passphrase::new(vec![0xff, 0x00, 0x80]),
            kdf: None,
            recovery: false,
        },
        Request::ChangePassphrase {
            old: pass("000000-000011-000022-000033-000044-000055-000066-000077"),
            new: pass("a new passphrase"),
            kdf: None,
            recovery: true,
        },
        Request::Rekey {
            passphrase: pass("correct horse battery staple"),
            kdf: None,
        },
        Request::Rekey {
            passphrase: pass("correct horse battery staple"),
            kdf: Some(KdfSpec {
                m_cost_kib: 65536,
                t_cost: 3,
                p_cost: 1,
            }),
        },
        Request::ListSessions,
        Request::RenameSession {
            old: "bot-a".into(),
            new: "bot-b".into(),
        },
        Request::DeleteSession {
            name: "bot-b".into(),
            force: false,
        },
        Request::DeleteSession {
            name: "bot-b".into(),
            force: true,
        },
        Request::Grant {
            name: "bot-a".into(),
            uid: Some(1001),
            gid: None,
        },
        Request::Revoke {
            name: "bot-a".into(),
            uid: None,
            gid: Some(100),
        },
        Request::ImportSession {
            name: "imported".into(),
            data: session_data(),
            replace: false,
            owner_uid: Some(1000),
            force: false,
        },
        Request::ImportSession {
            name: "default".into(),
            data: SessionData::default(),
            replace: true,
            owner_uid: None,
            force: true,
        },
        Request::ExportSession {
            name: "bot-a".into(),
        },
        Request::BackupBegin,
        Request::BackupChunk {
            id: 1,
            offset: 262_144,
        },
        Request::RestoreBegin {
            size: 4096,
            sha256: Blob(vec![0xab; 32]),
        },
        Request::RestoreChunk {
            id: 2,
            offset: 0,
            data: Blob(b"SQLite format 3\0".to_vec()),
        },
        Request::RestoreCommit {
            id: 2,
            passphrase: Passphrase::new(b"hunter2 hunter2".to_vec()),
            recovery: false,
        },
        Request::TransferEnd { id: 2 },
        Request::Verify,
        Request::MigrateStore {
            url: "postgres://vault@db.internal/vault".into(),
            password: Some(Passphrase::new(b"db password".to_vec())),
        },
        Request::MigrateStore {
            url: "postgres://vault@%2Frun%2Fpostgresql/vault".into(),
            password: None,
        },
        Request::Disconnect {
            session: Some("bot-a".into()),
            pid: Some(4242),
        },
        Request::AddRecoveryKey,
        Request::RemoveRecoveryKey,
        Request::Audit {
            after_seq: 16,
            limit: 500,
            since: Some(1_765_000_000),
            session: Some("bot-a".into()),
        },
        Request::ImportBegin {
            name: "big".into(),
            size: 12_582_912,
            sha256: Blob(vec![0xcd; 32]),
            replace: false,
            owner_uid: Some(1000),
            force: false,
        },
        Request::ImportChunk {
            id: 3,
            offset: 262_144,
            data: Blob(vec![0x85, 0xa7]),
        },
        Request::ImportCommit { id: 3 },
        Request::ExportBegin { name: "big".into() },
        Request::ExportChunk {
            id: 4,
            offset: 524_288,
        },
        Request::OpenSession {
            name: "bot-a".into(),
            exclusive: true,
            create_if_missing: true,
        },
        Request::CloseSession { handle: h },
        Request::GetHomeDc { handle: h },
        Request::SetHomeDc {
            handle: h,
            dc_id: 4,
        },
        Request::GetDcOptions { handle: h },
        Request::SetDcOption {
            handle: h,
            option: dc_option(),
        },
        Request::SetDcOption {
            handle: h,
            option: DcOption {
                id: 5,
                ipv4: None,
                ipv6: None,
                auth_key: None,
            },
        },
        Request::ListPeers {
            handle: h,
            before: None,
            limit: 1000,
        },
        Request::ListPeers {
            handle: h,
            before: Some(4711),
            limit: 0,
        },
        Request::CachePeers {
            handle: h,
            peers: peers().into(),
        },
        Request::GetUpdatesState { handle: h },
        Request::GetExtras { handle: h },
        Request::SetExtras {
            handle: h,
            extras: extras(),
        },
        Request::SetExtras {
            handle: h,
            extras: SessionExtras::default(),
        },
        Request::GetSentFile {
            handle: h,
            md5_digest: vec![0xd4; 16],
            file_size: 1234,
            file_type: 0,
        },
        Request::PutSentFile {
            handle: h,
            file: sent_file(),
        },
        Request::Export {
            handle: h,
            without_peers: false,
        },
        Request::Export {
            handle: h,
            without_peers: true,
        },
        Request::Import {
            handle: h,
            data: session_data(),
        },
    ];
    for query in [
        PeerQuery::Key(PeerKey {
            kind: PeerKind::User,
            id: 777_000,
        }),
        PeerQuery::SelfUser,
        PeerQuery::Username("@Durov".into()),
        PeerQuery::Phone("+42 777".into()),
    ] {
        out.push(Request::GetPeer { handle: h, query });
    }
    for change in [
        UpdateStateChange::All(updates_state()),
        UpdateStateChange::Primary {
            pts: 2,
            date: 3,
            seq: 4,
        },
        UpdateStateChange::Secondary { qts: 5 },
        UpdateStateChange::Channel { id: 10, pts: 6 },
    ] {
        out.push(Request::SetUpdateState { handle: h, change });
    }
    out
}
