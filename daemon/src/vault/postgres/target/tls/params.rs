//! The TLS parameters of a connection string: `sslmode`, `sslrootcert`, `sslcert` and
//! `sslkey` taken out of a `postgres://` URL or `key=value` pairs before tokio-postgres
//! parses it, and libpq's other `ssl…` parameters refused by name.

use std::path::PathBuf;

use super::{SslMode, invalid};
use crate::vault::error::Result;

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
