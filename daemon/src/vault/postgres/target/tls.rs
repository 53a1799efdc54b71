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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use zeroize::Zeroizing;

use super::super::super::error::{EngineError, Result};

mod verify;

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

/// Where the trusted CAs come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the platform's trusted roots.
    System,
}

/// The TLS parameters taken out of a connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsParams {
    /// `sslmode`, if given.
    pub mode: Option<SslMode>,
    /// `sslrootcert`, if given.
    pub root: Option<RootCert>,
    /// `sslcert`: the client's certificate (chain), PEM.
    pub cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's private key, PEM, unencrypted.
    pub key: Option<PathBuf>,
}

fn invalid(message: String) -> EngineError {
    EngineError::Invalid(format!("PostgreSQL TLS: {message}"))
}

/// Parameters of libpq's that tokio-postgres does not know and vaultd does not do: refused
/// by name rather than by tokio-postgres's "unknown option".
const UNSUPPORTED: &[&str] = &[
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
];

/// Takes `sslmode` and `sslrootcert` out of `conn` (a `postgres://` URL or `key=value`
/// pairs) and returns the rest, for `postgres::Config::from_str`, with what they said.
/// Malformed input the parser would refuse is passed on for it to refuse.
pub fn split(conn: &str) -> Result<(String, TlsParams)> {
    let mut params = TlsParams::default();
    let mut take = |key: &str, value: &str| -> Result<bool> {
        match key {
            "sslmode" => {
                params.mode = Some(SslMode::parse(value)?);
                Ok(true)
            }
            "sslrootcert" => {
                if value.is_empty() {
                    return Err(invalid("sslrootcert is empty".into()));
                }
                params.root = Some(if value == "system" {
                    RootCert::System
                } else {
                    RootCert::File(PathBuf::from(value))
                });
                Ok(true)
            }
            "sslcert" | "sslkey" => {
                if value.is_empty() {
                    return Err(invalid(format!("{key} is empty")));
                }
                let slot = if key == "sslcert" {
                    &mut params.cert
                } else {
                    &mut params.key
                };
                *slot = Some(PathBuf::from(value));
                Ok(true)
            }
            k if UNSUPPORTED.contains(&k) => Err(invalid(format!(
                "{k} is not supported (vaultd takes sslmode, sslrootcert, sslcert and sslkey; \
                 a client key must be unencrypted, mode 0600)"
            ))),
            _ => Ok(false),
        }
    };
    let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let Some((head, query)) = conn.split_once('?') else {
            return Ok((conn.to_owned(), params));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Ok(key), Ok(value)) = (decode(key), decode(value)) else {
                kept.push(pair);
                continue;
            };
            if !take(&key, &value)? {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            head.to_owned()
        } else {
            format!("{head}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for (key, value, span) in key_values(conn) {
            if !take(key, &value)? {
                kept.push(&conn[span]);
            }
        }
        kept.join(" ")
    };
    Ok((rest, params))
}

fn decode(s: &str) -> std::result::Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// `key = value` pairs as libpq (and tokio-postgres) read them: a value is `'quoted'` or runs
/// to the next blank, `\` escapes the next character. Each with the byte range it covers;
/// a malformed rest is returned as one pair with an empty key, for the parser to refuse.
fn key_values(s: &str) -> Vec<(&str, String, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    loop {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = it.peek() else {
            return out;
        };
        let mut key_end = start;
        while let Some((i, c)) = it.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key_end = i + c.len_utf8();
        }
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if it.next_if(|(_, c)| *c == '=').is_none() {
            out.push(("", String::new(), start..s.len()));
            return out;
        }
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let quoted = it.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let mut end = s.len();
        while let Some((i, c)) = it.next() {
            if quoted && c == '\'' {
                end = i + 1;
                break;
            }
            if !quoted && c.is_whitespace() {
                end = i;
                break;
            }
            if c == '\\' {
                if let Some((_, c2)) = it.next() {
                    value.push(c2);
                }
            } else {
                value.push(c);
            }
        }
        out.push((&s[start..key_end], value, start..end));
    }
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

fn load_roots(root: &RootCert) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(invalid(
                    "sslrootcert=system: no trusted root certificates found on this system".into(),
                ));
            }
        }
        RootCert::File(path) => {
            let certs = read_pem_certs(path, "sslrootcert")?;
            for cert in certs {
                store.add(cert).map_err(|e| {
                    invalid(format!(
                        "sslrootcert {}: a certificate is not usable as a CA: {e}",
                        path.display()
                    ))
                })?;
            }
        }
    }
    Ok(store)
}

/// The most a certificate or key file may hold: a CA bundle is a few hundred KiB at most. A
/// path naming a device or a pipe (`/dev/zero`) is refused, not read until memory runs out.
const PEM_FILE_MAX: u64 = 4 << 20;

/// The bytes of the regular file `path` (named `what` in errors), opened once: its metadata is
/// that of the file read, whatever the path names by then.
fn read_pem_file(path: &Path, what: &str) -> Result<(Zeroizing<Vec<u8>>, std::fs::Metadata)> {
    use std::io::Read;
    let cannot = |e: std::io::Error| invalid(format!("cannot read {what} {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() || meta.len() > PEM_FILE_MAX {
        return Err(invalid(format!(
            "{what} {} is not a regular file of at most {} MiB",
            path.display(),
            PEM_FILE_MAX >> 20
        )));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    // Bounded even if the file grows while it is read.
    file.take(PEM_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > PEM_FILE_MAX {
        return Err(invalid(format!(
            "{what} {} grew while read",
            path.display()
        )));
    }
    Ok((bytes, meta))
}

/// The certificates of the PEM file `path`, named `what` (the parameter) in errors.
fn read_pem_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let (bytes, _) = read_pem_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        // Not the parser's error: some of its variants quote a line of the file, and the
        // path may name a file that is not a certificate (a key, a password file).
        .map_err(|_| {
            invalid(format!(
                "{what} {} is not a PEM file of certificates",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{what} {} holds no certificate (a PEM file with BEGIN CERTIFICATE blocks)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key of `sslkey`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM, unencrypted. As libpq,
/// refused if others than its owner may read it (or, owned by root, others than its group).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let (bytes, _meta) = read_pem_file(path, "sslkey")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = _meta;
        let too_open = if meta.uid() == 0 {
            meta.mode() & 0o037 != 0
        } else {
            meta.mode() & 0o077 != 0
        };
        if too_open {
            return Err(invalid(format!(
                "sslkey {} has group or world access (mode {:o}): make it 0600 (0640 if \
                 owned by root)",
                path.display(),
                meta.mode() & 0o777
            )));
        }
    }
    // Not the parser's error: some of its variants quote a line of the file.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        invalid(format!(
            "sslkey {} is not an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        ))
    })
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
