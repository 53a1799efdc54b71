//! Shared helpers of the engine tests: temp dirs, vault construction with the cheap test KDF,
//! raw access to the SQLite file, crash images, byte scans and a deterministic RNG.
//!
//! Assertion helpers here never print record contents: the test data stands in for secrets,
//! and the suite holds itself to the rule that secrets never reach an output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use session_vault_proto::model::{
    AuthKey, ChannelKind, ChannelState, DcOption, Peer, PeerKind, SelfUser, SentFile, SessionAcl,
    SessionData, SessionExtras, TmpAuthKey, UpdatesState,
};

use crate::vault::backend::Backend;
use crate::vault::postgres::PgTarget;
use crate::vault::postgres::test_cluster::Cluster;
use crate::vault::{
    EngineError, IfExists, KdfParams, Result, SessionId, StorageErrorKind, StoreLocation, Vault,
    VaultConfig,
};

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

thread_local! {
    /// The cluster that [`TestDir::new`] gives databases of, while [`with_postgres`] runs.
    // Already `const`: clippy 1.96 says otherwise on targets whose thread-locals are the OS's
    // (x86_64-win7-windows-gnu), rust-clippy#17566.
    #[cfg_attr(windows, allow(clippy::missing_const_for_thread_local, reason = "rust-clippy#17566"))]
    static POSTGRES: std::cell::RefCell<Option<Arc<Cluster>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `case` (a test of this suite, called as a function) with every [`TestDir`] it makes
/// backed by a fresh database of `cluster` instead of a SQLite file. The test's own runtime
/// runs on this thread, so the thread-local reaches it.
pub fn with_postgres(cluster: &Arc<Cluster>, case: impl FnOnce()) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            POSTGRES.with(|p| *p.borrow_mut() = None);
        }
    }
    POSTGRES.with(|p| *p.borrow_mut() = Some(Arc::clone(cluster)));
    let _reset = Reset;
    case();
}

/// A PostgreSQL database that stands in for `vault.db`.
pub struct PgDb {
    pub cluster: Arc<Cluster>,
    pub name: String,
    pub url: String,
}

/// A temp dir holding `vault.db` — or, under [`with_postgres`], the password file of a
/// fresh PostgreSQL database that holds the vault instead.
pub struct TestDir {
    pub dir: tempfile::TempDir,
    pub pg: Option<PgDb>,
}

impl TestDir {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sv")
            .tempdir()
            .expect("temp dir");
        let pg = POSTGRES.with(|p| p.borrow().clone()).map(|cluster| {
            let name = cluster.create_database();
            cluster.write_password_file(&dir.path().join("pgpass"));
            PgDb {
                url: cluster.url(&name),
                name,
                cluster,
            }
        });
        TestDir { dir, pg }
    }

    /// Where the vault lives: `vault.db`, or the PostgreSQL database.
    pub fn location(&self) -> StoreLocation {
        match &self.pg {
            None => StoreLocation::Sqlite(self.db()),
            Some(pg) => StoreLocation::Postgres(
                PgTarget::with_password_from(&pg.url, Some(&self.dir.path().join("pgpass")))
                    .expect("PostgreSQL target"),
            ),
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

/// Runs `f` on the store of `t`'s (closed) vault, opened directly, on a thread of its own
/// (the PostgreSQL client must not run on the test's runtime thread).
pub fn with_store<T: Send>(t: &TestDir, f: impl FnOnce(&mut Backend) -> T + Send) -> T {
    let location = t.location();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut store = location.open().expect("open the closed vault's store");
            f(&mut store)
        })
        .join()
        .expect("the store thread panicked")
    })
}

pub async fn create(t: &TestDir) -> Vault {
    create_with(t, VaultConfig::default()).await
}

pub async fn create_with(t: &TestDir, config: VaultConfig) -> Vault {
    let vault = Vault::open_store(&t.location(), config).expect("open the new vault");
    vault.init(PASS, fast_kdf()).await.expect("create vault");
    vault
}

/// A new vault ([`create_with`] `config`) in a new [`TestDir`], holding one empty session,
/// "acct", made by [`new_session`]: where most tests of one session start.
pub async fn vault_with_session(config: VaultConfig) -> (TestDir, Vault, SessionId) {
    let t = TestDir::new();
    let vault = create_with(&t, config).await;
    let sid = new_session(&vault, "acct").await;
    (t, vault, sid)
}

/// Creates the empty session `name` with the default ACL (this process's uid); panics if
/// that fails.
pub async fn new_session(vault: &Vault, name: &str) -> SessionId {
    vault
        .create_session(name, SessionAcl::default())
        .await
        .expect("create session")
}

/// Imports `data` as the new session `name` with the default ACL (refused, and a panic, if
/// the name is taken).
pub async fn import_new(vault: &Vault, name: &str, data: SessionData) -> SessionId {
    vault
        .import(name, data, IfExists::Refuse, SessionAcl::default())
        .await
        .expect("import a new session")
}

/// The names of the sessions, in the order `list_sessions` gives them.
pub async fn session_names(vault: &Vault) -> Vec<String> {
    let listed = vault.list_sessions().await.expect("list sessions");
    listed.into_iter().map(|s| s.name).collect()
}

pub fn open(t: &TestDir) -> Vault {
    open_with(t, VaultConfig::default())
}

pub fn open_with(t: &TestDir, config: VaultConfig) -> Vault {
    match t.pg {
        None => open_path(&t.db(), config).expect("open vault"),
        Some(_) => Vault::open_store(&t.location(), config).expect("open vault"),
    }
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
    let postgres = vault.is_postgres();
    vault.close().await.expect("close vault");
    if !postgres {
        drop(raw(&path));
    }
}

/// Copies the database and its WAL (not the shared-memory index, which a crash loses) into a
/// fresh dir: the image a power cut or SIGKILL would leave at this instant. Call it only
/// while the storage thread is idle.
///
/// On PostgreSQL the committed state is what a second connection sees: the "image" is the
/// same database, opened by a second vault beside the first.
pub fn crash_image(t: &TestDir) -> TestDir {
    if let Some(pg) = &t.pg {
        let dir = tempfile::Builder::new()
            .prefix("sv")
            .tempdir()
            .expect("temp dir");
        pg.cluster.write_password_file(&dir.path().join("pgpass"));
        return TestDir {
            dir,
            pg: Some(PgDb {
                cluster: Arc::clone(&pg.cluster),
                name: pg.name.clone(),
                url: pg.url.clone(),
            }),
        };
    }
    let copy = TestDir::new();
    std::fs::copy(t.db(), copy.db()).expect("copy the database");
    let files = t.db_files();
    let copy_files = copy.db_files();
    if files[1].exists() {
        std::fs::copy(&files[1], &copy_files[1]).expect("copy the WAL");
    }
    copy
}

/// The raw bytes of every file of the database that exists, with its name. For a
/// PostgreSQL store: a `pg_dump` of the database, the same with every `bytea` hex literal
/// decoded, and the files of the database's directory in the cluster.
pub fn read_db_files(t: &TestDir) -> Vec<(String, Vec<u8>)> {
    if let Some(pg) = &t.pg {
        let dump = pg.cluster.dump(&pg.name);
        let decoded = decode_hex_runs(&dump);
        let mut files = vec![
            ("pg_dump".to_owned(), dump),
            ("pg_dump, bytea decoded".to_owned(), decoded),
        ];
        for path in pg.cluster.database_files(&pg.name) {
            if let Ok(bytes) = std::fs::read(&path) {
                let name = format!(
                    "base/{}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                );
                files.push((name, bytes));
            }
        }
        return files;
    }
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

/// Every `\\x`-prefixed run of hex digits in a `pg_dump` (how it writes `bytea`), decoded,
/// one after another.
fn decode_hex_runs(dump: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < dump.len() {
        if dump[i] == b'\\' && dump[i + 1] == b'x' {
            i += 2;
            while i + 1 < dump.len() {
                match (hex(dump[i]), hex(dump[i + 1])) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => break,
                }
                i += 2;
            }
            out.push(b'|');
        } else {
            i += 1;
        }
    }
    out
}

/// Closes `vault` and opens and unlocks it again.
pub async fn reopened(vault: Vault, t: &TestDir) -> Vault {
    close(vault).await;
    let vault = open(t);
    vault.unlock(PASS).await.expect("unlock");
    vault
}

/// An engine on a new vault file at schema `version` (what a build of that version would
/// have made: header and one passphrase keyslot, [`PASS`]), to write data at that version.
pub fn engine_at_version(
    t: &TestDir,
    version: u32,
) -> crate::vault::engine::Engine<crate::vault::sqlite::SqliteStore> {
    use crate::vault::crypto::{self, Keyslot, SecretKey, VAULT_ID_LEN};
    let store =
        crate::vault::sqlite::SqliteStore::open_at_version(&t.db(), version).expect("old store");
    let mut engine = crate::vault::engine::Engine::new(store).expect("engine");
    let mut vault_id = [0u8; VAULT_ID_LEN];
    crypto::fill_random(&mut vault_id).unwrap();
    let dek = SecretKey::random().unwrap();
    let slot = Keyslot::seal(&vault_id, 0, "passphrase", fast_kdf(), PASS, &dek).unwrap();
    let header = crate::vault::store::Header {
        vault_id,
        created_at: 1_700_000_000,
    };
    engine.initialize(header, slot, dek).expect("initialize");
    engine
}
