//! The targets of the report's last section: what each says, what was measured, whether it
//! is met.

use crate::Results;
use crate::ops::{self, Backend};
use crate::stats::{fmt_dur, fmt_ns, fmt_rate, fmt_ratio};

/// Each target: what it says, what was measured, whether it is met.
pub fn targets(r: &Results) -> Vec<(String, String, Option<bool>)> {
    let mut out = Vec::new();
    if let Some(rs) = &r.restart {
        use crate::restart::Kind;
        let warm: Vec<_> = rs
            .workers
            .iter()
            .filter(|w| w.kind == Kind::VaultWarm)
            .collect();
        let slowest = warm.iter().map(|w| w.open).max();
        out.push((
            format!("restarted bot: warm start of {} peers under 1 s", rs.peers),
            slowest.map_or("–".into(), |d| {
                format!("slowest of {}: {}", warm.len(), fmt_dur(d))
            }),
            slowest.map(|d| d < std::time::Duration::from_secs(1)),
        ));
        let ratios: Vec<f64> = warm
            .iter()
            .filter_map(|w| {
                rs.workers
                    .iter()
                    .find(|x| x.round == w.round && x.kind == Kind::Sqlite)
                    .map(|s| w.lookups.p50 / s.lookups.p50)
            })
            .collect();
        let worst = ratios.iter().copied().fold(f64::NAN, f64::max);
        out.push((
            "restarted bot: lookup p50 after warm start at or below SqliteSession's".into(),
            if worst.is_nan() {
                "–".into()
            } else {
                format!("worst round: {worst:.3}× Sqlite's time")
            },
            (!worst.is_nan()).then_some(worst <= 1.0),
        ));
    }
    let get = |op: &str, b: Backend| {
        r.ops
            .as_ref()
            .and_then(|m| m.get(op))
            .and_then(|x| x.get(&b))
    };
    let writes = [
        ops::CACHE_PEER,
        ops::CACHE_PEERS,
        ops::SET_ALL,
        ops::SET_PRIMARY,
        ops::SET_SECONDARY,
        ops::SET_CHANNEL,
        ops::SET_DC,
        ops::SET_HOME,
    ];
    let cache_writes = &writes[..6];
    // Every write faster than SqliteSession.
    let mut worst: Option<(f64, &str)> = None;
    for w in writes {
        if let (Some(v), Some(s)) = (get(w, Backend::Vault), get(w, Backend::Sqlite)) {
            let ratio = v.p50 / s.p50;
            if worst.is_none_or(|(r, _)| ratio > r) {
                worst = Some((ratio, w));
            }
        }
    }
    out.push((
        "every write faster than SqliteSession (p50)".into(),
        worst.map_or("–".into(), |(x, w)| {
            format!("slowest relative: {w} at {x:.3}× Sqlite's time")
        }),
        worst.map(|(x, _)| x < 1.0),
    ));
    let mut worst: Option<(f64, &str)> = None;
    for w in cache_writes {
        if let (Some(v), Some(s)) = (get(w, Backend::Vault), get(w, Backend::Sqlite)) {
            let speedup = s.p50 / v.p50;
            if worst.is_none_or(|(r, _)| speedup < r) {
                worst = Some((speedup, w));
            }
        }
    }
    out.push((
        "cache-class writes ≥ 5× faster than SqliteSession (p50)".into(),
        worst.map_or("–".into(), |(x, w)| format!("least: {w} {x:.1}× faster")),
        worst.map(|(x, _)| x >= 5.0),
    ));
    let hot = get(ops::PEER_HOT, Backend::Vault).zip(get(ops::PEER_HOT, Backend::Memory));
    out.push((
        "cached peer p50 within 4× of MemorySession".into(),
        hot.map_or("–".into(), |(v, m)| {
            format!(
                "{} vs {} = {}",
                fmt_ns(v.p50),
                fmt_ns(m.p50),
                fmt_ratio(v.p50, m.p50)
            )
        }),
        hot.map(|(v, m)| v.p50 <= 4.0 * m.p50),
    ));
    let cold = get(ops::PEER_COLD, Backend::Vault);
    if let (Some(c), Some(e)) = (cold, &r.floor_interleaved) {
        out.push((
            "cold peer p50 within 1.5× of the bare socket round trip".into(),
            format!(
                "{} vs {} blocking = {}; vs {} tokio = {} (round trips interleaved with the cold reads)",
                fmt_ns(c.p50),
                fmt_ns(e.blocking.p50),
                fmt_ratio(c.p50, e.blocking.p50),
                fmt_ns(e.tokio.p50),
                fmt_ratio(c.p50, e.tokio.p50)
            ),
            Some(c.p50 <= 1.5 * e.blocking.p50),
        ));
    }
    for op in [ops::HOME, ops::DC] {
        let v = get(op, Backend::Vault);
        out.push((
            format!("{op} under 1 µs"),
            v.map_or("–".into(), |s| {
                format!("p50 {}, p99 {}", fmt_ns(s.p50), fmt_ns(s.p99))
            }),
            v.map(|s| s.p99 < 1_000.0),
        ));
    }
    if let Some(sc) = &r.scale {
        let best = sc
            .stages
            .iter()
            .skip(1)
            .map(|s| (s.peers, s.vault_fill_rate));
        let list: Vec<String> = best
            .clone()
            .map(|(p, x)| format!("to {p}: {}", fmt_rate(x)))
            .collect();
        let min = best.clone().map(|(_, x)| x).fold(f64::INFINITY, f64::min);
        out.push((
            "cache_peers ≥ 100k peers/s in batches (of 1000)".into(),
            format!(
                "{}{}",
                list.join(", "),
                sc.many.as_ref().map_or(String::new(), |m| format!(
                    "; {} sessions concurrently: {}",
                    m.sessions,
                    fmt_rate(m.vault_fill_rate)
                ))
            ),
            min.is_finite().then_some(min >= 100_000.0),
        ));
        if let Some(last) = sc.stages.last() {
            let l = &last.vault_lookup;
            let f = &last.small_lookup;
            out.push((
                format!(
                    "largest lookup ({} peers) p99 ≤ 2× its p50, p50 ≤ 1.5× a 1k-peer session's (target states 1M)",
                    last.peers
                ),
                format!(
                    "p50 {}, p99 {} ({}); 1k-peer session, interleaved: p50 {} ({})",
                    fmt_ns(l.p50),
                    fmt_ns(l.p99),
                    fmt_ratio(l.p99, l.p50),
                    fmt_ns(f.p50),
                    fmt_ratio(l.p50, f.p50)
                ),
                Some(l.p99 <= 2.0 * l.p50 && l.p50 <= 1.5 * f.p50),
            ));
        }
    }
    let mut labels: Vec<&str> = r
        .mix
        .iter()
        .filter(|x| x.label.starts_with("vault"))
        .map(|x| x.label.as_str())
        .collect();
    labels.sort_unstable();
    labels.dedup();
    for label in labels {
        let one = r.mix.iter().find(|x| x.label == label && x.clients == 1);
        let most = r
            .mix
            .iter()
            .filter(|x| x.label == label)
            .max_by_key(|x| x.clients);
        if let (Some(a), Some(b)) = (one, most) {
            if b.clients == 1 {
                continue;
            }
            out.push((
                format!(
                    "{} clients ≥ 3× one client's throughput: {label}",
                    b.clients
                ),
                format!(
                    "{} vs {} = {}",
                    fmt_rate(b.ops_per_sec),
                    fmt_rate(a.ops_per_sec),
                    fmt_ratio(b.ops_per_sec, a.ops_per_sec)
                ),
                Some(b.ops_per_sec >= 3.0 * a.ops_per_sec),
            ));
        }
    }
    out
}
