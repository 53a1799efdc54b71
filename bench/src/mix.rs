//! Section 2: a bot-like mix under concurrency.
//!
//! Each client loops over: 95% `peer` (uniform over the session's working set of peers),
//! 4% `cache_peers` of 10 (8 peers of the working set again, 2 new ones: what a bot does with
//! each update's users and chats), 1% `set_update_state` (primary, one in four a channel's).
//! After a warm-up, every operation that starts inside the measurement window is counted and
//! its latency offered to a bounded uniform reservoir (per client and kind).
//!
//! Shapes: tasks sharing one `VaultSession` (one connection, one client cache), and separate
//! processes (this binary as `mix-worker`), each with its own session and connection. The
//! same shared-task mix runs on grammers' `MemorySession` and `SqliteSession` for reference.

use std::fmt::Debug;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use grammers_session::Session;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::stats::{Reservoir, Rng, Summary, summarize_weighted};
use crate::workload::{fill, mix_state_change, peer, peer_id};

/// Reservoir sizes per client: peers, writes.
const KEEP_READS: usize = 10_000;
const KEEP_WRITES: usize = 5_000;
/// New peers a client adds start here (+ 1M per client).
const NEW_PEERS_BASE: u64 = 100_000_000;

/// What one client measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientStats {
    /// `peer` calls: (weight, samples).
    pub peer: (f64, Vec<u64>),
    /// `cache_peers` calls.
    pub cache_peers: (f64, Vec<u64>),
    /// `set_update_state` calls.
    pub set_state: (f64, Vec<u64>),
    /// Operations in the window.
    pub ops: u64,
    /// CPU seconds of this client's process in the window (processes only).
    pub cpu_secs: f64,
}

/// One client's loop: until `end`, recording operations that start at or after `start`.
pub async fn client_loop<S: Session>(
    s: &S,
    seed: u64,
    working_set: u64,
    start: Instant,
    end: Instant,
) -> ClientStats
where
    S::Error: Debug,
{
    let mut rng = Rng::new(seed);
    let mut peer_r = Reservoir::new(KEEP_READS, seed ^ 1);
    let mut cache_r = Reservoir::new(KEEP_WRITES, seed ^ 2);
    let mut state_r = Reservoir::new(KEEP_WRITES, seed ^ 3);
    let mut new_peer = NEW_PEERS_BASE + (seed % 1_000) * 1_000_000;
    let mut state_i = seed * 1_000_000;
    for n in 0u64.. {
        if n % 16 == 15 {
            // Hits in the client cache never wait; let the other clients (and the
            // runtime's own tasks) run, as a bot's network I/O would between calls.
            tokio::task::yield_now().await;
        }
        let t = Instant::now();
        if t >= end {
            break;
        }
        let r = rng.below(100);
        let which = if r < 95 {
            let id = peer_id(rng.below(working_set));
            let p = s.peer(id).await.expect("peer");
            debug_assert!(p.is_some());
            0
        } else if r < 99 {
            let mut batch: Vec<_> = (0..8).map(|_| peer(rng.below(working_set))).collect();
            batch.push(peer(new_peer));
            batch.push(peer(new_peer + 1));
            new_peer += 2;
            s.cache_peers(batch).await.expect("cache_peers");
            1
        } else {
            state_i += 1;
            s.set_update_state(mix_state_change(state_i))
                .await
                .expect("set_update_state");
            2
        };
        if t >= start {
            let ns = t.elapsed().as_nanos() as u64;
            match which {
                0 => peer_r.push(ns),
                1 => cache_r.push(ns),
                _ => state_r.push(ns),
            }
        }
    }
    let ops = peer_r.seen() + cache_r.seen() + state_r.seen();
    ClientStats {
        peer: peer_r.into_weighted(),
        cache_peers: cache_r.into_weighted(),
        set_state: state_r.into_weighted(),
        ops,
        cpu_secs: f64::NAN,
    }
}

/// One row of the concurrency table.
#[derive(Debug, Clone, Serialize)]
pub struct MixRow {
    /// Storage and shape.
    pub label: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations per second, all clients together.
    pub ops_per_sec: f64,
    /// Every operation.
    pub all: Summary,
    /// `peer` only.
    pub peer: Summary,
    /// Writes (`cache_peers` and `set_update_state`).
    pub writes: Summary,
    /// `cache_peers` only.
    pub cache_peers: Summary,
    /// `set_update_state` only.
    pub set_state: Summary,
    /// vaultd CPU seconds per 100k operations (vault rows).
    pub vaultd_cpu_per_100k: Option<f64>,
    /// Client-side CPU seconds per 100k operations.
    pub client_cpu_per_100k: f64,
    /// CPU seconds of vaultd and the clients over the window, per CPU and second (1.0: every
    /// CPU busy all the time).
    pub cpu_busy: f64,
}

fn row(
    label: &str,
    clients: usize,
    window: Duration,
    stats: Vec<ClientStats>,
    vaultd_cpu: Option<f64>,
    client_cpu: f64,
) -> MixRow {
    let ops: u64 = stats.iter().map(|s| s.ops).sum();
    let mut all = Vec::new();
    let mut peers = Vec::new();
    let mut writes = Vec::new();
    let mut caches = Vec::new();
    let mut states = Vec::new();
    for s in stats {
        all.push(s.peer.clone());
        all.push(s.cache_peers.clone());
        all.push(s.set_state.clone());
        peers.push(s.peer);
        writes.push(s.cache_peers.clone());
        writes.push(s.set_state.clone());
        caches.push(s.cache_peers);
        states.push(s.set_state);
    }
    let per_100k = |cpu: f64| cpu / ops.max(1) as f64 * 100_000.0;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu_busy = (vaultd_cpu.unwrap_or(0.0) + client_cpu) / window.as_secs_f64() / cpus;
    MixRow {
        label: label.to_string(),
        clients,
        ops_per_sec: ops as f64 / window.as_secs_f64(),
        all: summarize_weighted(all),
        peer: summarize_weighted(peers),
        writes: summarize_weighted(writes),
        cache_peers: summarize_weighted(caches),
        set_state: summarize_weighted(states),
        vaultd_cpu_per_100k: vaultd_cpu.map(per_100k),
        client_cpu_per_100k: per_100k(client_cpu),
        cpu_busy,
    }
}

/// How long each run warms up and measures, and how big the working set is.
#[derive(Debug, Clone, Copy)]
pub struct MixPlan {
    /// Untimed start of each run.
    pub warmup: Duration,
    /// The measurement window.
    pub window: Duration,
    /// Peers in each session's working set.
    pub working_set: u64,
}

/// Samples a daemon's CPU time at the window's edges (None without a daemon).
async fn cpu_over_window(pid: Option<u32>, start: Instant, end: Instant) -> (Option<f64>, f64) {
    tokio::time::sleep_until(start.into()).await;
    let d0 = pid.map(crate::daemon::proc_cpu_secs);
    let c0 = crate::daemon::self_cpu_secs();
    tokio::time::sleep_until(end.into()).await;
    let d1 = pid.map(crate::daemon::proc_cpu_secs);
    let c1 = crate::daemon::self_cpu_secs();
    (d0.zip(d1).map(|(a, b)| b - a), c1 - c0)
}

/// `clients` tasks sharing `s`.
pub async fn shared<S: Session>(
    label: &str,
    s: Arc<S>,
    clients: usize,
    plan: MixPlan,
    vaultd_pid: Option<u32>,
) -> Result<MixRow>
where
    S::Error: Debug,
{
    let start = Instant::now() + plan.warmup;
    let end = start + plan.window;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            client_loop(&*s, 1 + c as u64, plan.working_set, start, end).await
        }));
    }
    let (vcpu, ccpu) = cpu_over_window(vaultd_pid, start, end).await;
    let mut stats = Vec::new();
    for t in tasks {
        stats.push(t.await?);
    }
    Ok(row(label, clients, plan.window, stats, vcpu, ccpu))
}

/// Prepares a session for the mix: its working set stored, then read once (so that a
/// client cache, when on, holds it: the runs measure the steady state, not the warm-up of 64
/// caches at once).
pub async fn prepare<S: Session>(s: &S, working_set: u64) -> Result<()>
where
    S::Error: Debug,
{
    fill(s, 0, working_set, 1_000).await?;
    for i in 0..working_set {
        crate::workload::ok(s.peer(peer_id(i)).await)?;
    }
    Ok(())
}

/// The hidden `mix-worker` subcommand: opens its own session, stores the working set, says
/// `ready`, waits for `go START_NS END_NS` (wall-clock ns) on stdin, runs the mix, prints
/// its [`ClientStats`] as one JSON line.
pub async fn worker(
    socket: &Path,
    session: &str,
    working_set: u64,
    peer_cache: usize,
    seed: u64,
) -> Result<()> {
    let s = crate::workload::open_vault(socket, session, peer_cache).await?;
    prepare(&s, working_set).await?;
    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    let mut it = line.split_whitespace();
    anyhow::ensure!(it.next() == Some("go"), "expected go, got {line:?}");
    let mut at = || -> Result<Instant> {
        let ns: u128 = it.next().context("missing time")?.parse()?;
        let now_wall = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let now = Instant::now();
        Ok(if ns > now_wall {
            now + Duration::from_nanos((ns - now_wall) as u64)
        } else {
            now
        })
    };
    let start = at()?;
    let end = at()?;
    let s = Arc::new(s);
    let work = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { client_loop(&*s, seed, working_set, start, end).await })
    };
    let (_, cpu) = cpu_over_window(None, start, end).await;
    let mut stats = work.await?;
    stats.cpu_secs = cpu;
    out.write_all(serde_json::to_string(&stats)?.as_bytes())
        .await?;
    out.write_all(b"\n").await?;
    out.flush().await?;
    Ok(())
}

/// `clients` worker processes, each with its own session `PREFIX-i`.
pub async fn processes(
    label: &str,
    socket: &Path,
    prefix: &str,
    clients: usize,
    peer_cache: usize,
    plan: MixPlan,
    vaultd_pid: u32,
) -> Result<MixRow> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for i in 0..clients {
        let mut child = tokio::process::Command::new(&exe)
            .arg("mix-worker")
            .arg("--socket")
            .arg(socket)
            .arg("--session")
            .arg(format!("{prefix}-{i}"))
            .arg("--working-set")
            .arg(plan.working_set.to_string())
            .arg("--peer-cache")
            .arg(peer_cache.to_string())
            .arg("--seed")
            .arg((1 + i).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a mix worker")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
        children.push((child, stdin, stdout.lines()));
    }
    for (_, _, lines) in &mut children {
        match lines.next_line().await? {
            Some(l) if l == "ready" => {}
            other => bail!("a mix worker failed to start: {other:?}"),
        }
    }
    let now_wall = SystemTime::now().duration_since(UNIX_EPOCH)?;
    // Margin for the go lines to reach every worker.
    let lead = Duration::from_millis(50) + Duration::from_micros(200 * clients as u64);
    let start_wall = now_wall + lead + plan.warmup;
    let end_wall = start_wall + plan.window;
    let go = format!("go {} {}\n", start_wall.as_nanos(), end_wall.as_nanos());
    let start = Instant::now() + lead + plan.warmup;
    for (_, stdin, _) in &mut children {
        stdin.write_all(go.as_bytes()).await?;
        stdin.flush().await?;
    }
    let (vcpu, _) = cpu_over_window(Some(vaultd_pid), start, start + plan.window).await;
    let mut stats = Vec::new();
    for (mut child, _, mut lines) in children {
        let line = lines
            .next_line()
            .await?
            .context("a mix worker ended without its result")?;
        stats.push(serde_json::from_str::<ClientStats>(&line)?);
        child.wait().await?;
    }
    let ccpu = stats.iter().map(|s| s.cpu_secs).sum();
    Ok(row(label, clients, plan.window, stats, vcpu, ccpu))
}
