//! Helpers of the integration tests: a temp dir per test, a `vaultd` guard that kills its
//! daemon on drop, `vaultctl` runs, protocol-level shortcuts (init, open, typed error
//! codes), running as another uid (`setpriv`), a raw frame client ([`raw`]) and a protocol
//! client in a process of its own ([`child`]).
//!
//! Readiness is awaited (the daemon's "vaultd listening" log line), never slept for.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_vault_client::{ClientError, Connection};
use session_vault_proto::message::{ErrorCode, KdfSpec, Passphrase, Request, Response, StatusInfo};

pub mod child;
pub mod pg;
pub mod raw;

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

/// The `vaultd` binary of this build.
pub fn vaultd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vaultd"))
}

/// A `vaultd` command serving `socket` with the vault in `data_dir`, as every test daemon
/// runs: a cleaned environment (`PATH` only), no stdin. Logging level, [`ALLOW_WEAK_KDF`],
/// other flags and where the output goes are the caller's; [`Daemon`] is the guard that
/// most tests want instead (it awaits readiness and kills on drop).
pub fn vaultd_cmd(socket: &Path, data_dir: &Path) -> Command {
    vaultd_cmd_via(&[], socket, data_dir)
}

/// [`vaultd_cmd`] run through `wrapper` (a command that execs its arguments, such as
/// `unshare --user` or `systemd-socket-activate -l SOCKET`), which gets the same cleaned
/// environment.
pub fn vaultd_cmd_via(wrapper: &[&str], socket: &Path, data_dir: &Path) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(vaultd_bin());
            c
        }
        None => Command::new(vaultd_bin()),
    };
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--socket")
        .arg(socket)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null());
    cmd
}

/// A running `vaultd`; killed on drop.
pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(env: &Env, extra: &[&str]) -> Daemon {
        Daemon::start_on(env, &env.socket(), None, extra)
    }

    /// Starts `vaultd` on another socket path than `env.socket()`, with `umask` set (as
    /// systemd's `UMask=` would) when given.
    pub fn start_at(env: &Env, socket: &Path, umask: Option<u32>) -> Daemon {
        Daemon::start_on(env, socket, umask, &[])
    }

    /// Starts `vaultd` with at most `max_fds` open files (`RLIMIT_NOFILE`, as systemd's
    /// `LimitNOFILE=` would set it).
    pub fn start_with_fd_limit(env: &Env, max_fds: u64) -> Daemon {
        Daemon::spawn_weak_kdf(env, &env.socket(), &[], move |cmd| {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit(2) is async-signal-safe and touches nothing but the child.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: max_fds as libc::rlim_t,
                        rlim_max: max_fds as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    fn start_on(env: &Env, socket: &Path, umask: Option<u32>, extra: &[&str]) -> Daemon {
        Daemon::spawn_weak_kdf(env, socket, extra, move |cmd| {
            if let Some(mask) = umask {
                use std::os::unix::process::CommandExt;
                // SAFETY: umask(2) is async-signal-safe and touches nothing but the child.
                unsafe {
                    cmd.pre_exec(move || {
                        libc::umask(mask as libc::mode_t);
                        Ok(())
                    });
                }
            }
        })
    }

    /// Starts `vaultd` through `wrapper` (a command that execs its arguments in place, such
    /// as `unshare --user --map-root-user`), so that the guard's pid is vaultd's.
    pub fn start_wrapped(env: &Env, wrapper: &[&str], extra: &[&str]) -> Daemon {
        Daemon::spawn_in(wrapper, &env.socket(), &env.data_dir(), extra, |_| {}, true)
    }

    /// Starts `vaultd` on the env's socket with extra arguments and environment variables
    /// (such as `CREDENTIALS_DIRECTORY`, as systemd sets it).
    pub fn start_with_vars(env: &Env, extra: &[&str], vars: &[(&str, &Path)]) -> Daemon {
        let vars: Vec<(String, PathBuf)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_path_buf()))
            .collect();
        Daemon::spawn_weak_kdf(env, &env.socket(), extra, move |cmd| {
            for (k, v) in &vars {
                cmd.env(k, v);
            }
        })
    }

    /// Starts `vaultd` on `socket` and `data_dir` instead of the env's.
    pub fn spawn_at(socket: &Path, data_dir: &Path) -> Daemon {
        Daemon::spawn_in(&[], socket, data_dir, &[], |_| {}, true)
    }

    fn spawn_weak_kdf(
        env: &Env,
        socket: &Path,
        extra: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Daemon {
        Daemon::spawn(env, socket, extra, setup, true)
    }

    fn spawn(
        env: &Env,
        socket: &Path,
        extra: &[&str],
        setup: impl FnOnce(&mut Command),
        weak_kdf: bool,
    ) -> Daemon {
        Daemon::spawn_in(&[], socket, &env.data_dir(), extra, setup, weak_kdf)
    }

    fn spawn_in(
        wrapper: &[&str],
        socket: &Path,
        data_dir: &Path,
        extra: &[&str],
        setup: impl FnOnce(&mut Command),
        weak_kdf: bool,
    ) -> Daemon {
        let mut cmd = vaultd_cmd_via(wrapper, socket, data_dir);
        setup(&mut cmd);
        if weak_kdf {
            cmd.arg(ALLOW_WEAK_KDF);
        }
        let mut child = cmd
            .env("VAULTD_LOG", "info")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vaultd");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("vaultd listening") {
                    let _ = ready_tx.send(true);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
            let _ = ready_tx.send(false);
        });
        let mut d = Daemon { child, log };
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(true) => d,
            _ => {
                let _ = d.child.kill();
                let _ = d.child.wait();
                panic!("vaultd did not become ready; log:\n{}", d.log());
            }
        }
    }

    /// Starts a daemon expected to fail; returns its exit status and log.
    pub fn start_failing(env: &Env, extra: &[&str]) -> (std::process::ExitStatus, String) {
        Daemon::start_failing_in(env, &env.data_dir(), extra)
    }

    /// [`Daemon::start_failing`] with another data directory.
    pub fn start_failing_in(
        env: &Env,
        data_dir: &Path,
        extra: &[&str],
    ) -> (std::process::ExitStatus, String) {
        let out = vaultd_cmd(&env.socket(), data_dir)
            .args(extra)
            .output()
            .expect("run vaultd");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait for exit (at most 30 s); returns the exit status.
    ///
    /// Known daemon bug (see `shutdown::a_signal_right_after_readiness_is_a_clean_shutdown`):
    /// vaultd logs its readiness before it installs its signal handlers, so a SIGTERM sent
    /// the instant `start` returns may kill it by the default action. Tests that mean a
    /// graceful shutdown exchange a request with the daemon first.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait vaultd") {
                return st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "vaultd did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- protocol-level helpers ---------------------------------------------------------------

impl Env {
    /// `init` over the protocol (cheap KDF, [`PASS`]); asserts success. Protocol-level tests
    /// use this rather than `vaultctl`, so that they test the daemon alone.
    pub async fn init_proto(&self, c: &Connection) {
        let r = c
            .call(Request::Init {
                passphrase: passphrase(PASS),
                kdf: Some(CHEAP_KDF_SPEC),
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "init: {r:?}");
    }

    /// Connects and unlocks the (initialized, locked) vault with [`PASS`]; asserts success.
    /// The usual first step after a restart.
    pub async fn connect_unlocked(&self) -> Connection {
        let c = self.connect().await;
        unlock_proto(&c).await;
        c
    }

    /// Starts `vaultd` (with `extra` flags) on the env's existing vault, connects and
    /// unlocks it with [`PASS`].
    pub async fn start_unlocked(&self, extra: &[&str]) -> (Daemon, Connection) {
        let d = self.start_with(extra);
        let c = self.connect_unlocked().await;
        (d, c)
    }

    /// Starts `vaultd` (with `extra` flags), connects and initializes the vault over the
    /// protocol: the usual start of a protocol-level test.
    pub async fn start_initialized(&self, extra: &[&str]) -> (Daemon, Connection) {
        let d = self.start_with(extra);
        let c = self.connect().await;
        self.init_proto(&c).await;
        (d, c)
    }

    /// Lets every uid reach the socket (dir 0755, socket 0666), so that a test for another
    /// uid exercises the daemon's own authorization rather than the file modes.
    pub fn open_socket_to_everyone(&self) {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()))
        };
        set(self.path(), 0o755);
        set(&self.socket(), 0o666);
    }

    /// Asserts that a fresh client gets a `status` answer, and returns it with the time the
    /// connect, handshake and request took.
    pub async fn assert_serving(&self) -> (StatusInfo, Duration) {
        let t = std::time::Instant::now();
        let c = tokio::time::timeout(Duration::from_secs(10), self.connect())
            .await
            .expect("a new client connects within 10 s");
        let r = tokio::time::timeout(Duration::from_secs(10), c.call(Request::Status))
            .await
            .expect("status answers within 10 s");
        let elapsed = t.elapsed();
        match r {
            Ok(Response::Status(s)) => (s, elapsed),
            other => panic!("status: {other:?}"),
        }
    }
}

/// The `unlock` request with `pass`.
pub fn unlock_request(pass: &str) -> Request {
    Request::Unlock {
        recovery: false,
        passphrase: passphrase(pass),
    }
}

/// Sends `unlock` with `pass` on `c`: the daemon's answer, for tests of what it refuses.
pub async fn unlock_with(c: &Connection, pass: &str) -> Result<Response, ClientError> {
    c.call(unlock_request(pass)).await
}

/// Unlocks with [`PASS`] on `c`; asserts success.
pub async fn unlock_proto(c: &Connection) {
    let r = unlock_with(c, PASS).await;
    assert!(matches!(r, Ok(Response::Ok)), "unlock: {r:?}");
}

/// A passphrase for a request.
pub fn passphrase(text: &str) -> Passphrase {
    Passphrase::new(text.as_bytes().to_vec())
}

/// The error code of a request that must have failed with a daemon error.
#[track_caller]
pub fn err_code(r: Result<Response, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Daemon(e)) => {
            assert!(!e.message.is_empty(), "error {:?} has no message", e.code);
            e.code
        }
        other => panic!("expected a daemon error, got {other:?}"),
    }
}

/// The handle of an `Opened` response.
#[track_caller]
pub fn opened(r: Result<Response, ClientError>) -> u32 {
    match r {
        Ok(Response::Opened { handle, .. }) => handle,
        other => panic!("expected opened, got {other:?}"),
    }
}

/// Opens (creating) session `name` on `c`; returns the handle.
pub async fn open_session(c: &Connection, name: &str, exclusive: bool) -> u32 {
    opened(
        c.call(Request::OpenSession {
            name: name.into(),
            exclusive,
            create_if_missing: true,
        })
        .await,
    )
}

/// Opens the existing session `name` exclusively on `c` as soon as its lease is free,
/// retrying on `session_busy` every 10 ms for up to `within` (then panics); returns the
/// handle and how long it took.
pub async fn open_when_free(c: &Connection, name: &str, within: Duration) -> (u32, Duration) {
    let t = std::time::Instant::now();
    loop {
        let r = c
            .call(Request::OpenSession {
                name: name.into(),
                exclusive: true,
                create_if_missing: false,
            })
            .await;
        match r {
            Ok(Response::Opened { handle, .. }) => return (handle, t.elapsed()),
            Err(e)
                if matches!(
                    e.wire().map(|w| &w.code),
                    Some(ErrorCode::SessionBusy { .. })
                ) =>
            {
                assert!(
                    t.elapsed() < within,
                    "lease of {name} still held after {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("exclusive open of {name}: {other:?}"),
        }
    }
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

/// Whether `setpriv` (util-linux) is there to run a command as another uid, and we are root.
pub fn can_switch_uid() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Prefixes `cmd` so that it runs as [`OTHER_UID`] with no supplementary groups.
pub fn as_other_uid(program: &Path) -> Command {
    as_uid(program, OTHER_UID, OTHER_UID, &[])
}

/// Prefixes `cmd` so that it runs as `uid`, primary group `gid` and exactly the supplementary
/// `groups` (none when empty), through `setpriv`, which takes numeric ids without accounts.
pub fn as_uid(program: &Path, uid: u32, gid: u32, groups: &[u32]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()]);
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        c.args(["--groups", &list.join(",")]);
    }
    c.arg(program);
    c
}

/// A path to `program` that [`OTHER_UID`] can execute: the program itself when every
/// directory above it is searchable by others, else a copy in `env`'s temp dir (made 0755).
pub fn executable_by_others(env: &Env, program: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 the temp dir");
    let reachable = program.ancestors().skip(1).all(|dir| {
        dir.as_os_str().is_empty()
            || std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    });
    let runnable =
        std::fs::metadata(program).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
    if reachable && runnable {
        return program.to_owned();
    }
    let copy = env
        .path()
        .join(program.file_name().expect("program has a file name"));
    if !copy.exists() {
        std::fs::copy(program, &copy).expect("copy program for another uid");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .expect("chmod program copy");
    }
    copy
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

/// Sets the home DC of `handle` on `c` to `dc_id`; asserts the daemon answered `ok`.
pub async fn set_home_dc(c: &Connection, handle: u32, dc_id: i32) {
    let r = c.call(Request::SetHomeDc { handle, dc_id }).await;
    assert!(matches!(r, Ok(Response::Ok)), "set home dc {dc_id}: {r:?}");
}

/// Asserts that `handle` on `c` reads home DC `want`; `what` says when or where, for the
/// failure message.
pub async fn assert_home_dc(c: &Connection, handle: u32, want: i32, what: &str) {
    let r = c.call(Request::GetHomeDc { handle }).await;
    assert!(
        matches!(r, Ok(Response::HomeDc(dc)) if dc == want),
        "home dc {what}: {r:?}, want {want}"
    );
}
