//! The recovery key: a second keyslot of kind `recovery` opened by a random 16-byte key.
//! It unlocks, sets a new passphrase when the old one is forgotten, is replaced by a second
//! `add`, is deleted by `remove` and by `rekey`, and is covered by the manifest like every
//! keyslot (an old or removed one put back is `Corrupt`).

use session_vault_proto::model::SessionAcl;

use super::support::*;
use crate::vault::IfExists;
use crate::vault::crypto::{KIND_PASSPHRASE, KIND_RECOVERY, Keyslot};
use crate::vault::store::Store;
use crate::vault::{EngineError, VaultState};

const NEW_PASS: &[u8] = b"a new passphrase, after the old one was forgotten";

fn keyslots_on_disk(t: &TestDir) -> Vec<Keyslot> {
    with_store(t, |store| store.keyslots().expect("read keyslots"))
}

fn put_keyslot_on_disk(t: &TestDir, slot: &Keyslot) {
    with_store(t, |store| store.put_keyslot(slot).expect("write a keyslot"))
}

#[track_caller]
fn assert_bad<T: std::fmt::Debug>(r: &crate::vault::Result<T>, what: &str) {
    assert!(
        matches!(r, Err(EngineError::BadPassphrase)),
        "{what}: expected BadPassphrase, got {r:?}"
    );
}

#[tokio::test]
async fn recovery_key_unlocks_until_removed_and_only_as_a_recovery_key() {
    let t = TestDir::new();
    let vault = create(&t).await;
    vault
        .import(
            "acct",
            full_session(1),
            IfExists::Refuse,
            SessionAcl::default(),
        )
        .await
        .expect("import");
    assert_eq!(vault.status().await.unwrap().recovery_key, Some(false));
    let key = vault.add_recovery_key().await.expect("add a recovery key");
    assert_eq!(vault.status().await.unwrap().recovery_key, Some(true));
    let report = vault.verify().await.expect("verify");
    assert_eq!(report.keyslots, 2);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    close(vault).await;

    let slots = keyslots_on_disk(&t);
    assert_eq!(
        slots.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>(),
        [KIND_PASSPHRASE, KIND_RECOVERY]
    );
    // Nothing of the key is stored in the clear.
    for (_, bytes) in read_db_files(&t) {
        assert!(!bytes.windows(16).any(|w| w == &key[..]));
    }

    let vault = open(&t);
    assert_eq!(vault.status().await.unwrap().recovery_key, Some(true));
    let mut wrong = *key;
    wrong[15] ^= 1;
    assert_bad(&vault.unlock_with_recovery_key(&wrong).await, "a wrong key");
    // The recovery key is not a passphrase, nor the passphrase a recovery key.
    assert_bad(&vault.unlock(&key[..]).await, "the key as a passphrase");
    assert_bad(
        &vault.unlock_with_recovery_key(PASS).await,
        "the passphrase as a key",
    );
    assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
    vault
        .unlock_with_recovery_key(&key[..])
        .await
        .expect("the recovery key unlocks");
    let sid = vault.open_session("acct").await.expect("open");
    vault.export(sid).await.expect("the data reads");

    assert!(vault.remove_recovery_key().await.expect("remove"));
    assert!(!vault.remove_recovery_key().await.expect("remove again"));
    assert_eq!(vault.status().await.unwrap().recovery_key, Some(false));
    vault.lock().await.expect("lock");
    assert_bad(
        &vault.unlock_with_recovery_key(&key[..]).await,
        "a removed key",
    );
    vault
        .unlock(PASS)
        .await
        .expect("the passphrase still unlocks");
    close(vault).await;
    assert_eq!(keyslots_on_disk(&t).len(), 1);
}

#[tokio::test]
pub(super) async fn a_second_add_replaces_the_first_key() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let first = vault.add_recovery_key().await.expect("add");
    let second = vault.add_recovery_key().await.expect("add again");
    assert_ne!(*first, *second);
    vault.lock().await.expect("lock");
    assert_bad(
        &vault.unlock_with_recovery_key(&first[..]).await,
        "the replaced key",
    );
    vault
        .unlock_with_recovery_key(&second[..])
        .await
        .expect("the new key unlocks");
    close(vault).await;
    assert_eq!(keyslots_on_disk(&t).len(), 2);
}

#[tokio::test]
pub(super) async fn forgotten_passphrase_is_replaced_with_the_recovery_key() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let key = vault.add_recovery_key().await.expect("add");
    close(vault).await;

    let vault = open(&t);
    assert_bad(
        &vault
            .change_passphrase_with(b"not the key", true, NEW_PASS, fast_kdf())
            .await,
        "a wrong key",
    );
    vault
        .change_passphrase_with(&key[..], true, NEW_PASS, fast_kdf())
        .await
        .expect("a new passphrase set with the recovery key");
    assert_bad(&vault.unlock(PASS).await, "the forgotten passphrase");
    vault.unlock(NEW_PASS).await.expect("the new passphrase");
    vault.lock().await.expect("lock");
    vault
        .unlock_with_recovery_key(&key[..])
        .await
        .expect("the recovery key still unlocks");
    close(vault).await;
    let slots = keyslots_on_disk(&t);
    assert_eq!(
        slots
            .iter()
            .map(|s| (s.slot, s.kind.as_str()))
            .collect::<Vec<_>>(),
        [(0, KIND_PASSPHRASE), (1, KIND_RECOVERY)]
    );
}

#[tokio::test]
pub(super) async fn rekey_drops_the_recovery_key() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let key = vault.add_recovery_key().await.expect("add");
    vault.rekey(PASS, fast_kdf()).await.expect("rekey");
    assert_eq!(vault.status().await.unwrap().recovery_key, Some(false));
    vault.lock().await.expect("lock");
    assert_bad(
        &vault.unlock_with_recovery_key(&key[..]).await,
        "the key after a rekey",
    );
    vault.unlock(PASS).await.expect("the passphrase");
    close(vault).await;
    assert_eq!(keyslots_on_disk(&t).len(), 1);
}

#[tokio::test]
pub(super) async fn a_removed_or_replaced_recovery_keyslot_put_back_is_corrupt() {
    // Removed, then put back.
    let t = TestDir::new();
    let vault = create(&t).await;
    vault.add_recovery_key().await.expect("add");
    close(vault).await;
    let old = keyslots_on_disk(&t).pop().expect("the recovery keyslot");
    let vault = open(&t);
    vault.unlock(PASS).await.expect("unlock");
    vault.remove_recovery_key().await.expect("remove");
    close(vault).await;
    put_keyslot_on_disk(&t, &old);
    let vault = open(&t);
    assert_corrupt(
        &vault.unlock(PASS).await,
        "a removed recovery keyslot put back",
    );
    close(vault).await;

    // Replaced, then the old one put back.
    let t = TestDir::new();
    let vault = create(&t).await;
    let first = vault.add_recovery_key().await.expect("add");
    close(vault).await;
    let old = keyslots_on_disk(&t).pop().expect("the recovery keyslot");
    let vault = open(&t);
    vault.unlock(PASS).await.expect("unlock");
    vault.add_recovery_key().await.expect("add again");
    close(vault).await;
    put_keyslot_on_disk(&t, &old);
    let vault = open(&t);
    assert_corrupt(
        &vault.unlock_with_recovery_key(&first[..]).await,
        "a replaced recovery keyslot put back",
    );
    close(vault).await;
}

#[tokio::test]
pub(super) async fn adding_or_removing_needs_the_vault_unlocked() {
    let t = TestDir::new();
    let vault = create(&t).await;
    vault.lock().await.expect("lock");
    assert!(matches!(
        vault.add_recovery_key().await,
        Err(EngineError::Locked)
    ));
    assert!(matches!(
        vault.remove_recovery_key().await,
        Err(EngineError::Locked)
    ));
    close(vault).await;
}
