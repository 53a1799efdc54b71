//! `session-vault-bench`: Session Vault measured beside grammers' own storages, in one run.
//!
//! Starts a real `vaultd` on a temporary directory on a real disk (never tmpfs, where fsync
//! is free), initializes it with a cheap KDF, and measures through `VaultSession` (the
//! `grammers_session::Session` a bot uses) beside grammers' in-process `MemorySession` and
//! its `SqliteSession` on a file in the same directory:
//!
//! 1. per-operation latency (p50/p99) of every `Session` method, and a bare 64-byte
//!    Unix-socket round trip between two processes as the floor of any daemon request;
//! 2. a bot-like mix (95% `peer`, 4% `cache_peers` of 10, 1% `set_update_state`) at 1, 8 and
//!    64 clients: tasks sharing one session, and separate processes with a session each;
//! 3. scale: one session of 1k, 100k (1M) peers, and many sessions: fill rate, cold lookups,
//!    on-disk size; and the restarted bot: a fresh process opens a session of 100k peers and
//!    looks up random peers (warm start on and off, and SqliteSession on the same peers);
//! 4. resources: vaultd memory, CPU per 100k operations, unlock time at the default KDF,
//!    start-up time.
//!
//! The timing loop is our own: warm-up calls first, then every call timed on its own; p50
//! and p99 are read from the sorted samples. Results print as Markdown tables, and as JSON
//! with `--json`. `--quick` shrinks everything to a smoke test (CI), asserting nothing.
//!
//! Hidden subcommands re-run this binary as a child: `echo-server` (the round-trip
//! baseline), `mix-worker` (one client process of the mix), and `load` (a workload against
//! an already running daemon, for profilers).

mod daemon;
mod echo;
mod load;
mod machine;
mod mix;
mod ops;
mod pg;
mod report;
mod restart;
mod run;
mod scale;
mod stats;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::stats::Count;

pub use machine::{Machine, loadavg};
use run::bench;

/// Session Vault benchmarked beside grammers' MemorySession and SqliteSession.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Tiny sizes and short loops (a smoke test: well under a minute, even with a debug
    /// vaultd). No threshold is asserted in any mode.
    #[arg(long)]
    quick: bool,
    /// The vaultd binary to measure (default: the root workspace's release build,
    /// `cargo build --release -p session-vault-daemon`).
    #[arg(long, value_name = "PATH")]
    vaultd: Option<PathBuf>,
    /// Where the temporary data dirs go (default: the system temp dir unless it is a
    /// tmpfs, else bench/target/bench-tmp). Must be a real disk.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Also write every result (histograms included) as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Skip sections (comma-separated: ops, mix, restart, scale, many (the many-session part
    /// of scale), unlock, leases).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    skip: Vec<String>,
    /// Peer counts of the one-session scale test (default: 1000,100000,1000000; quick:
    /// 1000,10000). The last one runs only if its fill fits the time budget.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    stages: Vec<u64>,
    /// Keep the measured vaults in a throwaway PostgreSQL cluster of the bench's own
    /// (`initdb` + `pg_ctl` from Debian's `postgresql` package, Unix socket, durability
    /// defaults) instead of SQLite files. Sections 1 and 2 then measure the PostgreSQL
    /// store and the lease section runs; scale and the default-KDF unlock are skipped.
    #[arg(long, conflicts_with = "store")]
    postgres: bool,
    /// As `--postgres`, on a database someone else runs (`postgres://USER@HOST/DB`; it
    /// must be empty or a Session Vault). Needs `--store-password-file`.
    #[arg(long, value_name = "URL", requires = "store_password_file")]
    store: Option<String>,
    /// The password of `--store`'s database, first line of this file.
    #[arg(long, value_name = "FILE")]
    store_password_file: Option<PathBuf>,
    /// `--lease-expiry` of the lease section's daemons (default 2s; quick: 1s).
    #[arg(long, value_name = "MS")]
    lease_expiry_ms: Option<u64>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Echo 64-byte messages on a Unix socket (the round-trip baseline's server).
    #[command(hide = true)]
    EchoServer {
        #[arg(long)]
        socket: PathBuf,
        /// A tokio server (multi-thread runtime) rather than a thread per connection.
        #[arg(long)]
        tokio: bool,
        /// A thread per connection spinning on a non-blocking socket.
        #[arg(long)]
        spin: bool,
    },
    /// Only the round-trip floor, `repeat` times (to see how much it varies).
    #[command(hide = true)]
    Rtt {
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// One client process of the concurrency mix.
    #[command(hide = true)]
    MixWorker {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        session: String,
        #[arg(long)]
        working_set: u64,
        #[arg(long)]
        peer_cache: usize,
        #[arg(long)]
        seed: u64,
    },
    /// A workload against a running daemon (initialized if need be), for profilers.
    #[command(hide = true)]
    Load(load::LoadArgs),
    /// One fresh process of the restarted-bot section.
    #[command(hide = true)]
    RestartWorker(restart::WorkerArgs),
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.cmd {
        Some(Cmd::EchoServer {
            socket,
            tokio,
            spin,
        }) => echo::serve(&socket, tokio, spin),
        Some(Cmd::Rtt { count, repeat }) => runtime()?.block_on(async {
            let dir = tempfile::Builder::new().prefix("svb").tempdir()?;
            for _ in 0..repeat {
                let e = echo::measure(dir.path(), Count::new(count)).await?;
                println!(
                    "p50 spinning {} blocking {} tokio {} tokio+reader {}",
                    stats::fmt_ns(e.spinning.p50),
                    stats::fmt_ns(e.blocking.p50),
                    stats::fmt_ns(e.tokio.p50),
                    stats::fmt_ns(e.tokio_reader_task.p50)
                );
            }
            Ok(())
        }),
        Some(Cmd::RestartWorker(a)) => runtime()?.block_on(restart::worker(a)),
        Some(Cmd::MixWorker {
            socket,
            session,
            working_set,
            peer_cache,
            seed,
        }) => runtime()?.block_on(mix::worker(
            &socket,
            &session,
            working_set,
            peer_cache,
            seed,
        )),
        Some(Cmd::Load(a)) => runtime()?.block_on(load::run(a)),
        None => {
            let rt = runtime()?;
            let out = rt.block_on(bench(&args));
            // Worker and daemon children are gone; do not wait on stray blocking tasks.
            rt.shutdown_timeout(Duration::from_secs(1));
            out
        }
    }
}

/// The runtime a grammers bot would use: multi-threaded, one worker per CPU.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Section 4's numbers gathered across the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resources {
    /// Spawn to first answered handshake, empty data dir.
    pub start_fresh: Duration,
    /// VmRSS right after start (uninitialized), KiB.
    pub rss_start_kib: u64,
    /// VmRSS after init, idle, KiB.
    pub rss_idle_kib: u64,
    /// VmRSS / VmHWM after sections 1 and 2 on the main daemon, KiB.
    pub rss_after_load_kib: (u64, u64),
    /// `init` with the cheap KDF.
    pub init_cheap: Duration,
    /// `unlock` with the cheap KDF (main daemon).
    pub unlock_cheap: Duration,
    /// `init` at the default KDF.
    pub init_default: Option<Duration>,
    /// `unlock` at the default KDF, each attempt.
    pub unlock_default: Vec<Duration>,
    /// vaultd VmHWM during the default-KDF unlocks, KiB.
    pub unlock_default_hwm_kib: u64,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// `--quick`.
    pub quick: bool,
    /// The machine.
    pub machine: Machine,
    /// Cost of the timing itself, ns (in every sample).
    pub timer_overhead_ns: f64,
    /// Section 1: round-trip floor.
    pub echo: Option<echo::EchoResults>,
    /// Section 1: per operation and storage.
    pub ops: Option<ops::OpsResults>,
    /// Section 1: the floor again, interleaved with the vault's cold `peer`.
    pub floor_interleaved: Option<ops::Interleaved>,
    /// Section 2.
    pub mix: Vec<mix::MixRow>,
    /// Section 3b: the restarted bot.
    pub restart: Option<restart::RestartResults>,
    /// Section 3.
    pub scale: Option<scale::ScaleResults>,
    /// Section 4.
    pub resources: Resources,
    /// The store measured: "sqlite", or "postgres" with `--postgres`/`--store`.
    pub store: String,
    /// Section 5 (PostgreSQL only): leases across daemons.
    pub leases: Option<pg::LeaseResults>,
    /// Wall time of the whole run.
    pub total: Duration,
}
