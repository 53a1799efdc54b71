//! The Markdown report: machine, one table per section, and the targets met or missed.

mod targets;

use std::fmt::Write;

use crate::Results;
use crate::ops::{self, Backend};
use crate::stats::{Summary, fmt_bytes, fmt_dur, fmt_ns, fmt_rate, fmt_ratio};

pub use targets::targets;

fn pp(s: &Summary) -> String {
    format!("{} / {}", fmt_ns(s.p50), fmt_ns(s.p99))
}

fn kib(k: u64) -> String {
    fmt_bytes(k * 1024)
}

/// The whole report.
pub fn markdown(r: &Results) -> String {
    let mut o = String::new();
    let m = &r.machine;
    let _ = writeln!(o, "## Machine\n");
    let _ = writeln!(
        o,
        "{} CPUs ({}), {:.1} GiB memory, Linux {}; data dirs on {} at `{}`; vaultd `{}`{}. Load average (1 min) {:.2} at the start, {:.2} at the end.\n",
        m.cpus,
        m.cpu_model,
        m.mem_gib,
        m.kernel,
        m.data_fs,
        m.data_dir,
        m.vaultd,
        if m.vaultd_debug { " (DEBUG build)" } else { "" },
        m.load_start,
        m.load_end
    );
    if r.quick {
        let _ = writeln!(
            o,
            "**--quick run: tiny sizes and short loops; a smoke test, not a measurement.**\n"
        );
    }
    let _ = writeln!(o, "Vault store measured: **{}**.\n", r.store);
    let _ = writeln!(
        o,
        "Every latency is one call timed on its own after warm-up calls; p50/p99 are nearest ranks of the sorted samples. Reading the clock costs {:.0} ns, included in every sample.\n",
        r.timer_overhead_ns
    );

    if let (Some(echo), Some(opsr)) = (&r.echo, &r.ops) {
        let _ = writeln!(o, "## 1. Per-operation latency\n");
        let _ = writeln!(
            o,
            "Floor: a bare 64-byte Unix-socket round trip between two processes (this binary as the echo server).\n"
        );
        let _ = writeln!(
            o,
            "| round trip | p50 / p99 alone | p50 / p99 interleaved with the vault's cold `peer` |\n|---|---:|---:|"
        );
        let il = r.floor_interleaved.as_ref();
        for (name, s, i) in [
            (
                "std ↔ std, both spinning (no wake-up)",
                &echo.spinning,
                None,
            ),
            (
                "blocking std ↔ blocking std",
                &echo.blocking,
                il.map(|x| &x.blocking),
            ),
            ("tokio ↔ tokio", &echo.tokio, il.map(|x| &x.tokio)),
            (
                "tokio ↔ tokio, answer via reader task + oneshot (the client's pattern)",
                &echo.tokio_reader_task,
                None,
            ),
            (
                "in one process: tokio task → std thread (mpsc) → oneshot back (vaultd's storage-thread hop)",
                &echo.thread_hop,
                il.map(|x| &x.thread_hop),
            ),
        ] {
            let _ = writeln!(o, "| {name} | {} | {} |", pp(s), i.map_or("–".into(), pp));
        }
        let _ = writeln!(
            o,
            "\n| operation | vault class | Vault p50 / p99 | MemorySession p50 / p99 | SqliteSession p50 / p99 | Vault ÷ Memory (p50) | Vault ÷ Sqlite (p50) | n (V/M/S) |\n|---|---|---:|---:|---:|---:|---:|---|"
        );
        for (op, class) in ops::ORDER {
            let Some(row) = opsr.get(op) else { continue };
            let g = |b| row.get(&b);
            let cell = |b| g(b).map_or("–".into(), pp);
            let ratio = |b| match (g(Backend::Vault), g(b)) {
                (Some(v), Some(x)) => fmt_ratio(v.p50, x.p50),
                _ => "–".into(),
            };
            let n = |b| g(b).map_or("–".into(), |s: &Summary| s.n.to_string());
            let _ = writeln!(
                o,
                "| {op} | {class} | {} | {} | {} | {} | {} | {}/{}/{} |",
                cell(Backend::Vault),
                cell(Backend::Memory),
                cell(Backend::Sqlite),
                ratio(Backend::Memory),
                ratio(Backend::Sqlite),
                n(Backend::Vault),
                n(Backend::Memory),
                n(Backend::Sqlite)
            );
        }
        let _ = writeln!(o);
    }

    if !r.mix.is_empty() {
        let _ = writeln!(
            o,
            "## 2. Concurrency: bot-like mix (95% peer, 4% cache_peers ×10, 1% set_update_state)\n"
        );
        let _ = writeln!(
            o,
            "| shape | clients | ops/s | vs 1 client | p50 | p99 | peer p99 | write p99 | vaultd CPU s / 100k ops | client CPU s / 100k ops | CPUs busy |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let mut rows: Vec<_> = r.mix.iter().collect();
        rows.sort_by(|a, b| a.label.cmp(&b.label).then(a.clients.cmp(&b.clients)));
        for row in rows {
            let one = r
                .mix
                .iter()
                .find(|x| x.label == row.label && x.clients == 1)
                .map_or(f64::NAN, |x| x.ops_per_sec);
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.0}% |",
                row.label,
                row.clients,
                fmt_rate(row.ops_per_sec).replace("/s", "ops/s"),
                fmt_ratio(row.ops_per_sec, one),
                fmt_ns(row.all.p50),
                fmt_ns(row.all.p99),
                fmt_ns(row.peer.p99),
                fmt_ns(row.writes.p99),
                row.vaultd_cpu_per_100k
                    .map_or("–".into(), |c| format!("{c:.3}")),
                row.client_cpu_per_100k,
                row.cpu_busy * 100.0
            );
        }
        let _ = writeln!(o);
        // Issue 17's tail target: each method's p99 within 3× its p50 under this mix.
        let _ = writeln!(
            o,
            "Tails per method (p50 / p99, and p99 ÷ p50):\n\n| shape | clients | `peer` | `cache_peers` ×10 | `set_update_state` |\n|---|---:|---:|---:|---:|"
        );
        let tail = |s: &Summary| {
            format!(
                "{} / {} ({})",
                fmt_ns(s.p50),
                fmt_ns(s.p99),
                fmt_ratio(s.p99, s.p50)
            )
        };
        let mut rows: Vec<_> = r.mix.iter().collect();
        rows.sort_by(|a, b| a.label.cmp(&b.label).then(a.clients.cmp(&b.clients)));
        for row in rows {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                row.label,
                row.clients,
                tail(&row.peer),
                tail(&row.cache_peers),
                tail(&row.set_state)
            );
        }
        let _ = writeln!(o);
    }

    if let Some(rs) = &r.restart {
        restart_table(&mut o, rs);
    }

    if let Some(sc) = &r.scale {
        let _ = writeln!(o, "## 3. Scale\n");
        let _ = writeln!(
            o,
            "One session; fill = `cache_peers` in batches of 1000 (rate over the peers added since the previous row); lookups = distinct random peers, each once, from a fresh connection (vault) or a reopened file (SqliteSession); each vault lookup alternates with one in a separate 1000-peer session (client without a peer cache), the same-moment reference column. Sizes: as vaultd left the files at SIGTERM, once that WAL is checkpointed, and while running.\n"
        );
        let _ = writeln!(
            o,
            "| peers | Vault fill | Sqlite fill | Vault lookup p50 / p99 | 1k-peer session, interleaved | Vault lookup after restart | Sqlite lookup | Memory lookup | vault.db + wal: checkpointed / as vaultd left them / live | Sqlite file | vaultd RSS (HWM) | vaultd start / stop |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for s in &sc.stages {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} ({}) | {} / {} |",
                s.peers,
                fmt_rate(s.vault_fill_rate),
                s.sqlite
                    .as_ref()
                    .map_or("–".into(), |g| fmt_rate(g.fill_rate)),
                pp(&s.vault_lookup),
                pp(&s.small_lookup),
                pp(&s.vault_lookup_after_restart),
                s.sqlite.as_ref().map_or("–".into(), |g| pp(&g.lookup)),
                s.memory.as_ref().map_or("–".into(), |(_, l)| pp(l)),
                fmt_bytes(s.vault_disk_checkpointed.total()),
                fmt_bytes(s.vault_disk_closed.total()),
                fmt_bytes(s.vault_disk_live.total()),
                s.sqlite.as_ref().map_or("–".into(), |g| fmt_bytes(g.disk)),
                kib(s.vaultd_rss_kib.0),
                kib(s.vaultd_rss_kib.1),
                fmt_dur(s.vaultd_start),
                fmt_dur(s.vaultd_stop),
            );
        }
        if let Some(why) = &sc.skipped {
            let _ = writeln!(o, "\nNot run: {why}.");
        }
        if let Some(mn) = &sc.many {
            let _ = writeln!(
                o,
                "\n{} sessions × {} peers ({} peers): Vault filled at {} ({} concurrent fillers), SqliteSession files at {} (one after another).\n",
                mn.sessions,
                mn.peers_per_session,
                mn.sessions as u64 * mn.peers_per_session,
                fmt_rate(mn.vault_fill_rate),
                mn.fill_tasks,
                fmt_rate(mn.sqlite.fill_rate)
            );
            let _ = writeln!(
                o,
                "| | lookup p50 / p99 (random session and peer) | on disk | vaultd RSS (HWM), all sessions open | vaultd start |\n|---|---:|---:|---:|---:|"
            );
            let _ = writeln!(
                o,
                "| Session Vault | {} | {} checkpointed / {} as left / {} live | {} ({}) | {} |",
                pp(&mn.vault_lookup),
                fmt_bytes(mn.vault_disk_checkpointed.total()),
                fmt_bytes(mn.vault_disk_closed.total()),
                fmt_bytes(mn.vault_disk_live.total()),
                kib(mn.vaultd_rss_kib.0),
                kib(mn.vaultd_rss_kib.1),
                fmt_dur(mn.vaultd_start)
            );
            let _ = writeln!(
                o,
                "| {} SqliteSession files | {} | {} | – | – |\n",
                mn.sessions,
                pp(&mn.sqlite.lookup),
                fmt_bytes(mn.sqlite.disk)
            );
        }
    }
    let re = &r.resources;
    let _ = writeln!(o, "## 4. Resources\n");
    let _ = writeln!(o, "| what | value |\n|---|---:|");
    let _ = writeln!(
        o,
        "| vaultd start (spawn → first handshake answered), empty data dir | {} |",
        fmt_dur(re.start_fresh)
    );
    let _ = writeln!(
        o,
        "| vaultd VmRSS at start / idle after init | {} / {} |",
        kib(re.rss_start_kib),
        kib(re.rss_idle_kib)
    );
    let _ = writeln!(
        o,
        "| vaultd VmRSS (HWM) after sections 1–2 | {} ({}) |",
        kib(re.rss_after_load_kib.0),
        kib(re.rss_after_load_kib.1)
    );
    if let Some(sc) = &r.scale {
        if let Some(s) = sc.stages.last() {
            let _ = writeln!(
                o,
                "| vaultd VmRSS (HWM), one session of {} peers | {} ({}) |",
                s.peers,
                kib(s.vaultd_rss_kib.0),
                kib(s.vaultd_rss_kib.1)
            );
            let _ = writeln!(
                o,
                "| vaultd VmRSS after restart + unlock, {} peers | {} |",
                s.peers,
                kib(s.vaultd_rss_restarted_kib)
            );
            let _ = writeln!(
                o,
                "| vaultd start with {} peers in the vault | {} |",
                s.peers,
                fmt_dur(s.vaultd_start)
            );
        }
        if let Some(mn) = &sc.many {
            let _ = writeln!(
                o,
                "| vaultd VmRSS (HWM), {} sessions open | {} ({}) |",
                mn.sessions,
                kib(mn.vaultd_rss_kib.0),
                kib(mn.vaultd_rss_kib.1)
            );
        }
    }
    for row in r.mix.iter().filter(|x| x.vaultd_cpu_per_100k.is_some()) {
        if row.clients == 1 || row.clients == 64 {
            let _ = writeln!(
                o,
                "| vaultd CPU s per 100k mix ops: {}, {} client(s) | {:.3} |",
                row.label,
                row.clients,
                row.vaultd_cpu_per_100k.unwrap_or(f64::NAN)
            );
        }
    }
    let _ = writeln!(
        o,
        "| init / unlock, cheap KDF (64 KiB, t=1) | {} / {} |",
        fmt_dur(re.init_cheap),
        fmt_dur(re.unlock_cheap)
    );
    if let Some(i) = re.init_default {
        let list: Vec<String> = re.unlock_default.iter().map(|d| fmt_dur(*d)).collect();
        let _ = writeln!(o, "| init at the default KDF | {} |", fmt_dur(i));
        let _ = writeln!(
            o,
            "| unlock at the default KDF (each attempt) | {} |",
            list.join(", ")
        );
        let _ = writeln!(
            o,
            "| vaultd VmHWM after default-KDF unlocks | {} |",
            kib(re.unlock_default_hwm_kib)
        );
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "## Targets\n");
    if r.quick {
        let _ = writeln!(o, "(--quick: indicative only.)\n");
    }
    let _ = writeln!(o, "| target | measured | verdict |\n|---|---|---|");
    for (t, mstr, ok) in targets(r) {
        let v = match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(o, "| {t} | {mstr} | {v} |");
    }
    let _ = writeln!(o, "\nTotal run time: {:.1} s.", r.total.as_secs_f64());
    if let Some(l) = &r.leases {
        let _ = writeln!(o, "## 5. Leases across daemons (PostgreSQL)\n");
        let _ = writeln!(
            o,
            "Two vaultd on one database, `--lease-expiry {}`. An exclusive open takes the session's lease row (one committed statement); a shared one does not.\n",
            fmt_dur(l.expiry)
        );
        let _ = writeln!(o, "| open_session | p50 | p99 | n |\n|---|---:|---:|---:|");
        for (what, s) in [
            ("exclusive (lease taken)", &l.open_exclusive),
            ("shared (no lease)", &l.open_shared),
        ] {
            let _ = writeln!(
                o,
                "| {what} | {} | {} | {} |",
                fmt_ns(s.p50),
                fmt_ns(s.p99),
                s.n
            );
        }
        let shown: Vec<String> = l.takeover.iter().map(|d| fmt_dur(*d)).collect();
        let _ = writeln!(
            o,
            "\nTakeover after the holder's vaultd was SIGKILLed (another daemon retrying its exclusive open every 10 ms): {} (target: within the expiry + 1 s = {}).\n",
            shown.join(", "),
            fmt_dur(l.expiry + std::time::Duration::from_secs(1))
        );
    }
    o
}

fn restart_table(o: &mut String, rs: &crate::restart::RestartResults) {
    let _ = writeln!(o, "## 3b. The restarted bot\n");
    let _ = writeln!(
        o,
        "A fresh process opens a session of {} peers cached by an earlier one and looks up random peers. Open: until the session is usable (warm start: until its load is applied). RSS growth: VmRSS after the open minus before it; per peer: divided by the peers the warm start loaded.\n",
        rs.peers
    );
    let _ = writeln!(
        o,
        "| round | process | open | peers loaded | lookup p50 / p99 | p50 vs SqliteSession | daemon requests | RSS growth at open | per cached peer |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for w in &rs.workers {
        let sqlite = rs
            .workers
            .iter()
            .find(|x| x.round == w.round && x.kind == crate::restart::Kind::Sqlite);
        let grow = w.rss_open_kib.saturating_sub(w.rss_before_kib);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {}{} | {} | {} | {} | {} | {} |",
            w.round,
            w.kind.label(),
            fmt_dur(w.open),
            w.loaded,
            if w.complete { " (all)" } else { "" },
            pp(&w.lookups),
            sqlite.map_or("–".into(), |s| fmt_ratio(w.lookups.p50, s.lookups.p50)),
            w.daemon_requests.map_or("–".into(), |n| n.to_string()),
            kib(grow),
            if w.loaded > 0 {
                format!("{} B", grow * 1024 / w.loaded as u64)
            } else {
                "–".into()
            },
        );
    }
    let _ = writeln!(o);
}
