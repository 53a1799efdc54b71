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
mod mix;
mod ops;
mod pg;
mod report;
mod restart;
mod scale;
mod stats;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use grammers_session::storages::{MemorySession, SqliteSession};
use serde::Serialize;

use crate::daemon::{CHEAP_KDF, Vaultd};
use crate::stats::Count;

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

/// The machine, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available.
    pub cpus: usize,
    /// CPU model.
    pub cpu_model: String,
    /// Memory, GiB.
    pub mem_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Filesystem of the data dirs.
    pub data_fs: String,
    /// The data dirs.
    pub data_dir: String,
    /// The vaultd measured.
    pub vaultd: String,
    /// Whether that vaultd is a debug build (from its path).
    pub vaultd_debug: bool,
    /// 1-minute load average when the run started (other work on the machine skews results).
    pub load_start: f64,
    /// 1-minute load average when the run ended.
    pub load_end: f64,
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn machine(dir: &Path, vaultd: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".into(), |s| s.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    // The longest mount point that prefixes the data dir.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let data_fs = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && dir.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} ({})", f[2], f[0])))
        })
        .max()
        .map_or_else(|| "unknown".into(), |(_, s)| s);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        mem_gib: mem_kib / 1024.0 / 1024.0,
        kernel,
        data_fs,
        data_dir: dir.display().to_string(),
        vaultd: vaultd.display().to_string(),
        vaultd_debug: vaultd.components().any(|c| c.as_os_str() == "debug"),
        load_start: loadavg(),
        load_end: f64::NAN,
    }
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

fn work_base(arg: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = arg {
        std::fs::create_dir_all(d)?;
        if daemon::on_tmpfs(d) {
            eprintln!(
                "warning: {} is a tmpfs: fsync costs nothing there",
                d.display()
            );
        }
        return Ok(d.to_owned());
    }
    let tmp = std::env::temp_dir();
    if !daemon::on_tmpfs(&tmp) {
        return Ok(tmp);
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp");
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

async fn bench(args: &Args) -> Result<()> {
    let t_all = Instant::now();
    let skip = |s: &str| args.skip.iter().any(|x| x == s);
    let vaultd = match &args.vaultd {
        Some(p) => p.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/vaultd"),
    };
    if !vaultd.is_file() {
        bail!(
            "no vaultd at {} (build it: cargo build --release -p session-vault-daemon, or pass --vaultd)",
            vaultd.display()
        );
    }
    let vaultd = vaultd.canonicalize()?;
    let base = work_base(args.dir.as_deref())?;
    let tmp = tempfile::Builder::new().prefix("svb").tempdir_in(&base)?;
    let dir = tmp.path().to_owned();
    let mut machine = machine(&dir, &vaultd);
    eprintln!(
        "session-vault-bench{}: vaultd {}, data in {} ({})",
        if args.quick { " --quick" } else { "" },
        vaultd.display(),
        dir.display(),
        machine.data_fs
    );

    // The PostgreSQL store: a cluster of our own (kept until the end of the run), or the
    // database given; each daemon measured gets a database of its own.
    let mut cluster = if args.postgres {
        eprintln!("starting a throwaway PostgreSQL cluster");
        Some(pg::Cluster::start(&dir.join("pg"))?)
    } else {
        None
    };
    let mut next_store = |n: u32| -> Result<Option<pg::Store>> {
        if let Some(c) = cluster.as_mut() {
            return c.new_store(&dir).map(Some);
        }
        match (&args.store, &args.store_password_file) {
            (Some(url), Some(pw)) if n == 0 => Ok(Some(pg::Store {
                url: url.clone(),
                password_file: pw.clone(),
            })),
            (Some(_), _) => Ok(None),
            _ => Ok(None),
        }
    };
    let postgres = args.postgres || args.store.is_some();
    let main_store = next_store(0)?;
    let main_args: Vec<String> = main_store.as_ref().map(pg::Store::args).unwrap_or_default();
    let main_args: Vec<&str> = main_args.iter().map(String::as_str).collect();

    let mut res = Resources::default();
    let main_dir = dir.join("main");
    std::fs::create_dir_all(&main_dir)?;
    let (mut d, start) = Vaultd::start(&vaultd, &main_dir, &main_args).await?;
    res.start_fresh = start;
    res.rss_start_kib = d.memory_kib().0;
    res.init_cheap = d.init(Some(CHEAP_KDF)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    res.rss_idle_kib = d.memory_kib().0;

    let timer_overhead_ns = stats::timer_overhead();

    let (echo, ops, floor_interleaved) = if skip("ops") {
        (None, None, None)
    } else {
        eprintln!("section 1: per-operation latency");
        let plan = if args.quick {
            ops::Plan::quick()
        } else {
            ops::Plan::full()
        };
        let echo = echo::measure(&dir, Count::new(if args.quick { 500 } else { 20_000 })).await?;
        let (ops, floor) = ops::run(&d.socket, &dir, &plan).await?;
        (Some(echo), Some(ops), Some(floor))
    };

    let mut mix_rows = Vec::new();
    if !skip("mix") {
        eprintln!("section 2: concurrency");
        let plan = mix::MixPlan {
            warmup: Duration::from_millis(if args.quick { 100 } else { 500 }),
            window: Duration::from_millis(if args.quick { 300 } else { 2_000 }),
            working_set: if args.quick { 200 } else { 1_000 },
        };
        let clients: &[usize] = if args.quick { &[1, 8] } else { &[1, 8, 64] };
        mix_rows = run_mix(&d, &dir, clients, plan).await?;
    }
    let restart = if skip("restart") {
        None
    } else {
        eprintln!("section 3b: the restarted bot");
        let plan = if args.quick {
            restart::RestartPlan {
                peers: 2_000,
                lookups: 300,
                rounds: 1,
            }
        } else {
            restart::RestartPlan {
                peers: 100_000,
                lookups: 20_000,
                rounds: 2,
            }
        };
        Some(restart::run(&d.socket, &dir, &plan).await?)
    };
    res.rss_after_load_kib = d.memory_kib();
    d.lock().await?;
    res.unlock_cheap = d.unlock().await?;
    d.stop()?;
    drop(d);

    let leases = if !postgres || skip("leases") {
        None
    } else {
        // The lease section needs a fresh database of its own (two daemons on it); with
        // `--store` there is only the one given, already holding the main vault: it is
        // then measured on that vault's database with new session names.
        let store = match next_store(1)? {
            Some(s) => s,
            None => main_store.clone().expect("postgres implies a store"),
        };
        let expiry = Duration::from_millis(args.lease_expiry_ms.unwrap_or(if args.quick {
            1_000
        } else {
            2_000
        }));
        eprintln!("section 5: leases across daemons (expiry {expiry:?})");
        Some(
            pg::leases(
                &vaultd,
                &dir,
                &store,
                expiry,
                if args.quick { 50 } else { 500 },
                if args.quick { 1 } else { 5 },
            )
            .await?,
        )
    };
    if postgres && !(skip("scale") && skip("unlock")) {
        eprintln!(
            "(PostgreSQL store: scale and the default-KDF unlock are measured on SQLite only; skipped)"
        );
    }

    let scale = if postgres || skip("scale") {
        None
    } else {
        eprintln!("section 3: scale");
        let mut plan = if args.quick {
            scale::ScalePlan {
                stages: vec![1_000, 10_000],
                last_stage_budget: Duration::from_secs(30),
                sessions: 5,
                peers_per_session: 1_000,
                lookups: 300,
                fill_tasks: 2,
                many: !skip("many"),
            }
        } else {
            scale::ScalePlan {
                stages: vec![1_000, 100_000, 1_000_000],
                last_stage_budget: Duration::from_secs(180),
                sessions: 100,
                peers_per_session: 10_000,
                lookups: 5_000,
                fill_tasks: 4,
                many: !skip("many"),
            }
        };
        if !args.stages.is_empty() {
            plan.stages = args.stages.clone();
        }
        Some(scale::run(&vaultd, &dir, &plan).await?)
    };

    if !postgres && !skip("unlock") {
        eprintln!("section 4: unlock at the default KDF");
        let kd = dir.join("kdf");
        std::fs::create_dir_all(&kd)?;
        let (mut d, _) = Vaultd::start(&vaultd, &kd, &[]).await?;
        res.init_default = Some(d.init(None).await?);
        for _ in 0..if args.quick { 1 } else { 3 } {
            d.lock().await?;
            res.unlock_default.push(d.unlock().await?);
        }
        res.unlock_default_hwm_kib = d.memory_kib().1;
        d.stop()?;
    }

    machine.load_end = loadavg();
    let results = Results {
        quick: args.quick,
        machine,
        timer_overhead_ns,
        echo,
        ops,
        floor_interleaved,
        mix: mix_rows,
        restart,
        scale,
        resources: res,
        store: if postgres { "postgres" } else { "sqlite" }.into(),
        leases,
        total: t_all.elapsed(),
    };
    println!("{}", report::markdown(&results));
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    eprintln!("done in {:.1} s", results.total.as_secs_f64());
    Ok(())
}

async fn run_mix(
    d: &Vaultd,
    dir: &Path,
    clients: &[usize],
    plan: mix::MixPlan,
) -> Result<Vec<mix::MixRow>> {
    let mut rows = Vec::new();
    let pid = d.pid();
    for &n in clients {
        eprintln!("  {n} client(s)…");
        for (cache, tag) in [(session_vault_client::DEFAULT_PEER_CACHE, "on"), (0, "off")] {
            let name = format!("mix-shared-{n}-{tag}");
            let s = Arc::new(workload::open_vault(&d.socket, &name, cache).await?);
            mix::prepare(&*s, plan.working_set).await?;
            rows.push(
                mix::shared(
                    &format!("vault, shared session, client cache {tag}"),
                    s,
                    n,
                    plan,
                    Some(pid),
                )
                .await?,
            );
            rows.push(
                mix::processes(
                    &format!("vault, process per session, client cache {tag}"),
                    &d.socket,
                    &format!("mix-proc-{n}-{tag}"),
                    n,
                    cache,
                    plan,
                    pid,
                )
                .await?,
            );
        }
        let mem = Arc::new(MemorySession::default());
        mix::prepare(&*mem, plan.working_set).await?;
        rows.push(mix::shared("grammers MemorySession, shared", mem, n, plan, None).await?);
        let sq = Arc::new(workload::ok(
            SqliteSession::open(dir.join(format!("grammers-mix-{n}.session"))).await,
        )?);
        mix::prepare(&*sq, plan.working_set).await?;
        rows.push(mix::shared("grammers SqliteSession, shared", sq, n, plan, None).await?);
    }
    Ok(rows)
}
