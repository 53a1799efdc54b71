//! A real `vaultd` under test: spawned on a data dir of its own, initialized, restarted,
//! stopped; its memory and CPU read from `/proc`, its files' sizes from the data dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use session_vault_client::Connection;
use session_vault_proto::message::{KdfSpec, Passphrase, Request, Response};

/// The passphrase of every vault the benchmark makes.
pub const PASS: &str = "benchmark passphrase";

/// The cheap KDF for setup (the default one is measured on its own).
pub const CHEAP_KDF: KdfSpec = KdfSpec {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};

/// A running `vaultd`; killed on drop if still running.
#[derive(Debug)]
pub struct Vaultd {
    bin: PathBuf,
    child: Option<Child>,
    /// Its socket.
    pub socket: PathBuf,
    /// Its data dir.
    pub data_dir: PathBuf,
    extra: Vec<String>,
    log: PathBuf,
}

/// Sizes of the vault's files.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct DiskSize {
    /// vault.db
    pub db: u64,
    /// vault.db-wal
    pub wal: u64,
}

impl DiskSize {
    /// Both files.
    pub fn total(&self) -> u64 {
        self.db + self.wal
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

impl Vaultd {
    /// Spawns `vaultd` with its socket and data dir under `dir` and waits until it answers a
    /// handshake; returns it and the time from spawn to that answer.
    pub async fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Result<(Vaultd, Duration)> {
        let mut d = Vaultd {
            bin: bin.to_owned(),
            child: None,
            socket: dir.join("v.sock"),
            data_dir: dir.join("data"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: dir.join("vaultd.log"),
        };
        let took = d.spawn().await?;
        Ok((d, took))
    }

    async fn spawn(&mut self) -> Result<Duration> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let t = Instant::now();
        let child = Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--data-dir")
            .arg(&self.data_dir)
            // The benchmarks' vaults use the cheap KDF, below the daemon's floor for new
            // keyslots: allowed by this test-only flag.
            .arg("--insecure-allow-weak-kdf")
            .args(&self.extra)
            .env("VAULTD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        self.child = Some(child);
        loop {
            if let Ok(c) = Connection::connect(&self.socket, "bench-probe").await {
                let took = t.elapsed();
                drop(c);
                return Ok(took);
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "vaultd exited with {status} before serving; its log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("vaultd did not answer within 60 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// A protocol connection (admin: same uid).
    pub async fn connect(&self) -> Result<Connection> {
        Ok(Connection::connect(&self.socket, "session-vault-bench").await?)
    }

    /// `init` with the cheap KDF, or the daemon's default when `kdf` is `None`.
    pub async fn init(&self, kdf: Option<KdfSpec>) -> Result<Duration> {
        let c = self.connect().await?;
        let t = Instant::now();
        expect_ok(
            c.call(Request::Init {
                passphrase: Passphrase::new(PASS.as_bytes().to_vec()),
                kdf,
            })
            .await?,
        )?;
        Ok(t.elapsed())
    }

    /// `lock`.
    pub async fn lock(&self) -> Result<()> {
        expect_ok(self.connect().await?.call(Request::Lock).await?)
    }

    /// `unlock`; the time of the request alone (connection made first).
    pub async fn unlock(&self) -> Result<Duration> {
        let c = self.connect().await?;
        let t = Instant::now();
        expect_ok(
            c.call(Request::Unlock {
                recovery: false,
                passphrase: Passphrase::new(PASS.as_bytes().to_vec()),
            })
            .await?,
        )?;
        Ok(t.elapsed())
    }

    /// SIGTERM and wait for the exit (flush, checkpoint, close); returns how long it took.
    pub fn stop(&mut self) -> Result<Duration> {
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let t = Instant::now();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = child.wait()?;
        let took = t.elapsed();
        if !status.success() {
            bail!("vaultd exited with {status} at SIGTERM");
        }
        Ok(took)
    }

    /// SIGKILL and reap (a crash: nothing flushed, no lease given back).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same files after [`stop`](Self::stop) (it comes back
    /// locked); returns the time from spawn to the first answered handshake.
    pub async fn start_again(&mut self) -> Result<Duration> {
        anyhow::ensure!(self.child.is_none(), "vaultd is still running");
        self.spawn().await
    }

    /// Resident memory (VmRSS) and its peak (VmHWM), KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let text =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// After [`stop`](Self::stop): checkpoints what vaultd left in vault.db-wal into
    /// vault.db (`wal_checkpoint(TRUNCATE)`, which changes no content) and returns the sizes.
    pub async fn checkpointed_disk(&self) -> Result<DiskSize> {
        anyhow::ensure!(self.child.is_none(), "vaultd is still running");
        let db = libsql::Builder::new_local(self.data_dir.join("vault.db"))
            .build()
            .await?;
        let conn = db.connect()?;
        let mut rows = conn.query("PRAGMA wal_checkpoint(TRUNCATE)", ()).await?;
        while rows.next().await?.is_some() {}
        drop(rows);
        drop(conn);
        drop(db);
        Ok(self.disk())
    }

    /// Sizes of vault.db and vault.db-wal now.
    pub fn disk(&self) -> DiskSize {
        DiskSize {
            db: file_len(&self.data_dir.join("vault.db")),
            wal: file_len(&self.data_dir.join("vault.db-wal")),
        }
    }
}

impl Drop for Vaultd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn expect_ok(r: Response) -> Result<()> {
    match r {
        Response::Ok => Ok(()),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// utime + stime of a process, seconds (from `/proc/PID/stat`).
pub fn proc_cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 2..]) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime is field 14, stime 15; `rest` starts at field 3.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14 - 3) + ticks(15 - 3)) / hz
}

/// CPU seconds (user + system) this process used so far.
pub fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; zeroed is a valid rusage.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Whether `path` lives on a tmpfs (RAM, not a disk: fsync costs nothing there).
pub fn on_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the struct we pass; zeroed is a valid statfs.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return false;
    }
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    s.f_type as i64 == TMPFS_MAGIC
}
