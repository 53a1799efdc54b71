//! The PEM files of the TLS parameters: the trusted CAs (`sslrootcert`), the client's
//! certificate and key (`sslcert`, `sslkey`), each read once from a regular file of bounded
//! size.

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::{RootCert, invalid};
use crate::vault::error::Result;

pub(super) fn load_roots(root: &RootCert) -> Result<RootCertStore> {
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
pub(super) fn read_pem_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
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
pub(super) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
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
