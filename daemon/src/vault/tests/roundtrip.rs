//! Every field of the data model survives lock/unlock and close/reopen.

use session_vault_proto::model::{PeerKey, PeerKind};

use super::support::*;
use crate::vault::{EngineError, VaultState};

#[tokio::test]
pub(super) async fn full_session_round_trips_through_lock_and_reopen() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let data = full_session(1);
    let sid = import_new(&vault, "acct", data.clone()).await;
    assert_eq!(
        normalized(vault.export(sid).await.unwrap()),
        normalized(data.clone())
    );

    vault.lock().await.unwrap();
    assert!(matches!(vault.export(sid).await, Err(EngineError::Locked)));
    vault.unlock(PASS).await.unwrap();
    assert_eq!(
        normalized(vault.export(sid).await.unwrap()),
        normalized(data.clone())
    );
    vault.close().await.unwrap();

    let vault = open(&t);
    assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
    vault.unlock(PASS).await.unwrap();
    let sid = vault.open_session("acct").await.unwrap();
    assert_eq!(
        normalized(vault.export(sid).await.unwrap()),
        normalized(data.clone())
    );
    let friend = &data.peers[1];
    let by_name = vault
        .peer_by_username(sid, "@ALICE_Secret_1")
        .await
        .unwrap();
    assert_eq!(by_name.as_ref(), Some(friend));
    let by_phone = vault.peer_by_phone(sid, "+15550100001").await.unwrap();
    assert_eq!(by_phone.as_ref(), Some(friend));
    let me = vault.self_peer(sid).await.unwrap().unwrap();
    assert_eq!(me.id, data.self_user.unwrap().id);
    let none = vault
        .peer(
            sid,
            PeerKey {
                kind: PeerKind::Channel,
                id: friend.id,
            },
        )
        .await
        .unwrap();
    assert_eq!(none, None);
}
