//! `vaultd`: the Session Vault daemon. Parses arguments, sets up logging and the runtime,
//! and hands over to `session_vault_daemon::server::run`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use session_vault_daemon::server::{self, config};

/// Session Vault daemon: serves encrypted Telegram sessions over a local socket.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Socket path (default: $SESSION_VAULT_SOCKET, then the user or system default).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Directory holding vault.db (default: $XDG_DATA_HOME/session-vault or /var/lib/session-vault).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the vault in this PostgreSQL database (postgres://USER@HOST/DB, no password),
    /// shared with other hosts' vaultd, instead of vault.db in --data-dir.
    #[arg(long, value_name = "URL", env = "SESSION_VAULT_STORE")]
    store: Option<String>,
    /// File whose first line is the PostgreSQL password (default: the systemd credential
    /// `store-password`, if any). Never put the password in --store.
    #[arg(long, value_name = "FILE")]
    store_password_file: Option<PathBuf>,
    /// With --store: how long a session's lease in PostgreSQL outlives its holder's last
    /// renewal (renewed every third of it), e.g. `15s`. Longer tolerates longer pauses; shorter
    /// hands a dead host's sessions over sooner [default: 15s; at least 300ms].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    lease_expiry: Option<std::time::Duration>,
    /// With --store: how long PostgreSQL lets a transaction of this vaultd sit idle before it
    /// ends the session (idle_in_transaction_session_timeout), e.g. `10s`; `0s`: never. Bounds
    /// how long a paused host's locks hold up the others; at least 1s and two flush intervals
    /// [default: the role's or database's setting, else 4 flush intervals, at least 5s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    store_idle_transaction_timeout: Option<std::time::Duration>,
    /// Uid allowed to send admin requests (repeatable; default: the daemon's uid and root).
    #[arg(long = "admin-uid", value_name = "UID")]
    admin_uids: Vec<u32>,
    /// Longest time a cache-class write (peers, update state) stays uncommitted, in ms.
    #[arg(long, value_name = "MS")]
    flush_interval_ms: Option<u64>,
    /// Largest request frame accepted, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_frame_bytes: Option<u32>,
    /// Unlock at start with the passphrase in $CREDENTIALS_DIRECTORY/NAME (a systemd
    /// credential, e.g. from LoadCredentialEncrypted=). On failure the daemon stays locked.
    #[arg(long, value_name = "NAME")]
    unlock_credential: Option<String>,
    /// Most sessions a uid that is not an admin may create, in its namespace "UID/" (default 32).
    #[arg(long, value_name = "N")]
    max_sessions_per_uid: Option<usize>,
    /// Connections of non-admin uids in all [default: 4096, less if the open-file limit
    /// cannot be raised that far].
    #[arg(long, value_name = "N")]
    max_connections: Option<u32>,
    /// Connections of one non-admin uid; more are refused [default: 256].
    #[arg(long, value_name = "N")]
    max_connections_per_uid: Option<u32>,
    /// Connections kept for admin uids beyond --max-connections [default: 32].
    #[arg(long, value_name = "N")]
    admin_reserved_connections: Option<u32>,
    /// Close a non-admin connection with no session open after this many seconds without a
    /// request (0: never) [default: 60].
    #[arg(long, value_name = "SECS")]
    idle_timeout_secs: Option<u64>,
    /// Budget of requests in flight, daemon-wide, in MiB of weight (a request weighs up to
    /// 26 times its frame) [default: 64].
    #[arg(long, value_name = "MIB")]
    request_memory_mib: Option<u32>,
    /// One uid's share of --request-memory-mib [default: 16].
    #[arg(long, value_name = "MIB")]
    request_memory_per_uid_mib: Option<u32>,
    /// Requests of one uid running at once [default: 64].
    #[arg(long, value_name = "N")]
    requests_running_per_uid: Option<u32>,
    /// MiB kept free on the vault's disk (SQLite store): under it, cache writes of non-admin
    /// clients that grow a session are refused, so that one bot cannot fill the disk under
    /// the others' auth keys [default: 256; 0: no reserve].
    #[arg(long, value_name = "MIB")]
    min_free_disk_mib: Option<u64>,
    /// Lock the vault after this long without a request (status aside), e.g. `30m`, `2h`,
    /// `90s`; 0 or unset: never. Bots with sessions open then get `locked` until an unlock.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    auto_lock_after: Option<std::time::Duration>,
    /// TESTS AND BENCHMARKS ONLY: accept Argon2 parameters below the floor (m = 19 MiB,
    /// t = 2) for new keyslots. Logged as a warning at startup.
    #[arg(long, hide = true)]
    insecure_allow_weak_kdf: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VAULTD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        // Once stderr is gone (EPIPE after a journald restart, `vaultd 2>&1 | head`, a closed
        // terminal), a failed log write is dropped. The default reports it with `eprintln!`,
        // which panics on the same closed stream, in whichever request happened to log.
        .log_internal_errors(false)
        .init();
    session_vault_daemon::hardening::disable_core_dumps();
    let overrides = config::Overrides {
        config: args.config,
        socket: args.socket,
        data_dir: args.data_dir,
        store: args.store,
        store_password_file: args.store_password_file,
        lease_expiry: args.lease_expiry,
        store_idle_transaction_timeout: args.store_idle_transaction_timeout,
        admin_uids: args.admin_uids,
        flush_interval_ms: args.flush_interval_ms,
        max_frame_bytes: args.max_frame_bytes,
        unlock_credential: args.unlock_credential,
        max_sessions_per_uid: args.max_sessions_per_uid,
        max_connections: args.max_connections,
        max_connections_per_uid: args.max_connections_per_uid,
        admin_reserved_connections: args.admin_reserved_connections,
        idle_timeout_secs: args.idle_timeout_secs,
        request_memory_mib: args.request_memory_mib,
        request_memory_per_uid_mib: args.request_memory_per_uid_mib,
        requests_running_per_uid: args.requests_running_per_uid,
        min_free_disk_mib: args.min_free_disk_mib,
        auto_lock_after: args.auto_lock_after,
        insecure_allow_weak_kdf: args.insecure_allow_weak_kdf,
    };
    if args.insecure_allow_weak_kdf {
        tracing::warn!(
            "INSECURE: --insecure-allow-weak-kdf given: new keyslots may use KDF parameters below the floor; for tests and benchmarks only"
        );
    }
    let result = config::Config::resolve(overrides)
        .map_err(anyhow::Error::from)
        .and_then(|cfg| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(server::run(cfg))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`: with stderr closed it would panic, and exit 101 instead of 1.
            let _ = writeln!(std::io::stderr(), "vaultd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
