//! The `vaultd` under test: its binary, its command line, and [`Daemon`], the guard that
//! awaits its readiness and kills it on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

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
    pub(super) fn start(env: &Env, extra: &[&str]) -> Daemon {
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

    pub(super) fn spawn(
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
