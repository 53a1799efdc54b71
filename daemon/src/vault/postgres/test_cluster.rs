//! A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` from Debian's
//! `postgresql` package, in a temp dir, listening on a Unix socket in that dir only, or also
//! on a loopback TCP port, with or without TLS ([`Cluster::start_tcp_or_skip`]): then a
//! throwaway CA and a server certificate for the names asked for are made with `rcgen`
//! (`ca.pem`), and a second, unrelated CA (`other-ca.pem`) for tests of a wrong one.
//!
//! PostgreSQL refuses to run as root, and the tests run as root in CI: the server then runs
//! as the `postgres` account the package creates (`initdb` wants a passwd entry, so an
//! unused uid will not do) through `setpriv`, with the data dir owned by it. Run as an
//! ordinary user, it runs as that user. Password authentication
//! (`scram-sha-256`) is on, so that the password-file path is what the tests exercise.
//!
//! `fsync=off`: these tests check what reaches PostgreSQL, not what survives a power cut of
//! the test machine; a killed or restarted server still has every committed transaction
//! (the OS page cache holds it). One cluster serves a whole test group; each test takes a
//! database of its own ([`Cluster::create_database`]).
//!
//! Shared by the daemon's unit tests and the workspace integration tests (`#[path]`), so it
//! uses std, `tempfile` and `rcgen` (dev-dependencies of the daemon package) only and talks
//! SQL through `psql`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The uid and gid of the `postgres` account (from `/etc/passwd`), which the server runs as
/// when the tests run as root.
fn postgres_account() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut fields = line.split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// The database user the tests connect as.
pub const USER: &str = "svtest";

/// The directory of Debian's PostgreSQL binaries (`initdb`, `pg_ctl`, `psql`, `pg_dump`):
/// `$SESSION_VAULT_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` with `initdb`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SESSION_VAULT_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A running cluster; stopped (immediate shutdown) and deleted on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The uid and gid to run the server as (we are root), or `None`: as ourselves.
    as_other: Option<(u32, u32)>,
    password: String,
    next_db: AtomicU32,
    /// The loopback TCP port, if the cluster listens on one (with TLS if `tls`).
    tcp: Option<u16>,
    tls: bool,
}

/// How a cluster listens besides its Unix socket.
#[derive(Clone, Debug)]
pub enum Tcp {
    /// On 127.0.0.1, `ssl = off`.
    Plain,
    /// On 127.0.0.1, `ssl = on`, with a server certificate for these names (DNS names or
    /// IP addresses) signed by the cluster's CA.
    Tls(Vec<String>),
}

impl Cluster {
    /// Starts a cluster, or returns `None` after a loud message on stderr if PostgreSQL is
    /// not installed (`apt-get install postgresql`). Panics if it is installed but fails.
    pub fn start_or_skip(what: &str) -> Option<Cluster> {
        let (bin, as_other) = Cluster::prerequisites(what)?;
        Some(Cluster::start(bin, as_other, None))
    }

    /// As [`Cluster::start_or_skip`], also listening on a free loopback TCP port
    /// ([`Cluster::tcp_url`]) as `tcp` says.
    pub fn start_tcp_or_skip(what: &str, tcp: Tcp) -> Option<Cluster> {
        let (bin, as_other) = Cluster::prerequisites(what)?;
        Some(Cluster::start(bin, as_other, Some(tcp)))
    }

    /// The binaries, and whom to run the server as; `None` after a loud message if the
    /// tests cannot run a cluster here.
    fn prerequisites(what: &str) -> Option<(PathBuf, Option<(u32, u32)>)> {
        let Some(bin) = bin_dir() else {
            eprintln!(
                "\n\n*** SKIPPED {what}: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; \
                 `apt-get install postgresql`, or set SESSION_VAULT_PG_BIN) ***\n"
            );
            return None;
        };
        let as_other = if running_as_root() {
            match postgres_account() {
                Some(ids) => Some(ids),
                None => {
                    eprintln!(
                        "\n\n*** SKIPPED {what}: running as root and there is no `postgres` \
                         account to run PostgreSQL as ***\n"
                    );
                    return None;
                }
            }
        } else {
            None
        };
        Some((bin, as_other))
    }

    fn start(bin: PathBuf, as_other: Option<(u32, u32)>, tcp: Option<Tcp>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("svpg")
            .tempdir_in("/tmp")
            .expect("temp dir for PostgreSQL");
        set_mode(dir.path(), 0o755, None);
        let password = format!("pw-{:016x}", random_u64());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).expect("write the password file");
        for sub in ["data", "sock", "tls"] {
            std::fs::create_dir(dir.path().join(sub)).expect("cluster subdir");
        }
        set_mode(&dir.path().join("data"), 0o700, None);
        if let Some(ids) = as_other {
            for p in ["data", "sock", "pwfile", "tls"] {
                set_owner(&dir.path().join(p), ids);
            }
        }
        let tls = matches!(tcp, Some(Tcp::Tls(_)));
        if let Some(Tcp::Tls(names)) = &tcp {
            write_certificates(&dir.path().join("tls"), names, as_other);
        }
        let c = Cluster {
            dir,
            bin,
            as_other,
            password,
            next_db: AtomicU32::new(0),
            tcp: tcp.map(|_| free_port()),
            tls,
        };
        let data = c.data_dir();
        c.run_checked(
            c.server_cmd("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"])
                .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        );
        let _ = std::fs::remove_file(&pwfile);
        c.pg_ctl_start();
        c
    }

    /// Starts the server (again, after [`Cluster::kill`] or [`Cluster::stop`]) and waits until it
    /// accepts connections.
    pub fn pg_ctl_start(&self) {
        let mut opts = format!(
            "-k {} -c fsync=off -c full_page_writes=off \
             -c max_connections=60 -c shared_buffers=16MB",
            self.socket_dir().display()
        );
        match self.tcp {
            None => opts.push_str(" -c listen_addresses=''"),
            Some(port) => opts.push_str(&format!(" -c listen_addresses=127.0.0.1 -p {port}")),
        }
        if self.tls {
            let tls = self.dir.path().join("tls");
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c ssl_ca_file={}",
                tls.join("server.pem").display(),
                tls.join("server.key").display(),
                tls.join("ca.pem").display()
            ));
        }
        self.run_checked(
            self.server_cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir.path().join("sock/server.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
            "pg_ctl start",
        );
    }

    /// Stops the server at once (`immediate`: as a crash, recovery at the next start).
    pub fn kill(&self) {
        let _ = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The password of [`USER`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Writes the password to `path` (mode 0600), as `--store-password-file` takes it.
    pub fn write_password_file(&self, path: &Path) {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(path).expect("create the password file");
        writeln!(f, "{}", self.password).expect("write the password file");
    }

    /// A connection string for `db`, without password (the socket dir as host).
    pub fn url(&self, db: &str) -> String {
        // The socket directory, percent-encoded into the host part.
        let host: String = self
            .socket_dir()
            .to_str()
            .expect("socket dir is UTF-8")
            .replace('/', "%2F");
        format!("postgres://{USER}@{host}/{db}")
    }

    /// A connection string for `db` over TCP to `host` (which must resolve to 127.0.0.1,
    /// e.g. `localhost`), without password. Panics if the cluster has no TCP port.
    pub fn tcp_url(&self, host: &str, db: &str) -> String {
        let port = self.tcp.expect("a cluster started with start_tcp_or_skip");
        format!("postgres://{USER}@{host}:{port}/{db}")
    }

    /// The PEM file of the CA that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// The client certificate for [`USER`] (signed by the cluster's CA) and its key (mode
    /// 0600), for `sslcert` and `sslkey`.
    pub fn client_cert_files(&self) -> (PathBuf, PathBuf) {
        let tls = self.dir.path().join("tls");
        (tls.join("client.pem"), tls.join("client.key"))
    }

    /// From now on, TCP connections must show a client certificate of the cluster's CA
    /// naming the user (`hostssl … cert` in `pg_hba.conf`); the password is not asked.
    pub fn require_client_certificates(&self) {
        let hba = self.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(&hba, format!("hostssl all all 127.0.0.1/32 cert\n{old}"))
            .expect("write pg_hba.conf");
        self.run_checked(
            self.server_cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["reload"]),
            "pg_ctl reload",
        );
        // A reload is asynchronous: wait until a password-only TCP login is refused.
        for _ in 0..100 {
            let out = self
                .client_cmd("psql")
                .args(["-X", "-h", "127.0.0.1", "-d", "postgres", "-c", "SELECT 1"])
                .env("PGSSLMODE", "require")
                .output()
                .expect("psql");
            if !out.status.success() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("pg_hba.conf reload did not take effect");
    }

    /// The PEM file of a CA that signed nothing of this cluster's.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/other-ca.pem")
    }

    /// Creates a fresh, empty database and returns its name.
    pub fn create_database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("sv_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs SQL in `db` through `psql`; returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.run_checked(
            self.client_cmd("psql").args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ]),
            "psql",
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `pg_dump` of `db` (plain SQL text).
    pub fn dump(&self, db: &str) -> Vec<u8> {
        self.run_checked(
            self.client_cmd("pg_dump").args(["--no-owner", "-d", db]),
            "pg_dump",
        )
        .stdout
    }

    /// The files that hold `db`'s own tables, their TOAST tables and indexes on disk (not
    /// the system catalogs every database has), after a `CHECKPOINT` has written every
    /// committed page there.
    pub fn database_files(&self, db: &str) -> Vec<PathBuf> {
        self.psql(db, "CHECKPOINT");
        let list = self.psql(
            db,
            "SELECT pg_relation_filepath(c.oid) FROM pg_class c
             WHERE (c.relnamespace = 'public'::regnamespace
                    OR c.oid IN (SELECT reltoastrelid FROM pg_class
                                 WHERE relnamespace = 'public'::regnamespace)
                    OR c.oid IN (SELECT i.indexrelid FROM pg_index i JOIN pg_class t
                                 ON t.oid = i.indrelid AND t.oid IN (SELECT reltoastrelid
                                 FROM pg_class WHERE relnamespace = 'public'::regnamespace)))
               AND pg_relation_filepath(c.oid) IS NOT NULL",
        );
        let data = self.data_dir();
        let mut files = Vec::new();
        for rel in list.lines().filter(|l| !l.is_empty()) {
            let main = data.join(rel);
            // The main fork and its 1 GiB segments (`.1`, `.2`, …).
            for seg in 0.. {
                let p = if seg == 0 {
                    main.clone()
                } else {
                    PathBuf::from(format!("{}.{seg}", main.display()))
                };
                if !p.exists() {
                    break;
                }
                files.push(p);
            }
        }
        files
    }

    /// A client program (as this uid), with the password in its environment.
    fn client_cmd(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.args([
            "-h",
            self.socket_dir().to_str().expect("UTF-8 path"),
            "-U",
            USER,
        ])
        .args(self.tcp.map(|port| format!("--port={port}")))
        .env("PGPASSWORD", &self.password)
        .env_remove("PGSERVICE")
        .env_remove("PGHOST")
        .env_remove("PGPORT");
        c
    }

    /// A server program, as the `postgres` account when we are root.
    fn server_cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = if let Some((uid, gid)) = self.as_other {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
                .arg("--clear-groups")
                .arg(path);
            c
        } else {
            Command::new(path)
        };
        c.current_dir(self.dir.path()).env("LC_ALL", "C");
        c
    }

    fn run_checked(&self, cmd: &mut Command, what: &str) -> Output {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("sock/server.log"))
                .unwrap_or_default();
            panic!(
                "{what} failed ({}): {}{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listened on a moment ago (the kernel's pick for port 0); the small race
/// with another process taking it meanwhile would fail `pg_ctl start` loudly.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Writes `ca.pem`, `server.pem` (for `names`, signed by that CA), `server.key` (mode 0600,
/// owned by the server's account: PostgreSQL refuses a key others can read) and
/// `other-ca.pem` (an unrelated CA) into `dir`.
fn write_certificates(dir: &Path, names: &[String], as_other: Option<(u32, u32)>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca = |name: &str| {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA");
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("session-vault test CA");
    let (other, _) = ca("session-vault unrelated test CA");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(names.to_vec()).expect("server names");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("server", String::as_str),
    );
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("server certificate");
    let write = |name: &str, text: String, mode: u32| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a test certificate");
        set_mode(&path, mode, as_other);
    };
    write("ca.pem", ca_cert.pem(), 0o644);
    write("other-ca.pem", other.pem(), 0o644);
    write("server.pem", cert.pem(), 0o644);
    write("server.key", key.serialize_pem(), 0o600);

    // A client certificate for the test user, ours (not the server's) to read.
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params.distinguished_name.push(DnType::CommonName, USER);
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("client certificate");
    for (name, text, mode) in [
        ("client.pem", cert.pem(), 0o644),
        ("client.key", key.serialize_pem(), 0o600),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a client certificate");
        set_mode(&path, mode, None);
    }
}

/// Whether the tests run as root (then the server runs as the `postgres` account).
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    #[cfg(unix)]
    return unsafe { libc::geteuid() } == 0;
    #[cfg(not(unix))]
    false
}

/// Sets `path`'s mode and, given ids, its owner. Unix only: no cluster starts elsewhere (the
/// tests skip), this builds there so that the tests around it can be linted for Windows.
fn set_mode(path: &Path, mode: u32, owner: Option<(u32, u32)>) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    if let Some(ids) = owner {
        set_owner(path, ids);
    }
}

/// Gives `path` to the PostgreSQL test account (Unix only, as [`set_mode`]).
fn set_owner(path: &Path, (uid, gid): (u32, u32)) {
    #[cfg(unix)]
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to the PostgreSQL test uid");
    #[cfg(not(unix))]
    let _ = (path, uid, gid);
}

/// A seed for the password: not a secret worth a CSPRNG (a throwaway local cluster).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
