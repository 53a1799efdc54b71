//! `vaultctl`'s errors, the exit code each maps to, and the hints printed under them.
//!
//! Exit codes (stable: scripts rely on them):
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | success |
//! | 1 | the daemon reported an error (locked, wrong passphrase, no such session, permission denied, …), the exchange with it failed, or a confirmation was declined |
//! | 2 | usage: bad arguments (clap's own errors included) or unacceptable input (no passphrase source without a terminal, an unreadable passphrase file, an empty passphrase, a mismatch); nothing was sent |
//! | 3 | the daemon is not reachable at the socket (or went away before answering) |
//!
//! Errors print as `vaultctl: <message>` on stderr, followed by `hint: …` lines where a next
//! step is known. No message ever contains a passphrase: none is ever put in one.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use session_vault_client::ClientError;
use session_vault_proto::codec::FrameError;
use session_vault_proto::message::{ErrorCode, PROTOCOL_MAJOR, WireError};

use super::output::{format_delay_ms, sanitize};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the daemon reported an error, or the exchange with it failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or unacceptable input; nothing was sent.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the daemon is not reachable.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Why a `vaultctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad invocation or unacceptable input; nothing was sent to the daemon.
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// How to do it right.
        hint: Option<String>,
    },
    /// A passphrase could not be read from its file, fd or the terminal.
    #[error("cannot read the {what} from {from}: {source}")]
    Input {
        /// Which passphrase.
        what: &'static str,
        /// Where it was read from (`file PATH`, `file descriptor N`, `the terminal`).
        from: String,
        /// Why.
        source: io::Error,
    },
    /// The request to the daemon failed.
    #[error("{}", client_message(.source, .socket))]
    Client {
        /// The socket path tried.
        socket: PathBuf,
        /// What failed.
        source: ClientError,
    },
    /// The user declined at a confirmation prompt.
    #[error("{0}")]
    Aborted(String),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    /// Writing the output (stdout) or a prompt failed.
    #[error("cannot write the output: {0}")]
    Output(io::Error),
}

impl CtlError {
    /// A usage error without a hint.
    pub(crate) fn usage(message: impl Into<String>) -> CtlError {
        CtlError::Usage {
            message: message.into(),
            hint: None,
        }
    }

    /// A usage error with a hint.
    pub(crate) fn usage_with_hint(message: impl Into<String>, hint: impl Into<String>) -> CtlError {
        CtlError::Usage {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// A failed request to the daemon at `socket`.
    pub(crate) fn client(socket: &Path, source: ClientError) -> CtlError {
        CtlError::Client {
            socket: socket.to_owned(),
            source,
        }
    }

    /// The daemon answered `request` with a response of the wrong kind.
    pub(crate) fn unexpected(socket: &Path, request: &'static str) -> CtlError {
        CtlError::client(socket, ClientError::Unexpected(request))
    }

    /// The daemon's error, if that is what this is.
    pub fn wire(&self) -> Option<&WireError> {
        match self {
            CtlError::Client { source, .. } => source.wire(),
            _ => None,
        }
    }

    /// The process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage { .. } | CtlError::Input { .. } => EXIT_USAGE,
            CtlError::Client { source, .. } if daemon_gone(source) => EXIT_UNREACHABLE,
            CtlError::Client { .. }
            | CtlError::Aborted(_)
            | CtlError::Runtime(_)
            | CtlError::Output(_) => EXIT_FAILED,
        }
    }

    /// Whether this is stdout closed under us (`vaultctl list | head`): not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CtlError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Next steps worth suggesting, one per `hint:` line.
    pub fn hints(&self) -> Vec<String> {
        match self {
            CtlError::Usage { hint, .. } => hint.iter().cloned().collect(),
            CtlError::Client { socket, source } => client_hints(source, socket),
            _ => Vec::new(),
        }
    }

    /// Writes `vaultctl: <message>` and the hints, control characters escaped.
    pub fn report(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "vaultctl: {}", sanitize(&self.to_string()))?;
        for hint in self.hints() {
            writeln!(w, "hint: {}", sanitize(&hint))?;
        }
        Ok(())
    }
}

/// Whether `err` means nothing (or nothing any more) answers at the socket.
fn daemon_gone(err: &ClientError) -> bool {
    match err {
        ClientError::Unreachable { .. } | ClientError::Disconnected => true,
        ClientError::Frame(FrameError::Truncated) => true,
        ClientError::Frame(FrameError::Io(e)) => matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Whether `path` names something other than a socket (a directory, a regular file).
fn exists_but_not_a_socket(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(path).is_ok_and(|m| !m.file_type().is_socket())
    }
    #[cfg(not(unix))]
    {
        // Named pipes are not files: nothing to check.
        let _ = path;
        false
    }
}

fn client_message(err: &ClientError, socket: &Path) -> String {
    let at = socket.display();
    match err {
        // Already names the path.
        ClientError::Unreachable { .. } => err.to_string(),
        ClientError::Daemon(wire) => wire.message.clone(),
        ClientError::Handshake(wire) => {
            format!(
                "the daemon at {at} refused the connection: {}",
                wire.message
            )
        }
        ClientError::Disconnected => {
            format!("the connection to the daemon at {at} was lost before it answered")
        }
        ClientError::Frame(e) => format!("protocol error talking to the daemon at {at}: {e}"),
        ClientError::Unexpected(what) => {
            format!("the daemon at {at} answered `{what}` with an unexpected response")
        }
    }
}

fn client_hints(err: &ClientError, socket: &Path) -> Vec<String> {
    let at = socket.display();
    let start = format!(
        "start the daemon (e.g. `vaultd --socket {at} --data-dir DIR`, or its systemd unit), \
         or point vaultctl at the daemon's socket with --socket PATH or SESSION_VAULT_SOCKET"
    );
    match err {
        ClientError::Unreachable { source, .. } => match source.kind() {
            io::ErrorKind::PermissionDenied => vec![format!(
                "the socket {at} admits only the daemon's user and group (mode 0660): \
                 run vaultctl as one of them"
            )],
            _ if exists_but_not_a_socket(socket) => vec![format!(
                "{at} is not a socket: point vaultctl at the daemon's socket with --socket PATH \
                 or SESSION_VAULT_SOCKET"
            )],
            io::ErrorKind::ConnectionRefused => {
                vec![format!(
                    "nothing listens at {at} (a stale socket file?): {start}"
                )]
            }
            _ => vec![format!("is vaultd running? {start}")],
        },
        ClientError::Disconnected | ClientError::Frame(_) => {
            vec!["the daemon may have stopped or restarted: check its log".into()]
        }
        ClientError::Daemon(wire) | ClientError::Handshake(wire) => wire_hint(wire)
            .filter(|(_, key)| {
                key.as_ref()
                    .is_none_or(|k| !wire.message.contains(k.as_str()))
            })
            .map(|(hint, _)| vec![hint])
            .unwrap_or_default(),
        ClientError::Unexpected(_) => {
            vec!["vaultctl and vaultd may be of different versions".into()]
        }
    }
}

/// A hint for a daemon error, and a key phrase that, found in the daemon's message, means
/// the message already says it (the daemon's messages may carry hints of their own).
fn wire_hint(wire: &WireError) -> Option<(String, Option<String>)> {
    let hint = match &wire.code {
        ErrorCode::Locked => (
            "run `vaultctl unlock`".into(),
            Some("vaultctl unlock".into()),
        ),
        ErrorCode::Uninitialized => ("run `vaultctl init`".into(), Some("vaultctl init".into())),
        ErrorCode::AlreadyInitialized => (
            "the vault already has a passphrase: `vaultctl unlock` opens it, \
             `vaultctl passwd` changes it"
                .into(),
            Some("vaultctl unlock".into()),
        ),
        ErrorCode::BadPassphrase { retry_after_ms, .. } if *retry_after_ms > 0 => {
            // Left out when the daemon's message already gives the delay in these words.
            let delay = format_delay_ms(*retry_after_ms);
            (
                format!("the next attempt is accepted in {delay}"),
                Some(delay),
            )
        }
        ErrorCode::NoSuchSession => (
            "`vaultctl list` shows the sessions".into(),
            Some("vaultctl list".into()),
        ),
        ErrorCode::NameTaken => (
            "choose another name, or remove the existing session with `vaultctl rm`".into(),
            Some("vaultctl rm".into()),
        ),
        ErrorCode::SessionBusy { holder_pid } => (
            match holder_pid {
                Some(pid) => format!("process {pid} holds the session open; stop it first"),
                None => "another process holds the session open; stop it first".into(),
            },
            Some("stop".into()),
        ),
        ErrorCode::PermissionDenied => (
            "admin commands are accepted from the daemon's admin uids only (by default root \
             and the daemon's own user; see vaultd --admin-uid)"
                .into(),
            Some("admin uid".into()),
        ),
        ErrorCode::ProtocolMismatch { server_major } => (
            format!(
                "this vaultctl speaks protocol {PROTOCOL_MAJOR}, the daemon {server_major}: \
                 use the vaultctl that came with the running vaultd"
            ),
            None,
        ),
        ErrorCode::ShuttingDown => (
            "the daemon is stopping; try again once it is back".into(),
            Some("try again".into()),
        ),
        ErrorCode::Corrupt | ErrorCode::Storage | ErrorCode::Internal => {
            ("the daemon's log has the details".into(), None)
        }
        _ => return None,
    };
    Some(hint)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A daemon's error answer as vaultctl reports it (other ctl tests use it too).
    pub(crate) fn daemon(code: ErrorCode, message: &str) -> CtlError {
        CtlError::client(
            Path::new("/run/test.sock"),
            ClientError::Daemon(WireError {
                code,
                message: message.into(),
            }),
        )
    }

    fn report(err: &CtlError) -> String {
        let mut out = Vec::new();
        err.report(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn daemon_errors_exit_1() {
        for code in [
            ErrorCode::Locked,
            ErrorCode::Uninitialized,
            ErrorCode::BadPassphrase {
                retry_after_ms: 0,
                unchecked: false,
            },
            ErrorCode::NoSuchSession,
            ErrorCode::PermissionDenied,
            ErrorCode::SessionBusy { holder_pid: None },
            ErrorCode::ShuttingDown,
            ErrorCode::Internal,
        ] {
            assert_eq!(daemon(code, "x").exit_code(), EXIT_FAILED);
        }
        let handshake = CtlError::client(
            Path::new("/s"),
            ClientError::Handshake(WireError {
                code: ErrorCode::ProtocolMismatch { server_major: 9 },
                message: "protocol mismatch".into(),
            }),
        );
        assert_eq!(handshake.exit_code(), EXIT_FAILED);
        assert!(report(&handshake).contains("protocol 1, the daemon 9"));
        let unexpected = CtlError::unexpected(Path::new("/s"), "lock");
        assert_eq!(unexpected.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn unreachable_exits_3_and_names_the_socket() {
        let err = CtlError::client(
            Path::new("/run/nowhere.sock"),
            ClientError::Unreachable {
                path: "/run/nowhere.sock".into(),
                source: io::Error::from(io::ErrorKind::NotFound),
            },
        );
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
        let text = report(&err);
        assert!(text.starts_with("vaultctl: cannot reach"), "{text}");
        assert!(text.contains("/run/nowhere.sock"), "{text}");
        assert!(text.contains("vaultd --socket /run/nowhere.sock"), "{text}");
        assert!(text.contains("SESSION_VAULT_SOCKET"), "{text}");

        let dir = CtlError::client(
            Path::new("/"),
            ClientError::Unreachable {
                path: "/".into(),
                source: io::Error::from(io::ErrorKind::ConnectionRefused),
            },
        );
        assert!(report(&dir).contains("hint: / is not a socket"));

        let lost = CtlError::client(Path::new("/s"), ClientError::Disconnected);
        assert_eq!(lost.exit_code(), EXIT_UNREACHABLE);
        let reset = CtlError::client(
            Path::new("/s"),
            ClientError::Frame(FrameError::Io(io::ErrorKind::ConnectionReset.into())),
        );
        assert_eq!(reset.exit_code(), EXIT_UNREACHABLE);
        let decode = CtlError::client(
            Path::new("/s"),
            ClientError::Frame(FrameError::Decode("x".into())),
        );
        assert_eq!(decode.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn usage_and_input_exit_2() {
        assert_eq!(CtlError::usage("x").exit_code(), EXIT_USAGE);
        let input = CtlError::Input {
            what: "passphrase",
            from: "file /x".into(),
            source: io::ErrorKind::NotFound.into(),
        };
        assert_eq!(input.exit_code(), EXIT_USAGE);
        assert_eq!(CtlError::Aborted("no".into()).exit_code(), EXIT_FAILED);
    }

    #[test]
    fn hints_follow_the_code_without_repeating_the_message() {
        let text = report(&daemon(ErrorCode::Locked, "vault is locked"));
        assert_eq!(
            text,
            "vaultctl: vault is locked\nhint: run `vaultctl unlock`\n"
        );
        let text = report(&daemon(
            ErrorCode::Locked,
            "the vault is locked (run `vaultctl unlock`)",
        ));
        assert_eq!(
            text,
            "vaultctl: the vault is locked (run `vaultctl unlock`)\n"
        );
        let text = report(&daemon(ErrorCode::Uninitialized, "not initialized"));
        assert!(text.contains("hint: run `vaultctl init`"), "{text}");
    }

    #[test]
    fn bad_passphrase_shows_the_delay_in_human_terms() {
        let text = report(&daemon(
            ErrorCode::BadPassphrase {
                retry_after_ms: 2_500,
                unchecked: false,
            },
            "wrong passphrase",
        ));
        assert_eq!(
            text,
            "vaultctl: wrong passphrase\nhint: the next attempt is accepted in 2.5 s\n"
        );
        // Not repeated when the daemon's message says it already.
        let text = report(&daemon(
            ErrorCode::BadPassphrase {
                retry_after_ms: 500,
                unchecked: false,
            },
            "wrong passphrase; the next attempt is accepted after 500 ms",
        ));
        assert_eq!(
            text,
            "vaultctl: wrong passphrase; the next attempt is accepted after 500 ms\n"
        );
        let text = report(&daemon(
            ErrorCode::BadPassphrase {
                retry_after_ms: 0,
                unchecked: false,
            },
            "wrong passphrase",
        ));
        assert_eq!(text, "vaultctl: wrong passphrase\n");
    }

    #[test]
    fn control_characters_in_messages_are_escaped() {
        let text = report(&daemon(ErrorCode::NoSuchSession, "no session \u{1b}[2J"));
        assert!(
            text.starts_with("vaultctl: no session \\u{1b}[2J\n"),
            "{text}"
        );
    }

    #[test]
    fn broken_pipe_is_quiet() {
        assert!(CtlError::Output(io::ErrorKind::BrokenPipe.into()).is_broken_pipe());
        assert!(!CtlError::Output(io::ErrorKind::Other.into()).is_broken_pipe());
    }
}
