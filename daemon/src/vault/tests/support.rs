//! Shared helpers of the engine tests: temp dirs, vault construction with the cheap test KDF,
//! raw access to the SQLite file, crash images, byte scans and a deterministic RNG.
//!
//! Assertion helpers here never print record contents: the test data stands in for secrets,
//! and the suite holds itself to the rule that secrets never reach an output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use session_vault_proto::model::{
    AuthKey, ChannelKind, ChannelState, DcOption, Peer, PeerKind, SelfUser, SentFile, SessionData,
    SessionExtras, TmpAuthKey, UpdatesState,
};

use crate::vault::{EngineError, KdfParams, Result, StorageErrorKind, Vault, VaultConfig};

pub const PASS: &[u8] = b"correct horse battery staple";

/// The deliberately weak KDF, asked for by name: no test ever runs the strong default.
pub fn fast_kdf() -> KdfParams {
    KdfParams::insecure_fast_for_tests()
}

/// A config whose cache-class writes are committed within `flush_ms`.
pub fn flush_every(flush_ms: u64) -> VaultConfig {
    VaultConfig {
        flush_interval: Duration::from_millis(flush_ms),
    }
}

/// A temp dir holding `vault.db`.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("sv")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("vault.db")
    }

    /// The database file and its SQLite companions (`-wal`, `-shm`, `-journal`).
    pub fn db_files(&self) -> Vec<PathBuf> {
        let db = self.db();
        let mut files = vec![db.clone()];
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
        files
    }
}

pub async fn create(t: &TestDir) -> Vault {
    create_with(t, VaultConfig::default()).await
}

pub async fn create_with(t: &TestDir, config: VaultConfig) -> Vault {
    Vault::create(&t.db(), PASS, fast_kdf(), config)
        .await
        .expect("create vault")
}

pub fn open(t: &TestDir) -> Vault {
    open_with(t, VaultConfig::default())
}

pub fn open_with(t: &TestDir, config: VaultConfig) -> Vault {
    open_path(&t.db(), config).expect("open vault")
}

/// [`Vault::open`], retrying for a bounded time while the storage thread of a vault that was
/// just closed (or a process that was just killed) still holds the file's exclusive lock.
pub fn open_path(path: &Path, config: VaultConfig) -> Result<Vault> {
    let mut attempts = 0;
    loop {
        match Vault::open(path, config.clone()) {
            Err(EngineError::Storage {
                kind: StorageErrorKind::Busy,
                ..
            }) if attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

/// Opens the vault file directly with rusqlite, once no storage thread holds it any more.
///
/// `close()` returns after its barrier; the storage thread exits (and releases the
/// file, its two connections closed) only once every handle is dropped, a moment later. Taking
/// a write lock proves the file is free; rusqlite's 5 s busy timeout and a bounded retry
/// cover the gap.
pub fn raw(path: &Path) -> rusqlite::Connection {
    // The vault's connections do not lock others out (normal locking mode, for the
    // background checkpointer): the last of them to close checkpoints and removes the WAL,
    // so its absence says they are gone. A WAL left by a killed process stays: wait a while.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    for _ in 0..100 {
        if !Path::new(&wal).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut attempts = 0;
    loop {
        let conn = rusqlite::Connection::open(path).expect("open the vault file with rusqlite");
        match conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;") {
            Ok(()) => return conn,
            Err(_) if attempts < 10 => {
                attempts += 1;
                drop(conn);
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the vault file is still locked: {e}"),
        }
    }
}

/// Closes `vault` (its last handle) and waits until its storage thread released the file.
pub async fn close(vault: Vault) {
    let path = vault.path().to_owned();
    vault.close().await.expect("close vault");
    drop(raw(&path));
}

/// Copies the database and its WAL (not the shared-memory index, which a crash loses) into a
/// fresh dir: the image a power cut or SIGKILL would leave at this instant. Call it only
/// while the storage thread is idle.
pub fn crash_image(t: &TestDir) -> TestDir {
    let copy = TestDir::new();
    std::fs::copy(t.db(), copy.db()).expect("copy the database");
    let files = t.db_files();
    let copy_files = copy.db_files();
    if files[1].exists() {
        std::fs::copy(&files[1], &copy_files[1]).expect("copy the WAL");
    }
    copy
}

/// The raw bytes of every file of the database that exists, with its name.
pub fn read_db_files(t: &TestDir) -> Vec<(String, Vec<u8>)> {
    t.db_files()
        .into_iter()
        .filter_map(|p| {
            let bytes = std::fs::read(&p).ok()?;
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, bytes))
        })
        .collect()
}

/// "Ok" or the error, for assertion messages that must not print record contents.
pub fn outcome<T>(r: &Result<T>) -> String {
    match r {
        Ok(_) => "Ok(<value not shown>)".into(),
        Err(e) => format!("Err({e:?})"),
    }
}

/// Asserts `r` is `Corrupt`, without printing the value if it is not.
#[track_caller]
pub fn assert_corrupt<T>(r: &Result<T>, what: &str) {
    assert!(
        matches!(r, Err(EngineError::Corrupt { .. })),
        "{what}: expected Corrupt, got {}",
        outcome(r)
    );
}

/// Asserts two values are equal without printing them (they hold test secrets).
#[track_caller]
pub fn assert_same<T: PartialEq>(got: &T, want: &T, what: &str) {
    assert!(got == want, "{what}: values differ (contents not shown)");
}

/// SplitMix64: a tiny deterministic generator, so that test data is reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A pseudo-random auth key determined by `seed`.
pub fn auth_key(seed: u64) -> AuthKey {
    let mut bytes = [0u8; 256];
    Rng(seed ^ 0x5eed_a17b_0000_0000).fill(&mut bytes);
    AuthKey::new(bytes)
}

/// A session exercising every field of the data model, with recognisable secrets.
pub fn full_session(seed: u8) -> SessionData {
    let mut data = SessionData {
        home_dc: 4,
        ..SessionData::default()
    };
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
    data.self_user = Some(SelfUser {
        id: 777_000_001 + seed as i64,
        bot: true,
    });
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
            ChannelState {
                id: 1_900_000_000 + seed as i64,
                pts: 55,
            },
            ChannelState {
                id: 1_800_000_000,
                pts: 66,
            },
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

/// A user peer with every field known, all derived from `rng` (ids of 6–7 bytes, so that
/// their binary forms are distinctive in a byte scan).
pub fn random_user(rng: &mut Rng, tag: &str) -> Peer {
    let id = (rng.next_u64() >> 12) as i64 | 0x0000_1000_0000_0000;
    let mut p = Peer::new(PeerKind::User, id);
    p.access_hash = Some(rng.next_u64() as i64);
    p.bot = Some(false);
    p.username = Some(format!("Usr{tag}x{:08x}", rng.next_u64() as u32));
    p.phone = Some(format!("+7 9{:09}", rng.below(1_000_000_000)));
    p.name = Some(format!("Fullname{tag} Q{:06}", rng.below(1_000_000)));
    p
}

/// Sorts what the engine may return in another order than it was given.
pub fn normalized(mut d: SessionData) -> SessionData {
    d.dc_options.sort_by_key(|x| x.id);
    d.peers.sort_by_key(|p| (p.kind as u8, p.id));
    d.sent_files.sort_by(|a, b| a.md5_digest.cmp(&b.md5_digest));
    d
}
