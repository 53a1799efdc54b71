//! A protocol client in another process: the test binary re-executed (its ignored
//! [`child_entry`] test) with the requests to send in its environment.
//!
//! Tests use it where the client must be a process of its own: to kill it (leases die with
//! their process) or to run it as another uid (authorization by peer credentials). It
//! connects, sends each request in turn and prints each response as a line
//! `SVCHILD resp <hex of MessagePack>`; with `hold` it then prints `SVCHILD ready` and
//! keeps its connection until its stdin closes (or it is killed).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use session_vault_client::{ClientError, Connection};
use session_vault_proto::message::{Request, Response, WireError};

use super::{Env, as_uid, executable_by_others};

const SOCKET_VAR: &str = "SV_CHILD_SOCKET";
const REQUESTS_VAR: &str = "SV_CHILD_REQUESTS";
const HOLD_VAR: &str = "SV_CHILD_HOLD";
const PREFIX: &str = "SVCHILD ";
/// How long the parent waits for one line of the child.
const LINE_LIMIT: Duration = Duration::from_secs(30);

/// A running child client; killed on drop.
pub struct ChildClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

/// Who the child runs as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// This process's uid (root in CI).
    Me,
    /// [`super::OTHER_UID`], through `setpriv`.
    Other,
    /// Any uid, primary gid and supplementary groups, through `setpriv`.
    User {
        uid: u32,
        gid: u32,
        groups: &'static [u32],
    },
}

impl ChildClient {
    /// Starts a child that sends `requests` to `env`'s daemon; with `hold` it keeps the
    /// connection open afterwards.
    pub fn spawn(env: &Env, who: As, requests: &[Request], hold: bool) -> ChildClient {
        let me = std::env::current_exe().expect("path of the test binary");
        let mut cmd = match who {
            As::Me => Command::new(&me),
            As::Other => as_uid(
                &executable_by_others(env, &me),
                super::OTHER_UID,
                super::OTHER_UID,
                &[],
            ),
            As::User { uid, gid, groups } => {
                as_uid(&executable_by_others(env, &me), uid, gid, groups)
            }
        };
        let encoded = rmp_serde::to_vec_named(requests).expect("encode child requests");
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(SOCKET_VAR, env.socket())
            .env(REQUESTS_VAR, hex(&encoded))
            .env(HOLD_VAR, if hold { "1" } else { "0" })
            .args([
                "--exact",
                "util::child::child_entry",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
                "--quiet",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn child client");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix(PREFIX) {
                    if tx.send(rest.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        ChildClient {
            child,
            stdin,
            lines,
        }
    }

    /// The child's pid (also its pid as the daemon sees it: `setpriv` execs in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(LINE_LIMIT)
            .unwrap_or_else(|e| panic!("child client said nothing within {LINE_LIMIT:?}: {e}"))
    }

    /// The response to the child's next request.
    pub fn response(&self) -> Response {
        let line = self.line();
        match line.split_once(' ') {
            Some(("resp", h)) => rmp_serde::from_slice(&unhex(h)).expect("decode child response"),
            _ => panic!("child client: {line}"),
        }
    }

    /// The error the daemon answered the child's `hello` with (the child then sent nothing).
    pub fn handshake_error(&self) -> WireError {
        let line = self.line();
        match line.split_once(' ') {
            Some(("handshake-error", h)) => {
                rmp_serde::from_slice(&unhex(h)).expect("decode handshake error")
            }
            _ => panic!("expected the daemon to refuse the handshake; child client: {line}"),
        }
    }

    /// Waits until the child holds its connection after its requests (`hold`).
    pub fn wait_ready(&self) {
        let line = self.line();
        assert_eq!(line, "ready", "child client");
    }

    /// Waits for the child to exit by itself (it closes its connection on the way out).
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let st = self.child.wait().expect("wait child client");
        assert!(st.success(), "child client failed: {st:?}");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildClient {
    fn drop(&mut self) {
        self.kill();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The parent reads these lines; if it is gone, nobody cares about a failed write.
    let _ = writeln!(out, "{PREFIX}{line}");
    let _ = out.flush();
}

/// The child's side: does nothing unless started by [`ChildClient::spawn`].
#[test]
#[ignore = "entry point of child client processes started by other tests"]
fn child_entry() {
    let Some(socket) = std::env::var_os(SOCKET_VAR).map(PathBuf::from) else {
        return;
    };
    let requests: Vec<Request> = rmp_serde::from_slice(&unhex(
        &std::env::var(REQUESTS_VAR).expect("requests in the environment"),
    ))
    .expect("decode requests");
    let hold = std::env::var(HOLD_VAR).is_ok_and(|v| v == "1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = match Connection::connect(&socket, "integration-test child").await {
            Ok(c) => c,
            Err(ClientError::Handshake(e)) => {
                say(&format!(
                    "handshake-error {}",
                    hex(&rmp_serde::to_vec_named(&e).expect("encode handshake error"))
                ));
                return;
            }
            Err(e) => {
                say(&format!("connect-error {e}"));
                return;
            }
        };
        for r in requests {
            match c.request(r).await {
                Ok(resp) => say(&format!(
                    "resp {}",
                    hex(&rmp_serde::to_vec_named(&resp).expect("encode response"))
                )),
                Err(e) => say(&format!("request-error {e}")),
            }
        }
        if hold {
            say("ready");
            // Hold the connection until the parent closes our stdin (or kills us); reading
            // stdin blocks this thread, which is all this process has left to do.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
        drop(c);
    });
}
