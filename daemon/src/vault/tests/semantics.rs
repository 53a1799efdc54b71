//! What the data operations mean, against grammers' `MemorySession`: update-state changes,
//! rename and delete. Each checked live and again after a close and reopen. Peers and their
//! merging are in [`super::peers`].

use crate::vault::IfExists;
use session_vault_proto::model::{
    ChannelState, Peer, PeerKind, SessionAcl, SessionData, UpdateStateChange, UpdatesState,
};

use super::support::*;
use crate::vault::{EngineError, SessionId, Vault, VaultConfig};

/// grammers' `MemorySession::set_update_state`, restated as the reference model.
fn apply(s: &mut UpdatesState, change: &UpdateStateChange) {
    match change {
        UpdateStateChange::All(all) => *s = all.clone(),
        &UpdateStateChange::Primary { pts, date, seq } => {
            (s.pts, s.date, s.seq) = (pts, date, seq);
        }
        &UpdateStateChange::Secondary { qts } => s.qts = qts,
        &UpdateStateChange::Channel { id, pts } => {
            s.channels.retain(|c| c.id != id);
            s.channels.push(ChannelState { id, pts });
        }
    }
}

fn chan(id: i64, pts: i32) -> ChannelState {
    ChannelState { id, pts }
}

#[tokio::test]
pub(super) async fn update_state_changes_follow_memory_session() {
    let (t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    assert_eq!(
        vault.updates_state(sid).await.unwrap(),
        UpdatesState::default()
    );

    let s1 = UpdatesState {
        pts: 10,
        qts: 20,
        date: 30,
        seq: 40,
        channels: vec![chan(1, 1), chan(2, 2), chan(3, 3)],
    };
    let steps: Vec<(UpdateStateChange, UpdatesState)> = vec![
        // All replaces everything, channels included.
        (UpdateStateChange::All(s1.clone()), s1.clone()),
        // Primary sets pts, date and seq only.
        (
            UpdateStateChange::Primary {
                pts: 11,
                date: 31,
                seq: 41,
            },
            UpdatesState {
                pts: 11,
                date: 31,
                seq: 41,
                ..s1.clone()
            },
        ),
        // Secondary sets qts only.
        (
            UpdateStateChange::Secondary { qts: 21 },
            UpdatesState {
                pts: 11,
                qts: 21,
                date: 31,
                seq: 41,
                channels: s1.channels.clone(),
            },
        ),
        // Channel updates in place and moves the channel to the end.
        (
            UpdateStateChange::Channel { id: 1, pts: 100 },
            UpdatesState {
                pts: 11,
                qts: 21,
                date: 31,
                seq: 41,
                channels: vec![chan(2, 2), chan(3, 3), chan(1, 100)],
            },
        ),
        // ... and adds a new channel at the end.
        (
            UpdateStateChange::Channel { id: 4, pts: 4 },
            UpdatesState {
                pts: 11,
                qts: 21,
                date: 31,
                seq: 41,
                channels: vec![chan(2, 2), chan(3, 3), chan(1, 100), chan(4, 4)],
            },
        ),
        // A later All drops the channels it does not name.
        (
            UpdateStateChange::All(UpdatesState {
                pts: 1,
                qts: 2,
                date: 3,
                seq: 4,
                channels: vec![chan(5, 5), chan(3, 33)],
            }),
            UpdatesState {
                pts: 1,
                qts: 2,
                date: 3,
                seq: 4,
                channels: vec![chan(5, 5), chan(3, 33)],
            },
        ),
    ];
    let mut model = UpdatesState::default();
    for (change, want) in &steps {
        vault.set_update_state(sid, change.clone()).await.unwrap();
        apply(&mut model, change);
        assert_eq!(&model, want, "the model agrees with the written rule");
        assert_eq!(&vault.updates_state(sid).await.unwrap(), want, "{change:?}");
    }

    // A long random sequence against the model, with a reopen in the middle: channel order
    // is kept on disk too.
    let mut vault = vault;
    let mut rng = Rng(0x57a7e);
    for i in 0..300 {
        let change = match rng.below(10) {
            0 => UpdateStateChange::All(UpdatesState {
                pts: rng.below(1000) as i32,
                qts: rng.below(1000) as i32,
                date: rng.below(1000) as i32,
                seq: rng.below(1000) as i32,
                channels: (0..rng.below(5))
                    .map(|_| chan(rng.below(12) as i64 + 1, rng.below(1000) as i32))
                    .fold(Vec::new(), |mut v, c| {
                        // All carries a list without duplicates, as grammers builds it.
                        if !v.iter().any(|x: &ChannelState| x.id == c.id) {
                            v.push(c);
                        }
                        v
                    }),
            }),
            1 | 2 => UpdateStateChange::Primary {
                pts: rng.below(1000) as i32,
                date: rng.below(1000) as i32,
                seq: rng.below(1000) as i32,
            },
            3 => UpdateStateChange::Secondary {
                qts: rng.below(1000) as i32,
            },
            _ => UpdateStateChange::Channel {
                id: rng.below(12) as i64 + 1,
                pts: rng.below(1000) as i32,
            },
        };
        vault.set_update_state(sid, change.clone()).await.unwrap();
        apply(&mut model, &change);
        assert_eq!(vault.updates_state(sid).await.unwrap(), model, "step {i}");
        if i == 150 {
            vault = reopened(vault, &t).await;
            assert_eq!(vault.updates_state(sid).await.unwrap(), model, "reopened");
        }
    }
    let vault = reopened(vault, &t).await;
    assert_eq!(vault.updates_state(sid).await.unwrap(), model, "at the end");
    close(vault).await;
}

/// A state of more channels than one storage job reads (`Vault::updates_state` reads it in
/// pages of `STATE_PAGE`, in key order) reads back whole and in write order, after channel
/// updates that move channels to the end, live and after a reopen.
#[tokio::test]
pub(super) async fn a_state_of_many_channels_reads_back_whole_in_write_order() {
    let (t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    // Written in three jobs (`STATE_CHUNK`), read in 17 pages (`STATE_PAGE`).
    let n = 2 * crate::vault::STATE_CHUNK as i64 + 7;
    // Ids in an order unrelated to their blind keys or their values.
    let mut model = UpdatesState {
        pts: 5,
        qts: 6,
        date: 7,
        seq: 8,
        channels: (0..n)
            .map(|i| chan((i * 7919) % 100_003 + 1, i as i32))
            .collect(),
    };
    let all = UpdateStateChange::All(model.clone());
    vault.set_update_state(sid, all).await.unwrap();
    for (i, id) in [5, n / 2, 1]
        .map(|i| model.channels[i as usize].id)
        .into_iter()
        .enumerate()
    {
        let change = UpdateStateChange::Channel {
            id,
            pts: 1_000_000 + i as i32,
        };
        apply(&mut model, &change);
        vault.set_update_state(sid, change).await.unwrap();
    }
    assert_eq!(vault.updates_state(sid).await.unwrap(), model, "live");
    let vault = reopened(vault, &t).await;
    assert_eq!(vault.updates_state(sid).await.unwrap(), model, "reopened");
    close(vault).await;
}

#[tokio::test]
async fn rename_keeps_the_data_and_frees_the_old_name() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let (a, b) = (full_session(1), full_session(2));
    let sid_a = import_new(&vault, "a", a.clone()).await;
    import_new(&vault, "b", b.clone()).await;

    vault.rename_session("a", "c").await.unwrap();
    assert!(matches!(
        vault.open_session("a").await,
        Err(EngineError::NoSuchSession { .. })
    ));
    assert_eq!(
        vault.open_session("c").await.unwrap(),
        sid_a,
        "same session"
    );
    let got = vault.export(sid_a).await.unwrap();
    assert_same(&normalized(got), &normalized(a.clone()), "renamed data");

    // Refusals change nothing.
    assert!(matches!(
        vault.rename_session("c", "b").await,
        Err(EngineError::NameTaken { .. })
    ));
    assert!(matches!(
        vault.rename_session("missing", "d").await,
        Err(EngineError::NoSuchSession { .. })
    ));
    assert!(matches!(
        vault.rename_session("c", "").await,
        Err(EngineError::Invalid(_))
    ));
    assert!(matches!(
        vault.rename_session("a", "d").await,
        Err(EngineError::NoSuchSession { .. })
    ));
    vault
        .rename_session("c", "c")
        .await
        .expect("renaming to itself is a no-op");

    // The old name is free for a new session.
    let sid_new = new_session(&vault, "a").await;
    assert_ne!(sid_new, sid_a);

    let vault = reopened(vault, &t).await;
    let mut names = session_names(&vault).await;
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    let sid_c = vault.open_session("c").await.unwrap();
    let got = vault.export(sid_c).await.unwrap();
    assert_same(
        &normalized(got),
        &normalized(a),
        "renamed data after reopen",
    );
    let sid_b = vault.open_session("b").await.unwrap();
    let got = vault.export(sid_b).await.unwrap();
    assert_same(&normalized(got), &normalized(b), "untouched session");
    let fresh = vault.open_session("a").await.unwrap();
    assert_eq!(fresh, sid_new);
    assert_same(
        &vault.export(fresh).await.unwrap(),
        &SessionData::default(),
        "new session under the old name",
    );
    close(vault).await;
}

/// How many rows of session `sid` remain in each table of the closed vault.
fn rows_of(t: &TestDir, sid: SessionId) -> Vec<(&'static str, i64)> {
    let c = raw(&t.db());
    let mut out = Vec::new();
    for (table, col) in [
        ("sessions", "id"),
        ("dc_options", "session"),
        ("peers", "session"),
        ("state", "session"),
        ("channels", "session"),
        ("sent_files", "session"),
    ] {
        let n: i64 = c
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE {col} = ?1"),
                [sid.0],
                |r| r.get(0),
            )
            .unwrap();
        out.push((table, n));
    }
    out
}

#[tokio::test]
async fn a_deleted_name_can_be_reused_and_nothing_old_leaks_into_it() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let old = full_session(1);
    let old_sid = import_new(&vault, "acct", old.clone()).await;
    vault
        .set_update_state(old_sid, UpdateStateChange::Channel { id: 77, pts: 7 })
        .await
        .unwrap();
    vault.delete_session("acct").await.unwrap();
    for (op, r) in [
        ("open_session", vault.open_session("acct").await.map(|_| ())),
        ("export", vault.export(old_sid).await.map(|_| ())),
        (
            "peer",
            vault.peer(old_sid, old.peers[1].key()).await.map(|_| ()),
        ),
        (
            "set_home_dc",
            vault.set_home_dc(old_sid, 1).await.map(|_| ()),
        ),
        (
            "delete again",
            vault.delete_session("acct").await.map(|_| ()),
        ),
    ] {
        assert!(
            matches!(r, Err(EngineError::NoSuchSession { .. })),
            "{op} after delete: {r:?}"
        );
    }

    let new_sid = new_session(&vault, "acct").await;
    assert_ne!(new_sid, old_sid, "ids are never reused");
    let check_fresh = async |vault: &Vault| {
        let sid = vault.open_session("acct").await.unwrap();
        assert_eq!(sid, new_sid);
        let got = vault.export(sid).await.unwrap();
        assert!(
            got.peers.is_empty(),
            "no old peer leaks into the new session"
        );
        assert_same(&got, &SessionData::default(), "a fresh session");
        assert_eq!(vault.self_peer(sid).await.unwrap(), None);
        for p in &old.peers {
            assert_eq!(vault.peer(sid, p.key()).await.unwrap(), None);
        }
        let friend = &old.peers[1];
        let by_name = vault
            .peer_by_username(sid, friend.username.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(by_name, None);
        let f = &old.sent_files[0];
        let sent = vault
            .sent_file(sid, f.md5_digest.clone(), f.file_size, f.file_type)
            .await
            .unwrap();
        assert_eq!(sent, None);
    };
    check_fresh(&vault).await;
    close(vault).await;

    assert!(
        rows_of(&t, old_sid).iter().all(|(_, n)| *n == 0),
        "rows of the deleted session remain: {:?}",
        rows_of(&t, old_sid)
    );
    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    check_fresh(&vault).await;

    // Import with replace: the replaced session's rows go too, none mix into the new one.
    let mut extra = Peer::new(PeerKind::User, 31_313_131);
    extra.access_hash = Some(5);
    vault.cache_peers(new_sid, vec![extra]).await.unwrap();
    let replacement = full_session(2);
    let replaced_sid = vault
        .import(
            "acct",
            replacement.clone(),
            IfExists::Replace,
            SessionAcl::default(),
        )
        .await
        .unwrap();
    assert_ne!(replaced_sid, new_sid);
    let got = vault.export(replaced_sid).await.unwrap();
    assert_same(
        &normalized(got),
        &normalized(replacement.clone()),
        "replaced",
    );
    close(vault).await;
    assert!(
        rows_of(&t, new_sid).iter().all(|(_, n)| *n == 0),
        "rows of the replaced session remain: {:?}",
        rows_of(&t, new_sid)
    );
}

/// A whole-session export past its bound is refused before anything is read (`Invalid`,
/// saying how to read the peers in pages); at the bound it carries every peer. The bound
/// counts every row the answer carries: here 10 peers and a new session's 5 DC options.
/// (Any uid may fill a session of its own; an export is decrypted whole into one answer.)
#[tokio::test]
async fn an_export_past_its_peer_bound_is_refused_and_pages_still_read_every_peer() {
    let (_t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    let peers: Vec<Peer> = (1..=10).map(|i| Peer::new(PeerKind::User, i)).collect();
    vault.cache_peers(sid, peers).await.unwrap();
    let whole = vault.export_at_most(sid, 15).await.unwrap();
    assert_eq!((whole.peers.len(), whole.dc_options.len()), (10, 5));
    vault
        .cache_peers(sid, vec![Peer::new(PeerKind::User, 11)])
        .await
        .unwrap();
    match vault.export_at_most(sid, 15).await {
        Err(EngineError::Invalid(m)) => {
            assert!(m.contains("16 rows") && m.contains("list_peers"), "{m}")
        }
        other => panic!("an export past its bound: {other:?}"),
    }
    assert_eq!(
        vault.export(sid).await.unwrap().peers.len(),
        11,
        "unbounded"
    );
    let (page, next) = vault.peers_page(sid, None, 100).await.unwrap();
    assert_eq!((page.len(), next), (11, None), "the pages read every peer");
}

/// The export bound counts every row the answer carries: a session's sent files and channel
/// states are as unbounded as its peers (any uid may `put_sent_file` and `set_update_state` a
/// channel without end in a session of its own) and are decrypted whole into the same answer,
/// in `export` and in the paged path's `export` with `without_peers` alike (a review found a
/// session of no peer and any number of sent files passing a bound that counted peers only;
/// ~40 bytes a sent file on the wire, 8 million of them pass the Rust client's 256 MiB
/// response limit, and the daemon holds the whole answer first).
#[tokio::test]
async fn an_export_past_its_bound_in_sent_files_or_channels_is_refused_too() {
    use session_vault_proto::model::SentFile;
    let (_t, vault, sid) = vault_with_session(VaultConfig::default()).await;
    for i in 0..11u8 {
        vault
            .put_sent_file(
                sid,
                SentFile {
                    md5_digest: vec![i; 16],
                    file_size: 10,
                    file_type: 0,
                    id: i64::from(i),
                    hash: 1,
                },
            )
            .await
            .unwrap();
        vault
            .set_update_state(
                sid,
                UpdateStateChange::Channel {
                    id: 1000 + i64::from(i),
                    pts: 1,
                },
            )
            .await
            .unwrap();
    }
    match vault.export_at_most(sid, 10).await {
        Err(EngineError::Invalid(_)) => {}
        Ok(d) => panic!(
            "an export of {} sent files and {} channel states passed a bound of 10",
            d.sent_files.len(),
            d.updates_state.channels.len()
        ),
        Err(e) => panic!("{e:?}"),
    }
    match vault.export_without_peers(sid, 10).await {
        Err(EngineError::Invalid(_)) => {}
        other => panic!("an export without peers past its bound: {other:?}"),
    }
    assert_eq!(
        vault
            .export_without_peers(sid, 27)
            .await
            .unwrap()
            .sent_files
            .len(),
        11,
        "11 sent files, 11 channels and 5 DC options are within 27"
    );
}
