//! Daemon configuration: a TOML file (`--config`), command-line flags and
//! `SESSION_VAULT_SOCKET`, over the defaults of DESIGN.md.
//!
//! Precedence, highest first: flag, environment (socket only), file, default. Defaults: a
//! system daemon (root) uses `/run/session-vault/vault.sock` and `/var/lib/session-vault`; a
//! user daemon uses `$XDG_RUNTIME_DIR/session-vault/vault.sock` and
//! `$XDG_DATA_HOME/session-vault` (or `~/.local/share/session-vault`). The limits on
//! connections and requests per uid and their defaults are described in [`super::limits`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use session_vault_proto::paths;

use super::limits::Settings;

/// The configuration file's contents; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Socket path.
    pub socket: Option<PathBuf>,
    /// Directory holding `vault.db`.
    pub data_dir: Option<PathBuf>,
    /// Where the vault is kept: `postgres://…` for a PostgreSQL database (no password in
    /// it), else the SQLite `vault.db` in the data directory.
    pub store: Option<String>,
    /// File whose first line is the PostgreSQL password.
    pub store_password_file: Option<PathBuf>,
    /// How long a session's lease in PostgreSQL outlives its last renewal, as `"15s"`.
    #[serde(default, with = "humantime_serde_opt")]
    pub lease_expiry: Option<Duration>,
    /// PostgreSQL's `idle_in_transaction_session_timeout` for this daemon's connections, as
    /// `"10s"` (`"0s"`: none); default: the role's or database's, else four flush intervals
    /// and at least 5 s.
    #[serde(default, with = "humantime_serde_opt")]
    pub store_idle_transaction_timeout: Option<Duration>,
    /// Uids allowed to send admin requests (default: the daemon's uid and root).
    pub admin_uids: Option<Vec<u32>>,
    /// Longest time a cache-class write stays uncommitted, in ms (default 100).
    pub flush_interval_ms: Option<u64>,
    /// Largest request frame accepted, in bytes (default 1 MiB).
    pub max_frame_bytes: Option<u32>,
    /// Name of a systemd credential holding the passphrase for unattended unlock.
    pub unlock_credential: Option<String>,
    /// Most sessions a non-admin uid may hold in its namespace (default 32).
    pub max_sessions_per_uid: Option<usize>,
    /// Connections of non-admin uids in all (default 4096, and what the open-file limit
    /// allows).
    pub max_connections: Option<u32>,
    /// Connections of one non-admin uid (default 256).
    pub max_connections_per_uid: Option<u32>,
    /// Connections kept for admin uids beyond `max_connections` (default 32).
    pub admin_reserved_connections: Option<u32>,
    /// Seconds after which a non-admin connection with no session open and nothing sent is
    /// closed (default 60; 0: never).
    pub idle_timeout_secs: Option<u64>,
    /// Daemon-wide budget of requests in flight, in MiB of weight (default 64).
    pub request_memory_mib: Option<u32>,
    /// One uid's share of that budget, in MiB (default 16).
    pub request_memory_per_uid_mib: Option<u32>,
    /// Requests of one uid running at once (default 64).
    pub requests_running_per_uid: Option<u32>,
    /// MiB kept free on the vault's disk: under it, cache writes of non-admin clients that
    /// grow a session are refused (default 256; 0: no reserve).
    pub min_free_disk_mib: Option<u64>,
    /// Lock the vault after this long without a request, as `"30m"`, `"2h"` (default: never;
    /// `"0s"`: never).
    #[serde(default, with = "humantime_serde_opt")]
    pub auto_lock_after: Option<Duration>,
}

/// `Option<Duration>` from a humantime string in the file.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => humantime::parse_duration(&s)
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}"))),
        }
    }
}

/// Values given on the command line (each overrides the file).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--store`.
    pub store: Option<String>,
    /// `--store-password-file`.
    pub store_password_file: Option<PathBuf>,
    /// `--lease-expiry`.
    pub lease_expiry: Option<Duration>,
    /// `--store-idle-transaction-timeout`.
    pub store_idle_transaction_timeout: Option<Duration>,
    /// `--admin-uid`, repeatable.
    pub admin_uids: Vec<u32>,
    /// `--flush-interval-ms`.
    pub flush_interval_ms: Option<u64>,
    /// `--max-frame-bytes`.
    pub max_frame_bytes: Option<u32>,
    /// `--unlock-credential`.
    pub unlock_credential: Option<String>,
    /// `--max-sessions-per-uid`.
    pub max_sessions_per_uid: Option<usize>,
    /// `--max-connections`.
    pub max_connections: Option<u32>,
    /// `--max-connections-per-uid`.
    pub max_connections_per_uid: Option<u32>,
    /// `--admin-reserved-connections`.
    pub admin_reserved_connections: Option<u32>,
    /// `--idle-timeout-secs`.
    pub idle_timeout_secs: Option<u64>,
    /// `--request-memory-mib`.
    pub request_memory_mib: Option<u32>,
    /// `--request-memory-per-uid-mib`.
    pub request_memory_per_uid_mib: Option<u32>,
    /// `--requests-running-per-uid`.
    pub requests_running_per_uid: Option<u32>,
    /// `--min-free-disk-mib`.
    pub min_free_disk_mib: Option<u64>,
    /// `--auto-lock-after`.
    pub auto_lock_after: Option<Duration>,
    /// `--insecure-allow-weak-kdf` (flag only, never from the file: tests and benchmarks).
    pub insecure_allow_weak_kdf: bool,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Socket path.
    pub socket: PathBuf,
    /// Directory holding `vault.db` (and, with a PostgreSQL store, the daemon's lock).
    pub data_dir: PathBuf,
    /// A PostgreSQL connection string (`postgres://…`, no password); `None`: SQLite in
    /// `data_dir`.
    pub store: Option<String>,
    /// File holding the PostgreSQL password (else the systemd credential `store-password`).
    pub store_password_file: Option<PathBuf>,
    /// Expiry of a session's lease in PostgreSQL (see [`super::host_leases`]).
    pub lease_expiry: Duration,
    /// PostgreSQL's `idle_in_transaction_session_timeout` as given (flag or file); `None`:
    /// the database's, else the default (see [`crate::vault::postgres::idle`]).
    pub store_idle_transaction_timeout: Option<Duration>,
    /// Uids allowed to send admin requests.
    pub admin_uids: Vec<u32>,
    /// Flush interval of cache-class writes.
    pub flush_interval: Duration,
    /// Largest request frame accepted.
    pub max_frame: u32,
    /// systemd credential name for unattended unlock.
    pub unlock_credential: Option<String>,
    /// Most sessions a non-admin uid may create in its namespace (`<uid>/…`).
    pub max_sessions_per_uid: usize,
    /// Caps on connections, memory and storage use per uid (see [`super::limits`]).
    pub limits: Settings,
    /// Lock the vault after this long without a request (`None`: never).
    pub auto_lock_after: Option<Duration>,
    /// Accept KDF parameters below `KdfParams::FLOOR` for new keyslots (tests only).
    pub insecure_allow_weak_kdf: bool,
}

/// Default of [`Config::max_sessions_per_uid`].
pub const DEFAULT_MAX_SESSIONS_PER_UID: usize = 32;

/// Why the configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// No default exists for a value (e.g. no `XDG_RUNTIME_DIR` for a user daemon).
    #[error("{0}")]
    Missing(String),
    /// A value is out of its range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// The vault database file.
    pub fn vault_path(&self) -> PathBuf {
        self.data_dir.join("vault.db")
    }

    /// Resolves flags, environment, file and defaults.
    pub fn resolve(o: Overrides) -> Result<Config, ConfigError> {
        let file = match &o.config {
            Some(path) => load(path)?,
            None => FileConfig::default(),
        };
        let limits = limit_settings(&o, &file);
        let euid = current_euid();
        let root = if cfg!(windows) { WINDOWS_SYSTEM_ID } else { 0 };
        let system = euid == root;
        let env_socket = std::env::var_os(paths::SOCKET_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let socket = match o.socket.or(env_socket).or(file.socket) {
            Some(s) => s,
            None if cfg!(windows) => PathBuf::from(paths::WINDOWS_PIPE),
            None if system => PathBuf::from(paths::SYSTEM_SOCKET),
            None => paths::user_socket_path().ok_or_else(|| {
                ConfigError::Missing(
                    "no socket path: pass --socket PATH, set SESSION_VAULT_SOCKET, or set XDG_RUNTIME_DIR"
                        .into(),
                )
            })?,
        };
        let data_dir = match o.data_dir.or(file.data_dir) {
            Some(d) => d,
            None if cfg!(windows) => windows_data_dir(system).ok_or_else(|| {
                ConfigError::Missing(
                    "no data directory: pass --data-dir DIR, or set LOCALAPPDATA".into(),
                )
            })?,
            None if system => PathBuf::from("/var/lib/session-vault"),
            None => user_data_dir().ok_or_else(|| {
                ConfigError::Missing(
                    "no data directory: pass --data-dir DIR, or set XDG_DATA_HOME or HOME".into(),
                )
            })?,
        };
        let admin_uids = if !o.admin_uids.is_empty() {
            o.admin_uids
        } else if let Some(uids) = file.admin_uids {
            uids
        } else if system {
            vec![root]
        } else {
            vec![euid, root]
        };
        let store = o.store.or(file.store);
        if let Some(s) = &store {
            if !crate::vault::postgres::is_postgres_url(s) {
                return Err(ConfigError::Missing(
                    "--store takes a PostgreSQL connection string (postgres://…); the SQLite \
                     store is `vault.db` in --data-dir, the default"
                        .into(),
                ));
            }
        }
        let flush_interval = Duration::from_millis(
            o.flush_interval_ms
                .or(file.flush_interval_ms)
                .unwrap_or(100),
        );
        let store_idle_transaction_timeout = o
            .store_idle_transaction_timeout
            .or(file.store_idle_transaction_timeout);
        if let Some(t) = store_idle_transaction_timeout {
            crate::vault::postgres::idle::check_explicit(t, flush_interval)
                .map_err(ConfigError::Invalid)?;
        }
        Ok(Config {
            socket,
            data_dir,
            store,
            store_password_file: o.store_password_file.or(file.store_password_file),
            lease_expiry: o
                .lease_expiry
                .or(file.lease_expiry)
                .filter(|d| *d >= Duration::from_millis(300))
                .unwrap_or(super::host_leases::DEFAULT_EXPIRY),
            store_idle_transaction_timeout,
            admin_uids,
            flush_interval,
            max_frame: o
                .max_frame_bytes
                .or(file.max_frame_bytes)
                .unwrap_or(session_vault_proto::DEFAULT_MAX_FRAME),
            limits,
            unlock_credential: o.unlock_credential.or(file.unlock_credential),
            max_sessions_per_uid: o
                .max_sessions_per_uid
                .or(file.max_sessions_per_uid)
                .unwrap_or(DEFAULT_MAX_SESSIONS_PER_UID),
            auto_lock_after: o
                .auto_lock_after
                .or(file.auto_lock_after)
                .filter(|d| !d.is_zero()),
            insecure_allow_weak_kdf: o.insecure_allow_weak_kdf,
        })
    }
}

/// The limits: flag, then file, then default; MiB become bytes (saturating at 4 GiB - 1).
fn limit_settings(o: &Overrides, file: &FileConfig) -> Settings {
    use super::limits::*;
    let mib = |v: u32| v.saturating_mul(1 << 20);
    let idle = o
        .idle_timeout_secs
        .or(file.idle_timeout_secs)
        .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
    Settings {
        max_connections: o
            .max_connections
            .or(file.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS),
        max_connections_per_uid: o
            .max_connections_per_uid
            .or(file.max_connections_per_uid)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_UID),
        admin_reserved_connections: o
            .admin_reserved_connections
            .or(file.admin_reserved_connections)
            .unwrap_or(DEFAULT_ADMIN_RESERVED_CONNECTIONS),
        idle_timeout: (idle > 0).then(|| Duration::from_secs(idle)),
        request_memory: mib(o
            .request_memory_mib
            .or(file.request_memory_mib)
            .unwrap_or(DEFAULT_REQUEST_MEMORY_MIB)),
        request_memory_per_uid: mib(o
            .request_memory_per_uid_mib
            .or(file.request_memory_per_uid_mib)
            .unwrap_or(DEFAULT_REQUEST_MEMORY_PER_UID_MIB)),
        requests_running_per_uid: o
            .requests_running_per_uid
            .or(file.requests_running_per_uid)
            .unwrap_or(DEFAULT_REQUESTS_RUNNING_PER_UID),
        min_free_disk: o
            .min_free_disk_mib
            .or(file.min_free_disk_mib)
            .unwrap_or(super::disk::DEFAULT_MIN_FREE_DISK_MIB)
            .saturating_mul(1 << 20),
    }
}

fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn user_data_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("session-vault"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/session-vault"))
}

/// The daemon's effective uid. On Windows, its user SID's id ([`session_vault_proto::sid`]);
/// `SYSTEM`'s (18) where the token cannot be read or the SID has no id.
pub fn current_euid() -> u32 {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }
    #[cfg(windows)]
    {
        super::win::own_identity()
            .ok()
            .and_then(|i| i.uid)
            .unwrap_or(WINDOWS_SYSTEM_ID)
    }
    #[cfg(not(any(unix, windows)))]
    {
        0
    }
}

/// `SYSTEM`'s id on Windows (`S-1-5-18`): the system daemon's user, and an admin by default,
/// like root on Unix.
pub const WINDOWS_SYSTEM_ID: u32 = 18;

/// The data directory on Windows: `%ProgramData%\session-vault` for the system daemon,
/// `%LOCALAPPDATA%\session-vault` for a user's.
fn windows_data_dir(system: bool) -> Option<PathBuf> {
    let var = if system {
        "ProgramData"
    } else {
        "LOCALAPPDATA"
    };
    std::env::var_os(var)
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("session-vault"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vaultd.toml");
        std::fs::write(
            &cfg,
            "socket = \"/tmp/from-file.sock\"\ndata_dir = \"/tmp/file-data\"\nflush_interval_ms = 7\nadmin_uids = [42]\n",
        )
        .unwrap();
        let c = Config::resolve(Overrides {
            config: Some(cfg.clone()),
            socket: Some("/tmp/flag.sock".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/flag.sock"));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/file-data"));
        assert_eq!(c.flush_interval, Duration::from_millis(7));
        assert_eq!(c.admin_uids, vec![42]);
        assert_eq!(c.vault_path(), PathBuf::from("/tmp/file-data/vault.db"));
        assert_eq!(c.limits, Settings::default());
    }

    #[test]
    fn the_store_comes_from_the_flag_or_the_file_and_must_be_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vaultd.toml");
        std::fs::write(
            &cfg,
            "data_dir = \"/tmp/d\"\nsocket = \"/tmp/s.sock\"\n\
             store = \"postgres://vault@db.internal/vault\"\n\
             store_password_file = \"/run/credentials/pw\"\n\
             store_idle_transaction_timeout = \"10s\"\n",
        )
        .unwrap();
        let c = Config::resolve(Overrides {
            config: Some(cfg.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.store.as_deref(),
            Some("postgres://vault@db.internal/vault")
        );
        assert_eq!(
            c.store_idle_transaction_timeout,
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            c.store_password_file,
            Some(PathBuf::from("/run/credentials/pw"))
        );
        let c = Config::resolve(Overrides {
            config: Some(cfg.clone()),
            store: Some("postgresql://other@h/v".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.store.as_deref(),
            Some("postgresql://other@h/v"),
            "the flag wins"
        );
        let c = Config::resolve(Overrides {
            config: Some(cfg.clone()),
            store_idle_transaction_timeout: Some(Duration::ZERO),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.store_idle_transaction_timeout,
            Some(Duration::ZERO),
            "the flag wins, zero (off) included"
        );
        let err = Config::resolve(Overrides {
            config: Some(cfg.clone()),
            store_idle_transaction_timeout: Some(Duration::from_millis(50)),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("PostgreSQL would end this vaultd's own group commits"),
            "{err}"
        );
        let err = Config::resolve(Overrides {
            config: Some(cfg),
            store: Some("/var/lib/x/vault.db".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");
        let c = Config::resolve(Overrides {
            data_dir: Some("/tmp/d".into()),
            socket: Some("/tmp/s.sock".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.store, None, "SQLite stays the default");
        assert_eq!(
            c.store_idle_transaction_timeout, None,
            "the database's, else the default"
        );
    }

    #[test]
    fn auto_lock_after_from_the_file_as_people_write_it() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vaultd.toml");
        let resolve = |text: &str, flag: Option<Duration>| {
            std::fs::write(&cfg, text).unwrap();
            Config::resolve(Overrides {
                config: Some(cfg.clone()),
                auto_lock_after: flag,
                ..Default::default()
            })
        };
        let c = resolve("auto_lock_after = \"1h 30m\"\n", None).unwrap();
        assert_eq!(c.auto_lock_after, Some(Duration::from_secs(5400)));
        let c = resolve("auto_lock_after = \"1h\"\n", Some(Duration::from_secs(9))).unwrap();
        assert_eq!(
            c.auto_lock_after,
            Some(Duration::from_secs(9)),
            "the flag wins"
        );
        assert_eq!(
            resolve("auto_lock_after = \"0s\"\n", None)
                .unwrap()
                .auto_lock_after,
            None
        );
        assert_eq!(resolve("", None).unwrap().auto_lock_after, None);
        let err = resolve("auto_lock_after = \"soon\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn limits_come_from_flags_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vaultd.toml");
        std::fs::write(
            &cfg,
            "max_connections_per_uid = 10\nidle_timeout_secs = 0\nrequest_memory_mib = 8\n\
             max_connections = 100\nmin_free_disk_mib = 1024\n",
        )
        .unwrap();
        let c = Config::resolve(Overrides {
            config: Some(cfg),
            socket: Some("/tmp/x.sock".into()),
            data_dir: Some("/tmp/x".into()),
            max_connections: Some(50),
            request_memory_per_uid_mib: Some(2),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.limits.max_connections, 50);
        assert_eq!(c.limits.max_connections_per_uid, 10);
        assert_eq!(c.limits.idle_timeout, None);
        assert_eq!(c.limits.request_memory, 8 << 20);
        assert_eq!(c.limits.request_memory_per_uid, 2 << 20);
        assert_eq!(c.limits.requests_running_per_uid, 64);
        assert_eq!(c.limits.min_free_disk, 1 << 30);
        let default = Config::resolve(Overrides {
            socket: Some("/tmp/x.sock".into()),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(default.limits.min_free_disk, 256 << 20);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vaultd.toml");
        std::fs::write(&cfg, "sockett = \"/x\"\n").unwrap();
        let err = Config::resolve(Overrides {
            config: Some(cfg),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }
}
