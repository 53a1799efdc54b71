//! The full run (no subcommand): a vaultd started on a temporary directory, each section
//! measured in turn, the report printed (and written as JSON with `--json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use grammers_session::storages::{MemorySession, SqliteSession};

use crate::daemon::{self, CHEAP_KDF, Vaultd};
use crate::machine::machine;
use crate::stats::{self, Count};
use crate::{
    Args, Resources, Results, echo, loadavg, mix, ops, pg, report, restart, scale, workload,
};

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

pub(crate) async fn bench(args: &Args) -> Result<()> {
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
