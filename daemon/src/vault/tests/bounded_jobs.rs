//! Whole-session work a uid without admin rights can ask for, done in bounded storage jobs so
//! that it does not hold every other session's requests up:
//!
//! - `export` read in pages (`Vault::export_in_pages`): the same answer as the one-job
//!   export, no job reading a whole table of the session, the row bound kept;
//! - an import into a session (`replace_contents`) and a whole update state over many
//!   channels delete the old rows in slices (`Vault::clear_in_slices`);
//! - at most 64 DC options per session, which keeps their one read small.

use session_vault_proto::model::{
    ChannelState, DcOption, Peer, PeerKind, SentFile, UpdateStateChange, UpdatesState,
};

use super::support::*;
use crate::vault::EngineError;

fn dc(id: i32) -> DcOption {
    DcOption {
        id,
        ipv4: Some(format!("10.0.0.{}:443", id % 250).parse().unwrap()),
        ipv6: None,
        auth_key: None,
    }
}

/// A whole update state following channels 1 to `n`.
fn channels(n: i64) -> UpdatesState {
    UpdatesState {
        pts: 1,
        qts: 0,
        date: 0,
        seq: 0,
        channels: (1..=n).map(|id| ChannelState { id, pts: 1 }).collect(),
    }
}

/// Stores users 1 to `n` in session `sid`, a thousand a call.
async fn fill(vault: &crate::vault::Vault, sid: crate::vault::SessionId, n: i64) {
    for start in (0..n).step_by(1000) {
        let peers = (start..(start + 1000).min(n))
            .map(|id| Peer::new(PeerKind::User, id + 1))
            .collect();
        vault.cache_peers(sid, peers).await.unwrap();
    }
}

fn sent_file(i: i64) -> SentFile {
    SentFile {
        md5_digest: i.to_be_bytes().repeat(2),
        file_size: 1000 + i,
        file_type: (i % 3) as i32,
        id: i,
        hash: i * 7,
    }
}

#[tokio::test]
pub(super) async fn a_bounded_export_read_in_pages_is_the_one_job_export() {
    let (_t, vault, sid) = vault_with_session(Default::default()).await;
    // Every table past its page size (peers 1000, channels and sent files 512), written in an
    // order that is not key order.
    for id in [5, 2, 4, 1, 3, 10004] {
        vault.set_dc_option(sid, dc(id)).await.unwrap();
    }
    for chunk in 0..25i64 {
        let peers = (0..100)
            .map(|i| {
                let id = (chunk * 100 + i) * 7919 % 100_003;
                let mut p = Peer::new(PeerKind::User, id);
                p.access_hash = Some(id * 3);
                p
            })
            .collect();
        vault.cache_peers(sid, peers).await.unwrap();
    }
    let channels = (0..1100)
        .map(|i| ChannelState {
            id: (i * 31) % 1103 + 1,
            pts: i as i32,
        })
        .collect();
    let state = UpdatesState {
        pts: 1,
        qts: 2,
        date: 3,
        seq: 4,
        channels,
    };
    vault
        .set_update_state(sid, UpdateStateChange::All(state))
        .await
        .unwrap();
    for i in (0..600).rev() {
        vault.put_sent_file(sid, sent_file(i)).await.unwrap();
    }

    let whole = vault.export(sid).await.unwrap();
    // Counted on SQLite (`None` on PostgreSQL, where the suite runs this too).
    let scans = || async { vault.with_sqlite_store(|s| s.whole_scans).await };
    let before = scans().await;
    let paged = vault.export_at_most(sid, 1_000_000).await.unwrap();
    assert_eq!(
        scans().await,
        before,
        "no job read a whole table of the session"
    );
    assert_eq!(paged.peers.len(), 2500);
    assert_eq!(paged.updates_state.channels.len(), 1100);
    assert_eq!(paged.sent_files.len(), 600);
    assert_eq!(paged, whole);

    let mut without = whole.clone();
    without.peers.clear();
    assert_eq!(
        vault.export_without_peers(sid, 1_000_000).await.unwrap(),
        without
    );

    // The bound counts every table (peers included, unless left out).
    let rows = 6 + 2500 + 1100 + 600;
    for (max, with_peers) in [(rows - 1, true), (rows - 2500 - 1, false)] {
        let refused = if with_peers {
            vault.export_at_most(sid, max).await
        } else {
            vault.export_without_peers(sid, max).await
        };
        match refused {
            Err(EngineError::Invalid(m)) => assert!(m.contains("rows"), "{m}"),
            other => panic!("expected Invalid past {max} rows, got {other:?}"),
        }
    }
    assert_eq!(vault.export_at_most(sid, rows).await.unwrap(), whole);
    close(vault).await;
}

#[tokio::test]
pub(super) async fn a_session_keeps_at_most_64_dc_options() {
    let (_t, vault, sid) = vault_with_session(Default::default()).await;
    for id in 1..=64 {
        vault.set_dc_option(sid, dc(id)).await.unwrap();
    }
    match vault.set_dc_option(sid, dc(65)).await {
        Err(EngineError::Invalid(m)) => assert!(m.contains("at most 64 DC options"), "{m}"),
        other => panic!("expected the 65th DC option refused, got {other:?}"),
    }
    // One already kept may still change.
    let mut changed = dc(7);
    changed.ipv4 = Some("10.9.9.9:80".parse().unwrap());
    vault.set_dc_option(sid, changed.clone()).await.unwrap();
    let kept = vault.dc_options(sid).await.unwrap();
    assert_eq!(kept.len(), 64);
    assert_eq!(kept[6], changed);
    close(vault).await;
}

/// The most rows one job's write changed, then reset (`SqliteStore::largest_op`); 0 on
/// PostgreSQL, which clears whole tables.
async fn largest_op(vault: &crate::vault::Vault) -> u64 {
    vault
        .with_sqlite_store(|s| std::mem::take(&mut s.largest_op))
        .await
        .unwrap_or(0)
}

#[tokio::test]
pub(super) async fn replacing_a_large_session_or_its_channels_deletes_in_bounded_jobs() {
    use crate::vault::data::CLEAR_SLICE;
    use session_vault_proto::model::SessionData;
    let (_t, vault, sid) = vault_with_session(Default::default()).await;
    fill(&vault, sid, 2 * CLEAR_SLICE as i64 + 5_000).await;
    vault.put_sent_file(sid, sent_file(1)).await.unwrap();
    vault
        .set_update_state(sid, UpdateStateChange::All(channels(300)))
        .await
        .unwrap();
    largest_op(&vault).await;

    // An import over it: the new contents, and no delete of more than a slice.
    let mut new = SessionData {
        home_dc: 2,
        ..vault.export(sid).await.unwrap()
    };
    new.peers = vec![Peer::new(PeerKind::User, 7_000_000)];
    new.sent_files.clear();
    new.updates_state = channels(2);
    vault.replace_contents(sid, new.clone()).await.unwrap();
    assert!(largest_op(&vault).await <= u64::from(CLEAR_SLICE));
    let now = vault.export(sid).await.unwrap();
    assert_eq!(now.peers.len(), 1);
    assert_eq!(now.peers[0].id, 7_000_000);
    assert_eq!(now, new);

    // A whole update state over more channels than a slice (gathered by earlier writes).
    let many = CLEAR_SLICE as i64 + 5_000;
    vault
        .set_update_state(sid, UpdateStateChange::All(channels(many)))
        .await
        .unwrap();
    // Written a chunk per job (the first with the state's scalars, the two channels it
    // replaces and the session's time).
    let chunk = crate::vault::STATE_CHUNK as u64;
    let largest = largest_op(&vault).await;
    assert!(largest <= chunk + 8, "{largest} rows changed by one job");
    assert_eq!(vault.updates_state(sid).await.unwrap(), channels(many));
    vault
        .set_update_state(sid, UpdateStateChange::All(channels(3)))
        .await
        .unwrap();
    assert!(largest_op(&vault).await <= u64::from(CLEAR_SLICE));
    assert_eq!(vault.updates_state(sid).await.unwrap(), channels(3));
    close(vault).await;
}

#[tokio::test]
async fn a_sliced_import_stops_at_the_first_job_after_its_handle_ended() {
    use crate::vault::data::CLEAR_SLICE;
    use session_vault_proto::model::SessionData;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let (_t, vault, sid) = vault_with_session(Default::default()).await;
    let old = CLEAR_SLICE as i64 + 1000;
    fill(&vault, sid, old).await;
    let before = vault.export(sid).await.unwrap();
    // The handle "ends" after the first job asked.
    let asked = Arc::new(AtomicU32::new(0));
    let counting = Arc::clone(&asked);
    let still: crate::vault::Still = Arc::new(move || counting.fetch_add(1, Ordering::SeqCst) < 1);
    let new = SessionData {
        home_dc: before.home_dc + 1,
        peers: vec![Peer::new(PeerKind::User, 9_999_999)],
        ..before.clone()
    };
    let done = vault.replace_contents_while(sid, new, still).await.unwrap();
    assert!(!done, "refused once the handle ended");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "asked by the first two jobs only"
    );
    let after = vault.export(sid).await.unwrap();
    assert_eq!(
        after.home_dc, before.home_dc,
        "the replace itself never ran"
    );
    assert_eq!(after.peers.len() as i64, old - i64::from(CLEAR_SLICE));
    assert!(after.peers.iter().all(|p| p.id != 9_999_999));

    // A whole update state over many channels, likewise.
    let many = CLEAR_SLICE as i64 * 2;
    vault
        .set_update_state(sid, UpdateStateChange::All(channels(many)))
        .await
        .unwrap();
    let never: crate::vault::Still = Arc::new(|| false);
    let done = vault
        .set_update_state_while(sid, UpdateStateChange::All(channels(1)), never)
        .await
        .unwrap();
    assert!(!done);
    assert_eq!(vault.updates_state(sid).await.unwrap(), channels(many));
    close(vault).await;
}
