//! Shared helpers of the engine tests.

use std::path::PathBuf;

use session_vault_proto::model::{
    AuthKey, ChannelKind, ChannelState, DcOption, Peer, PeerKind, SelfUser, SentFile,
    SessionData, SessionExtras, TmpAuthKey, UpdatesState,
};

use crate::vault::{KdfParams, Vault, VaultConfig};

pub const PASS: &[u8] = b"correct horse battery staple";

/// A temp dir holding `vault.db`.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        TestDir {
            dir: tempfile::Builder::new().prefix("sv").tempdir().expect("temp dir"),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("vault.db")
    }
}

pub async fn create(t: &TestDir) -> Vault {
    Vault::create(&t.db(), PASS, KdfParams::insecure_fast_for_tests(), VaultConfig::default())
        .await
        .expect("create vault")
}

pub fn open(t: &TestDir) -> Vault {
    Vault::open(&t.db(), VaultConfig::default()).expect("open vault")
}

/// A session exercising every field of the data model, with recognisable secrets.
pub fn full_session(seed: u8) -> SessionData {
    let mut data = SessionData::default();
    data.home_dc = 4;
    for dc in &mut data.dc_options {
        if dc.id == 4 {
            dc.auth_key = Some(AuthKey::new([0xA0 ^ seed; 256]));
        }
    }
    data.dc_options.push(DcOption {
        id: 10_000 + seed as i32,
        ipv4: Some("10.1.2.3:8443".parse().unwrap()),
        ipv6: None,
        auth_key: Some(AuthKey::new([0x5C ^ seed; 256])),
    });
    data.self_user = Some(SelfUser { id: 777_000_001 + seed as i64, bot: true });
    let mut me = Peer::new(PeerKind::User, 777_000_001 + seed as i64);
    me.is_self = Some(true);
    me.bot = Some(true);
    me.access_hash = Some(-0x1234_5678_9abc_def0 + seed as i64);
    me.username = Some(format!("SecretBot{seed}"));
    let mut friend = Peer::new(PeerKind::User, 555_123_456 + seed as i64);
    friend.access_hash = Some(0x7eed_beef_cafe_f00d - seed as i64);
    friend.phone = Some(format!("+1 555 0100 {seed:03}"));
    friend.name = Some(format!("Alice Secretname {seed}"));
    friend.username = Some(format!("alice_secret_{seed}"));
    let chat = Peer::new(PeerKind::Chat, 4_000_000 + seed as i64);
    let mut chan = Peer::new(PeerKind::Channel, 1_900_000_000 + seed as i64);
    chan.access_hash = Some(0x0123_4567_89ab_cdef + seed as i64);
    chan.channel_kind = Some(ChannelKind::Megagroup);
    chan.name = Some("Hidden Channel".into());
    data.peers = vec![me, friend, chat, chan];
    data.updates_state = UpdatesState {
        pts: 1001,
        qts: 2002,
        date: 1_700_000_000,
        seq: 33,
        channels: vec![
            ChannelState { id: 1_900_000_000 + seed as i64, pts: 55 },
            ChannelState { id: 1_800_000_000, pts: 66 },
        ],
    };
    data.sent_files = vec![SentFile {
        md5_digest: vec![seed; 16],
        file_size: 123_456,
        file_type: 1,
        id: 9_876_543_210,
        hash: -42,
    }];
    data.extras = SessionExtras {
        takeout_id: Some(31337),
        tmp_auth_key: Some(TmpAuthKey {
            dc_id: 4,
            key: AuthKey::new([0x3C ^ seed; 256]),
            expires_at: Some(1_800_000_000),
        }),
        api_id: Some(12345),
        test_mode: false,
    };
    data
}

/// Sorts what the engine may return in another order than it was given.
pub fn normalized(mut d: SessionData) -> SessionData {
    d.dc_options.sort_by_key(|x| x.id);
    d.peers.sort_by_key(|p| (p.kind as u8, p.id));
    d.sent_files.sort_by(|a, b| a.md5_digest.cmp(&b.md5_digest));
    d
}
