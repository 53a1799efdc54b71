//! The vault generation and the manifest (`engine::manifest`): rows of an older state put
//! back into the file are `Corrupt`; a vault of the previous schema gets its manifest at its
//! first unlock; `rekey` keeps every record and its order.

use crate::vault::IfExists;
use session_vault_proto::model::{ChannelState, PeerKind, SessionAcl, UpdateStateChange};

use super::support::*;
use crate::vault::crypto::RECORD_FORMAT;
use crate::vault::sqlite::SCHEMA_VERSION;
use crate::vault::store::Store;
use crate::vault::{EngineError, SessionId, Vault};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/vault/tests/fixtures/vault-record-format-1.db"
);

fn manifest(t: &TestDir) -> Option<Vec<u8>> {
    with_store(t, |s| s.manifest().expect("read meta"))
}

fn put_manifest(t: &TestDir, sealed: &[u8]) {
    with_store(t, |s| {
        // Read first: the PostgreSQL store writes only over the manifest it has seen.
        s.manifest().expect("read meta");
        s.put_manifest(sealed).expect("write meta")
    });
}

/// Opens and unlocks the vault in `t`.
async fn unlocked(t: &TestDir) -> Result<Vault, EngineError> {
    let vault = open(t);
    vault.unlock(PASS).await.map(|()| vault)
}

async fn sid(vault: &Vault, name: &str) -> SessionId {
    vault.open_session(name).await.expect("open session")
}

/// The fixture (schema 2, record format 1) migrates to this schema, unlocks, gets a manifest
/// and format-2 session records; deleting the manifest afterwards is noticed.
#[tokio::test]
async fn the_previous_schema_gets_a_manifest_at_first_unlock() {
    let t = TestDir::new();
    std::fs::copy(FIXTURE, t.db()).expect("copy the fixture");
    {
        let c = raw(&t.db());
        let v: u32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        // Schema 3 added the manifest (schema 4 the audit log, which needs no conversion).
        assert_eq!(v, 2, "the fixture is of the schema before manifests");
    }
    let vault = unlocked(&t).await.expect("the old vault unlocks");
    let alpha = sid(&vault, "alpha").await;
    assert_eq!(
        normalized(vault.export(alpha).await.unwrap()),
        normalized(full_session(1))
    );
    close(vault).await;
    let c = raw(&t.db());
    let v: u32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let formats: Vec<u8> = c
        .prepare("SELECT substr(record, 1, 1) FROM sessions")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0).map(|b| b[0]))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(formats, vec![RECORD_FORMAT; 2]);
    drop(c);
    assert!(manifest(&t).is_some());
    // Reopens as it is.
    let vault = unlocked(&t).await.expect("unlock again");
    close(vault).await;
    // The manifest deleted, to pass for a vault written before manifests: refused.
    raw(&t.db())
        .execute("DELETE FROM meta WHERE k = 'manifest'", [])
        .unwrap();
    assert_corrupt(&unlocked(&t).await, "manifest deleted");
}

/// The manifest put back from before an ACL change: the record written after it is newer
/// than the manifest says the vault is.
#[tokio::test]
pub(super) async fn a_manifest_rolled_back_under_newer_records_is_corrupt() {
    let t = TestDir::new();
    let vault = create(&t).await;
    vault
        .import(
            "alpha",
            full_session(1),
            IfExists::Refuse,
            SessionAcl::default(),
        )
        .await
        .unwrap();
    close(vault).await;
    let old = manifest(&t).expect("a manifest");
    let vault = unlocked(&t).await.unwrap();
    let alpha = sid(&vault, "alpha").await;
    let acl = SessionAcl {
        owner_uid: Some(7),
        ..SessionAcl::default()
    };
    vault.set_acl(alpha, acl).await.unwrap();
    close(vault).await;
    put_manifest(&t, &old);
    let vault = unlocked(&t)
        .await
        .expect("keyslots and sessions still match");
    let alpha = sid(&vault, "alpha").await;
    assert_corrupt(
        &vault.session_record(alpha).await,
        "record above the manifest",
    );
}

/// A rename put back (old name with its old record, which the AEAD accepts for that name) is
/// older than the session's floor.
#[tokio::test]
async fn an_old_name_put_back_is_corrupt() {
    let t = TestDir::new();
    let vault = create(&t).await;
    vault
        .import(
            "alpha",
            full_session(1),
            IfExists::Refuse,
            SessionAcl::default(),
        )
        .await
        .unwrap();
    close(vault).await;
    let c = raw(&t.db());
    let (name, record): (String, Vec<u8>) = c
        .query_row("SELECT name, record FROM sessions", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    drop(c);
    let vault = unlocked(&t).await.unwrap();
    vault.rename_session("alpha", "gamma").await.unwrap();
    close(vault).await;
    raw(&t.db())
        .execute(
            "UPDATE sessions SET name = ?1, record = ?2",
            rusqlite::params![name, record],
        )
        .unwrap();
    let vault = unlocked(&t).await.unwrap();
    let alpha = sid(&vault, "alpha").await;
    assert_corrupt(&vault.export(alpha).await, "old name put back");
    assert_corrupt(&vault.list_sessions().await, "old name put back");
}

/// `rekey` keeps every record, channel order and index, and leaves one keyslot, which the
/// passphrase opens; a passphrase change made while locked before it is recorded in the
/// manifest (the vault unlocks after it).
#[tokio::test]
async fn rekey_keeps_everything_and_its_order() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let data = full_session(3);
    let a = vault
        .import("a", data.clone(), IfExists::Refuse, SessionAcl::default())
        .await
        .unwrap();
    // Channels in an order that is not their id order.
    for id in [9, 3, 7] {
        vault
            .set_update_state(a, UpdateStateChange::Channel { id, pts: id as i32 })
            .await
            .unwrap();
    }
    let before = vault.export(a).await.unwrap();
    vault.lock().await.unwrap();
    vault
        .change_passphrase(PASS, b"an interim passphrase", fast_kdf())
        .await
        .unwrap();
    vault.unlock(b"an interim passphrase").await.unwrap();
    vault
        .rekey(b"an interim passphrase", fast_kdf())
        .await
        .unwrap();
    assert_eq!(vault.export(a).await.unwrap(), before);
    let order: Vec<i64> = vault
        .updates_state(a)
        .await
        .unwrap()
        .channels
        .iter()
        .map(|c: &ChannelState| c.id)
        .collect();
    assert_eq!(&order[order.len() - 3..], &[9, 3, 7]);
    for p in data.peers.iter().filter(|p| p.kind == PeerKind::User) {
        if let Some(u) = &p.username {
            assert!(vault.peer_by_username(a, u).await.unwrap().is_some());
        }
    }
    close(vault).await;
    let slots: i64 = raw(&t.db())
        .query_row("SELECT count(*) FROM keyslots", [], |r| r.get(0))
        .unwrap();
    assert_eq!(slots, 1);
    let vault = open(&t);
    vault.unlock(b"an interim passphrase").await.unwrap();
    assert_eq!(vault.export(a).await.unwrap(), before);
}

/// How long `rekey` holds the storage thread for a session of `SV_REKEY_PEERS` peers (default
/// 10,000): a measurement for the README, not a check. Run in release:
/// `cargo test --release -p session-vault-daemon --lib rekey_pause -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run by hand in release"]
async fn rekey_pause() {
    let n: i64 = std::env::var("SV_REKEY_PEERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let t = TestDir::new();
    let vault = create(&t).await;
    let a = vault
        .create_session("bot", SessionAcl::default())
        .await
        .unwrap();
    let mut rng = Rng(7);
    let mut i = 0;
    while i < n {
        let batch = (i..(i + 1_000).min(n))
            .map(|k| random_user(&mut rng, &format!("p{k}")))
            .collect();
        vault.cache_peers(a, batch).await.unwrap();
        i += 1_000;
    }
    vault.lock().await.unwrap();
    vault.unlock(PASS).await.unwrap();
    let started = std::time::Instant::now();
    vault.rekey(PASS, fast_kdf()).await.unwrap();
    let took = started.elapsed();
    eprintln!("rekey of {n} peers: {took:?}");
    close(vault).await;
}
