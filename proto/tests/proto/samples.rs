//! A value of every message: every request and response variant, every error code, every
//! event, and every variant of the enums nested in them.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use session_vault_proto::audit::{AuditEntry, AuditPage, AuditProblem, AuditProblemKind};
use session_vault_proto::backup::{
    Blob, MigrateInfo, RestoreInfo, TransferInfo, VerifyFailure, VerifyReport,
};
use session_vault_proto::message::{
    ClientFrame, ErrorCode, Event, KdfSpec, Passphrase, PeerQuery, Request, Response, ServerFrame,
    SessionListing, StatusInfo, VaultState, WireError,
};
use session_vault_proto::model::{
    AuthKey, ChannelKind, ChannelState, DcOption, Peer, PeerKey, PeerKind, SelfUser, SentFile,
    SessionData, SessionExtras, SessionSummary, TmpAuthKey, UpdateStateChange, UpdatesState,
};
use session_vault_proto::recovery::RecoveryKey;

#[path = "samples/requests.rs"]
mod requests;
pub use requests::requests;

/// The snake_case wire name of an enum value, from its `Debug` form (`GetPeer { .. }` →
/// `get_peer`).
pub fn wire_name<T: std::fmt::Debug>(value: &T) -> String {
    let debug = format!("{value:?}");
    let rust = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default();
    let mut out = String::new();
    for (i, c) in rust.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A key whose bytes are `0, 1, 2, …, 255`.
pub fn auth_key() -> AuthKey {
    let mut bytes = [0u8; 256];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    AuthKey::new(bytes)
}

pub fn pass(text: &str) -> Passphrase {
    Passphrase::new(text.as_bytes().to_vec())
}

pub fn dc_option() -> DcOption {
    DcOption {
        id: 2,
        ipv4: Some(SocketAddrV4::new(Ipv4Addr::new(149, 154, 167, 41), 443)),
        ipv6: Some(SocketAddrV6::new(
            Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xa),
            443,
            0,
            0,
        )),
        auth_key: Some(auth_key()),
    }
}

pub fn peers() -> Vec<Peer> {
    vec![
        Peer {
            kind: PeerKind::User,
            id: 777_000,
            access_hash: Some(i64::MIN),
            bot: Some(false),
            is_self: Some(true),
            channel_kind: None,
            username: Some("Telegram".into()),
            phone: Some("42777".into()),
            name: Some("Télégram ✈".into()),
        },
        Peer {
            kind: PeerKind::Channel,
            id: 1_006_503_122,
            access_hash: Some(i64::MAX),
            bot: None,
            is_self: None,
            channel_kind: Some(ChannelKind::Megagroup),
            username: None,
            phone: None,
            name: Some("A group".into()),
        },
        Peer {
            channel_kind: Some(ChannelKind::Broadcast),
            ..Peer::new(PeerKind::Channel, 1)
        },
        Peer {
            channel_kind: Some(ChannelKind::Gigagroup),
            ..Peer::new(PeerKind::Channel, 2)
        },
        Peer {
            channel_kind: Some(ChannelKind::Community),
            ..Peer::new(PeerKind::Channel, 3)
        },
        Peer::new(PeerKind::Chat, 4),
    ]
}

pub fn updates_state() -> UpdatesState {
    UpdatesState {
        pts: 1,
        qts: -1,
        date: 1_700_000_000,
        seq: i32::MAX,
        channels: vec![
            ChannelState { id: 10, pts: 5 },
            ChannelState {
                id: i64::MAX,
                pts: i32::MIN,
            },
        ],
    }
}

pub fn sent_file() -> SentFile {
    SentFile {
        // MD5 of the empty file.
        md5_digest: vec![
            0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8,
            0x42, 0x7e,
        ],
        file_size: 1 << 40,
        file_type: 1,
        id: -5,
        hash: 6,
    }
}

pub fn extras() -> SessionExtras {
    SessionExtras {
        takeout_id: Some(123),
        tmp_auth_key: Some(TmpAuthKey {
            dc_id: 4,
            key: auth_key(),
            expires_at: Some(1_800_000_000),
        }),
        api_id: Some(6),
        test_mode: true,
    }
}

pub fn session_data() -> SessionData {
    let mut data = SessionData {
        self_user: Some(SelfUser {
            id: 777_000,
            bot: false,
        }),
        peers: peers(),
        updates_state: updates_state(),
        sent_files: vec![sent_file()],
        extras: extras(),
        ..SessionData::default()
    };
    data.dc_options[1] = dc_option();
    data
}

pub fn summary() -> SessionSummary {
    SessionSummary {
        name: "bot-a".into(),
        created_at: 1_700_000_000,
        updated_at: 1_700_000_100,
        home_dc: 2,
        has_auth_key: true,
        user_id: Some(777_000),
        peer_count: 6,
        owner_uid: Some(1000),
    }
}

pub fn status_info() -> StatusInfo {
    StatusInfo {
        state: VaultState::Unlocked,
        vault_path: "/var/lib/session-vault/vault.db".into(),
        sessions: Some(3),
        uptime_secs: 3600,
        version: "0.1.0".into(),
        pid: 4242,
        connections: 2,
        recovery_key: Some(true),
    }
}

/// One value of every error code.
pub fn error_codes() -> Vec<ErrorCode> {
    vec![
        ErrorCode::Locked,
        ErrorCode::Uninitialized,
        ErrorCode::AlreadyInitialized,
        ErrorCode::NoSuchSession,
        ErrorCode::NameTaken,
        ErrorCode::SessionBusy {
            holder_pid: Some(4321),
        },
        ErrorCode::SessionBusy { holder_pid: None },
        ErrorCode::PermissionDenied,
        ErrorCode::BadPassphrase {
            retry_after_ms: 500,
            unchecked: false,
        },
        ErrorCode::BadPassphrase {
            retry_after_ms: 250,
            unchecked: true,
        },
        ErrorCode::WeakPassphrase,
        ErrorCode::InvalidRequest,
        ErrorCode::FrameTooLarge { limit: 1 << 20 },
        ErrorCode::ProtocolMismatch { server_major: 1 },
        ErrorCode::Corrupt,
        ErrorCode::Storage,
        ErrorCode::Unsupported,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ]
}

pub fn events() -> Vec<Event> {
    vec![
        Event::Locked,
        Event::Unlocked,
        Event::ShuttingDown,
        Event::DisconnectedByAdmin,
    ]
}

/// Every response variant at least once, every error code and every event included.
pub fn responses() -> Vec<Response> {
    let mut out = vec![
        Response::Welcome {
            protocol_major: 1,
            protocol_minor: 0,
            server: "vaultd 0.1.0".into(),
            vault_state: VaultState::Unlocked,
        },
        Response::Welcome {
            protocol_major: 1,
            protocol_minor: 0,
            server: "vaultd 0.1.0".into(),
            vault_state: VaultState::Locked,
        },
        Response::Welcome {
            protocol_major: 1,
            protocol_minor: 0,
            server: "vaultd 0.1.0".into(),
            vault_state: VaultState::Uninitialized,
        },
        Response::Ok,
        Response::Status(status_info()),
        Response::Status(StatusInfo {
            state: VaultState::Locked,
            sessions: None,
            recovery_key: None,
            ..status_info()
        }),
        Response::Sessions(vec![
            SessionListing {
                summary: summary(),
                lease_holder_pid: Some(4343),
            },
            SessionListing {
                summary: SessionSummary {
                    name: "fresh".into(),
                    has_auth_key: false,
                    user_id: None,
                    peer_count: 0,
                    owner_uid: None,
                    ..summary()
                },
                lease_holder_pid: None,
            },
        ]),
        Response::Sessions(Vec::new()),
        Response::Opened {
            handle: 1,
            created: true,
            home_dc: 2,
            dc_options: SessionData::default().dc_options,
            name: Some("1000/bot".into()),
        },
        Response::Opened {
            handle: 2,
            created: false,
            home_dc: 4,
            dc_options: Vec::new(),
            name: None,
        },
        Response::HomeDc(2),
        Response::DcOptions(vec![dc_option()]),
        Response::Peer(Some(peers().remove(0))),
        Response::Peer(None),
        Response::PeerPage {
            peers: peers(),
            next: Some(17),
        },
        Response::PeerPage {
            peers: Vec::new(),
            next: None,
        },
        Response::UpdatesState(updates_state()),
        Response::Extras(extras()),
        Response::SentFile(Some(sent_file())),
        Response::SentFile(None),
        Response::SessionData(session_data()),
        Response::Transfer(TransferInfo {
            id: 1,
            size: 4096,
            sha256: Blob(vec![0xab; 32]),
        }),
        Response::Chunk(Blob(vec![0, 1, 2, 255])),
        Response::Verified(verify_report()),
        Response::Disconnected { connections: 1 },
        Response::RecoveryKey(RecoveryKey::from_bytes(&[7; 16])),
        Response::AuditPage(audit_page()),
        Response::Migrated(MigrateInfo {
            target: "postgres://vault@db.internal:5432/vault".into(),
            keyslots: 2,
            sessions: 3,
            rows: 120,
            audit_entries: 17,
        }),
        Response::Restored(RestoreInfo {
            report: verify_report(),
            previous: Some("/var/lib/session-vault/vault.db.before-restore-1765000000".into()),
        }),
    ];
    for code in error_codes() {
        out.push(Response::Error(WireError {
            message: format!("{} happened", wire_name(&code)),
            code,
        }));
    }
    out.extend(events().into_iter().map(Response::Event));
    out
}

/// Requests in client frames with distinct ids.
pub fn client_frames() -> Vec<ClientFrame> {
    requests()
        .into_iter()
        .zip(1u32..)
        .map(|(request, id)| ClientFrame { id, request })
        .collect()
}

/// Responses in server frames: events with id 0, the rest with distinct ids (the largest
/// id included).
pub fn server_frames() -> Vec<ServerFrame> {
    responses()
        .into_iter()
        .zip(1u32..)
        .map(|(response, n)| {
            let id = match response {
                Response::Event(_) => 0,
                Response::Ok => u32::MAX,
                _ => n,
            };
            ServerFrame { id, response }
        })
        .collect()
}

/// A verification report with one failure.
pub fn verify_report() -> VerifyReport {
    VerifyReport {
        keyslots: 1,
        sessions: 2,
        dc_options: 5,
        peers: 40,
        update_states: 3,
        sent_files: 1,
        records: 53,
        failures: vec![VerifyFailure {
            place: "session \"bot-a\": peers".into(),
            reason: "corrupt record".into(),
        }],
    }
}

/// An audit page with an entry and one finding of each kind.
pub fn audit_page() -> AuditPage {
    let problem = |kind, first_seq, last_seq| AuditProblem {
        kind,
        first_seq,
        last_seq,
        message: format!("entries {first_seq}-{last_seq}: {kind:?}"),
    };
    AuditPage {
        entries: vec![AuditEntry {
            seq: 17,
            time: 1_765_000_123,
            uid: 0,
            gid: 0,
            pid: Some(4242),
            exe: "/usr/bin/vaultctl".into(),
            unit: Some("session-1.scope".into()),
            action: "grant".into(),
            session: Some("bot-a".into()),
            detail: Some("uid 1000".into()),
            result: "ok".into(),
        }],
        problems: vec![
            problem(AuditProblemKind::Missing, 18, 19),
            problem(AuditProblemKind::Altered, 20, 20),
            problem(AuditProblemKind::Unlinked, 21, 21),
            problem(AuditProblemKind::Truncated, 22, 23),
        ],
        scanned_to: 21,
        more: false,
    }
}
