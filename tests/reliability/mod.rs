//! Reliability under faults, load and hostile input, with figures (RELIABILITY.md).
//!
//! - [`crash`]: SIGKILL of `vaultd` (and, separately, of a writer process) at seeded random
//!   moments of a stream of durable and cache-class writes; nothing acknowledged is lost,
//!   nothing is corrupt;
//! - [`storage`]: a full disk, a file system gone read-only, a truncated vault file;
//! - [`load`]: 64 clients on 16 sessions through lock/unlock cycles, checked against a model;
//!   1,000 idle or half-open connections;
//! - [`hostile`]: unlock brute force rate; a client pipelining large answers it never reads;
//! - [`dos`]: one uid flooding large requests or connections while others work.
//!
//! Every test prints its figures on lines starting with `RELIABILITY` (run with
//! `--nocapture` to see them). The CI-sized versions run in the normal suite; set
//! `SESSION_VAULT_LONG=1` for the long ones, and `SESSION_VAULT_SEED=N` to replay a seeded run.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod crash;
pub mod dos;
pub mod hostile;
pub mod load;
pub mod storage;

/// Whether the long versions were asked for (`SESSION_VAULT_LONG=1`).
pub fn long() -> bool {
    std::env::var("SESSION_VAULT_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Prints one figure line, for RELIABILITY.md.
pub fn figure(test: &str, text: &str) {
    println!("RELIABILITY {test}: {text}");
}

/// A small seeded generator (SplitMix64): reproducible runs without a dependency.
pub struct Rng(u64);

impl Rng {
    /// Seeds from `SESSION_VAULT_SEED`, else from the clock; prints the seed so that a failing
    /// run can be replayed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("SESSION_VAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        figure(
            test,
            &format!("seed {seed} (replay: SESSION_VAULT_SEED={seed})"),
        );
        Rng(seed)
    }

    /// A generator for a fixed seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the machine, so that a
/// child's acknowledgment times compare with the parent's kill times.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The `p`th percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p).div_ceil(100)]
}

/// A size-limited tmpfs mounted for one test; unmounted on drop (lazily if still busy).
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_kib` at `path` (created if missing); `None`, with a printed
    /// reason, where mounting is not allowed (not root, no `mount`).
    pub fn mount(test: &str, path: &Path, size_kib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_kib}k,mode=0700"))
            .arg("tmpfs")
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path: path.to_owned(),
            }),
            Ok(o) => {
                figure(
                    test,
                    &format!(
                        "SKIPPED: cannot mount a tmpfs (root needed): {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                );
                None
            }
            Err(e) => {
                figure(test, &format!("SKIPPED: cannot run mount: {e}"));
                None
            }
        }
    }

    /// `mount -o remount,<opts>`; returns mount's error text on failure.
    pub fn remount(&self, opts: &str) -> Result<(), String> {
        let out = std::process::Command::new("mount")
            .arg("-o")
            .arg(format!("remount,{opts}"))
            .arg(&self.path)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = std::process::Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            // Still busy (a daemon not yet reaped): detach it now, freed when unused.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
        }
    }
}
