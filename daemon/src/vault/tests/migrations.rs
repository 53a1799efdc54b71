//! Schema migrations and refusal of foreign files.
//!
//! - A vault at every earlier schema version (0 = an empty file) opens through
//!   [`Vault::open`], is migrated to [`SCHEMA_VERSION`], and is fully usable; data written at
//!   an earlier version reads back after the migration. A step that fails half-way leaves
//!   the file at the version before it (each step runs in a transaction).
//! - A vault newer than this build is refused with `UnsupportedFormat`; random garbage, a
//!   truncated vault and another application's SQLite database are refused (`NotAVault` or a
//!   storage error naming the damage) — each left byte-for-byte as it was.

use crate::vault::IfExists;
use session_vault_proto::model::SessionAcl;

use super::support::*;
use crate::vault::sqlite::{APPLICATION_ID, SCHEMA_VERSION, SqliteStore};
use crate::vault::{EngineError, Vault, VaultConfig, VaultState};

/// The version on disk, read without migrating (a target of 0 applies no step).
fn version_on_disk(t: &TestDir) -> u32 {
    let store = SqliteStore::open_at_version(&t.db(), 0).expect("open without migrating");
    store.schema_version().expect("schema version")
}

/// Every file of the database, by name, as bytes.
fn snapshot(t: &TestDir) -> Vec<(String, Vec<u8>)> {
    read_db_files(t)
}

/// Imports a full session into an open vault and checks it reads back.
async fn assert_usable(vault: &Vault, name: &str, seed: u8) {
    let data = full_session(seed);
    let sid = vault
        .import(name, data.clone(), IfExists::Refuse, SessionAcl::default())
        .await
        .expect("import after migration");
    let got = vault.export(sid).await.expect("export after migration");
    assert_same(&normalized(got), &normalized(data), "exported session");
}

#[tokio::test]
async fn every_earlier_schema_version_is_migrated_and_usable() {
    const { assert!(SCHEMA_VERSION >= 1) };
    // Version 0 twice: a zero-byte file, and an SQLite file with no schema yet.
    let mut cases: Vec<(String, Option<u32>)> = vec![("zero-byte file".into(), None)];
    cases.extend((0..SCHEMA_VERSION).map(|v| (format!("version {v}"), Some(v))));
    for (what, version) in cases {
        let t = TestDir::new();
        match version {
            None => std::fs::write(t.db(), b"").unwrap(),
            Some(v) => {
                let old = SqliteStore::open_at_version(&t.db(), v).expect("build old version");
                assert_eq!(old.schema_version().unwrap(), v, "{what}");
                drop(old);
            }
        }

        let vault = open(&t);
        assert_eq!(
            vault.status().await.unwrap().state,
            VaultState::Uninitialized,
            "{what}"
        );
        vault.init(PASS, fast_kdf()).await.expect("init");
        assert_usable(&vault, "fresh", 1).await;
        close(vault).await;
        assert_eq!(version_on_disk(&t), SCHEMA_VERSION, "{what}: migrated");
        let app_id: i32 = raw(&t.db())
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .unwrap();
        assert_eq!(app_id, APPLICATION_ID, "{what}: application id set");

        let vault = open(&t);
        vault.unlock(PASS).await.expect("unlock after migration");
        let sid = vault.open_session("fresh").await.unwrap();
        let got = vault.export(sid).await.unwrap();
        assert_same(&normalized(got), &normalized(full_session(1)), &what);
        assert_usable(&vault, "second", 2).await;
        close(vault).await;
        assert_eq!(version_on_disk(&t), SCHEMA_VERSION, "{what}: stays");
    }
}

#[tokio::test]
async fn data_written_at_an_earlier_version_survives_migration() {
    for v in 1..SCHEMA_VERSION {
        let t = TestDir::new();
        // What a build at version `v` wrote: header, keyslot, and a session limited to the
        // tables that version has (Telethon's sent files arrived in version 2).
        let mut old_data = full_session(5);
        if v < 2 {
            old_data.sent_files.clear();
        }
        {
            let mut engine = engine_at_version(&t, v);
            engine
                .import("old", &old_data, IfExists::Refuse, SessionAcl::default())
                .expect("import at the old version");
        }
        assert_eq!(version_on_disk(&t), v);

        let vault = open(&t);
        assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
        vault.unlock(PASS).await.expect("unlock migrated vault");
        let sid = vault.open_session("old").await.unwrap();
        let got = vault.export(sid).await.unwrap();
        assert_same(
            &normalized(got),
            &normalized(old_data.clone()),
            &format!("session written at version {v}"),
        );
        assert_usable(&vault, "new", 6).await;
        close(vault).await;
        assert_eq!(version_on_disk(&t), SCHEMA_VERSION);
    }
}

/// Asserts that opening `t`'s file fails as `check` expects, through both the vault and the
/// store, and that no byte of any file changed (and no file appeared or vanished).
#[track_caller]
fn assert_refused_untouched(t: &TestDir, what: &str, check: impl Fn(&EngineError) -> bool) {
    let before = snapshot(t);
    match Vault::open(&t.db(), VaultConfig::default()) {
        Ok(_) => panic!("{what}: Vault::open accepted it"),
        Err(e) => assert!(check(&e), "{what}: Vault::open gave {e:?}"),
    }
    match SqliteStore::open(&t.db()) {
        Ok(_) => panic!("{what}: SqliteStore::open accepted it"),
        Err(e) => assert!(check(&e), "{what}: SqliteStore::open gave {e:?}"),
    }
    let after = snapshot(t);
    let names = |s: &[(String, Vec<u8>)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before), "{what}: files");
    for ((name, a), (_, b)) in after.iter().zip(&before) {
        assert!(a == b, "{what}: {name} was modified");
    }
}

fn not_a_vault(e: &EngineError) -> bool {
    matches!(e, EngineError::NotAVault { .. })
}

/// SQLite's own verdict on a damaged file, passed through as a storage error.
fn is_malformed(e: &EngineError) -> bool {
    matches!(e, EngineError::Storage { message, .. } if message.contains("malformed"))
}

#[tokio::test]
async fn newer_schema_is_refused_and_left_untouched() {
    let t = TestDir::new();
    let vault = create(&t).await;
    assert_usable(&vault, "acct", 1).await;
    close(vault).await;
    let newer = SCHEMA_VERSION + 1;
    raw(&t.db())
        .execute_batch(&format!("PRAGMA user_version = {newer}"))
        .unwrap();
    assert_refused_untouched(&t, "newer schema", |e| {
        matches!(e, EngineError::UnsupportedFormat { found, supported }
            if *found == newer && *supported == SCHEMA_VERSION)
    });
}

#[tokio::test]
async fn garbage_is_refused_and_left_untouched() {
    let mut rng = Rng(0x6a7b_a6e5);
    for len in [100usize, 4096, 64 * 1024] {
        let t = TestDir::new();
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes);
        std::fs::write(t.db(), &bytes).unwrap();
        assert_refused_untouched(&t, &format!("{len} random bytes"), not_a_vault);
    }
    // Text that happens to start like SQLite's magic string.
    let t = TestDir::new();
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 4000));
    std::fs::write(t.db(), &bytes).unwrap();
    assert_refused_untouched(&t, "fake magic", not_a_vault);
}

#[tokio::test]
async fn truncated_vault_is_refused_and_left_untouched() {
    let whole = TestDir::new();
    let vault = create(&whole).await;
    assert_usable(&vault, "acct", 1).await;
    close(vault).await;
    let bytes = std::fs::read(whole.db()).unwrap();
    let page: usize = raw(&whole.db())
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert!(bytes.len() > 3 * page, "the vault spans several pages");
    // Cuts inside the header, inside page 1, and whole pages off the end (a partial last
    // page alone can be harmless: SQLite reads the missing bytes of an unused page as zeros).
    let end = bytes.len();
    for cut in [
        50,
        100,
        page - 1,
        page,
        end / 2,
        end - page,
        end - page - 1000,
    ] {
        let t = TestDir::new();
        std::fs::write(t.db(), &bytes[..cut]).unwrap();
        assert_refused_untouched(&t, &format!("vault cut to {cut} bytes"), |e| {
            not_a_vault(e) || is_malformed(e)
        });
    }
}

#[tokio::test]
async fn another_applications_database_is_refused_and_left_untouched() {
    // A Telethon session file.
    let t = TestDir::new();
    {
        let c = rusqlite::Connection::open(t.db()).unwrap();
        c.execute_batch(
            "CREATE TABLE version (version INTEGER PRIMARY KEY);
             INSERT INTO version VALUES (7);
             CREATE TABLE sessions (dc_id INTEGER PRIMARY KEY, server_address TEXT,
                 port INTEGER, auth_key BLOB, takeout_id INTEGER);
             CREATE TABLE entities (id INTEGER PRIMARY KEY, hash INTEGER NOT NULL,
                 username TEXT, phone INTEGER, name TEXT, date INTEGER);",
        )
        .unwrap();
    }
    assert_refused_untouched(&t, "Telethon session", not_a_vault);

    // An empty database that another application already claimed by its application id.
    let t = TestDir::new();
    rusqlite::Connection::open(t.db())
        .unwrap()
        .execute_batch("PRAGMA application_id = 1179605836; PRAGMA user_version = 1;")
        .unwrap();
    assert_refused_untouched(&t, "foreign application id", not_a_vault);

    // A WAL-mode database with a table and no application id.
    let t = TestDir::new();
    rusqlite::Connection::open(t.db())
        .unwrap()
        .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    assert_refused_untouched(&t, "foreign WAL database", not_a_vault);
}

#[tokio::test]
async fn a_failing_migration_step_leaves_the_previous_version() {
    // Step 1 → 2 creates `sent_files`; a file at version 1 that already has such a table
    // makes that step fail half-way. Migrations run in a transaction each: nothing of the
    // step may remain, and the file stays a valid version-1 vault.
    const { assert!(SCHEMA_VERSION >= 2) };
    let t = TestDir::new();
    drop(SqliteStore::open_at_version(&t.db(), 1).unwrap());
    raw(&t.db())
        .execute_batch("CREATE TABLE sent_files (x)")
        .unwrap();
    let r = Vault::open(&t.db(), VaultConfig::default());
    assert!(r.is_err(), "the conflicting migration failed");
    drop(r);
    assert_eq!(version_on_disk(&t), 1, "still version 1");
    let c = raw(&t.db());
    let index: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('peers_username', 'peers_phone')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 0, "no object of the failed step remains");
    // Once the obstacle is gone, the migration goes through.
    c.execute_batch("DROP TABLE sent_files").unwrap();
    drop(c);
    let vault = open(&t);
    vault.init(PASS, fast_kdf()).await.unwrap();
    assert_usable(&vault, "acct", 3).await;
    close(vault).await;
    assert_eq!(version_on_disk(&t), SCHEMA_VERSION);
}
