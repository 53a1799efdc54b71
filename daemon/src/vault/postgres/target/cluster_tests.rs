//! `sslmode` against a real PostgreSQL (the test cluster on a loopback TCP port, with a
//! throwaway CA): what each mode accepts and refuses, and whether the server sees the
//! connection encrypted (`pg_stat_ssl`). Skipped with a loud message without PostgreSQL.

use std::path::Path;

use super::PgTarget;
use crate::vault::error::EngineError;
use crate::vault::postgres::PostgresStore;
use crate::vault::postgres::test_cluster::{Cluster, Tcp};

/// The target for `url` with `params` appended, the password from `pw`.
fn target(url: &str, params: &str, pw: &Path) -> crate::vault::error::Result<PgTarget> {
    let sep = if params.is_empty() { "" } else { "?" };
    PgTarget::with_password_from(&format!("{url}{sep}{params}"), Some(pw))
}

/// Whether the server sees this connection encrypted.
fn encrypted(t: &PgTarget) -> Result<bool, EngineError> {
    let mut client = t.connect()?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .expect("pg_stat_ssl");
    Ok(row.get(0))
}

fn refused(t: &PgTarget) -> String {
    match encrypted(t) {
        Ok(ssl) => panic!("{} connected (ssl = {ssl})", t.display()),
        Err(e @ EngineError::Storage { .. }) => e.to_string(),
        Err(e) => panic!("not a storage error: {e}"),
    }
}

/// A server with `ssl = on` and a certificate for `localhost` only, signed by the cluster's CA.
#[test]
fn each_sslmode_against_a_tls_server() {
    let Some(cluster) =
        Cluster::start_tcp_or_skip("sslmode against TLS", Tcp::Tls(vec!["localhost".into()]))
    else {
        return;
    };
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let by_name = cluster.tcp_url("localhost", &db);
    let by_ip = cluster.tcp_url("127.0.0.1", &db);
    let ca = cluster.ca_file().display().to_string();
    let other = cluster.other_ca_file().display().to_string();

    // verify-full with the right CA and the certificate's name: encrypted, and the store
    // opens (creates its schema) over it.
    let full = target(
        &by_name,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
        &pw,
    )
    .unwrap();
    assert!(encrypted(&full).unwrap(), "verify-full is encrypted");
    PostgresStore::open(full).expect("the store over verify-full");
    // SCRAM binds itself to the TLS channel (SCRAM-SHA-256-PLUS, tls-server-end-point): a
    // connection that insists on it is accepted.
    let bound = format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require");
    assert!(encrypted(&target(&by_name, &bound, &pw).unwrap()).unwrap());

    // A CA that did not sign the server's certificate: refused under every checking mode,
    // including require and prefer with a sslrootcert (libpq's require-as-verify-ca).
    for mode in ["verify-full", "verify-ca", "require", "prefer"] {
        let t = target(
            &by_name,
            &format!("sslmode={mode}&sslrootcert={other}"),
            &pw,
        )
        .unwrap();
        let err = refused(&t);
        assert!(err.contains("TLS"), "{mode}: {err}");
        assert!(err.contains("UnknownIssuer"), "{mode}: {err}");
        assert!(err.contains(&format!("sslmode={mode}")), "{err}");
        assert!(!err.contains(cluster.password()), "{err}");
    }

    // The certificate names `localhost`, not 127.0.0.1: verify-full refuses the address,
    // verify-ca (chain only) accepts it.
    let t = target(
        &by_ip,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
        &pw,
    )
    .unwrap();
    let err = refused(&t);
    assert!(err.contains("not valid for name"), "{err}");
    let t = target(&by_ip, &format!("sslmode=verify-ca&sslrootcert={ca}"), &pw).unwrap();
    assert!(encrypted(&t).unwrap(), "verify-ca ignores the name");

    // Without a CA, require and prefer (the default) encrypt without checking; disable
    // does not encrypt.
    for params in ["sslmode=require", "sslmode=prefer", ""] {
        let t = target(&by_ip, params, &pw).unwrap();
        assert!(encrypted(&t).unwrap(), "{params:?} is encrypted");
    }
    let t = target(&by_name, "sslmode=disable", &pw).unwrap();
    assert!(!encrypted(&t).unwrap(), "disable is plain");
}

/// `sslcert`/`sslkey`: a server that wants a client certificate (`hostssl … cert`) takes
/// the one its CA signed for the user, and refuses a connection with the password alone. A
/// key others may read is refused before connecting, as libpq does.
#[test]
fn a_client_certificate_is_shown_when_given() {
    let Some(cluster) = Cluster::start_tcp_or_skip(
        "sslcert against PostgreSQL",
        Tcp::Tls(vec!["localhost".into()]),
    ) else {
        return;
    };
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    cluster.require_client_certificates();
    let url = cluster.tcp_url("localhost", &db);
    let ca = cluster.ca_file().display().to_string();
    let (cert, key) = cluster.client_cert_files();
    let verified = format!("sslmode=verify-full&sslrootcert={ca}");

    let err = refused(&target(&url, &verified, &pw).unwrap());
    assert!(
        err.contains("certificate"),
        "without a client certificate: {err}"
    );

    let with_cert = format!(
        "{verified}&sslcert={}&sslkey={}",
        cert.display(),
        key.display()
    );
    let t = PgTarget::new(&format!("{url}?{with_cert}"), None).expect("target");
    let mut client = t
        .connect()
        .expect("connects with its certificate, no password");
    let dn: String = client
        .query_one(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .expect("pg_stat_ssl")
        .get(0);
    assert!(dn.contains("svtest"), "{dn}");

    let open_key = dir.path().join("open.key");
    std::fs::copy(&key, &open_key).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let loose = format!(
        "{url}?{verified}&sslcert={}&sslkey={}",
        cert.display(),
        open_key.display()
    );
    match PgTarget::new(&loose, None) {
        Err(EngineError::Invalid(why)) => assert!(why.contains("group or world"), "{why}"),
        other => panic!("a world-readable key: {other:?}"),
    }
}

/// A server with `ssl = off`: require and stronger are refused, prefer and disable connect
/// in the clear.
#[test]
fn each_sslmode_against_a_server_without_tls() {
    let Some(cluster) = Cluster::start_tcp_or_skip("sslmode without TLS", Tcp::Plain) else {
        return;
    };
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let url = cluster.tcp_url("localhost", &db);
    // A CA file to name; the server never shows a certificate.
    let ca = dir.path().join("ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let ca = ca.display();

    for params in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let t = target(&url, &params, &pw).unwrap();
        let err = refused(&t);
        assert!(err.contains("TLS"), "{params}: {err}");
    }
    for params in ["sslmode=prefer", "sslmode=disable", ""] {
        let t = target(&url, params, &pw).unwrap();
        assert!(
            !encrypted(&t).unwrap(),
            "{params:?} is plain against ssl = off"
        );
    }
}

/// A mistake in the TLS parameters is a configuration error before any connection.
#[test]
fn a_bad_sslmode_is_a_configuration_error() {
    for url in [
        "postgres://u@localhost/db?sslmode=verify_full",
        "postgres://u@localhost/db?sslmode=verify-full",
        "postgres://u@localhost/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
        "postgres://u@localhost/db?sslcert=/etc/client.pem",
        "postgres://u@localhost/db?sslmode=require&sslcert=/nonexistent.pem&sslkey=/k.pem",
    ] {
        match PgTarget::new(url, None) {
            Err(EngineError::Invalid(why)) => assert!(why.contains("ssl"), "{url}: {why}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}
