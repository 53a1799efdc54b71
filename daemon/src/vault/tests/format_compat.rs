//! Vaults written by earlier builds keep reading: records written as MessagePack maps keyed
//! by field name (before records became positional) read back whole, beside the positional
//! records this build writes into the same vault.
//!
//! `fixtures/vault-record-format-1.db` was written by the engine at commit f661702 (the last
//! one writing named records) through [`Vault`](crate::vault::Vault), with the cheap test KDF
//! and the passphrase [`PASS`]: `Vault::create`, then the sessions `alpha` =
//! `full_session(1)` and `beta` = `full_session(2)` imported with [`acl`], then a clean
//! `close` (no WAL left). Its records are all named maps of record format 1.

use crate::vault::IfExists;
use session_vault_proto::model::{
    ChannelState, PeerKey, PeerKind, SessionAcl, SessionData, UpdateStateChange,
};

use super::support::*;
use crate::vault::{SessionId, Vault, VaultState};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/vault/tests/fixtures/vault-record-format-1.db"
);

/// The ACL both fixture sessions were imported with.
fn acl() -> SessionAcl {
    SessionAcl {
        owner_uid: Some(1000),
        uids: vec![1001, 1002],
        gids: vec![2000],
    }
}

/// A copy of the fixture (opening migrates and writes; the committed file stays as it is).
fn fixture_copy() -> TestDir {
    let t = TestDir::new();
    std::fs::copy(FIXTURE, t.db()).expect("copy the fixture vault");
    t
}

/// Everything a session holds reads back as written, by every way of reading it.
async fn assert_reads(vault: &Vault, sid: SessionId, want: &SessionData, what: &str) {
    let got = vault.export(sid).await.expect("export");
    assert_same(&normalized(got), &normalized(want.clone()), what);
    for p in &want.peers {
        let by_key = vault.peer(sid, p.key()).await.expect("peer by key");
        assert_same(&by_key.as_ref(), &Some(p), what);
        if let Some(u) = &p.username {
            let by_name = vault.peer_by_username(sid, u).await.expect("by username");
            assert_same(&by_name.as_ref(), &Some(p), what);
        }
        if let Some(phone) = &p.phone {
            let by_phone = vault.peer_by_phone(sid, phone).await.expect("by phone");
            assert_same(&by_phone.as_ref(), &Some(p), what);
        }
    }
    let me = vault
        .self_peer(sid)
        .await
        .expect("self peer")
        .expect("a self peer");
    assert_eq!(
        Some(me.id),
        want.self_user.map(|u| u.id),
        "{what}: self user"
    );
    let state = vault.updates_state(sid).await.expect("updates state");
    assert_same(&state, &want.updates_state, what);
    let dcs = vault.dc_options(sid).await.expect("dc options");
    let mut want_dcs = want.dc_options.clone();
    want_dcs.sort_by_key(|d| d.id);
    assert_same(&dcs, &want_dcs, what);
    let home = dcs.iter().find(|d| d.id == want.home_dc).expect("home DC");
    assert!(home.auth_key.is_some(), "{what}: the home DC's auth key");
    let record = vault.session_record(sid).await.expect("session record");
    assert_eq!(record.acl, acl(), "{what}: ACL");
    assert_same(&record.extras, &want.extras, what);
    let f = &want.sent_files[0];
    let file = vault
        .sent_file(sid, f.md5_digest.clone(), f.file_size, f.file_type)
        .await
        .expect("sent file");
    assert_same(&file.as_ref(), &Some(f), what);
}

#[tokio::test]
async fn a_vault_of_named_records_reads_and_takes_positional_ones_beside_them() {
    let t = fixture_copy();
    let vault = open(&t);
    assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
    vault.unlock(PASS).await.expect("unlock the fixture");
    let names: Vec<_> = vault
        .list_sessions()
        .await
        .expect("list")
        .into_iter()
        .map(|s| (s.name, s.peer_count, s.has_auth_key))
        .collect();
    assert_eq!(
        names,
        [("alpha".into(), 4, true), ("beta".into(), 4, true)],
        "sessions in the fixture"
    );
    let alpha = vault.open_session("alpha").await.unwrap();
    let beta = vault.open_session("beta").await.unwrap();
    let mut want_alpha = full_session(1);
    let want_beta = full_session(2);
    assert_reads(&vault, alpha, &want_alpha, "alpha as written").await;
    assert_reads(&vault, beta, &want_beta, "beta as written").await;

    // Rewrite some of alpha's rows (now positional), leave the others named.
    let mut friend = want_alpha.peers[1].clone();
    friend.access_hash = Some(42);
    vault
        .cache_peers(alpha, vec![friend.clone()])
        .await
        .unwrap();
    want_alpha.peers[1] = friend;
    want_alpha.extras.takeout_id = Some(1);
    vault
        .set_extras(alpha, want_alpha.extras.clone())
        .await
        .unwrap();
    vault
        .set_update_state(
            alpha,
            UpdateStateChange::Primary {
                pts: 7,
                date: 8,
                seq: 9,
            },
        )
        .await
        .unwrap();
    (want_alpha.updates_state.pts, want_alpha.updates_state.date) = (7, 8);
    want_alpha.updates_state.seq = 9;
    let chan = want_alpha.updates_state.channels.remove(0);
    vault
        .set_update_state(
            alpha,
            UpdateStateChange::Channel {
                id: chan.id,
                pts: 99,
            },
        )
        .await
        .unwrap();
    want_alpha.updates_state.channels.push(ChannelState {
        id: chan.id,
        pts: 99,
    });
    let mut gamma = full_session(3);
    gamma.peers.truncate(3);
    let gamma_id = vault
        .import("gamma", gamma.clone(), IfExists::Refuse, acl())
        .await
        .unwrap();
    close(vault).await;

    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    assert_reads(&vault, alpha, &want_alpha, "alpha, old and new rows").await;
    assert_reads(&vault, beta, &want_beta, "beta, untouched").await;
    assert_reads(&vault, gamma_id, &gamma, "gamma, all new rows").await;
    let absent = PeerKey {
        kind: PeerKind::Channel,
        id: want_alpha.peers[1].id,
    };
    assert_eq!(vault.peer(alpha, absent).await.unwrap(), None);
}

#[test]
fn the_fixture_is_what_its_docs_say() {
    // A bare database, checkpointed (opening it, even read-only, would create a WAL beside
    // it: only copies are opened).
    for suffix in ["-wal", "-shm", "-journal"] {
        let companion = format!("{FIXTURE}{suffix}");
        assert!(!std::path::Path::new(&companion).exists(), "{companion}");
    }
    // Every row of every table is sealed at record format 1.
    let t = fixture_copy();
    let c = raw(&t.db());
    for (table, col) in [
        ("sessions", "record"),
        ("dc_options", "v"),
        ("peers", "v"),
        ("state", "v"),
        ("channels", "v"),
        ("sent_files", "v"),
    ] {
        let versions: Vec<Vec<u8>> = c
            .prepare(&format!("SELECT DISTINCT substr({col}, 1, 1) FROM {table}"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|v| v.unwrap())
            .collect();
        assert_eq!(versions, [[1u8]], "{table}");
    }
}
