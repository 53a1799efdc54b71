//! Helpers of the integration tests: a temp dir per test, a `vaultd` guard that kills its
//! daemon on drop, `vaultctl` runs, protocol-level shortcuts (init, open, typed error
//! codes), running as another uid (`setpriv`), a raw frame client ([`raw`]) and a protocol
//! client in a process of its own ([`child`]).
//!
//! Readiness is awaited (the daemon's "vaultd listening" log line), never slept for.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use session_vault_client::Connection;
use session_vault_proto::message::KdfSpec;

pub mod child;
mod daemon;
pub mod pg;
mod proto;
pub mod raw;
mod uid;

pub use daemon::*;
pub use proto::*;
pub use uid::*;

/// The passphrase tests use.
pub const PASS: &str = "correct horse battery staple";

/// Cheap KDF flags for `vaultctl init`/`passwd` (tests only; the default stays strong).
pub const CHEAP_KDF: [&str; 6] = [
    "--kdf-memory-kib",
    "64",
    "--kdf-iterations",
    "1",
    "--kdf-parallelism",
    "1",
];

/// The `vaultd` flag that lets new keyslots use [`CHEAP_KDF`] (below the daemon's floor);
/// every test daemon gets it, except [`Env::start_strict`]'s.
pub const ALLOW_WEAK_KDF: &str = "--insecure-allow-weak-kdf";

/// The same cheap KDF, as the protocol's `init` takes it.
pub const CHEAP_KDF_SPEC: KdfSpec = KdfSpec {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};

/// The uid (and gid) of an unprivileged other user for authorization tests: an ordinary id
/// that no account here uses. Not `nobody` (65534): that is the kernel's overflow id, the id
/// a user namespace gives every uid it does not map, and vaultd refuses it.
pub const OTHER_UID: u32 = 4242;

/// A second unprivileged user (uid and gid), for tests that need two.
pub const OTHER_UID_2: u32 = 4243;

/// A temp dir with short paths (a Unix socket path must fit in ~108 bytes).
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("sv")
            .tempdir_in("/tmp")
            .expect("temp dir");
        Env { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("s.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    pub fn vault_db(&self) -> PathBuf {
        self.data_dir().join("vault.db")
    }

    /// Writes `text` to a 0600 file in the temp dir and returns its path.
    pub fn secret_file(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .expect("secret file");
        writeln!(f, "{text}").expect("write secret file");
        p
    }

    /// A `vaultd` command on this env's socket and data dir ([`vaultd_cmd`]), for tests that
    /// watch a daemon's start or exit themselves.
    pub fn vaultd_cmd(&self) -> Command {
        vaultd_cmd(&self.socket(), &self.data_dir())
    }

    /// Starts `vaultd` on this env's socket and data dir.
    pub fn start(&self) -> Daemon {
        self.start_with(&[])
    }

    /// Starts `vaultd` with extra arguments.
    pub fn start_with(&self, extra: &[&str]) -> Daemon {
        Daemon::start(self, extra)
    }

    /// Starts `vaultd` without [`ALLOW_WEAK_KDF`]: the KDF floor applies.
    pub fn start_strict(&self) -> Daemon {
        Daemon::spawn(self, &self.socket(), &[], |_| {}, false)
    }

    /// Runs `vaultctl --socket S args…` with no stdin.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run vaultctl")
    }

    /// A `vaultctl` command with the socket set and a clean environment.
    pub fn ctl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(vaultctl_bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--socket")
            .arg(self.socket())
            .args(args);
        c
    }

    /// `vaultctl init` with the test passphrase and the cheap KDF; asserts success.
    pub fn init(&self) {
        let pf = self.secret_file("pass", PASS);
        let mut args = vec!["init", "--passphrase-file", pf.to_str().unwrap()];
        args.extend(CHEAP_KDF);
        let out = self.ctl(&args);
        assert_success(&out, "vaultctl init");
    }

    /// Starts `vaultd` and initializes the vault with `vaultctl init` ([`Env::init`]), which
    /// leaves it unlocked: the usual start of a `vaultctl`-level test.
    pub fn start_and_init(&self) -> Daemon {
        let d = self.start();
        self.init();
        d
    }

    /// `vaultctl unlock` with `passphrase`.
    pub fn unlock(&self, passphrase: &str) -> Output {
        let pf = self.secret_file("unlock-pass", passphrase);
        self.ctl(&["unlock", "--passphrase-file", pf.to_str().unwrap()])
    }

    /// A protocol connection as this process's uid.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.socket(), "integration-test")
            .await
            .expect("connect to vaultd")
    }
}

/// Asserts a command succeeded, showing its output otherwise.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// CPU time (user + system) process `pid` has used.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at field 3; utime and
    // stime are fields 14 and 15, in clock ticks.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `limit`.
pub fn poll_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `vaultctl` binary of this build. It is another package's binary (the `vaultctl`
/// crate), which cargo does not hand to this test as `CARGO_BIN_EXE_*`: it sits beside the
/// test's own profile directory (`target/<profile>/vaultctl`, this test running from
/// `target/<profile>/deps/`), built by `cargo build --workspace` (README's test command
/// builds it first). `SESSION_VAULT_VAULTCTL` overrides.
pub fn vaultctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SESSION_VAULT_VAULTCTL") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let bin = profile_dir.join(format!("vaultctl{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}
