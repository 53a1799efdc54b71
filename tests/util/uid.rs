//! Running as another uid (`setpriv`), for the tests of the daemon's authorization.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::*;

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

/// This test binary run again as another uid (and gid `uid`, no supplementary groups),
/// running one of its ignored tests, `entry`, as the entry point of a scripted client, with
/// `vars` in an otherwise clean environment. The lines it prints that start with `prefix`
/// ([`say_to_parent`]) are read back with [`UidProcess::wait_for`]. Killed on drop.
pub struct UidProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// How long [`UidProcess::wait_for`] waits.
    within: Duration,
}

impl UidProcess {
    /// Starts it against `env`'s daemon (whose socket is opened to every uid first).
    pub fn spawn(
        env: &Env,
        uid: u32,
        entry: &str,
        prefix: &'static str,
        vars: &[(&str, &std::ffi::OsStr)],
        within: Duration,
    ) -> UidProcess {
        env.open_socket_to_everyone();
        let me = std::env::current_exe().expect("path of the test binary");
        let mut cmd = as_uid(&executable_by_others(env, &me), uid, uid, &[]);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args([
            "--exact",
            entry,
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
            "--quiet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn the test binary as another uid");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix(prefix) {
                    if tx.send(rest.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        UidProcess {
            child,
            lines,
            within,
        }
    }

    /// Waits for its next line that starts with `word`; returns the rest of it.
    pub fn wait_for(&self, word: &str) -> String {
        let deadline = std::time::Instant::now() + self.within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("the client as another uid did not say {word:?}: {e}"));
            if let Some(rest) = line.strip_prefix(word) {
                return rest.trim().to_owned();
            }
        }
    }

    /// The last line it printed so far, if any.
    pub fn last_line(&self) -> Option<String> {
        self.lines.try_iter().last()
    }
}

impl Drop for UidProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints one line, after `prefix`, for the parent of a [`UidProcess`] to read.
pub fn say_to_parent(prefix: &str, line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // The parent reads these lines; if it is gone, nobody cares about a failed write.
    let _ = writeln!(out, "{prefix}{line}");
    let _ = out.flush();
}
