//! The restarted bot: a fresh process opens a session of N peers that an earlier process
//! cached, and looks up random peers, as a bot does after a restart.
//!
//! Three kinds of fresh process (this binary re-run as `restart-worker`), each measured in
//! the same run: `VaultSession` with warm start (the default), `VaultSession` without it
//! (`warm_start(false)`: every first lookup of a peer is a daemon round trip, what a
//! restarted bot saw before), and grammers' `SqliteSession` on a file holding the same peers.
//! Each reports its open time (for the warm vault: until the warm start is applied), p50/p99
//! of the lookups, the daemon requests those lookups made, and its resident memory before the
//! open and after the lookups (the growth, divided by the peers loaded, is the memory per
//! cached peer). The rounds run the three one after the other, twice.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use grammers_session::Session;
use grammers_session::storages::SqliteSession;
use serde::{Deserialize, Serialize};
use session_vault_client::{VaultError, VaultSession};

use crate::stats::{Count, Rng, Summary, time_async};
use crate::workload::{fill, ok, open_vault, peer_id};

/// How big.
#[derive(Clone, Copy, Debug)]
pub struct RestartPlan {
    /// Peers in the session.
    pub peers: u64,
    /// Lookups measured per process.
    pub lookups: usize,
    /// Rounds of the three processes.
    pub rounds: usize,
}

/// Which storage a worker opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Kind {
    /// `VaultSession`, warm start on.
    VaultWarm,
    /// `VaultSession`, warm start off.
    VaultCold,
    /// grammers' `SqliteSession`.
    Sqlite,
}

impl Kind {
    /// The row's label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::VaultWarm => "vault, warm start",
            Kind::VaultCold => "vault, warm start off",
            Kind::Sqlite => "grammers SqliteSession",
        }
    }
}

/// One fresh process's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Worker {
    /// What it opened.
    pub kind: Kind,
    /// Round number (from 1).
    pub round: usize,
    /// From before the connect (or `SqliteSession::open`) until the session is usable; for
    /// the warm vault, until its warm start was applied.
    pub open: Duration,
    /// The warm start's own `elapsed` (vault, warm only).
    pub warm_elapsed: Option<Duration>,
    /// Peers the warm start loaded.
    pub loaded: usize,
    /// Whether it loaded the whole session.
    pub complete: bool,
    /// Random lookups after the open.
    pub lookups: Summary,
    /// Daemon requests those lookups made (vault only).
    pub daemon_requests: Option<u64>,
    /// VmRSS before the open, KiB.
    pub rss_before_kib: u64,
    /// VmRSS after the open (warm start applied), KiB.
    pub rss_open_kib: u64,
    /// VmRSS after the lookups, KiB.
    pub rss_after_kib: u64,
}

/// The section's results.
#[derive(Debug, Serialize)]
pub struct RestartResults {
    /// Peers in the session.
    pub peers: u64,
    /// Every worker, in the order run.
    pub workers: Vec<Worker>,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const SESSION: &str = "restarted-bot";

/// Fills the vault session and the SqliteSession file with the same `plan.peers` peers, then
/// runs the rounds of fresh processes.
pub async fn run(socket: &Path, dir: &Path, plan: &RestartPlan) -> Result<RestartResults> {
    let sqlite = dir.join("grammers-restart.session");
    {
        let s = open_vault(socket, SESSION, 0).await?;
        fill(&s, 0, plan.peers, 1_000).await?;
        let sq = ok(SqliteSession::open(&sqlite).await)?;
        fill(&sq, 0, plan.peers, 1_000).await?;
    }
    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    for round in 1..=plan.rounds {
        for kind in [Kind::Sqlite, Kind::VaultCold, Kind::VaultWarm] {
            eprintln!("  round {round}: {}…", kind.label());
            let out = tokio::process::Command::new(&exe)
                .arg("restart-worker")
                .arg("--kind")
                .arg(match kind {
                    Kind::VaultWarm => "vault-warm",
                    Kind::VaultCold => "vault-cold",
                    Kind::Sqlite => "sqlite",
                })
                .arg("--socket")
                .arg(socket)
                .arg("--sqlite")
                .arg(&sqlite)
                .arg("--peers")
                .arg(plan.peers.to_string())
                .arg("--lookups")
                .arg(plan.lookups.to_string())
                .arg("--seed")
                .arg(round.to_string())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .output()
                .await
                .context("cannot run a restart worker")?;
            if !out.status.success() {
                bail!("a restart worker failed: {}", out.status);
            }
            let text = String::from_utf8(out.stdout)?;
            let mut w: Worker = serde_json::from_str(text.trim())
                .with_context(|| format!("restart worker output {text:?}"))?;
            w.round = round;
            workers.push(w);
        }
    }
    Ok(RestartResults {
        peers: plan.peers,
        workers,
    })
}

/// Arguments of the hidden `restart-worker` subcommand.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    kind: Kind,
    #[arg(long)]
    socket: PathBuf,
    #[arg(long)]
    sqlite: PathBuf,
    #[arg(long)]
    peers: u64,
    #[arg(long)]
    lookups: usize,
    #[arg(long)]
    seed: u64,
}

/// Opens the session exclusively, with or without warm start, retrying while the previous
/// worker's lease is still being given back.
async fn open_restarted(socket: &Path, warm: bool) -> Result<VaultSession> {
    let t = Instant::now();
    loop {
        match VaultSession::builder(SESSION)
            .socket(socket)
            .warm_start(warm)
            .client_name("session-vault-bench restart-worker")
            .connect()
            .await
        {
            Ok(s) => return Ok(s),
            Err(VaultError::SessionBusy { .. }) if t.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => bail!("cannot open session {SESSION}: {e}"),
        }
    }
}

async fn lookups<S: Session>(s: &S, args: &WorkerArgs) -> Result<Summary>
where
    S::Error: std::fmt::Debug,
{
    let mut rng = Rng::new(args.seed);
    let picks: Vec<u64> = (0..Count::new(args.lookups).total())
        .map(|_| rng.below(args.peers))
        .collect();
    // Every pick must be found (a check, outside the timing).
    for &i in picks.iter().take(10) {
        if ok(s.peer(peer_id(i)).await)?.is_none() {
            bail!("peer {i} not found");
        }
    }
    let picks = &picks;
    Ok(time_async(Count::new(args.lookups), |i| async move {
        let _ = std::hint::black_box(s.peer(peer_id(picks[i])).await);
    })
    .await)
}

/// The hidden `restart-worker` subcommand: one fresh process, its figures as one JSON line.
pub async fn worker(args: WorkerArgs) -> Result<()> {
    let rss_before_kib = rss_kib();
    let t = Instant::now();
    let w = match args.kind {
        Kind::Sqlite => {
            let s = ok(SqliteSession::open(&args.sqlite).await)?;
            let open = t.elapsed();
            let rss_open_kib = rss_kib();
            let lookups = lookups(&s, &args).await?;
            Worker {
                kind: args.kind,
                round: 0,
                open,
                warm_elapsed: None,
                loaded: 0,
                complete: false,
                lookups,
                daemon_requests: None,
                rss_before_kib,
                rss_open_kib,
                rss_after_kib: rss_kib(),
            }
        }
        Kind::VaultWarm | Kind::VaultCold => {
            let s = open_restarted(&args.socket, args.kind == Kind::VaultWarm).await?;
            let warm = s.warm_start().await;
            if let Some(why) = &warm.failed {
                bail!("warm start failed: {why}");
            }
            let open = t.elapsed();
            let rss_open_kib = rss_kib();
            let before = s.daemon_requests();
            let lookups = lookups(&s, &args).await?;
            Worker {
                kind: args.kind,
                round: 0,
                open,
                warm_elapsed: (args.kind == Kind::VaultWarm).then_some(warm.elapsed),
                loaded: warm.peers,
                complete: warm.complete,
                lookups,
                daemon_requests: Some(s.daemon_requests() - before),
                rss_before_kib,
                rss_open_kib,
                rss_after_kib: rss_kib(),
            }
        }
    };
    println!("{}", serde_json::to_string(&w)?);
    Ok(())
}
