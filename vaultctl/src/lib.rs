//! `vaultctl`, the admin CLI of the Session Vault daemon: its clap definitions, the one
//! `match` that dispatches to a module per subcommand, and the link to the daemon they share.
//!
//! - one file per subcommand (`status`, `init`, `unlock`, `lock`, `passwd`, `rekey`, `list`, `rm`,
//!   `rename`, `grant`, `revoke`, `import`, `export`, `backup`, `restore`, `verify`,
//!   `migrate-store`,
//!   `disconnect`,
//!   `completions`), each with its clap `Args` and a
//!   `run(args, &DaemonClient, out)` that sends one request;
//! - `prompt`: where passphrases and confirmations come from (terminal, file, fd; never
//!   arguments or the environment);
//! - `output`: dates, durations, tables, JSON;
//! - `error`: [`CtlError`], its exit codes (0 ok, 1 daemon error, 2 usage, 3 unreachable)
//!   and hints.
//!
//! Order of work in a command that needs a passphrase: read it from its file or fd (or check
//! that a terminal can be asked) *before* the tokio runtime starts, so that the process is
//! still single-threaded when it duplicates an inherited fd and a usage error never waits on
//! the daemon; then connect (the handshake tells the vault's state, so that `init` on an
//! initialized vault or `unlock` on an unlocked one does not ask for a passphrase in vain);
//! then prompt if needed; then send. One current-thread runtime and one connection per run.
//!
//! Output is deterministic (no colours, UTC dates, sessions sorted by name) and nothing
//! prompts when `--yes` or a passphrase file/fd is given, so that scripts can drive it.
//!
//! Depends on `session-vault-client` (the connection) and `session-vault-proto` (messages),
//! never on the vault engine or the server: it is a client like any other.

mod audit;
mod backup;
mod completions;
mod disconnect;
mod error;
mod export;
// `import` (Unix only) is the main user of the format parsers.
#[cfg_attr(not(unix), allow(dead_code))]
mod format_arg;
mod grant;
#[cfg(unix)]
mod import;
mod init;
mod list;
mod lock;
mod migrate;
mod output;
mod passwd;
mod prompt;
mod recovery_key;
mod rekey;
mod rename;
mod restore;
mod revoke;
mod rm;
mod status;
mod strength;
mod transfer;
mod unlock;
mod verify;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use session_vault_client::{ClientError, Connection};
use session_vault_proto::message::{
    ErrorCode, KdfSpec, PROTOCOL_MAJOR, Request, Response, VaultState, WireError,
};
use session_vault_proto::paths::default_socket_path;

pub use error::{CtlError, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE};
pub use prompt::PassphraseArgs;

/// How vaultctl names itself to the daemon (in the daemon's logs).
const CLIENT_NAME: &str = concat!("vaultctl ", env!("CARGO_PKG_VERSION"));

const LONG_ABOUT: &str = "\
Admin CLI of the Session Vault daemon (vaultd): initialize, unlock and lock the vault,
change its passphrase, and list, rename, delete and share the sessions it holds.

vaultctl talks to vaultd over its local socket: --socket PATH, else $SESSION_VAULT_SOCKET,
else $XDG_RUNTIME_DIR/session-vault/vault.sock (a user daemon's, when it exists), else
/run/session-vault/vault.sock (the system daemon's).

Passphrases are read from a no-echo prompt on the terminal, or from the first line of a
file (--passphrase-file) or of an inherited file descriptor (--passphrase-fd); never from
a command-line argument or an environment variable. `vaultctl <command> --help` says more.";

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the daemon reported an error (vault locked, wrong passphrase, no such session,
     permission denied, ...) or the exchange with it failed
  2  usage: bad arguments or unacceptable input (nothing was sent to the daemon)
  3  the daemon is not reachable at the socket";

/// Where the passphrase of `init` and `unlock` comes from (their long help).
const PASSPHRASE_HELP: &str = "\
The passphrase comes from exactly one of:
  --passphrase-file FILE  the first line of FILE (its \\n or \\r\\n removed)
  --passphrase-fd N       the first line of the inherited file descriptor N,
                          e.g. `--passphrase-fd 3 3<FILE`, or `--passphrase-fd 0` for stdin
  (neither)               a prompt on the terminal, without echo; only when stdin is a
                          terminal, else vaultctl exits 2
It is never taken from a command-line argument or an environment variable.";

/// The command line of `vaultctl`.
#[derive(Debug, Parser)]
#[command(
    name = "vaultctl",
    version,
    about = "Admin CLI of the Session Vault daemon (vaultd)",
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES_HELP,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// The daemon's socket [default: $SESSION_VAULT_SOCKET or the standard path]
    ///
    /// Default: $SESSION_VAULT_SOCKET if set; else a user daemon's
    /// $XDG_RUNTIME_DIR/session-vault/vault.sock if it exists; else the system daemon's
    /// /run/session-vault/vault.sock.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        value_hint = clap::ValueHint::FilePath,
        verbatim_doc_comment
    )]
    pub socket: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. Each one's arguments, one-line about and long help (the doc comment of
/// its `Args`) live in the subcommand's own module.
#[derive(Debug, Subcommand)]
pub enum Command {
    Status(status::Args),
    Init(init::Args),
    Unlock(unlock::Args),
    Lock(lock::Args),
    Passwd(passwd::Args),
    Rekey(rekey::Args),
    RecoveryKey(recovery_key::Args),
    List(list::Args),
    Rm(rm::Args),
    Rename(rename::Args),
    Grant(grant::Args),
    Revoke(revoke::Args),
    #[cfg(unix)]
    Import(import::Args),
    Export(export::Args),
    Backup(backup::Args),
    Restore(restore::Args),
    Verify(verify::Args),
    MigrateStore(migrate::Args),
    Disconnect(disconnect::Args),
    Audit(audit::Args),
    Completions(completions::Args),
}

/// Argon2id cost of a new keyslot (`init`, `passwd`, `rekey`): all three or none.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Key derivation (Argon2id; default: the daemon's, m=64 MiB t=3 p=1)")]
pub struct KdfArgs {
    /// Memory cost in KiB
    #[arg(
        long,
        value_name = "N",
        requires_all = ["kdf_iterations", "kdf_parallelism"],
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub kdf_memory_kib: Option<u32>,
    /// Number of passes
    #[arg(
        long,
        value_name = "N",
        requires_all = ["kdf_memory_kib", "kdf_parallelism"],
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub kdf_iterations: Option<u32>,
    /// Number of lanes
    #[arg(
        long,
        value_name = "N",
        requires_all = ["kdf_memory_kib", "kdf_iterations"],
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub kdf_parallelism: Option<u32>,
}

/// The uid or gid of `grant` and `revoke`: exactly one (on Windows, or for a Windows daemon,
/// a user or group SID, mapped to its id as `session_vault_proto::sid` says).
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Grantee {
    /// A user id
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// A group id (its members)
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// A Windows user SID (S-1-5-21-…-RID, S-1-5-18), as the uid it maps to
    #[arg(long, value_name = "SID", value_parser = parse_sid)]
    pub sid: Option<Sid>,
    /// A Windows group SID (S-1-5-32-545, S-1-5-21-…-RID): its members, as the gid it maps to
    #[arg(long, value_name = "SID", value_parser = parse_sid)]
    pub group_sid: Option<Sid>,
}

/// A SID given on the command line, and the id it maps to.
#[derive(Debug, Clone)]
pub struct Sid {
    /// As given.
    pub text: String,
    /// Its id (see `session_vault_proto::sid`).
    pub id: u32,
}

fn parse_sid(s: &str) -> Result<Sid, String> {
    match session_vault_proto::sid::id_of(s) {
        Some(id) => Ok(Sid {
            text: s.to_owned(),
            id,
        }),
        None => Err(format!(
            "{s:?} is not a SID vaultd maps to an id (S-1-5-21-…-RID, S-1-5-32-X or S-1-5-X)"
        )),
    }
}

impl Grantee {
    /// The uid granted, from --uid or --sid.
    pub fn uid(&self) -> Option<u32> {
        self.uid.or(self.sid.as_ref().map(|s| s.id))
    }

    /// The gid granted, from --gid or --group-sid.
    pub fn gid(&self) -> Option<u32> {
        self.gid.or(self.group_sid.as_ref().map(|s| s.id))
    }
}

impl std::fmt::Display for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.uid, self.gid, &self.sid, &self.group_sid) {
            (Some(uid), ..) => write!(f, "uid {uid}"),
            (None, Some(gid), ..) => write!(f, "gid {gid}"),
            (None, None, Some(sid), _) => write!(f, "SID {} (uid {})", sid.text, sid.id),
            (None, None, None, Some(sid)) => write!(f, "group SID {} (gid {})", sid.text, sid.id),
            (None, None, None, None) => f.write_str("nobody"),
        }
    }
}

impl KdfArgs {
    /// The cost to send, when given (clap makes the three flags go together).
    pub fn spec(&self) -> Option<KdfSpec> {
        Some(KdfSpec {
            m_cost_kib: self.kdf_memory_kib?,
            t_cost: self.kdf_iterations?,
            p_cost: self.kdf_parallelism?,
        })
    }
}

/// Runs `cli`, writing its output to stdout and an error report to stderr; the exit code.
///
/// The binary's whole `main` after argument parsing. Never exits the process itself.
pub fn main(cli: Cli) -> ExitCode {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = run(cli, &mut out).and_then(|()| out.flush().map_err(CtlError::Output));
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        // `vaultctl list | head`: the reader is gone, and so is anyone to tell.
        Err(e) if e.is_broken_pipe() => ExitCode::from(EXIT_OK),
        Err(e) => {
            // Nothing sensible is left to do if stderr is gone too.
            let _ = e.report(&mut io::stderr().lock());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs `cli`, writing its output to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CtlError> {
    let daemon = DaemonClient {
        socket: cli.socket.unwrap_or_else(default_socket_path),
    };
    match cli.command {
        Command::Status(args) => status::run(args, &daemon, out),
        Command::Init(args) => init::run(args, &daemon, out),
        Command::Unlock(args) => unlock::run(args, &daemon, out),
        Command::Lock(args) => lock::run(args, &daemon, out),
        Command::Passwd(args) => passwd::run(args, &daemon, out),
        Command::Rekey(args) => rekey::run(args, &daemon, out),
        Command::RecoveryKey(args) => recovery_key::run(args, &daemon, out),
        Command::List(args) => list::run(args, &daemon, out),
        Command::Rm(args) => rm::run(args, &daemon, out),
        Command::Rename(args) => rename::run(args, &daemon, out),
        Command::Grant(args) => grant::run(args, &daemon, out),
        Command::Revoke(args) => revoke::run(args, &daemon, out),
        #[cfg(unix)]
        Command::Import(args) => import::run(args, &daemon, out),
        Command::Export(args) => export::run(args, &daemon, out),
        Command::Backup(args) => backup::run(args, &daemon, out),
        Command::Restore(args) => restore::run(args, &daemon, out),
        Command::Verify(args) => verify::run(args, &daemon, out),
        Command::MigrateStore(args) => migrate::run(args, &daemon, out),
        Command::Disconnect(args) => disconnect::run(args, &daemon, out),
        Command::Audit(args) => audit::run(args, &daemon, out),
        Command::Completions(args) => completions::run(args, out),
    }
}

/// Output written to `out` is the command's result: a failed write is [`CtlError::Output`].
impl From<io::Error> for CtlError {
    fn from(e: io::Error) -> Self {
        CtlError::Output(e)
    }
}

/// How long the daemon may take to answer the handshake: it answers at once unless wedged
/// (or what listens is not a vaultd).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one request may take: long enough for Argon2 at a high cost or a large import,
/// short enough that a wedged daemon does not hang scripts.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A daemon that did not answer in time is as good as unreachable (exit 3).
fn timed_out(socket: &Path, what: &str) -> ClientError {
    ClientError::Unreachable {
        path: socket.to_owned(),
        source: io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer to {what} in time; is a vaultd (and not something else) listening?"),
        ),
    }
}

/// The longest wait vaultctl sits out by itself when the daemon's throttle refused an attempt
/// without checking its passphrase (someone's wrong passphrase a moment before, or another
/// attempt being checked); a longer one is reported with the time to wait.
const THROTTLE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// The wait before sending again a passphrase the daemon refused without checking it; `None`
/// for any other outcome, a wrong passphrase among them.
fn unchecked_wait(e: &CtlError) -> Option<std::time::Duration> {
    match e.wire()? {
        WireError {
            code:
                ErrorCode::BadPassphrase {
                    retry_after_ms,
                    unchecked: true,
                },
            ..
        } => Some(std::time::Duration::from_millis(*retry_after_ms)),
        _ => None,
    }
}

/// The daemon at one socket path, not connected yet.
pub(crate) struct DaemonClient {
    socket: PathBuf,
}

impl DaemonClient {
    /// The socket path.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts a current-thread runtime and connects (handshake included).
    pub(crate) fn connect(&self) -> Result<BlockingConnection, CtlError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CtlError::Runtime)?;
        let conn = runtime
            .block_on(async {
                tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    Connection::connect(&self.socket, CLIENT_NAME),
                )
                .await
                .unwrap_or_else(|_| Err(timed_out(&self.socket, "the handshake")))
            })
            .map_err(|e| CtlError::client(&self.socket, e))?;
        Ok(BlockingConnection {
            conn,
            runtime,
            socket: self.socket.clone(),
        })
    }

    /// Connects, sends `request` and expects [`Response::Ok`]; `what` names it in errors.
    pub(crate) fn call_ok(&self, request: Request, what: &'static str) -> Result<(), CtlError> {
        self.connect()?.call_ok(request, what)
    }
}

/// A connection to the daemon and the runtime that drives it.
pub(crate) struct BlockingConnection {
    // Declared before the runtime: dropped first, while the runtime still exists.
    conn: Connection,
    runtime: tokio::runtime::Runtime,
    socket: PathBuf,
}

impl BlockingConnection {
    /// The vault's state at the handshake.
    pub(crate) fn vault_state(&self) -> VaultState {
        self.conn.vault_state_at_connect()
    }

    /// The daemon's protocol minor version, from the handshake.
    pub(crate) fn daemon_minor(&self) -> u16 {
        self.conn.server_minor()
    }

    /// The socket path.
    pub(crate) fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Sends `request` and waits for its response; a daemon error is an `Err`.
    pub(crate) fn call(&self, request: Request) -> Result<Response, CtlError> {
        let needed = request.minor_needed();
        if self.daemon_minor() < needed {
            // Said before sending: an older daemon would answer a decode error, or (a field
            // it does not know) ignore the field.
            return Err(self.state_error(
                ErrorCode::Unsupported,
                &format!(
                    "vaultd speaks protocol {PROTOCOL_MAJOR}.{}; `{}` needs \
                     {PROTOCOL_MAJOR}.{needed} — upgrade vaultd",
                    self.daemon_minor(),
                    request.wire_name()
                ),
            ));
        }
        self.runtime
            .block_on(async {
                tokio::time::timeout(REQUEST_TIMEOUT, self.conn.call(request))
                    .await
                    .unwrap_or_else(|_| Err(timed_out(&self.socket, "a request")))
            })
            .map_err(|e| CtlError::client(&self.socket, e))
    }

    /// Sends `request` and expects [`Response::Ok`]; `what` names it in errors.
    pub(crate) fn call_ok(&self, request: Request, what: &'static str) -> Result<(), CtlError> {
        match self.call(request)? {
            Response::Ok => Ok(()),
            _ => Err(CtlError::unexpected(&self.socket, what)),
        }
    }

    /// Sends a passphrase request made by `request` and expects [`Response::Ok`]. If the
    /// daemon's throttle refuses it without checking the passphrase and asks for a short wait
    /// (at most [`THROTTLE_WAIT_MAX`] in all), says so on stderr, waits and sends it again.
    pub(crate) fn call_passphrase_ok(
        &self,
        request: impl Fn() -> Request,
        what: &'static str,
    ) -> Result<(), CtlError> {
        let mut waited = std::time::Duration::ZERO;
        loop {
            let err = match self.call_ok(request(), what) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match unchecked_wait(&err) {
                Some(wait) if waited + wait <= THROTTLE_WAIT_MAX => {
                    // A progress note: if stderr is gone, the wait goes on regardless.
                    let _ = writeln!(
                        io::stderr(),
                        "vaultctl: the daemon holds passphrase attempts back after a wrong one; \
                         trying again in {}",
                        output::format_delay_ms(wait.as_millis() as u64)
                    );
                    // The timer is made inside the runtime: it needs its context.
                    self.runtime
                        .block_on(async { tokio::time::sleep(wait).await });
                    waited += wait;
                }
                _ => return Err(err),
            }
        }
    }

    /// An error as the daemon would report it, for a state the handshake already showed
    /// (so that no passphrase is asked for a request bound to fail).
    pub(crate) fn state_error(&self, code: ErrorCode, message: &str) -> CtlError {
        CtlError::client(
            &self.socket,
            ClientError::Daemon(WireError {
                code,
                message: message.into(),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vaultctl").chain(args.iter().copied()))
    }

    #[test]
    fn sids_map_to_uids_and_gids() {
        let grantee = |args: &[&str]| match parse(args).unwrap().command {
            Command::Grant(g) => g.who,
            _ => unreachable!("a grant was parsed"),
        };
        let who = grantee(&["grant", "bot", "--sid", "S-1-5-21-1-2-3-1001"]);
        assert_eq!((who.uid(), who.gid()), (Some(0x30000 + 1001), None));
        assert_eq!(who.to_string(), "SID S-1-5-21-1-2-3-1001 (uid 197609)");
        let who = grantee(&["grant", "bot", "--group-sid", "S-1-5-32-545"]);
        assert_eq!((who.uid(), who.gid()), (None, Some(545)));
    }

    #[test]
    fn usage_errors_are_clap_errors_with_exit_2() {
        for bad in [
            &["grant", "bot"][..],
            &["grant", "bot", "--uid", "1", "--gid", "2"],
            &["grant", "bot", "--sid", "S-1-5-32-544", "--uid", "1"],
            &["grant", "bot", "--sid", "S-1-1-0"],
            &["grant", "bot", "--group-sid", "WD"],
            &["revoke", "bot"],
            &["init", "--kdf-memory-kib", "65536"],
            &["unlock", "--passphrase-file", "a", "--passphrase-fd", "3"],
            &[
                "passwd",
                "--new-passphrase-file",
                "a",
                "--new-passphrase-fd",
                "3",
            ],
            &["unlock", "--passphrase", "hunter2"],
            &["rm"],
            &["disconnect"],
            &["disconnect", "--pid", "x"],
            &["bogus"],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} should not parse"));
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn kdf_flags_go_together() {
        let cli = parse(&[
            "init",
            "--kdf-memory-kib",
            "8192",
            "--kdf-iterations",
            "2",
            "--kdf-parallelism",
            "1",
        ])
        .unwrap();
        let Command::Init(args) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(
            args.kdf.spec(),
            Some(KdfSpec {
                m_cost_kib: 8192,
                t_cost: 2,
                p_cost: 1
            })
        );
        let cli = parse(&["init"]).unwrap();
        let Command::Init(args) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(args.kdf.spec(), None);
    }

    #[test]
    fn socket_is_global() {
        let cli = parse(&["status", "--socket", "/tmp/x.sock"]).unwrap();
        assert_eq!(cli.socket.as_deref(), Some(Path::new("/tmp/x.sock")));
        let cli = parse(&["--socket", "/tmp/y.sock", "lock"]).unwrap();
        assert_eq!(cli.socket.as_deref(), Some(Path::new("/tmp/y.sock")));
    }

    #[test]
    fn only_an_unchecked_passphrase_is_sent_again() {
        let e = super::error::tests::daemon(
            ErrorCode::BadPassphrase {
                retry_after_ms: 400,
                unchecked: true,
            },
            "passphrase not checked: attempts are held back; after 400 ms",
        );
        assert_eq!(
            unchecked_wait(&e),
            Some(std::time::Duration::from_millis(400))
        );
        // A wrong passphrase: sending it again would only earn a longer delay, whatever the
        // message says.
        let e = super::error::tests::daemon(
            ErrorCode::BadPassphrase {
                retry_after_ms: 500,
                unchecked: false,
            },
            "passphrase not checked",
        );
        assert_eq!(unchecked_wait(&e), None);
        let e = super::error::tests::daemon(ErrorCode::Locked, "passphrase not checked");
        assert_eq!(unchecked_wait(&e), None);
    }

    #[test]
    fn the_daemons_refusal_is_recognized() {
        // What vaultd's throttle answers (the server's `errors::not_judged`): the flag, not
        // the wording, is what vaultctl reads.
        let wire = WireError {
            code: ErrorCode::BadPassphrase {
                retry_after_ms: 1,
                unchecked: true,
            },
            message: "attempts are held back".into(),
        };
        let e = CtlError::client(Path::new("/run/v.sock"), ClientError::Daemon(wire));
        assert_eq!(
            unchecked_wait(&e),
            Some(std::time::Duration::from_millis(1))
        );
    }

    #[test]
    fn unreachable_daemon_exits_3() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("none.sock");
        let cli = parse(&["--socket", socket.to_str().unwrap(), "status"]).unwrap();
        let err = run(cli, &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
        assert!(err.to_string().contains("none.sock"), "{err}");
    }
}
