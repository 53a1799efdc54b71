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
mod link;
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
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use session_vault_proto::message::KdfSpec;
use session_vault_proto::paths::default_socket_path;

pub use error::{CtlError, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE};
pub use prompt::PassphraseArgs;

use link::{BlockingConnection, DaemonClient};

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

#[cfg(test)]
mod tests;
