//! Latency samples and their summaries.
//!
//! Every measured call is one sample in nanoseconds. Percentiles are read from the sorted
//! samples (nearest rank), never interpolated from buckets. Where the samples are a uniform
//! subset of more operations (long concurrent runs keep a bounded reservoir per client), each
//! carries a weight, and the percentile is the weighted nearest rank.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Percentiles and counts of one set of samples.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Samples measured (warm-up excluded).
    pub n: u64,
    /// Median, ns.
    pub p50: f64,
    /// 90th percentile, ns.
    pub p90: f64,
    /// 99th percentile, ns.
    pub p99: f64,
    /// Mean, ns.
    pub mean: f64,
    /// Largest sample, ns.
    pub max: f64,
    /// Log-scale histogram: (upper bound in ns, count), buckets of 2^(1/4).
    pub histogram: Vec<(u64, u64)>,
}

/// Nearest-rank percentile of sorted samples.
fn rank(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx] as f64
}

fn histogram(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut bound = 16.0f64;
    let step = 2f64.powf(0.25);
    for &s in sorted {
        while (s as f64) > bound {
            bound *= step;
        }
        let b = bound.ceil() as u64;
        match out.last_mut() {
            Some((ub, c)) if *ub == b => *c += 1,
            _ => out.push((b, 1)),
        }
    }
    out
}

/// Summarizes samples (ns).
pub fn summarize(mut samples: Vec<u64>) -> Summary {
    samples.sort_unstable();
    let n = samples.len();
    let mean = if n == 0 {
        f64::NAN
    } else {
        samples.iter().map(|&s| s as f64).sum::<f64>() / n as f64
    };
    Summary {
        n: n as u64,
        p50: rank(&samples, 0.50),
        p90: rank(&samples, 0.90),
        p99: rank(&samples, 0.99),
        mean,
        max: samples.last().map_or(f64::NAN, |&m| m as f64),
        histogram: histogram(&samples),
    }
}

/// Summarizes weighted samples: `(weight, samples)` per source, each sample standing for
/// `weight` operations of its source. `n` is the total weight.
pub fn summarize_weighted(sources: Vec<(f64, Vec<u64>)>) -> Summary {
    let mut all: Vec<(u64, f64)> = sources
        .into_iter()
        .flat_map(|(w, v)| v.into_iter().map(move |s| (s, w)))
        .collect();
    if all.is_empty() {
        return summarize(Vec::new());
    }
    all.sort_unstable_by_key(|&(s, _)| s);
    let total: f64 = all.iter().map(|&(_, w)| w).sum();
    let at = |q: f64| {
        let target = q * total;
        let mut acc = 0.0;
        for &(s, w) in &all {
            acc += w;
            if acc >= target {
                return s as f64;
            }
        }
        all.last().map_or(f64::NAN, |&(s, _)| s as f64)
    };
    let mean = all.iter().map(|&(s, w)| s as f64 * w).sum::<f64>() / total;
    let plain: Vec<u64> = all.iter().map(|&(s, _)| s).collect();
    Summary {
        n: total.round() as u64,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        mean,
        max: all.last().map_or(f64::NAN, |&(s, _)| s as f64),
        histogram: histogram(&plain),
    }
}

/// A bounded uniform sample of a stream of latencies (Vitter's algorithm R), so that a
/// long concurrent run keeps its memory bounded and its percentiles unbiased.
#[derive(Debug)]
pub struct Reservoir {
    cap: usize,
    seen: u64,
    samples: Vec<u64>,
    rng: Rng,
}

impl Reservoir {
    /// A reservoir keeping at most `cap` samples.
    pub fn new(cap: usize, seed: u64) -> Reservoir {
        Reservoir {
            cap,
            seen: 0,
            samples: Vec::with_capacity(cap.min(1 << 16)),
            rng: Rng::new(seed),
        }
    }

    /// Offers one sample.
    pub fn push(&mut self, ns: u64) {
        self.seen += 1;
        if self.samples.len() < self.cap {
            self.samples.push(ns);
        } else {
            let j = self.rng.below(self.seen);
            if (j as usize) < self.cap {
                self.samples[j as usize] = ns;
            }
        }
    }

    /// Operations seen.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// `(weight per sample, samples)`.
    pub fn into_weighted(self) -> (f64, Vec<u64>) {
        let w = if self.samples.is_empty() {
            0.0
        } else {
            self.seen as f64 / self.samples.len() as f64
        };
        (w, self.samples)
    }
}

/// A small deterministic PRNG (splitmix64): the workloads need reproducible choices, not
/// cryptographic ones.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Shuffles a slice in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// How many calls to time, after how many untimed warm-up calls.
#[derive(Clone, Copy, Debug)]
pub struct Count {
    /// Untimed calls first.
    pub warmup: usize,
    /// Timed calls.
    pub measured: usize,
}

impl Count {
    /// `measured` timed calls after a tenth as many warm-up calls (at least 5).
    pub const fn new(measured: usize) -> Count {
        let w = measured / 10;
        Count {
            warmup: if w < 5 { 5 } else { w },
            measured,
        }
    }

    /// Warm-up plus measured.
    pub fn total(&self) -> usize {
        self.warmup + self.measured
    }
}

/// Times `count.measured` calls of `f(i)` (i counting from 0 over warm-up and measured
/// calls, so every call may use fresh data) one by one, after `count.warmup` untimed ones.
pub async fn time_async<F, Fut>(count: Count, mut f: F) -> Summary
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    for i in 0..count.warmup {
        f(i).await;
    }
    let mut samples = Vec::with_capacity(count.measured);
    for i in count.warmup..count.total() {
        let t = Instant::now();
        f(i).await;
        samples.push(t.elapsed().as_nanos() as u64);
    }
    summarize(samples)
}

/// [`time_async`] for a synchronous call.
pub fn time_sync(count: Count, mut f: impl FnMut(usize)) -> Summary {
    for i in 0..count.warmup {
        f(i);
    }
    let mut samples = Vec::with_capacity(count.measured);
    for i in count.warmup..count.total() {
        let t = Instant::now();
        f(i);
        samples.push(t.elapsed().as_nanos() as u64);
    }
    summarize(samples)
}

/// What reading the clock twice costs (p50 of many back-to-back `Instant::now()` pairs):
/// included in every sample above.
pub fn timer_overhead() -> f64 {
    let mut v: Vec<u64> = (0..100_000)
        .map(|_| {
            let t = Instant::now();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2] as f64
}

/// Nanoseconds as text with a sensible unit.
pub fn fmt_ns(ns: f64) -> String {
    if ns.is_nan() {
        "–".into()
    } else if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 10_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns < 1_000_000_000.0 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A duration as text.
pub fn fmt_dur(d: Duration) -> String {
    fmt_ns(d.as_nanos() as f64)
}

/// A ratio as text (`a / b`), e.g. `0.21×`.
pub fn fmt_ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        return "–".into();
    }
    let r = a / b;
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// A rate as text (per second).
pub fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1} k/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0} /s")
    }
}

/// Bytes as text.
pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s = summarize((1..=100).collect());
        assert_eq!(s.p50, 50.0);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.max, 100.0);
        let w = summarize_weighted(vec![(1.0, (1..=100).collect())]);
        assert_eq!(w.p50, 50.0);
        assert_eq!(w.p99, 99.0);
    }

    #[test]
    fn reservoir_keeps_weight() {
        let mut r = Reservoir::new(10, 1);
        for i in 0..1000 {
            r.push(i);
        }
        let (w, v) = r.into_weighted();
        assert_eq!(v.len(), 10);
        assert_eq!(w, 100.0);
    }
}
