//! systemd integration: socket activation through `systemd-socket-activate`, readiness and
//! status over a test-owned `NOTIFY_SOCKET`, and unattended unlock from a credential.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::*;

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `vaultd` with extra environment, its stderr lines sent to the returned channel.
fn spawn_vaultd(
    env: &Env,
    vars: &[(&str, &std::ffi::OsStr)],
    args: &[&str],
) -> (Guard, mpsc::Receiver<String>) {
    let mut cmd = env.vaultd_cmd();
    cmd.arg(ALLOW_WEAK_KDF)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn vaultd");
    let lines = forward_lines(child.stderr.take().expect("stderr"));
    (Guard(child), lines)
}

fn forward_lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns every line seen up to it.
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(needle) {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line containing {needle:?}; saw:\n{seen}");
}

fn status_state(env: &Env) -> String {
    let out = env.ctl(&["status", "--json"]);
    assert_success(&out, "vaultctl status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["state"].as_str().expect("state").to_owned()
}

#[test]
fn socket_activation_serves_on_the_passed_socket() {
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-socket-activate is missing: .ci/run installs Debian's systemd package");
    }
    let env = Env::new();
    let listen = env.socket();
    // The socket path given to vaultd is only informational here: it must use fd 3.
    let mut child = vaultd_cmd_via(
        &[
            "systemd-socket-activate",
            "-l",
            listen.to_str().expect("UTF-8 temp path"),
        ],
        &env.path().join("unused.sock"),
        &env.data_dir(),
    )
    .arg(ALLOW_WEAK_KDF)
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn systemd-socket-activate");
    let lines = forward_lines(child.stderr.take().expect("stderr"));
    let _guard = Guard(child);
    wait_line(&lines, "Listening on");
    // The first connection starts vaultd on the inherited socket.
    assert_eq!(status_state(&env), "uninitialized");
    let log = wait_line(&lines, "vaultd listening");
    assert!(
        log.contains("using the socket passed in by systemd"),
        "{log}"
    );
    // The log names the socket systemd passed in, not the configured path it does not use.
    let listening = log
        .lines()
        .find(|l| l.contains("vaultd listening"))
        .expect("listening line");
    assert!(
        listening.contains(&format!("socket={}", listen.display())),
        "{listening}"
    );
    assert!(!listening.contains("unused.sock"), "{listening}");
    assert!(
        !env.path().join("unused.sock").exists(),
        "vaultd bound its own socket"
    );
    env.init();
    assert_eq!(status_state(&env), "unlocked");
}

fn recv_until(sock: &UnixDatagram, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    let mut buf = vec![0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push_str(&msg);
                seen.push('|');
                if msg.contains(needle) {
                    return msg;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no notification containing {needle:?}; saw: {seen}");
}

#[test]
fn notify_socket_gets_ready_status_changes_and_stopping() {
    let env = Env::new();
    let notify_path = env.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let (mut guard, _lines) =
        spawn_vaultd(&env, &[("NOTIFY_SOCKET", notify_path.as_os_str())], &[]);
    let ready = recv_until(&notify, "READY=1");
    assert!(ready.contains("STATUS=uninitialized"), "{ready}");
    env.init();
    assert!(recv_until(&notify, "STATUS=").contains("STATUS=unlocked; 0 sessions"));
    assert_success(&env.ctl(&["lock"]), "lock");
    assert!(recv_until(&notify, "STATUS=").contains("STATUS=locked"));
    assert_success(&env.unlock(PASS), "unlock");
    assert!(recv_until(&notify, "STATUS=").contains("STATUS=unlocked"));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(guard.0.id() as i32, libc::SIGTERM) };
    recv_until(&notify, "STOPPING=1");
    let status = guard.0.wait().expect("wait vaultd");
    assert!(status.success(), "{status:?}");
}

#[test]
fn credential_unlocks_at_start_and_failures_leave_it_running_locked() {
    let env = Env::new();
    {
        let _d = env.start_and_init();
    }
    let creds = env.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("vault-passphrase"), format!("{PASS}\n")).unwrap();
    std::fs::write(creds.join("wrong"), "not the passphrase\n").unwrap();
    let vars = [("CREDENTIALS_DIRECTORY", creds.as_os_str())];

    let (g, lines) = spawn_vaultd(&env, &vars, &["--unlock-credential", "vault-passphrase"]);
    let log = wait_line(&lines, "vaultd listening");
    assert!(log.contains("unlocked from systemd credential"), "{log}");
    assert_eq!(status_state(&env), "unlocked");
    drop(g);

    for (name, expect) in [
        ("wrong", "unattended unlock failed"),
        ("missing", "unattended unlock skipped"),
    ] {
        let (mut g, lines) = spawn_vaultd(&env, &vars, &["--unlock-credential", name]);
        let log = wait_line(&lines, "vaultd listening");
        assert!(log.contains(expect), "{name}: {log}");
        assert!(!log.contains(PASS), "the log shows the passphrase");
        assert_eq!(status_state(&env), "locked");
        assert!(
            g.0.try_wait().unwrap().is_none(),
            "vaultd exited after a failed credential unlock"
        );
        drop(g);
    }
}
