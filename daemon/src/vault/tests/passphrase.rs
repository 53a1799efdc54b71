//! Passphrases and the state machine: a wrong passphrase is refused and changes nothing; a
//! passphrase change rewrites the keyslot only (the data stays readable, the old passphrase
//! stops working); empty passphrases and a second `init` are refused; every operation is
//! refused with `Locked` while locked and `Uninitialized` before `init`.

use crate::vault::IfExists;
use session_vault_proto::model::{
    DcOption, Peer, PeerKey, PeerKind, SentFile, SessionAcl, SessionData, SessionExtras,
    UpdateStateChange,
};

use super::support::*;
use crate::vault::crypto::Keyslot;
use crate::vault::store::Store;
use crate::vault::{EngineError, KdfParams, SessionId, Vault, VaultConfig, VaultState};

const NEW_PASS: &[u8] = b"a different, longer passphrase";

/// The keyslots as stored, read through the store of a closed vault.
fn keyslots_on_disk(t: &TestDir) -> Vec<Keyslot> {
    with_store(t, |store| store.keyslots().expect("read keyslots"))
}

/// A vault holding two full sessions, closed; returns what they hold.
async fn vault_with_data(t: &TestDir) -> Vec<(String, SessionData)> {
    let vault = create(t).await;
    let mut sessions = Vec::new();
    for seed in [1u8, 2] {
        let name = format!("acct{seed}");
        let data = full_session(seed);
        import_new(&vault, &name, data.clone()).await;
        sessions.push((name, data));
    }
    close(vault).await;
    sessions
}

/// Every session reads back exactly as written.
async fn assert_data(vault: &Vault, sessions: &[(String, SessionData)]) {
    for (name, data) in sessions {
        let sid = vault.open_session(name).await.expect("open session");
        let got = vault.export(sid).await.expect("export");
        assert_same(&normalized(got), &normalized(data.clone()), name);
    }
    let listed = vault.list_sessions().await.expect("list");
    assert_eq!(
        listed.len(),
        sessions.len(),
        "no session appeared or vanished"
    );
}

#[track_caller]
fn assert_bad_passphrase(r: &crate::vault::Result<()>, what: &str) {
    assert!(
        matches!(r, Err(EngineError::BadPassphrase)),
        "{what}: expected BadPassphrase, got {r:?}"
    );
}

#[tokio::test]
pub(super) async fn wrong_passphrase_is_refused_and_changes_nothing() {
    let t = TestDir::new();
    let sessions = vault_with_data(&t).await;
    let slots_before = keyslots_on_disk(&t);
    assert_eq!(slots_before.len(), 1);

    let vault = open(&t);
    assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
    for wrong in [
        &b"wrong"[..],
        b"",
        b"correct horse battery stapl",
        b"correct horse battery staple ",
        b"Correct horse battery staple",
    ] {
        assert_bad_passphrase(&vault.unlock(wrong).await, "unlock with a wrong passphrase");
        let status = vault.status().await.unwrap();
        assert_eq!(status.state, VaultState::Locked, "still locked");
        assert_eq!(
            status.sessions, None,
            "a locked vault does not count sessions"
        );
        assert!(matches!(
            vault.open_session("acct1").await,
            Err(EngineError::Locked)
        ));
    }
    // A change attempt with a wrong old passphrase is refused the same way.
    assert_bad_passphrase(
        &vault
            .change_passphrase(b"wrong", NEW_PASS, fast_kdf())
            .await,
        "change with a wrong old passphrase",
    );
    close(vault).await;
    assert_same(
        &keyslots_on_disk(&t),
        &slots_before,
        "keyslots after wrong attempts",
    );

    // The right passphrase still opens everything.
    let vault = open(&t);
    vault
        .unlock(PASS)
        .await
        .expect("unlock with the right passphrase");
    assert_data(&vault, &sessions).await;

    // On an unlocked vault a wrong passphrase is refused and the vault stays unlocked.
    assert_bad_passphrase(&vault.unlock(b"wrong").await, "unlock while unlocked");
    assert_eq!(vault.status().await.unwrap().state, VaultState::Unlocked);
    assert_data(&vault, &sessions).await;
    close(vault).await;
    assert_same(
        &keyslots_on_disk(&t),
        &slots_before,
        "keyslots after the session",
    );
}

#[tokio::test]
pub(super) async fn changed_passphrase_keeps_the_data_and_retires_the_old_one() {
    let t = TestDir::new();
    let sessions = vault_with_data(&t).await;
    let before = keyslots_on_disk(&t);

    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    // Parameters are stored per slot so that they can be raised later: ask for other ones.
    let raised = KdfParams {
        t_cost: 2,
        ..fast_kdf()
    };
    vault
        .change_passphrase(PASS, NEW_PASS, raised)
        .await
        .expect("change passphrase");
    // Still unlocked, with the same keys; only the new passphrase checks out.
    assert_eq!(vault.status().await.unwrap().state, VaultState::Unlocked);
    assert_bad_passphrase(&vault.unlock(PASS).await, "old passphrase after change");
    vault.unlock(NEW_PASS).await.expect("new passphrase");
    assert_data(&vault, &sessions).await;
    close(vault).await;

    let after = keyslots_on_disk(&t);
    assert_eq!(after.len(), 1, "the slot was rewritten, not added");
    assert_eq!(after[0].slot, before[0].slot);
    assert_eq!(after[0].kdf, raised, "the new slot has the requested KDF");
    assert_ne!(after[0].salt, before[0].salt, "a fresh salt");
    assert_ne!(after[0].wrapped, before[0].wrapped);

    let vault = open(&t);
    assert_bad_passphrase(&vault.unlock(PASS).await, "old passphrase after reopen");
    assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
    vault
        .unlock(NEW_PASS)
        .await
        .expect("new passphrase after reopen");
    assert_data(&vault, &sessions).await;

    // A change also works on a locked vault (the old passphrase proves the right), and does
    // not unlock it.
    vault.lock().await.unwrap();
    const THIRD: &[u8] = b"third passphrase";
    vault
        .change_passphrase(NEW_PASS, THIRD, fast_kdf())
        .await
        .expect("change while locked");
    assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
    assert_bad_passphrase(&vault.unlock(NEW_PASS).await, "second passphrase");
    vault.unlock(THIRD).await.expect("third passphrase");
    assert_data(&vault, &sessions).await;
    close(vault).await;

    let vault = open(&t);
    vault
        .unlock(THIRD)
        .await
        .expect("third passphrase after reopen");
    assert_data(&vault, &sessions).await;
    close(vault).await;
}

#[tokio::test]
pub(super) async fn passphrase_change_with_a_wrong_old_passphrase_is_refused() {
    let t = TestDir::new();
    let sessions = vault_with_data(&t).await;
    let before = keyslots_on_disk(&t);

    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    assert_bad_passphrase(
        &vault
            .change_passphrase(b"not it", NEW_PASS, fast_kdf())
            .await,
        "wrong old passphrase",
    );
    assert!(matches!(
        vault.change_passphrase(PASS, b"", fast_kdf()).await,
        Err(EngineError::WeakPassphrase(_))
    ));
    assert_bad_passphrase(&vault.unlock(NEW_PASS).await, "refused new passphrase");
    close(vault).await;
    assert_same(&keyslots_on_disk(&t), &before, "keyslots after refusals");

    let vault = open(&t);
    assert_bad_passphrase(&vault.unlock(NEW_PASS).await, "refused new passphrase");
    vault
        .unlock(PASS)
        .await
        .expect("old passphrase still works");
    assert_data(&vault, &sessions).await;
    close(vault).await;
}

#[tokio::test]
pub(super) async fn empty_passphrase_is_refused_at_init() {
    let t = TestDir::new();
    let vault = open(&t);
    assert!(matches!(
        vault.init(b"", fast_kdf()).await,
        Err(EngineError::WeakPassphrase(_))
    ));
    assert_eq!(
        vault.status().await.unwrap().state,
        VaultState::Uninitialized
    );
    // KDF parameters Argon2 itself refuses are refused too, and also leave nothing behind.
    let invalid = KdfParams {
        m_cost_kib: 0,
        ..fast_kdf()
    };
    assert!(vault.init(PASS, invalid).await.is_err());
    assert_eq!(
        vault.status().await.unwrap().state,
        VaultState::Uninitialized
    );
    close(vault).await;

    let vault = open(&t);
    assert_eq!(
        vault.status().await.unwrap().state,
        VaultState::Uninitialized,
        "a refused init wrote nothing"
    );
    vault.init(PASS, fast_kdf()).await.expect("init");
    assert_eq!(vault.status().await.unwrap().state, VaultState::Unlocked);
    close(vault).await;

    let vault = open(&t);
    vault.unlock(PASS).await.expect("unlock after init");
    close(vault).await;
}

#[tokio::test]
pub(super) async fn init_twice_is_refused() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let sid = import_new(&vault, "acct", full_session(3)).await;
    for pass in [PASS, NEW_PASS] {
        assert!(matches!(
            vault.init(pass, fast_kdf()).await,
            Err(EngineError::AlreadyInitialized)
        ));
    }
    assert!(vault.export(sid).await.is_ok(), "still unlocked and intact");
    close(vault).await;
    let before = keyslots_on_disk(&t);

    let vault = open(&t);
    assert!(matches!(
        vault.init(NEW_PASS, fast_kdf()).await,
        Err(EngineError::AlreadyInitialized)
    ));
    assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
    assert_bad_passphrase(&vault.unlock(NEW_PASS).await, "second init's passphrase");
    vault.unlock(PASS).await.expect("first passphrase");
    let sid = vault.open_session("acct").await.unwrap();
    let got = vault.export(sid).await.unwrap();
    assert_same(&normalized(got), &normalized(full_session(3)), "data");
    close(vault).await;
    assert_same(&keyslots_on_disk(&t), &before, "keyslots");
}

/// Runs every session operation and returns each one's outcome by name.
async fn every_operation(vault: &Vault, sid: SessionId) -> Vec<(&'static str, String)> {
    fn err<T>(r: crate::vault::Result<T>) -> String {
        match r {
            Ok(_) => "Ok".into(),
            Err(e) => format!("{e:?}"),
        }
    }
    let peer = Peer::new(PeerKind::User, 123_456_789);
    let key = PeerKey {
        kind: PeerKind::User,
        id: 123_456_789,
    };
    let file = SentFile {
        md5_digest: vec![1; 16],
        file_size: 10,
        file_type: 0,
        id: 1,
        hash: 2,
    };
    let acl = SessionAcl::default();
    vec![
        ("list_sessions", err(vault.list_sessions().await)),
        ("open_session", err(vault.open_session("acct").await)),
        (
            "create_session",
            err(vault.create_session("new", acl.clone()).await),
        ),
        (
            "import",
            err(vault
                .import(
                    "imported",
                    SessionData::default(),
                    IfExists::Replace,
                    acl.clone(),
                )
                .await),
        ),
        ("export", err(vault.export(sid).await)),
        (
            "rename_session",
            err(vault.rename_session("acct", "renamed").await),
        ),
        ("delete_session", err(vault.delete_session("acct").await)),
        ("session_record", err(vault.session_record(sid).await)),
        ("set_home_dc", err(vault.set_home_dc(sid, 5).await)),
        (
            "set_extras",
            err(vault.set_extras(sid, SessionExtras::default()).await),
        ),
        ("set_acl", err(vault.set_acl(sid, acl.clone()).await)),
        ("dc_options", err(vault.dc_options(sid).await)),
        (
            "set_dc_option",
            err(vault
                .set_dc_option(
                    sid,
                    DcOption {
                        id: 3,
                        ipv4: None,
                        ipv6: None,
                        auth_key: Some(auth_key(1)),
                    },
                )
                .await),
        ),
        ("peer", err(vault.peer(sid, key).await)),
        ("self_peer", err(vault.self_peer(sid).await)),
        (
            "peer_by_username",
            err(vault.peer_by_username(sid, "someone").await),
        ),
        (
            "peer_by_phone",
            err(vault.peer_by_phone(sid, "+1 555").await),
        ),
        ("cache_peers", err(vault.cache_peers(sid, vec![peer]).await)),
        (
            "cache_peers(empty)",
            err(vault.cache_peers(sid, vec![]).await),
        ),
        ("updates_state", err(vault.updates_state(sid).await)),
        (
            "set_update_state",
            err(vault
                .set_update_state(sid, UpdateStateChange::Secondary { qts: 9 })
                .await),
        ),
        ("put_sent_file", err(vault.put_sent_file(sid, file).await)),
        (
            "sent_file",
            err(vault.sent_file(sid, vec![1; 16], 10, 0).await),
        ),
    ]
}

#[tokio::test]
pub(super) async fn every_operation_is_refused_while_locked() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let data = full_session(4);
    let sid = import_new(&vault, "acct", data.clone()).await;
    vault.lock().await.unwrap();
    vault.lock().await.expect("lock is idempotent");
    assert_eq!(vault.status().await.unwrap().sessions, None);

    for (op, outcome) in every_operation(&vault, sid).await {
        assert_eq!(outcome, "Locked", "{op} while locked");
    }

    // Nothing of the refused writes happened.
    vault.unlock(PASS).await.unwrap();
    let listed = vault.list_sessions().await.unwrap();
    let names: Vec<_> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["acct"]);
    let got = vault.export(sid).await.unwrap();
    assert_same(&normalized(got), &normalized(data.clone()), "data");
    // Same after a restart, which starts locked.
    close(vault).await;
    let vault = open(&t);
    for (op, outcome) in every_operation(&vault, sid).await {
        assert_eq!(outcome, "Locked", "{op} after a restart");
    }
    close(vault).await;
}

#[tokio::test]
pub(super) async fn every_operation_is_refused_while_uninitialized() {
    let t = TestDir::new();
    let vault = open(&t);
    let sid = SessionId(1);
    for (op, outcome) in every_operation(&vault, sid).await {
        assert_eq!(outcome, "Uninitialized", "{op} while uninitialized");
    }
    for (op, r) in [
        ("unlock", vault.unlock(PASS).await),
        ("lock", vault.lock().await),
        (
            "change_passphrase",
            vault.change_passphrase(PASS, NEW_PASS, fast_kdf()).await,
        ),
    ] {
        assert!(
            matches!(r, Err(EngineError::Uninitialized)),
            "{op} while uninitialized: {r:?}"
        );
    }
    let status = vault.status().await.unwrap();
    assert_eq!(status.state, VaultState::Uninitialized);
    assert_eq!(status.sessions, None);
    close(vault).await;
    let vault = open(&t);
    assert_eq!(
        vault.status().await.unwrap().state,
        VaultState::Uninitialized
    );
    close(vault).await;
}

#[tokio::test]
pub(super) async fn lookups_with_empty_keys_are_refused_while_locked() {
    let (_t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    vault.lock().await.unwrap();
    // `find_peer` returns before checking the state when the normalized key is empty.
    for (op, r) in [
        ("username ''", vault.peer_by_username(sid, "").await),
        ("username '@'", vault.peer_by_username(sid, "@").await),
        ("phone '+'", vault.peer_by_phone(sid, "+").await),
    ] {
        assert!(
            matches!(r, Err(EngineError::Locked)),
            "{op} while locked: {r:?}"
        );
    }
    close(vault).await;
}

/// Events while locked wait in memory for the next unlock, once each: two alike (one client
/// opening a session twice in a second: same uid, pid, session, second) are two entries.
/// They were once merged into one, the check meant for a write applied again after a failed
/// commit comparing the entries' fields instead of naming the event.
#[tokio::test]
pub(super) async fn two_events_alike_while_locked_are_two_entries_after_unlock() {
    use session_vault_proto::audit::AuditEntry;
    let t = TestDir::new();
    let vault = create(&t).await;
    vault.lock().await.unwrap();
    let entry = AuditEntry {
        seq: 0,
        time: 1_700_000_000,
        uid: 1000,
        gid: 1000,
        pid: Some(4242),
        exe: "/usr/bin/bot".into(),
        unit: None,
        action: "open_session".into(),
        session: Some("twice".into()),
        detail: Some("exclusive".into()),
        result: "ok".into(),
    };
    vault.audit(entry.clone(), false).await.unwrap();
    vault.audit(entry, false).await.unwrap();
    vault.unlock(PASS).await.unwrap();
    let page = vault.audit_page(0, 100, None, None).await.unwrap();
    let kept = page
        .entries
        .iter()
        .filter(|e| e.session.as_deref() == Some("twice"))
        .count();
    assert_eq!(kept, 2, "{:?}", page.entries);
}
