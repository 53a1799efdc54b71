//! Where a PostgreSQL store lives: the connection string and the password, kept apart.
//!
//! The connection string (`postgres://user@host:port/db?…` or `host=… dbname=…`) comes from
//! `--store` or the config file and may be logged; it must not carry a password, which would
//! show in `ps`, shell history and unit files. The password comes from a file (mode checked by
//! the caller's umask discipline; its first line is used) or a systemd credential
//! (`$CREDENTIALS_DIRECTORY/store-password`), and lives only in the client's config.
//!
//! TLS (`sslmode`, `sslrootcert`) is taken out of the string and set up by [`tls`].

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use postgres::config::Host;
use zeroize::Zeroizing;

use super::super::error::{EngineError, Result, StorageErrorKind};
use super::idle::IdleTimeout;

#[cfg(all(test, unix))]
mod cluster_tests;
mod tls;

pub use tls::SslMode;

/// The systemd credential (`LoadCredential=`/`LoadCredentialEncrypted=`) holding the
/// database password, read from `$CREDENTIALS_DIRECTORY` when no password file is given.
pub const PASSWORD_CREDENTIAL: &str = "store-password";

/// How long a connection attempt may take before the operation fails with a storage error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL database to keep a vault in.
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    display: String,
    tls: tls::Tls,
    /// What each connection does with `idle_in_transaction_session_timeout`.
    idle: IdleTimeout,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("store", &self.display)
            .field("sslmode", &self.tls.mode())
            .finish_non_exhaustive()
    }
}

/// Whether `store` names a PostgreSQL database (rather than a SQLite file).
pub fn is_postgres_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

fn invalid(message: String) -> EngineError {
    EngineError::Invalid(message)
}

impl PgTarget {
    /// Parses a connection string that holds no password. `password` is the database
    /// password, if the server asks for one.
    ///
    /// TLS parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) are checked here and
    /// their files read: a mistake in them is a configuration error now, never a weaker
    /// connection later.
    pub fn new(url: &str, password: Option<Zeroizing<Vec<u8>>>) -> Result<PgTarget> {
        let (url, tls_params) = tls::split(url)?;
        let mut config = postgres::Config::from_str(&url).map_err(|e| {
            // The parser's message does not quote the string; ours does not either, since a
            // malformed string might hold a password.
            invalid(format!(
                "the PostgreSQL connection string is not valid: {e}"
            ))
        })?;
        if config.get_password().is_some() {
            return Err(invalid(
                "the PostgreSQL connection string holds a password; put it in a file \
                 (--store-password-file) or the systemd credential `store-password` instead"
                    .into(),
            ));
        }
        if config.get_dbname().is_none() {
            return Err(invalid(
                "the PostgreSQL connection string names no database".into(),
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("vaultd");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let tls = tls::Tls::new(&tls_params)?;
        config.ssl_mode(tls.negotiation());
        // As libpq, TLS is not used over a Unix socket (the socket's permissions guard it);
        // tokio-postgres would try, with no host name to check. A list mixing sockets and
        // TCP hosts cannot have it both ways on one config: refused.
        #[cfg(unix)]
        {
            let unix = |h: &Host| matches!(h, Host::Unix(_));
            let hosts = config.get_hosts();
            if !hosts.is_empty() && hosts.iter().all(unix) {
                config.ssl_mode(postgres::config::SslMode::Disable);
            } else if hosts.iter().any(unix) && tls.mode() != SslMode::Disable {
                return Err(invalid(
                    "the PostgreSQL connection string mixes Unix sockets and TCP hosts: give \
                     sslmode=disable, or name one kind only"
                        .into(),
                ));
            }
        }
        let display = describe(&config);
        if let Some(pw) = password {
            config.password(pw.as_slice());
        }
        Ok(PgTarget {
            config,
            display,
            tls,
            idle: IdleTimeout::Unset,
        })
    }

    /// [`PgTarget::new`] with the password read from `password_file`, else from the systemd
    /// credential [`PASSWORD_CREDENTIAL`] if `$CREDENTIALS_DIRECTORY` has it, else none.
    pub fn with_password_from(url: &str, password_file: Option<&Path>) -> Result<PgTarget> {
        let password = match password_file {
            Some(path) => Some(read_password(path)?),
            None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) => {
                    let path = Path::new(&dir).join(PASSWORD_CREDENTIAL);
                    if path.exists() {
                        Some(read_password(&path)?)
                    } else {
                        None
                    }
                }
                None => None,
            },
        };
        PgTarget::new(url, password)
    }

    /// The connection string as it may be shown: user, hosts, ports, database; no password.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The `sslmode` in force (`prefer` when the string names none, as libpq).
    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode()
    }

    /// Why the channel to the database is not safe from an on-path attacker, if it is not:
    /// a host reached over TCP, not on this machine, without a verified certificate (TLS
    /// off, or on without a CA to check the server against). `None` for Unix sockets,
    /// loopback and `verify-ca`/`verify-full`. For a warning in the log.
    pub fn unverified_channel(&self) -> Option<String> {
        if self.tls.verified() {
            return None;
        }
        let hostaddrs = self.config.get_hostaddrs();
        let remote = self.config.get_hosts().iter().enumerate().any(|(i, host)| {
            match (host, hostaddrs.get(i)) {
                (_, Some(addr)) => !addr.to_canonical().is_loopback(),
                (Host::Tcp(name), None) => !is_loopback_name(name),
                #[cfg(unix)]
                (Host::Unix(_), None) => false,
            }
        });
        let what = match self.tls.mode() {
            SslMode::Disable => "TLS is off (sslmode=disable)",
            SslMode::Prefer => {
                "TLS is used only if the server offers it and its certificate is not checked \
                 (sslmode=prefer, the default)"
            }
            _ => "the server's certificate is not checked (sslmode=require without sslrootcert)",
        };
        remote.then(|| {
            format!(
                "the PostgreSQL store {} is reached over the network and {what}: an on-path \
                 attacker could read the password exchange or answer in the server's place; \
                 use sslmode=verify-full with sslrootcert",
                self.display
            )
        })
    }

    /// This target, whose connections apply `idle` (see [`super::idle`]).
    pub fn with_idle_timeout(mut self, idle: IdleTimeout) -> PgTarget {
        self.idle = idle;
        self
    }

    /// What each connection does with `idle_in_transaction_session_timeout`.
    pub fn idle_timeout(&self) -> IdleTimeout {
        self.idle
    }

    /// A new connection, over TLS as `sslmode` says.
    pub(super) fn connect(&self) -> Result<postgres::Client> {
        let connected = match self.tls.connector() {
            Some(connector) if self.config.get_ssl_mode() != postgres::config::SslMode::Disable => {
                self.config.connect(connector)
            }
            _ => self.config.connect(postgres::NoTls),
        };
        connected.map_err(|e| {
            // The server's primary message (e.g. "password authentication failed for
            // user …"); the bare error shows only "db error".
            let why = match e.as_db_error() {
                Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
                // With its causes: "error performing TLS handshake: invalid peer
                // certificate: UnknownIssuer" (tokio-postgres shows the first part only).
                None => {
                    let mut why = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        why.push_str(&format!(": {c}"));
                        cause = c.source();
                    }
                    why
                }
            };
            EngineError::Storage {
                kind: StorageErrorKind::Io,
                message: format!(
                    "cannot connect to PostgreSQL at {} (sslmode={}): {why}",
                    self.display,
                    self.tls.mode().name()
                ),
            }
        })
    }
}

/// The first line of `path`, without its line ending.
fn read_password(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| EngineError::Storage {
        kind: StorageErrorKind::Io,
        message: format!(
            "cannot read the PostgreSQL password file {}: {e}",
            path.display()
        ),
    })?);
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Zeroizing::new(line.to_vec()))
}

/// `localhost` or a loopback address: the traffic does not leave the machine.
fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.to_canonical().is_loopback())
}

fn describe(config: &postgres::Config) -> String {
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{user}{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused_and_never_echoed() {
        let err = PgTarget::new("postgres://u:hunter2secret@db.example/vault", None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("password"), "{text}");
        assert!(!text.contains("hunter2secret"));
    }

    #[test]
    fn the_display_form_has_no_password() {
        let pw = Zeroizing::new(b"hunter2secret".to_vec());
        let t = PgTarget::new("postgres://u@db.example:5433/vault", Some(pw)).unwrap();
        assert_eq!(t.display(), "postgres://u@db.example:5433/vault");
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn a_remote_host_without_a_verified_certificate_is_flagged() {
        let flagged = |url: &str| PgTarget::new(url, None).unwrap().unverified_channel();
        let warning = flagged("postgres://u@db.example/vault").expect("remote, prefer");
        assert!(warning.contains("sslmode=prefer"), "{warning}");
        assert!(flagged("postgres://u@db.example/vault?sslmode=require").is_some());
        assert!(flagged("host=db.example dbname=v sslmode=disable").is_some());
        assert!(flagged("postgres://u@localhost/vault?sslmode=disable").is_none());
        assert!(flagged("postgres://u@127.0.0.1/vault").is_none());
        assert!(flagged("postgres://u@[::1]:5433/vault").is_none());
        assert!(flagged("postgres://u@[::ffff:127.0.0.1]/vault").is_none());
        assert!(flagged("postgres://u@%2Frun%2Fpostgresql/vault").is_none());
        assert!(
            flagged("postgres://u@localhost/vault?hostaddr=192.0.2.7").is_some(),
            "hostaddr is where the connection goes"
        );
    }

    #[test]
    fn unix_sockets_do_not_use_tls_and_do_not_mix_with_tcp_hosts_under_tls() {
        let t = PgTarget::new(
            "postgres://u@%2Frun%2Fpostgresql/vault?sslmode=require",
            None,
        )
        .unwrap();
        assert_eq!(t.config.get_ssl_mode(), postgres::config::SslMode::Disable);
        assert_eq!(t.ssl_mode(), SslMode::Require);
        let mixed = "host=/run/postgresql,db.example dbname=v";
        let err = PgTarget::new(mixed, None).unwrap_err().to_string();
        assert!(err.contains("mixes Unix sockets and TCP hosts"), "{err}");
        assert!(PgTarget::new(&format!("{mixed} sslmode=disable"), None).is_ok());
    }

    #[test]
    fn the_password_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, b"s3cret\r\nignored\n").unwrap();
        assert_eq!(read_password(&path).unwrap().as_slice(), b"s3cret");
        assert!(
            PgTarget::new("postgres://u@h", None).is_err(),
            "no database"
        );
    }
}
