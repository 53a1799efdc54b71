//! Our own record of criterion's samples (per-iteration times, medians), and the summary
//! table of medians and ratios printed at the end.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use criterion::{BenchmarkGroup, measurement::WallTime};

use super::Sizes;

/// Per-iteration nanoseconds of every call criterion made, by "group/bench".
static SAMPLES: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());
/// Sample size of each group: the last that many calls of a bench are its measurement.
pub(super) static SAMPLE_SIZE: LazyLock<Mutex<HashMap<String, usize>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Runs `routine(iters)` (which returns the time `iters` iterations took) as a criterion
/// benchmark, and remembers the per-iteration time of every sample.
pub(super) fn bench(
    g: &mut BenchmarkGroup<'_, WallTime>,
    group: &str,
    id: &str,
    mut routine: impl FnMut(u64) -> Duration,
) {
    let key = format!("{group}/{id}");
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let d = routine(iters);
            SAMPLES
                .lock()
                .unwrap()
                .push((key.clone(), d.as_nanos() as f64 / iters as f64));
            d
        })
    });
}

/// Median per-iteration time (ns) of the measured samples of `key` ("group/bench").
fn median_ns(key: &str) -> Option<f64> {
    let group = key.split('/').next().unwrap_or_default();
    let n = SAMPLE_SIZE
        .lock()
        .unwrap()
        .get(group)
        .copied()
        .unwrap_or(10);
    let all = SAMPLES.lock().unwrap();
    let mut v: Vec<f64> = all
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, t)| *t)
        .collect();
    if v.is_empty() {
        return None;
    }
    let v = v.split_off(v.len().saturating_sub(n));
    let mut v = v;
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.3}×")
    } else {
        format!("{r:.2}×")
    }
}

fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0} /s")
    }
}

/// (label, encrypted bench, plain bench at the same durability, plain autocommit bench,
/// operations per iteration).
type SummaryRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    f64,
);

pub(super) fn print_summary(sizes: Sizes, populate: &[(String, f64, f64)]) {
    let m = median_ns;
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => fmt_ratio(a / b),
        _ => "–".into(),
    };
    let t = |x: Option<f64>| x.map(fmt_ns).unwrap_or_else(|| "–".into());
    let rate = |x: Option<f64>, n: f64| {
        x.map(|ns| fmt_rate(n * 1e9 / ns))
            .unwrap_or_else(|| "–".into())
    };

    println!();
    println!(
        "## Engine benchmark summary ({} mode, {} peers in the lookup session)",
        if sizes.quick { "QUICK" } else { "full" },
        sizes.lookup_peers
    );
    println!();
    println!("Medians of per-iteration time over criterion's samples; ratio = encrypted / plain.");
    println!();
    println!(
        "| operation | encrypted | plain, same durability | ratio | plain, autocommit (fsync per call) | ratio | encrypted peers/s (or ops/s) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rows: [SummaryRow; 8] = [
        (
            "peer upsert, 1 peer (`cache_peers`, cache class)",
            "peer_upsert_1/encrypted",
            Some("peer_upsert_1/plain_group_commit"),
            Some("peer_upsert_1_autocommit/plain"),
            1.0,
        ),
        (
            "peer upsert, batch of 100 (`cache_peers`, cache class)",
            "peer_upsert_100/encrypted",
            Some("peer_upsert_100/plain_group_commit"),
            Some("peer_upsert_100_autocommit/plain"),
            100.0,
        ),
        (
            "peer lookup by id",
            "peer_lookup_id/encrypted",
            Some("peer_lookup_id/plain"),
            None,
            1.0,
        ),
        (
            "peer lookup by id, caller is a runtime task (daemon's path)",
            "peer_lookup_id/encrypted_from_task",
            Some("peer_lookup_id/plain"),
            None,
            1.0,
        ),
        (
            "peer lookup by username",
            "peer_lookup_username/encrypted",
            Some("peer_lookup_username/plain"),
            None,
            1.0,
        ),
        (
            "DC option write, 256-byte key (durable)",
            "dc_option_write/encrypted",
            None,
            Some("dc_option_write/plain"),
            1.0,
        ),
        (
            "DC option write, 8 concurrent writers, per write (durable)",
            "dc_option_write_x8/encrypted",
            None,
            Some("dc_option_write_x8/plain"),
            8.0,
        ),
        (
            "update-state write, `Channel` (cache class)",
            "update_state_write/encrypted",
            Some("update_state_write/plain_group_commit"),
            Some("update_state_write_autocommit/plain"),
            1.0,
        ),
    ];
    for (label, enc, same, auto, n) in rows {
        let e = m(enc);
        if e.is_none() {
            continue;
        }
        let s = same.and_then(m);
        let a = auto.and_then(m);
        // Per-element times for the rows whose iteration holds several operations.
        let per = |x: Option<f64>| x.map(|v| v / n);
        let (e1, s1, a1) = (per(e), per(s), per(a));
        let shown = |x: Option<f64>| {
            if n > 1.0 && x.is_some() {
                format!("{} ({} each)", t(x.map(|v| v * n)), t(x))
            } else {
                t(x)
            }
        };
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            shown(e1),
            shown(s1),
            ratio(e1, s1),
            shown(a1),
            ratio(e1, a1),
            rate(e1, 1.0),
        );
    }
    println!();
    println!("| populate (one-off) | encrypted | plain | time ratio (encrypted / plain) |");
    println!("|---|---|---|---|");
    for (label, e, p) in populate {
        println!(
            "| {label} | {} | {} | {} |",
            fmt_rate(*e).replace("/s", " peers/s"),
            fmt_rate(*p).replace("/s", " peers/s"),
            fmt_ratio(p / e)
        );
    }
    println!();
    println!("| breakdown (encrypted pieces) | median |");
    println!("|---|---|");
    for (label, key) in [
        (
            "`Vault::status` (no SQL; inline: no storage-thread hop)",
            "breakdown/channel_hop_status",
        ),
        (
            "`Vault::status` from a runtime task (inline)",
            "breakdown/channel_hop_status_from_task",
        ),
        (
            "HMAC-SHA256 blind index (16 B out)",
            "breakdown/hmac_blind_index",
        ),
        ("OS RNG, 24-byte nonce", "breakdown/os_rng_24_bytes"),
        (
            "AEAD seal, peer record (incl. nonce)",
            "breakdown/aead_seal_peer",
        ),
        ("AEAD open, peer record", "breakdown/aead_open_peer"),
        (
            "MessagePack encode + decode, peer",
            "breakdown/msgpack_peer_roundtrip",
        ),
        (
            "engine direct: lookup by id (no storage thread)",
            "engine_direct/peer_lookup_id",
        ),
        (
            "engine direct: lookup by username (no storage thread)",
            "engine_direct/peer_lookup_username",
        ),
        (
            "engine direct: cache_peers ×100, per call",
            "engine_direct_upsert_100/cache_peers",
        ),
    ] {
        if let Some(v) = m(key) {
            let extra = if key.contains("upsert_100") {
                format!(" ({})", fmt_rate(100.0 * 1e9 / v).replace("/s", " peers/s"))
            } else {
                String::new()
            };
            println!("| {label} | {}{extra} |", fmt_ns(v));
        }
    }
    println!();
}
