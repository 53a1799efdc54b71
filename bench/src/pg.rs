//! The PostgreSQL store for `--postgres` and `--store`: a throwaway cluster of our own
//! (`initdb` + `pg_ctl` from Debian's `postgresql` package, on a Unix socket in the run's
//! directory, as the tests start one) or a database someone else runs; and the lease section:
//! the cost of an exclusive open's lease row, and the takeover time after its holder's vaultd
//! is SIGKILLed.
//!
//! Unlike the tests' cluster, this one keeps PostgreSQL's defaults for durability (`fsync`
//! on, `synchronous_commit` on): a durable write is answered after the WAL flush, as SQLite's
//! is after its fsync, so the two stores are compared doing the same work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use session_vault_client::Connection;
use session_vault_proto::message::{Request, Response};

use crate::daemon::Vaultd;
use crate::stats::{self, Summary};

/// Where the vault goes: `--store URL --store-password-file FILE` for vaultd.
#[derive(Clone, Debug)]
pub struct Store {
    /// The connection string (no password).
    pub url: String,
    /// The password file.
    pub password_file: PathBuf,
}

impl Store {
    /// vaultd's arguments for this store.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--store".into(),
            self.url.clone(),
            "--store-password-file".into(),
            self.password_file.display().to_string(),
        ]
    }
}

const USER: &str = "svbench";

/// A PostgreSQL cluster of our own; stopped (immediately) on drop.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    as_other: Option<(u32, u32)>,
    password: String,
    next_db: u32,
}

fn postgres_account() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut fields = line.split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

fn bin_dir() -> Option<PathBuf> {
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

fn random_hex() -> Result<String> {
    let mut b = [0u8; 12];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Cluster {
    /// `initdb` and `pg_ctl start` in `dir` (created), as the `postgres` account when run
    /// as root.
    pub fn start(dir: &Path) -> Result<Cluster> {
        use std::os::unix::fs::PermissionsExt;
        let bin = bin_dir().context(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; apt-get install \
             postgresql, or set SESSION_VAULT_PG_BIN)",
        )?;
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let as_other = if root {
            Some(postgres_account().context("running as root and no `postgres` account")?)
        } else {
            None
        };
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        for sub in ["data", "sock"] {
            std::fs::create_dir(dir.join(sub))?;
        }
        std::fs::set_permissions(dir.join("data"), std::fs::Permissions::from_mode(0o700))?;
        let password = random_hex()?;
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))?;
        if let Some((uid, gid)) = as_other {
            for p in ["data", "sock", "pwfile"] {
                std::os::unix::fs::chown(dir.join(p), Some(uid), Some(gid))?;
            }
        }
        let c = Cluster {
            dir: dir.to_owned(),
            bin,
            as_other,
            password,
            next_db: 0,
        };
        c.run(
            c.server_cmd("initdb")
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-U", USER, "-E", "UTF8", "--locale=C"])
                .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        )?;
        let _ = std::fs::remove_file(&pwfile);
        let opts = format!(
            "-k {} -c listen_addresses='' -c max_connections=200",
            dir.join("sock").display()
        );
        c.run(
            c.server_cmd("pg_ctl")
                .arg("-D")
                .arg(dir.join("data"))
                .arg("-l")
                .arg(dir.join("sock/server.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
            "pg_ctl start",
        )?;
        Ok(c)
    }

    /// A new empty database and the store that names it (password file in `dir`).
    pub fn new_store(&mut self, dir: &Path) -> Result<Store> {
        self.next_db += 1;
        let name = format!("svbench_{}", self.next_db);
        self.run(
            self.client_cmd("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c"])
                .arg(format!("CREATE DATABASE {name}")),
            "psql",
        )?;
        let host = self
            .dir
            .join("sock")
            .to_str()
            .context("non-UTF-8 path")?
            .replace('/', "%2F");
        let password_file = dir.join(format!("pgpass-{name}"));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&password_file)?;
            writeln!(f, "{}", self.password)?;
        }
        Ok(Store {
            url: format!("postgres://{USER}@{host}/{name}"),
            password_file,
        })
    }

    fn server_cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = match self.as_other {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
                    .arg("--clear-groups")
                    .arg(path);
                c
            }
            None => Command::new(path),
        };
        c.current_dir(&self.dir).env("LC_ALL", "C");
        c
    }

    fn client_cmd(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.arg("-h")
            .arg(self.dir.join("sock"))
            .args(["-U", USER])
            .env("PGPASSWORD", &self.password);
        c
    }

    fn run(&self, cmd: &mut Command, what: &str) -> Result<Output> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The lease section's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseResults {
    /// `--lease-expiry` of both daemons.
    pub expiry: Duration,
    /// Opening a session with `exclusive` (takes the lease row) then closing it.
    pub open_exclusive: Summary,
    /// The same without `exclusive` (no lease row): the difference is the lease's cost.
    pub open_shared: Summary,
    /// From the holder's SIGKILL to another daemon's exclusive open succeeding, each round.
    pub takeover: Vec<Duration>,
}

async fn open(c: &Connection, name: &str, exclusive: bool) -> Result<u32> {
    match c
        .call(Request::OpenSession {
            name: name.into(),
            exclusive,
            create_if_missing: true,
        })
        .await?
    {
        Response::Opened { handle, .. } => Ok(handle),
        other => bail!("open_session: {other:?}"),
    }
}

async fn close(c: &Connection, handle: u32) -> Result<()> {
    match c.call(Request::CloseSession { handle }).await? {
        Response::Ok => Ok(()),
        other => bail!("close_session: {other:?}"),
    }
}

/// Two daemons on `store`: lease acquisition cost on the first, then `rounds` takeovers
/// (the holder's vaultd SIGKILLed, the other polling every 10 ms).
pub async fn leases(
    vaultd: &Path,
    dir: &Path,
    store: &Store,
    expiry: Duration,
    opens: usize,
    rounds: usize,
) -> Result<LeaseResults> {
    let mut args = store.args();
    args.extend(["--lease-expiry".into(), format!("{}ms", expiry.as_millis())]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (da, db) = (dir.join("lease-a"), dir.join("lease-b"));
    std::fs::create_dir_all(&da)?;
    std::fs::create_dir_all(&db)?;
    let (mut a, _) = Vaultd::start(vaultd, &da, &args).await?;
    a.init(Some(crate::daemon::CHEAP_KDF)).await?;
    let (b, _) = Vaultd::start(vaultd, &db, &args).await?;
    b.unlock().await?;

    let ca = a.connect().await?;
    let mut excl = Vec::with_capacity(opens);
    let mut shared = Vec::with_capacity(opens);
    for i in 0..opens + opens / 10 {
        let t = Instant::now();
        let h = open(&ca, "lease-cost", true).await?;
        let e = t.elapsed();
        close(&ca, h).await?;
        let t = Instant::now();
        let h = open(&ca, "lease-cost", false).await?;
        let s = t.elapsed();
        close(&ca, h).await?;
        // The first tenth warms up.
        if i >= opens / 10 {
            excl.push(e.as_nanos() as u64);
            shared.push(s.as_nanos() as u64);
        }
    }
    drop(ca);

    let cb = b.connect().await?;
    let mut takeover = Vec::new();
    for round in 0..rounds {
        let name = format!("takeover-{round}");
        let ca = a.connect().await?;
        let _held = open(&ca, &name, true).await?;
        // Let a renewal pass, as for a holder that has been running a while.
        tokio::time::sleep(expiry / 2).await;
        a.kill();
        let t = Instant::now();
        loop {
            match cb
                .call(Request::OpenSession {
                    name: name.clone(),
                    exclusive: true,
                    create_if_missing: false,
                })
                .await
            {
                Ok(Response::Opened { handle, .. }) => {
                    takeover.push(t.elapsed());
                    close(&cb, handle).await?;
                    break;
                }
                _ if t.elapsed() < expiry * 4 + Duration::from_secs(5) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => bail!("no takeover after {:?}: {other:?}", t.elapsed()),
            }
        }
        drop(ca);
        a.start_again().await?;
        a.unlock().await?;
    }
    drop(cb);
    a.stop()?;
    let mut b = b;
    b.stop()?;
    Ok(LeaseResults {
        expiry,
        open_exclusive: stats::summarize(excl),
        open_shared: stats::summarize(shared),
        takeover,
    })
}
