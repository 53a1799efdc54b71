//! `vaultd --store postgres://…`: the vault in a PostgreSQL database instead of `vault.db`,
//! shared by daemons with their own data dirs and sockets ("hosts"), each unlocking for
//! itself; the password only ever from a file. One cluster per test (a few seconds): these
//! tests are few; they skip with a loud message where PostgreSQL is not installed.
//!
//! A module per area: reaching the store ([`connection`]), what one host sees of another's
//! changes ([`coherence`]), leases across hosts ([`leases`], [`pause`]) and `rekey` with
//! other hosts running ([`rekey`]). The helpers they share are here.

use session_vault_client::Connection;
use session_vault_proto::message::{Request, Response};

use crate::util::pg::Cluster;
use crate::util::*;

mod coherence;
mod connection;
mod deletion;
mod leases;
mod pause;
mod rekey;
mod revocation;
mod row_cache;

/// `--store URL --store-password-file FILE` for `env`, the password file written there.
fn store_args(env: &Env, cluster: &Cluster, db: &str) -> Vec<String> {
    let pw = env.path().join("pgpass");
    if !pw.exists() {
        cluster.write_password_file(&pw);
    }
    vec![
        "--store".into(),
        cluster.url(db),
        "--store-password-file".into(),
        pw.display().to_string(),
    ]
}

/// [`store_args`] with a one-second `--lease-expiry`.
fn store_args_expiring(env: &Env, cluster: &Cluster, db: &str) -> Vec<String> {
    let mut args = store_args(env, cluster, db);
    args.extend(["--lease-expiry".into(), "1s".into()]);
    args
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Two hosts on one database, each with a one-second lease expiry
/// ([`store_args_expiring`]): A initialized the vault, then B started and unlocked. Fields
/// drop in order: connections, then daemons (killed), then their dirs.
struct TwoHosts {
    ca: Connection,
    cb: Connection,
    #[allow(dead_code, reason = "held for its drop, which kills host A's daemon")]
    daemon_a: Daemon,
    daemon_b: Daemon,
    a: Env,
    b: Env,
}

impl TwoHosts {
    async fn start(cluster: &Cluster, db: &str) -> TwoHosts {
        let (a, b) = (Env::new(), Env::new());
        let (daemon_a, ca) = a
            .start_initialized(&refs(&store_args_expiring(&a, cluster, db)))
            .await;
        let (daemon_b, cb) = b
            .start_unlocked(&refs(&store_args_expiring(&b, cluster, db)))
            .await;
        TwoHosts {
            ca,
            cb,
            daemon_a,
            daemon_b,
            a,
            b,
        }
    }
}

async fn names(c: &Connection) -> Vec<String> {
    match c.call(Request::ListSessions).await {
        Ok(Response::Sessions(list)) => list.into_iter().map(|s| s.summary.name).collect(),
        other => panic!("list: {other:?}"),
    }
}

/// `vaultctl audit --json` on `env`'s daemon: (verified, entries).
fn audit_verdict(env: &Env) -> (bool, u64) {
    let out = env.ctl(&["audit", "--json"]);
    let text = stdout(&out);
    let last = text.lines().last().unwrap_or_default().to_owned();
    let v: serde_json::Value = serde_json::from_str(&last)
        .unwrap_or_else(|e| panic!("audit verdict: {e}: {last}\n{}", stderr(&out)));
    (
        v["verified"].as_bool().expect("verified") && out.status.success(),
        v["entries"].as_u64().expect("entries"),
    )
}

/// "Host" C on `db`, where this process is an ordinary bot (`OTHER_UID` is C's admin): it
/// unlocks unattended from a credential at start, as under systemd. Its daemon, a connection
/// to it, and its dir.
async fn start_bot_host(cluster: &Cluster, db: &str) -> (Env, Daemon, Connection) {
    let c = Env::new();
    let creds = c.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("vault-passphrase"), format!("{PASS}\n")).unwrap();
    let mut args_c = store_args(&c, cluster, db);
    let other = OTHER_UID.to_string();
    args_c.extend(
        [
            "--admin-uid",
            &other,
            "--unlock-credential",
            "vault-passphrase",
        ]
        .map(String::from),
    );
    let daemon = Daemon::start_with_vars(
        &c,
        &refs(&args_c),
        &[("CREDENTIALS_DIRECTORY", creds.as_path())],
    );
    let cc = c.connect().await;
    (c, daemon, cc)
}

/// On an admin connection `ca`: imports an empty session `name` owned by `OTHER_UID` and
/// grants it to this process's uid, which it returns.
async fn share_with_me(ca: &Connection, name: &str) -> u32 {
    let me = rustix::process::geteuid().as_raw();
    let r = ca
        .call(Request::ImportSession {
            name: name.into(),
            data: session_vault_proto::model::SessionData::default(),
            replace: false,
            owner_uid: Some(OTHER_UID),
            force: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "import on A: {r:?}");
    let r = ca
        .call(Request::Grant {
            name: name.into(),
            uid: Some(me),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "grant on A: {r:?}");
    me
}
