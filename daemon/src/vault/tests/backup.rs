//! Online backup, verify and the restore swap, on the engine in-process; and the measurement
//! of the longest pause a writer sees during a backup (`backup_pause`, ignored).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use session_vault_proto::model::{PeerKey, SessionAcl};

use super::support::*;
use crate::vault::{Vault, VaultConfig, VaultState};

/// Caches `peers` one per request until `stop`; counts the acknowledged ones in `acked`
/// and returns every request's latency.
async fn write_until(
    vault: Vault,
    sid: crate::vault::SessionId,
    peers: Vec<session_vault_proto::model::Peer>,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for p in peers {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let t = Instant::now();
        vault.cache_peers(sid, vec![p]).await.unwrap();
        latencies.push(t.elapsed());
        acked.fetch_add(1, Ordering::SeqCst);
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_backup_under_writes_holds_every_acknowledged_write_and_restores() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let sid = vault
        .create_session("bot", SessionAcl::default())
        .await
        .unwrap();
    let mut rng = Rng(11);
    let peers: Vec<_> = (0..20_000)
        .map(|k| random_user(&mut rng, &format!("p{k}")))
        .collect();
    vault
        .cache_peers(sid, peers[..2_000].to_vec())
        .await
        .unwrap();

    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(
        vault.clone(),
        sid,
        peers[2_000..].to_vec(),
        Arc::clone(&acked),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = 2_000 + acked.load(Ordering::SeqCst);
    let copy = t.dir.path().join("copy.db");
    let progress = vault.backup_to(&copy).await.unwrap();
    assert!(progress.done && progress.total > 0, "{progress:?}");
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();

    // The copy is a vault of its own: every record authenticates, and every write
    // acknowledged before the backup began is in it.
    crate::vault::sqlite::check_vault_file(&copy).unwrap();
    let staged = open_path(&copy, VaultConfig::default()).unwrap();
    staged.unlock(PASS).await.unwrap();
    let report = staged.verify().await.unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.sessions, 1);
    assert!(
        report.peers as usize >= before,
        "{} < {before}",
        report.peers
    );
    let s = staged.open_session("bot").await.unwrap();
    for p in &peers[..before] {
        let key: PeerKey = p.key();
        assert!(staged.peer(s, key).await.unwrap().is_some(), "{key:?}");
    }
    close(staged).await;

    // The swap: refused while unlocked; done while locked, the old file kept aside.
    let aside = t.dir.path().join("vault.db.before-restore-test");
    let refused = vault.replace_with(&copy, &aside).await;
    assert!(refused.is_err(), "{}", outcome(&refused));
    vault
        .cache_peers(sid, vec![peers[19_999].clone()])
        .await
        .unwrap();
    vault.lock().await.unwrap();
    assert!(vault.replace_with(&copy, &aside).await.unwrap());
    assert!(aside.exists() && !copy.exists());
    assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
    vault.unlock(PASS).await.unwrap();
    let s = vault.open_session("bot").await.unwrap();
    let report = vault.verify().await.unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        vault.peer(s, peers[19_999].key()).await.unwrap().is_none(),
        "the write after the backup is not in the restored vault"
    );
    close(vault).await;
}

/// The longest pause a writer sees while a backup runs, beside the same writer without one.
/// `SV_BACKUP_PEERS` peers (default 100,000);
/// `cargo test --release -p session-vault-daemon --lib backup_pause -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand in release"]
async fn backup_pause() {
    let n: usize = std::env::var("SV_BACKUP_PEERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let t = TestDir::new();
    let vault = create(&t).await;
    let sid = vault
        .create_session("bot", SessionAcl::default())
        .await
        .unwrap();
    let mut rng = Rng(5);
    let mut i = 0;
    while i < n {
        let batch = (i..(i + 1_000).min(n))
            .map(|k| random_user(&mut rng, &format!("p{k}")))
            .collect();
        vault.cache_peers(sid, batch).await.unwrap();
        i += 1_000;
    }
    let extra: Vec<_> = (0..1_000_000)
        .map(|k| random_user(&mut rng, &format!("w{k}")))
        .collect();
    let summary = |mut l: Vec<Duration>| {
        l.sort();
        let p = |q: f64| l[((l.len() - 1) as f64 * q) as usize];
        format!(
            "{} writes, p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
            l.len(),
            p(0.5),
            p(0.99),
            p(0.999),
            l[l.len() - 1]
        )
    };
    for run in ["without a backup", "during a backup"] {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_until(
            vault.clone(),
            sid,
            extra.clone(),
            Arc::new(AtomicUsize::new(0)),
            Arc::clone(&stop),
        ));
        let started = Instant::now();
        let took = if run == "during a backup" {
            let copy = t.dir.path().join("copy.db");
            let p = vault.backup_to(&copy).await.unwrap();
            let bytes = std::fs::metadata(&copy).unwrap().len();
            std::fs::remove_file(&copy).unwrap();
            eprintln!("backup of {n} peers: {} pages, {bytes} bytes", p.total);
            started.elapsed()
        } else {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            started.elapsed()
        };
        stop.store(true, Ordering::SeqCst);
        let latencies = writer.await.unwrap();
        eprintln!("{run} ({took:?}): {}", summary(latencies));
    }
    let started = Instant::now();
    let report = vault.verify().await.unwrap();
    eprintln!(
        "verify of {} records: {:?}",
        report.records,
        started.elapsed()
    );
    close(vault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_backup_is_cleaned_up_and_the_next_one_works() {
    let t = TestDir::new();
    let vault = create(&t).await;
    let sid = vault
        .create_session("bot", SessionAcl::default())
        .await
        .unwrap();
    let mut rng = Rng(3);
    let peers: Vec<_> = (0..20_000)
        .map(|k| random_user(&mut rng, &format!("p{k}")))
        .collect();
    vault.cache_peers(sid, peers).await.unwrap();
    let dest = t.dir.path().join("abandoned.db");
    // Given up after its first steps: the caller (a client) went away.
    let gave_up = tokio::time::timeout(Duration::from_millis(3), vault.backup_to(&dest)).await;
    assert!(
        gave_up.is_err(),
        "the backup should still have been running"
    );
    // The clean-up job runs before anything sent after it.
    vault.lock().await.unwrap();
    assert!(!dest.exists(), "the abandoned copy is removed");
    let copy = t.dir.path().join("copy.db");
    assert!(vault.backup_to(&copy).await.unwrap().done);
    crate::vault::sqlite::check_vault_file(&copy).unwrap();
    close(vault).await;
}
