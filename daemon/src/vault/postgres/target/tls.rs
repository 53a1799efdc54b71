//! TLS to PostgreSQL: libpq's `sslmode` and `sslrootcert`, carried out with rustls (ring).
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` only and refuses any other `ssl…`
//! parameter, so [`split`] takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of the
//! connection string before it is parsed (and refuses the other `ssl…` ones of libpq by
//! name), and [`Tls::new`] turns them into the mode tokio-postgres negotiates with, the
//! certificate check rustls makes, and the client certificate it shows, if any:
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | – |
//! | `prefer` (default) | if the server offers it | not checked; checked as `verify-ca` if `sslrootcert` is given |
//! | `require` | always | not checked; checked as `verify-ca` if `sslrootcert` is given (as libpq) |
//! | `verify-ca` | always | signed by a CA of `sslrootcert` |
//! | `verify-full` | always | as `verify-ca`, and issued for the host connected to |
//!
//! As libpq 16, `sslrootcert=system` is the platform's trusted roots and makes `verify-full`
//! the default and the only mode allowed. `sslcert`/`sslkey` (PEM, the key unencrypted and
//! not readable by others, as libpq checks) go together. Where this differs from libpq:
//! nothing is read from `~/.postgresql/` (a daemon names its files), `allow` is refused, and
//! under `prefer` with a `sslrootcert` a certificate that fails the check fails the
//! connection (libpq would retry without TLS: a downgrade an on-path attacker could force).
//!
//! The connector is `postgres_rustls`, which also gives SCRAM its channel binding
//! (`tls-server-end-point`, so `channel_binding=require` works over any of these modes).
//!
//! Why it matters although PostgreSQL only sees sealed rows (DESIGN.md): TLS keeps the
//! database password exchange and the rows away from an on-path attacker, who could
//! otherwise also replay or withhold rows. Only `verify-ca`/`verify-full` stop one who
//! answers in the server's place.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;

use super::super::super::error::{EngineError, Result};

mod params;
mod pem;
mod verify;

pub use params::{RootCert, TlsParams, split};
use pem::{load_roots, read_key, read_pem_certs};
use verify::{ChainOnly, Unverified};

/// libpq's `sslmode`, less `allow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, else plain.
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS, and the server certificate is signed by a trusted CA.
    VerifyCa,
    /// As [`SslMode::VerifyCa`], and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The name in a connection string.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(invalid(
                    "sslmode=allow is not supported (it tries a plain connection first); \
                     use prefer, require, verify-ca or verify-full"
                        .into(),
                ));
            }
            other => {
                return Err(invalid(format!(
                    "sslmode={other:?} is not a valid sslmode (disable, prefer, require, \
                     verify-ca or verify-full)"
                )));
            }
        })
    }
}

fn invalid(message: String) -> EngineError {
    EngineError::Invalid(format!("PostgreSQL TLS: {message}"))
}

/// The TLS policy of one target: the mode tokio-postgres negotiates with and the rustls
/// configuration that checks the server (none under `disable`).
#[derive(Clone)]
pub struct Tls {
    mode: SslMode,
    /// Whether the server certificate is checked against trusted CAs.
    verified: bool,
    connector: Option<postgres_rustls::MakeTlsConnector>,
}

impl Tls {
    /// The policy `params` ask for, with the CA file read now (a missing or empty one is a
    /// configuration error at startup, not at the first connection).
    pub fn new(params: &TlsParams) -> Result<Tls> {
        let mode = match (params.mode, &params.root) {
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (Some(m), Some(RootCert::System)) if m != SslMode::VerifyFull => {
                return Err(invalid(format!(
                    "sslrootcert=system needs sslmode=verify-full (as libpq), not {}",
                    m.name()
                )));
            }
            (m, _) => m.unwrap_or(SslMode::Prefer),
        };
        if mode >= SslMode::VerifyCa && params.root.is_none() {
            return Err(invalid(format!(
                "sslmode={} needs sslrootcert=PATH (a PEM file of the CA certificates to \
                 trust) or sslrootcert=system",
                mode.name()
            )));
        }
        if mode == SslMode::Disable {
            return Ok(Tls {
                mode,
                verified: false,
                connector: None,
            });
        }
        // rustls 0.23.48 deprecates the ring provider for lacking post-quantum key exchange;
        // the one that has it (aws-lc-rs) needs cmake and a C toolchain this project does not
        // build with. Classical ECDHE still protects the channel today.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match &params.root {
            None => Arc::new(Unverified(provider.clone())),
            Some(root) => {
                let roots = Arc::new(load_roots(root)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| invalid(format!("cannot use the CA certificates: {e}")))?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("cannot set up TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&params.cert, &params.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(read_pem_certs(cert, "sslcert")?, read_key(key)?)
                .map_err(|e| {
                    invalid(format!(
                        "sslcert {} and sslkey {} do not go together: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?,
            // libpq would look in ~/.postgresql/ for the other; a daemon names both.
            _ => {
                return Err(invalid(
                    "sslcert and sslkey go together: give both, or neither".into(),
                ));
            }
        };
        // PostgreSQL 17's direct TLS (`sslnegotiation=direct`) wants its ALPN name; earlier
        // servers ignore it.
        postgres_rustls::set_postgresql_alpn(&mut config);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        Ok(Tls {
            mode,
            verified: params.root.is_some(),
            connector: Some(postgres_rustls::MakeTlsConnector::new(connector)),
        })
    }

    /// The `sslmode` in force.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Whether the server's certificate is checked against trusted CAs (`verify-ca`,
    /// `verify-full`, or `prefer`/`require` with a `sslrootcert`).
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// What tokio-postgres negotiates: it knows disable, prefer and require.
    pub fn negotiation(&self) -> postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        }
    }

    /// The connector, `None` under `disable`.
    pub fn connector(&self) -> Option<postgres_rustls::MakeTlsConnector> {
        self.connector.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_a_url() {
        let (rest, p) = split(
            "postgres://u@h:5433/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h:5433/db?application_name=x");
        assert_eq!(p.mode, Some(SslMode::VerifyFull));
        assert_eq!(p.root, Some(RootCert::File("/etc/ca.pem".into())));
        let (rest, p) = split("postgresql://u@h/db?sslmode=disable").unwrap();
        assert_eq!(rest, "postgresql://u@h/db");
        assert_eq!(p.mode, Some(SslMode::Disable));
        let (rest, p) = split("postgres://u@h/db").unwrap();
        assert_eq!(
            (rest.as_str(), p),
            ("postgres://u@h/db", TlsParams::default())
        );
    }

    #[test]
    fn tls_parameters_are_taken_out_of_key_value_pairs() {
        let (rest, p) =
            split("host=db.example sslmode = require  sslrootcert='/etc/my ca\\'s.pem' dbname=v")
                .unwrap();
        assert_eq!(rest, "host=db.example dbname=v");
        assert_eq!(p.mode, Some(SslMode::Require));
        assert_eq!(p.root, Some(RootCert::File("/etc/my ca's.pem".into())));
    }

    #[test]
    fn unknown_modes_and_unsupported_parameters_are_refused_by_name() {
        for (conn, word) in [
            ("postgres://u@h/db?sslmode=verify_full", "verify_full"),
            ("postgres://u@h/db?sslmode=allow", "allow"),
            ("postgres://u@h/db?sslmode=", "sslmode"),
            ("postgres://u@h/db?sslpassword=x", "sslpassword"),
            ("host=h sslkey=''", "sslkey"),
            ("postgres://u@h/db?sslrootcert=", "sslrootcert"),
        ] {
            let err = split(conn).unwrap_err().to_string();
            assert!(err.contains(word), "{conn}: {err}");
        }
    }

    #[test]
    fn verification_needs_a_root_and_system_roots_need_verify_full() {
        let verify = |m| TlsParams {
            mode: Some(m),
            ..TlsParams::default()
        };
        for m in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let err = Tls::new(&verify(m)).err().expect("refused").to_string();
            assert!(err.contains("sslrootcert"), "{err}");
        }
        let err = Tls::new(&TlsParams {
            mode: Some(SslMode::Require),
            root: Some(RootCert::System),
            ..TlsParams::default()
        })
        .err()
        .expect("refused")
        .to_string();
        assert!(err.contains("verify-full"), "{err}");
        let tls = Tls::new(&TlsParams::default()).unwrap();
        assert_eq!((tls.mode(), tls.verified()), (SslMode::Prefer, false));
        assert!(
            Tls::new(&verify(SslMode::Disable))
                .unwrap()
                .connector()
                .is_none()
        );
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        // Not regular files: a directory, and a device that would never end.
        let others = [dir.path().to_owned(), "/dev/zero".into()];
        for path in [dir.path().join("absent.pem"), empty]
            .into_iter()
            .chain(others)
        {
            let err = Tls::new(&TlsParams {
                mode: Some(SslMode::VerifyFull),
                root: Some(RootCert::File(path.clone())),
                ..TlsParams::default()
            })
            .err()
            .expect("refused");
            assert!(matches!(err, EngineError::Invalid(_)));
            assert!(err.to_string().contains("sslrootcert"), "{err}");
        }
    }
}
