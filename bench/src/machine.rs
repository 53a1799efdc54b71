//! The machine a run measured on, for the report: CPUs, memory, kernel, the data dirs' file
//! system, the vaultd measured and the load average.

use std::path::Path;

use serde::Serialize;

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

pub(crate) fn machine(dir: &Path, vaultd: &Path) -> Machine {
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
