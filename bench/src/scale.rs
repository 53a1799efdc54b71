//! Section 3: scale. One session grown to 1k, 100k (and 1M) peers, and many sessions of
//! 10k peers: bulk caching rate (`cache_peers` in batches of 1000), cold lookups (from a fresh
//! connection, so that the client cache cannot answer), on-disk size live and after a clean
//! shutdown, the daemon's memory; grammers' `SqliteSession` (and `MemorySession` for
//! lookups) given the same peers.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use grammers_session::Session;
use grammers_session::storages::{MemorySession, SqliteSession};
use serde::Serialize;

use crate::daemon::{CHEAP_KDF, DiskSize, Vaultd};
use crate::stats::{Count, Rng, Summary, time_async};
use crate::workload::{fill, ok, open_vault, peer_id};

/// How far to go.
#[derive(Debug, Clone)]
pub struct ScalePlan {
    /// Peer counts of the one-session stages.
    pub stages: Vec<u64>,
    /// The last stage runs only if its fill is projected to take at most this long.
    pub last_stage_budget: Duration,
    /// Sessions × peers of the many-session test.
    pub sessions: usize,
    /// Peers per session there.
    pub peers_per_session: u64,
    /// Lookups timed per measurement.
    pub lookups: usize,
    /// Concurrent fillers in the many-session test.
    pub fill_tasks: usize,
    /// Run the many-session test.
    pub many: bool,
}

/// One stage of the one-session test.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// Peers in the session.
    pub peers: u64,
    /// Session Vault: peers/s while filling up to this stage (from the previous one).
    pub vault_fill_rate: f64,
    /// Cold lookups from a fresh connection (daemon running since the fill).
    pub vault_lookup: Summary,
    /// The reference, in rounds interleaved with `vault_lookup`: lookups in a session of
    /// [`SMALL`] peers, through a client without a peer cache.
    pub small_lookup: Summary,
    /// Lookups from a fresh connection right after a daemon restart.
    pub vault_lookup_after_restart: Summary,
    /// vault.db + WAL while running.
    pub vault_disk_live: DiskSize,
    /// After a clean shutdown, as vaultd left the files.
    pub vault_disk_closed: DiskSize,
    /// The same, once the WAL left behind is checkpointed.
    pub vault_disk_checkpointed: DiskSize,
    /// vaultd VmRSS / VmHWM after the lookups, KiB.
    pub vaultd_rss_kib: (u64, u64),
    /// vaultd VmRSS right after restart and unlock, KiB.
    pub vaultd_rss_restarted_kib: u64,
    /// Time from spawn to the first answered handshake, at restart.
    pub vaultd_start: Duration,
    /// SIGTERM to exit.
    pub vaultd_stop: Duration,
    /// grammers SqliteSession: peers/s filling, lookups after reopening, file size.
    pub sqlite: Option<GrammersStage>,
    /// grammers MemorySession: peers/s filling, lookups.
    pub memory: Option<(f64, Summary)>,
}

/// grammers' `SqliteSession` at a stage.
#[derive(Debug, Clone, Serialize)]
pub struct GrammersStage {
    /// Peers/s while filling.
    pub fill_rate: f64,
    /// Lookups after reopening the file.
    pub lookup: Summary,
    /// The file (and any journal or WAL left).
    pub disk: u64,
}

/// The many-session test.
#[derive(Debug, Clone, Serialize)]
pub struct Many {
    /// Sessions.
    pub sessions: usize,
    /// Peers per session.
    pub peers_per_session: u64,
    /// Session Vault: peers/s over all concurrent fillers.
    pub vault_fill_rate: f64,
    /// Concurrent fillers.
    pub fill_tasks: usize,
    /// Cold lookups, random session and peer, one fresh connection per session.
    pub vault_lookup: Summary,
    /// Live and closed sizes.
    pub vault_disk_live: DiskSize,
    /// After a clean shutdown, as vaultd left the files.
    pub vault_disk_closed: DiskSize,
    /// The same, once the WAL left behind is checkpointed.
    pub vault_disk_checkpointed: DiskSize,
    /// vaultd VmRSS / VmHWM with every session open, KiB.
    pub vaultd_rss_kib: (u64, u64),
    /// Time from spawn to the first answered handshake, at restart.
    pub vaultd_start: Duration,
    /// grammers: one SqliteSession file per session.
    pub sqlite: GrammersStage,
}

/// Everything section 3 measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResults {
    /// One-session stages that ran.
    pub stages: Vec<Stage>,
    /// Why a planned stage did not run.
    pub skipped: Option<String>,
    /// The many-session test.
    pub many: Option<Many>,
}

fn sqlite_size(path: &Path) -> u64 {
    ["", "-journal", "-wal", "-shm"]
        .iter()
        .map(|s| {
            let mut p = path.as_os_str().to_owned();
            p.push(s);
            std::fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
        })
        .sum()
}

/// Peers of the reference session whose lookups interleave with the big one's.
pub const SMALL: u64 = 1_000;

/// Distinct random ids among `0..peers`, `count` of them at most.
fn distinct(peers: u64, count: usize, seed: u64) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    let mut ids: Vec<u64> = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::new();
    while ids.len() < count.min(peers as usize) {
        let i = rng.below(peers);
        if seen.insert(i) {
            ids.push(i);
        }
    }
    ids
}

/// Lookups of distinct random peers in `big` (a fresh connection: its client cache cannot
/// answer) and of random peers in `small` (no client cache), call by call in turn, so that
/// both see the same machine state.
async fn interleaved_lookups<S: Session>(
    big: &S,
    peers: u64,
    small: &S,
    count: usize,
    seed: u64,
) -> (Summary, Summary)
where
    S::Error: Debug,
{
    let c = Count::new(count);
    let ids = distinct(peers, c.total(), seed);
    let warm = c.warmup.min(ids.len() / 2);
    let mut rng = Rng::new(seed ^ 7);
    let mut b = Vec::new();
    let mut sm = Vec::new();
    for (n, &id) in ids.iter().enumerate() {
        let t = Instant::now();
        let p = big.peer(peer_id(id)).await.expect("peer");
        let took = t.elapsed().as_nanos() as u64;
        assert!(p.is_some());
        let t = Instant::now();
        let p = small.peer(peer_id(rng.below(SMALL))).await.expect("peer");
        let took_small = t.elapsed().as_nanos() as u64;
        assert!(p.is_some());
        if n >= warm {
            b.push(took);
            sm.push(took_small);
        }
    }
    (crate::stats::summarize(b), crate::stats::summarize(sm))
}

/// Times `count` lookups of distinct random peers among `0..peers`.
async fn lookups<S: Session>(s: &S, peers: u64, count: usize, seed: u64) -> Summary
where
    S::Error: Debug,
{
    let c = Count::new(count);
    let ids = distinct(peers, c.total(), seed);
    let c = Count {
        warmup: c.warmup.min(ids.len() / 2),
        measured: ids.len() - c.warmup.min(ids.len() / 2),
    };
    time_async(c, |i| {
        let id = peer_id(ids[i]);
        async move {
            let p = s.peer(id).await.expect("peer");
            assert!(p.is_some());
        }
    })
    .await
}

async fn timed_fill<S: Session>(s: &S, from: u64, to: u64) -> Result<f64>
where
    S::Error: Debug,
{
    let t = Instant::now();
    fill(s, from, to, 1_000).await?;
    Ok((to - from) as f64 / t.elapsed().as_secs_f64())
}

/// Runs section 3 with its own daemons under `dir`.
pub async fn run(vaultd: &Path, dir: &Path, plan: &ScalePlan) -> Result<ScaleResults> {
    let one = dir.join("scale");
    std::fs::create_dir_all(&one)?;
    let (mut d, _) = Vaultd::start(vaultd, &one, &[]).await?;
    d.init(Some(CHEAP_KDF)).await?;
    let sq_path = one.join("grammers-scale.session");
    let sq = ok(SqliteSession::open(&sq_path).await)?;
    let mem = MemorySession::default();
    let small = open_vault(&d.socket, "small", 0).await?;
    fill(&small, 0, SMALL, 1_000).await?;
    drop(small);
    let mut stages: Vec<Stage> = Vec::new();
    let mut skipped = None;
    let mut have = 0u64;
    let mut sq_have = Some(0u64);
    let mut last_rates: Option<(f64, Option<f64>)> = None;
    for (i, &target) in plan.stages.iter().enumerate() {
        let last = i + 1 == plan.stages.len() && i > 0;
        let mut with_grammers = sq_have.is_some();
        if let (true, Some((vrate, srate))) = (last, last_rates) {
            let vault_secs = (target - have) as f64 / vrate;
            let sq_secs = srate.map_or(0.0, |r| (target - have) as f64 / r);
            if vault_secs > plan.last_stage_budget.as_secs_f64() {
                skipped = Some(format!(
                    "{target} peers in one session not run: filling at {vrate:.0} peers/s would take {vault_secs:.0} s, over the {} s budget",
                    plan.last_stage_budget.as_secs()
                ));
                break;
            }
            if vault_secs + sq_secs > plan.last_stage_budget.as_secs_f64() {
                with_grammers = false;
                skipped = Some(format!(
                    "grammers' SqliteSession not filled to {target} peers: at {:.0} peers/s it would take {sq_secs:.0} s",
                    srate.unwrap_or(0.0)
                ));
            }
        }
        eprintln!("  one session, {target} peers…");
        let v = open_vault(&d.socket, "big", session_vault_client::DEFAULT_PEER_CACHE).await?;
        let vault_fill_rate = timed_fill(&v, have, target).await?;
        drop(v);
        have = target;
        let v = open_vault(&d.socket, "big", session_vault_client::DEFAULT_PEER_CACHE).await?;
        let small = open_vault(&d.socket, "small", 0).await?;
        let (vault_lookup, small_lookup) =
            interleaved_lookups(&v, target, &small, plan.lookups, 10 + i as u64).await;
        drop(v);
        drop(small);
        let vault_disk_live = d.disk();
        let vaultd_rss_kib = d.memory_kib();
        let stop = d.stop()?;
        let vault_disk_closed = d.disk();
        let vault_disk_checkpointed = d.checkpointed_disk().await?;
        let start = d.start_again().await?;
        d.unlock().await?;
        let vaultd_rss_restarted_kib = d.memory_kib().0;
        let v = open_vault(&d.socket, "big", session_vault_client::DEFAULT_PEER_CACHE).await?;
        let vault_lookup_after_restart = lookups(&v, target, plan.lookups, 20 + i as u64).await;
        drop(v);

        let sqlite = if with_grammers {
            let from = sq_have.unwrap_or(0);
            let fill_rate = timed_fill(&sq, from, target).await?;
            sq_have = Some(target);
            // Reopened, so SQLite's page cache is cold as the vault client's is.
            let sq2 = ok(SqliteSession::open(&sq_path).await)?;
            let lookup = lookups(&sq2, target, plan.lookups, 10 + i as u64).await;
            drop(sq2);
            Some(GrammersStage {
                fill_rate,
                lookup,
                disk: sqlite_size(&sq_path),
            })
        } else {
            sq_have = None;
            None
        };
        let memory = if with_grammers {
            let rate = timed_fill(&mem, stages.last().map_or(0, |s| s.peers), target).await?;
            Some((
                rate,
                lookups(&mem, target, plan.lookups, 10 + i as u64).await,
            ))
        } else {
            None
        };
        last_rates = Some((vault_fill_rate, sqlite.as_ref().map(|s| s.fill_rate)));
        stages.push(Stage {
            peers: target,
            vault_fill_rate,
            vault_lookup,
            small_lookup,
            vault_lookup_after_restart,
            vault_disk_live,
            vault_disk_closed,
            vault_disk_checkpointed,
            vaultd_rss_kib,
            vaultd_rss_restarted_kib,
            vaultd_start: start,
            vaultd_stop: stop,
            sqlite,
            memory,
        });
    }
    drop(sq);
    drop(mem);
    d.stop()?;
    drop(d);

    let many = if plan.many {
        Some(many(vaultd, dir, plan).await?)
    } else {
        None
    };
    Ok(ScaleResults {
        stages,
        skipped,
        many,
    })
}

async fn many(vaultd: &Path, dir: &Path, plan: &ScalePlan) -> Result<Many> {
    let n = plan.sessions;
    let per = plan.peers_per_session;
    eprintln!("  {n} sessions of {per} peers…");
    let multi = dir.join("multi");
    std::fs::create_dir_all(&multi)?;
    let (mut d, _) = Vaultd::start(vaultd, &multi, &[]).await?;
    d.init(Some(CHEAP_KDF)).await?;
    let socket = Arc::new(d.socket.clone());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..plan.fill_tasks {
        let socket = Arc::clone(&socket);
        let tasks_n = plan.fill_tasks;
        tasks.push(tokio::spawn(async move {
            let mut j = k;
            while j < n {
                let v = open_vault(&socket, &format!("s{j}"), 0).await?;
                fill(&v, 0, per, 1_000).await?;
                j += tasks_n;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let vault_fill_rate = (n as u64 * per) as f64 / t.elapsed().as_secs_f64();
    let mut sessions = Vec::new();
    for j in 0..n {
        sessions.push(
            open_vault(
                &d.socket,
                &format!("s{j}"),
                session_vault_client::DEFAULT_PEER_CACHE,
            )
            .await?,
        );
    }
    let vault_lookup = many_lookups(&sessions, per, plan.lookups).await;
    let vaultd_rss_kib = d.memory_kib();
    drop(sessions);
    let vault_disk_live = d.disk();
    d.stop()?;
    let vault_disk_closed = d.disk();
    let vault_disk_checkpointed = d.checkpointed_disk().await?;
    let vaultd_start = d.start_again().await?;
    d.stop()?;

    let mut files = Vec::new();
    let t = Instant::now();
    for j in 0..n {
        let p = multi.join(format!("grammers-{j}.session"));
        let s = ok(SqliteSession::open(&p).await)?;
        fill(&s, 0, per, 1_000).await?;
        files.push(p);
    }
    let fill_rate = (n as u64 * per) as f64 / t.elapsed().as_secs_f64();
    let mut opened = Vec::new();
    for p in &files {
        opened.push(ok(SqliteSession::open(p).await)?);
    }
    let lookup = many_lookups(&opened, per, plan.lookups).await;
    drop(opened);
    Ok(Many {
        sessions: n,
        peers_per_session: per,
        vault_fill_rate,
        fill_tasks: plan.fill_tasks,
        vault_lookup,
        vault_disk_live,
        vault_disk_closed,
        vault_disk_checkpointed,
        vaultd_rss_kib,
        vaultd_start,
        sqlite: GrammersStage {
            fill_rate,
            lookup,
            disk: files.iter().map(|p| sqlite_size(p)).sum(),
        },
    })
}

/// Lookups of distinct random (session, peer) pairs.
async fn many_lookups<S: Session>(sessions: &[S], per: u64, count: usize) -> Summary
where
    S::Error: Debug,
{
    let c = Count::new(count);
    let mut rng = Rng::new(99);
    let mut seen = std::collections::HashSet::new();
    let total = sessions.len() as u64 * per;
    let mut picks = Vec::new();
    while picks.len() < c.total().min(total as usize) {
        let pair = (rng.below(sessions.len() as u64) as usize, rng.below(per));
        if seen.insert(pair) {
            picks.push(pair);
        }
    }
    let warm = c.warmup.min(picks.len() / 2);
    let c = Count {
        warmup: warm,
        measured: picks.len() - warm,
    };
    time_async(c, |i| {
        let (s, p) = picks[i];
        let s = &sessions[s];
        async move {
            let r = s.peer(peer_id(p)).await.expect("peer");
            assert!(r.is_some());
        }
    })
    .await
}
