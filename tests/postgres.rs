//! `vaultd --store postgres://…`: the vault in a PostgreSQL database instead of `vault.db`,
//! shared by daemons with their own data dirs and sockets ("hosts"), each unlocking for
//! itself; the password only ever from a file. One cluster per test (a few seconds): these
//! tests are few; they skip with a loud message where PostgreSQL is not installed.

use session_vault_proto::message::{Request, Response};

use crate::util::pg::{Cluster, Tcp};
use crate::util::*;

mod pause;

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

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_with_their_own_dirs_share_one_postgres_vault() {
    let Some(cluster) = Cluster::start_or_skip("vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();

    // "Host" A initializes the vault and writes a session, durably.
    let a = Env::new();
    let args_a = store_args(&a, &cluster, &db);
    let (da, ca) = a.start_initialized(&refs(&args_a)).await;
    let h = open_session(&ca, "bot", true).await;
    let r = ca
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 4,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "set home dc: {r:?}");
    assert!(
        !a.vault_db().exists(),
        "no SQLite file is made beside a PostgreSQL store"
    );
    let status = ca.call(Request::Status).await;
    let shown = format!("{status:?}");
    assert!(shown.contains("postgres://svtest@"), "{shown}");
    assert!(!shown.contains(cluster.password()), "no password in status");
    drop(ca);
    da.terminate();

    // "Host" B: its own data dir and socket, the same database; it unlocks for itself (the
    // keyslots are in PostgreSQL) and reads what A wrote.
    let b = Env::new();
    let args_b = store_args(&b, &cluster, &db);
    let (db_, cb) = b.start_unlocked(&refs(&args_b)).await;
    let hb = open_session(&cb, "bot", false).await;
    let r = cb.call(Request::GetHomeDc { handle: hb }).await;
    assert!(matches!(r, Ok(Response::HomeDc(4))), "home dc on B: {r:?}");
    let log = db_.log();
    assert!(!log.contains(cluster.password()), "no password in the log");
    drop(cb);
    db_.terminate();

    // A restarts locked, and unlocks with the same passphrase.
    let (da, ca) = a.start_unlocked(&refs(&args_a)).await;
    let h = open_session(&ca, "bot", false).await;
    let r = ca.call(Request::GetHomeDc { handle: h }).await;
    assert!(matches!(r, Ok(Response::HomeDc(4))), "home dc on A: {r:?}");
    drop(ca);
    da.terminate();
}

/// `--store 'postgres://…?sslmode=verify-full&sslrootcert=CA'`: vaultd reaches PostgreSQL
/// over TCP with TLS, checks the server's certificate against the CA, and the vault works
/// over it; the server sees vaultd's connections encrypted. A CA that did not sign the
/// server's certificate, or an unknown `sslmode`, stops vaultd at startup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaultd_reaches_postgres_over_verified_tls() {
    let Some(cluster) = Cluster::start_tcp_or_skip(
        "vaultd on PostgreSQL over TLS",
        Tcp::Tls(vec!["localhost".into()]),
    ) else {
        return;
    };
    let db = cluster.create_database();
    let env = Env::new();
    let pw = env.path().join("pgpass");
    cluster.write_password_file(&pw);
    let pw = pw.display().to_string();
    let url = |ca: &std::path::Path| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            cluster.tcp_url("localhost", &db),
            ca.display()
        )
    };
    let good = url(&cluster.ca_file());
    let args = ["--store", &good, "--store-password-file", &pw];

    let (d, c) = env.start_initialized(&args).await;
    let h = open_session(&c, "bot", true).await;
    let r = c
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 5,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "set home dc: {r:?}");
    let seen = cluster.psql(
        &db,
        "SELECT count(*) || '|' || bool_and(s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'vaultd'",
    );
    let (count, all_ssl) = seen.split_once('|').expect("count|ssl");
    assert!(
        count.parse::<u32>().unwrap() >= 1,
        "vaultd is connected: {seen}"
    );
    assert_eq!(
        all_ssl, "true",
        "every vaultd connection is encrypted: {seen}"
    );
    drop(c);
    d.terminate();
    let log = d_log_checked(&env, &args).await;
    assert!(log.contains("verify-full"), "the mode is logged: {log}");
    assert!(
        !log.contains("on-path attacker"),
        "no warning for a verified channel: {log}"
    );
    assert!(!log.contains(cluster.password()), "no password in the log");

    let wrong = url(&cluster.other_ca_file());
    let (status, log) =
        Daemon::start_failing(&env, &["--store", &wrong, "--store-password-file", &pw]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cannot connect to PostgreSQL"), "{log}");
    assert!(log.contains("UnknownIssuer"), "{log}");

    let unknown = good.replace("verify-full", "verify-fully");
    let (status, log) =
        Daemon::start_failing(&env, &["--store", &unknown, "--store-password-file", &pw]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("invalid --store"), "{log}");
    assert!(
        log.contains("\"verify-fully\" is not a valid sslmode"),
        "{log}"
    );
}

/// Restarts vaultd on `args`, unlocks, reads back what the TLS test wrote; returns the log.
async fn d_log_checked(env: &Env, args: &[&str]) -> String {
    let (d, c) = env.start_unlocked(args).await;
    let h = open_session(&c, "bot", false).await;
    let r = c.call(Request::GetHomeDc { handle: h }).await;
    assert!(
        matches!(r, Ok(Response::HomeDc(5))),
        "home dc after restart: {r:?}"
    );
    drop(c);
    let log = d.log();
    d.terminate();
    log
}

/// A store reached over the network without a verified certificate is warned about at
/// startup (here `sslmode=prefer`, the default, to an unreachable documentation address:
/// the warning comes before the connection fails).
#[test]
fn an_unverified_remote_store_is_warned_about() {
    let env = Env::new();
    let pw = env.secret_file("pgpass", "not-used-pw-4a7c");
    let (status, log) = Daemon::start_failing(
        &env,
        &[
            "--store",
            "postgres://svtest@192.0.2.1:5432/vault?connect_timeout=1",
            "--store-password-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(!status.success(), "{log}");
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("on-path attacker"), "{log}");
    assert!(log.contains("sslmode=prefer"), "{log}");
    assert!(log.contains("cannot connect to PostgreSQL"), "{log}");
    assert!(!log.contains("not-used-pw-4a7c"), "{log}");
}

#[test]
fn the_password_never_comes_from_the_command_line_and_a_wrong_one_fails_clearly() {
    let Some(cluster) = Cluster::start_or_skip("vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let env = Env::new();
    let with_pw =
        cluster
            .url(&db)
            .replacen("svtest@", &format!("svtest:{}@", cluster.password()), 1);
    let (status, log) = Daemon::start_failing(&env, &["--store", &with_pw]);
    assert!(!status.success());
    assert!(log.contains("--store-password-file"), "{log}");
    assert!(
        !log.contains(cluster.password()),
        "the password is not echoed: {log}"
    );

    let wrong = env.secret_file("wrong-pw", "not-the-password");
    let (status, log) = Daemon::start_failing(
        &env,
        &[
            "--store",
            &cluster.url(&db),
            "--store-password-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(!status.success());
    assert!(log.contains("cannot connect to PostgreSQL"), "{log}");
    assert!(log.contains("password authentication failed"), "{log}");

    let (status, log) = Daemon::start_failing(&env, &["--store", "/tmp/some/file.db"]);
    assert!(!status.success());
    assert!(log.contains("postgres://"), "{log}");

    // The unit's drop-in (systemd/postgres-store.conf) names the store in the environment:
    // it is `--store`, with the same refusal of a password in it.
    let mut child = env
        .vaultd_cmd()
        .env("SESSION_VAULT_STORE", &with_pw)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vaultd");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("vaultd ignored SESSION_VAULT_STORE and started on its data dir");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("vaultd's output");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(log.contains("--store-password-file"), "{log}");
    assert!(!log.contains(cluster.password()), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_survived_without_restarting_vaultd_and_loses_no_durable_write() {
    use session_vault_proto::message::ErrorCode;
    use std::time::{Duration, Instant};

    let Some(cluster) = Cluster::start_or_skip("vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let env = Env::new();
    let args = store_args(&env, &cluster, &db);
    let (d, c) = env.start_initialized(&refs(&args)).await;
    let h = open_session(&c, "bot", true).await;
    let mut acknowledged = 0;
    for dc in 1..=5 {
        let r = c
            .call(Request::SetHomeDc {
                handle: h,
                dc_id: dc,
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "set home dc: {r:?}");
        acknowledged = dc;
    }
    let r = c.call(Request::GetHomeDc { handle: h }).await;
    assert!(
        matches!(r, Ok(Response::HomeDc(dc)) if dc == acknowledged),
        "before the restart: {r:?}"
    );

    // PostgreSQL goes down hard (as a crash: immediate shutdown, recovery at start).
    cluster.kill();
    let r = c
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 99,
        })
        .await;
    assert_eq!(
        err_code(r),
        ErrorCode::Storage,
        "a write while PostgreSQL is down"
    );

    // Back up: the same daemon and connection recover on their own.
    cluster.pg_ctl_start();
    let t = Instant::now();
    loop {
        match c
            .call(Request::SetHomeDc {
                handle: h,
                dc_id: 6,
            })
            .await
        {
            Ok(Response::Ok) => {
                acknowledged = 6;
                break;
            }
            other => {
                assert!(
                    t.elapsed() < Duration::from_secs(15),
                    "vaultd did not recover from the PostgreSQL restart: {other:?}\n{}",
                    d.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!(
        "recovered {} ms after PostgreSQL was back",
        t.elapsed().as_millis()
    );
    let r = c.call(Request::GetHomeDc { handle: h }).await;
    assert!(matches!(r, Ok(Response::HomeDc(6))), "read back: {r:?}");

    // Every acknowledged durable write is in PostgreSQL: a fresh daemon reads the last one.
    drop(c);
    d.terminate();
    cluster.kill();
    cluster.pg_ctl_start();
    let (_d, c) = env.start_unlocked(&refs(&args)).await;
    let h = open_session(&c, "bot", false).await;
    let r = c.call(Request::GetHomeDc { handle: h }).await;
    assert!(
        matches!(r, Ok(Response::HomeDc(dc)) if dc == acknowledged),
        "after a crash of PostgreSQL: {r:?}, acknowledged {acknowledged}"
    );
}

/// Exclusive opens across "hosts" (daemons with their own dirs on one database), with a
/// one-second lease expiry: busy elsewhere, naming the holder's host; a SIGKILLed holder's
/// lease lapses and another daemon takes over with every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_busy_on_other_hosts_and_taken_over_after_its_holder_dies() {
    use session_vault_proto::message::ErrorCode;
    use std::time::Duration;

    let Some(cluster) = Cluster::start_or_skip("leases across vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let (a, b, c3) = (Env::new(), Env::new(), Env::new());
    let with_expiry = |env: &Env| {
        let mut args = store_args(env, &cluster, &db);
        args.extend(["--lease-expiry".into(), "1s".into()]);
        args
    };
    let (args_a, args_b, args_c) = (with_expiry(&a), with_expiry(&b), with_expiry(&c3));
    let (da, ca) = a.start_initialized(&refs(&args_a)).await;
    let h = open_session(&ca, "bot", true).await;
    let r = ca
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 4,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let (_db, cb) = b.start_unlocked(&refs(&args_b)).await;
    let (_dc, cc) = c3.start_unlocked(&refs(&args_c)).await;

    for other in [&cb, &cc] {
        let r = other
            .call(Request::OpenSession {
                name: "bot".into(),
                exclusive: true,
                create_if_missing: false,
            })
            .await;
        let e = r.expect_err("busy on another host");
        let w = e.wire().expect("a wire error");
        assert_eq!(
            w.code,
            ErrorCode::SessionBusy {
                holder_pid: Some(std::process::id())
            }
        );
        assert!(w.message.contains("on host "), "{}", w.message);
    }

    // The holder's daemon dies; its lease lapses; B takes over within expiry + 1 s.
    drop(ca);
    da.kill();
    let (hb, took) = open_when_free(&cb, "bot", Duration::from_secs(5)).await;
    eprintln!(
        "takeover {} ms after the holder's SIGKILL (expiry 1 s)",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(2) + Duration::from_millis(500),
        "{took:?}"
    );
    let r = cb.call(Request::GetHomeDc { handle: hb }).await;
    assert!(
        matches!(r, Ok(Response::HomeDc(4))),
        "acknowledged write kept: {r:?}"
    );
    // Now C sees B as the holder.
    let r = cc
        .call(Request::OpenSession {
            name: "bot".into(),
            exclusive: true,
            create_if_missing: false,
        })
        .await;
    assert!(r.is_err(), "busy: B holds it now");
}

/// A holder paused (SIGSTOP) past its lease expiry loses the session to another daemon, and
/// once resumed its writes are refused by the database (fencing); nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_is_fenced_when_it_resumes() {
    use std::time::{Duration, Instant};

    let Some(cluster) = Cluster::start_or_skip("fencing of vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let (a, b) = (Env::new(), Env::new());
    let with_expiry = |env: &Env| {
        let mut args = store_args(env, &cluster, &db);
        args.extend(["--lease-expiry".into(), "1s".into()]);
        args
    };
    let (args_a, args_b) = (with_expiry(&a), with_expiry(&b));
    let (da, ca) = a.start_initialized(&refs(&args_a)).await;
    let h = open_session(&ca, "bot", true).await;
    let r = ca
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 4,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let (_db, cb) = b.start_unlocked(&refs(&args_b)).await;

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(da.pid() as i32, libc::SIGSTOP) };
    let t = Instant::now();
    let hb = loop {
        match cb
            .call(Request::OpenSession {
                name: "bot".into(),
                exclusive: true,
                create_if_missing: false,
            })
            .await
        {
            Ok(Response::Opened { handle, .. }) => break handle,
            _ => {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "no takeover after 5 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let r = cb
        .call(Request::SetHomeDc {
            handle: hb,
            dc_id: 5,
        })
        .await;
    assert!(
        matches!(r, Ok(Response::Ok)),
        "the new holder writes: {r:?}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(da.pid() as i32, libc::SIGCONT) };

    let r = ca
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 9,
        })
        .await;
    assert!(
        r.is_err(),
        "a resumed, lapsed holder's write is refused: {r:?}"
    );
    let r = cb.call(Request::GetHomeDc { handle: hb }).await;
    assert!(
        matches!(r, Ok(Response::HomeDc(5))),
        "the fenced write is absent: {r:?}"
    );
    drop(ca);
    drop(da);
}

/// Both daemons' `--store` arguments with a one-second lease expiry; B's with
/// `--admin-uid OTHER_UID` so that this process is an ordinary bot there.
fn two_hosts(cluster: &Cluster, db: &str, a: &Env, b: &Env) -> (Vec<String>, Vec<String>) {
    let mut args_a = store_args(a, cluster, db);
    args_a.extend(["--lease-expiry".into(), "1s".into()]);
    let mut args_b = store_args(b, cluster, db);
    args_b.extend(["--lease-expiry".into(), "1s".into()]);
    (args_a, args_b)
}

async fn names(c: &session_vault_client::Connection) -> Vec<String> {
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

/// One daemon's changes to names, ACLs and keyslots are followed by another on the same
/// database: a revoke on A ends B's handle within the 0.5 s poll (plus a round trip) and B
/// refuses new opens; sessions created, renamed and deleted on A show in B's `list` and
/// opens; a passphrase change on A leaves B serving, and B's next unlock takes the new
/// passphrase only; the audit entries both appended form one chain that verifies on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_follows_names_acls_and_keyslots_changed_by_another() {
    use session_vault_proto::message::ErrorCode;
    use session_vault_proto::model::SessionData;
    use std::time::{Duration, Instant};

    let Some(cluster) = Cluster::start_or_skip("coherence of vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let (a, b, c) = (Env::new(), Env::new(), Env::new());
    let (args_a, args_b) = two_hosts(&cluster, &db, &a, &b);
    let (_da, ca) = a.start_initialized(&refs(&args_a)).await;
    let (_db, cb) = b.start_unlocked(&refs(&args_b)).await;
    // "Host" C, where this process is an ordinary bot (another uid is the admin); it
    // unlocks unattended from a credential, as under systemd.
    let creds = c.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("vault-passphrase"), format!("{PASS}\n")).unwrap();
    let mut args_c = store_args(&c, &cluster, &db);
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
    let dc_ = Daemon::start_with_vars(
        &c,
        &refs(&args_c),
        &[("CREDENTIALS_DIRECTORY", creds.as_path())],
    );
    let cc = c.connect().await;
    let me = rustix::process::geteuid().as_raw();

    // Created on A after B and C unlocked, owned by another uid, granted to this one.
    let r = ca
        .call(Request::ImportSession {
            name: "shared".into(),
            data: SessionData::default(),
            replace: false,
            owner_uid: Some(OTHER_UID),
            force: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "import on A: {r:?}");
    let r = ca
        .call(Request::Grant {
            name: "shared".into(),
            uid: Some(me),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "grant on A: {r:?}");
    let hc = open_session(&cc, "shared", true).await;
    let r = cc.call(Request::GetHomeDc { handle: hc }).await;
    assert!(matches!(r, Ok(Response::HomeDc(_))), "granted on C: {r:?}");

    // Revoke on A: C's handle ends without any request to C in between (an idle bot):
    // C's own poll finds the change and ends it.
    let r = ca
        .call(Request::Revoke {
            name: "shared".into(),
            uid: Some(me),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "revoke on A: {r:?}");
    let t = Instant::now();
    while !dc_.log().contains("access revoked by another vaultd") {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "C did not end the revoked handle within 5 s\n{}",
            dc_.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "C's idle handle ended {} ms after A's revoke was answered (poll 500 ms)",
        t.elapsed().as_millis()
    );
    match cc.call(Request::GetHomeDc { handle: hc }).await {
        Err(e) => {
            let w = e.wire().expect("a wire error");
            assert_eq!(w.code, ErrorCode::NoSuchSession, "{}", w.message);
            assert!(w.message.contains("revoked"), "{}", w.message);
        }
        other => panic!("the revoked handle still works on C: {other:?}"),
    }
    let r = cc
        .call(Request::OpenSession {
            name: "shared".into(),
            exclusive: false,
            create_if_missing: false,
        })
        .await;
    assert!(r.is_err(), "C refuses a new open after the revoke: {r:?}");
    drop(cc);
    dc_.terminate();

    // Names: created, renamed and deleted on A, seen by B at once.
    let _h = open_session(&ca, "made-on-a", false).await;
    assert!(names(&cb).await.contains(&"made-on-a".to_owned()));
    let r = ca
        .call(Request::RenameSession {
            old: "made-on-a".into(),
            new: "renamed-on-a".into(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "rename on A: {r:?}");
    let seen = names(&cb).await;
    assert!(
        seen.contains(&"renamed-on-a".to_owned()) && !seen.contains(&"made-on-a".to_owned()),
        "{seen:?}"
    );
    let r = ca
        .call(Request::ImportSession {
            name: "mine".into(),
            data: SessionData::default(),
            replace: false,
            owner_uid: None,
            force: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "import on A: {r:?}");
    let r = ca
        .call(Request::DeleteSession {
            name: "renamed-on-a".into(),
            force: true,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "delete on A: {r:?}");
    assert!(!names(&cb).await.contains(&"renamed-on-a".to_owned()));
    let hm = open_session(&cb, "mine", false).await;

    // Passphrase changed on A: B keeps serving; after a lock, only the new one unlocks B.
    let r = ca
        .call(Request::ChangePassphrase {
            old: passphrase(PASS),
            new: passphrase("a new passphrase"),
            kdf: Some(CHEAP_KDF_SPEC),
            recovery: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "passwd on A: {r:?}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = cb.call(Request::GetHomeDc { handle: hm }).await;
    assert!(matches!(r, Ok(Response::HomeDc(_))), "B serves on: {r:?}");
    let r = cb
        .call(Request::SetHomeDc {
            handle: hm,
            dc_id: 3,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "B writes on: {r:?}");
    assert!(matches!(cb.call(Request::Lock).await, Ok(Response::Ok)));
    let old = err_code(unlock_with(&cb, PASS).await);
    assert!(
        matches!(old, ErrorCode::BadPassphrase { .. }),
        "the old passphrase no longer unlocks B: {old:?}"
    );
    // The throttle spaces attempts after a wrong one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = unlock_with(&cb, "a new passphrase").await;
    assert!(matches!(r, Ok(Response::Ok)), "the new one does: {r:?}");

    // One audit chain, appended by both, verifies on both.
    let (ok_a, n_a) = audit_verdict(&a);
    let (ok_b, n_b) = audit_verdict(&b);
    assert!(ok_a && ok_b, "audit verifies on A ({ok_a}) and B ({ok_b})");
    assert!(n_a >= 8, "A's and B's acts are logged: {n_a}");
    assert!(
        n_a.abs_diff(n_b) <= 2,
        "one log: {n_a} entries on A, {n_b} on B"
    );
}

/// `rekey` on one daemon is refused while another holds a lease (naming its host); once
/// done, the other daemon, whose key no longer opens the vault, locks itself and says so,
/// and unlocks again with the passphrase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_elsewhere_is_refused_under_a_lease_and_then_locks_the_other_daemon() {
    use session_vault_proto::message::{ErrorCode, VaultState};
    use std::time::{Duration, Instant};

    let Some(cluster) = Cluster::start_or_skip("rekey across vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let (a, b) = (Env::new(), Env::new());
    let (args_a, args_b) = two_hosts(&cluster, &db, &a, &b);
    let (_da, ca) = a.start_initialized(&refs(&args_a)).await;
    let h = open_session(&ca, "bot", false).await;
    let r = ca
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 5,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let (db_, cb) = b.start_unlocked(&refs(&args_b)).await;
    let hb = open_session(&cb, "bot", true).await;

    let rekey = || Request::Rekey {
        passphrase: passphrase(PASS),
        kdf: Some(CHEAP_KDF_SPEC),
    };
    let e = ca.call(rekey()).await.expect_err("refused under B's lease");
    let w = e.wire().expect("a wire error");
    assert!(
        matches!(w.code, ErrorCode::SessionBusy { .. }),
        "{:?}: {}",
        w.code,
        w.message
    );
    assert!(w.message.contains("on host "), "{}", w.message);

    // B lets go; its lease is given back within a renewal period.
    let r = cb.call(Request::CloseSession { handle: hb }).await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let t = Instant::now();
    loop {
        match ca.call(rekey()).await {
            Ok(Response::Ok) => break,
            Err(e)
                if matches!(
                    e.wire().map(|w| &w.code),
                    Some(ErrorCode::SessionBusy { .. })
                ) =>
            {
                assert!(t.elapsed() < Duration::from_secs(5), "lease never released");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("rekey on A: {other:?}"),
        }
    }

    // B's key opens nothing now: it locks itself within a poll.
    let t = Instant::now();
    loop {
        match cb.call(Request::Status).await {
            Ok(Response::Status(s)) if s.state == VaultState::Locked => break,
            Ok(_) => {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "B did not lock itself\n{}",
                    db_.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("status on B: {other:?}"),
        }
    }
    eprintln!(
        "B locked itself {} ms after A's rekey",
        t.elapsed().as_millis()
    );
    poll_until(Duration::from_secs(5), "B logs why it locked", || {
        db_.log().contains("locked itself")
    });
    let r = unlock_with(&cb, PASS).await;
    assert!(matches!(r, Ok(Response::Ok)), "B unlocks again: {r:?}");
    let hb = open_session(&cb, "bot", false).await;
    let r = cb.call(Request::GetHomeDc { handle: hb }).await;
    assert!(
        matches!(r, Ok(Response::HomeDc(5))),
        "B reads the re-sealed rows: {r:?}"
    );
    // The audit log both appended to, re-sealed by the rekey, verifies on both.
    let (ok_a, n_a) = audit_verdict(&a);
    let (ok_b, _) = audit_verdict(&b);
    assert!(
        ok_a && ok_b,
        "audit verifies on A ({ok_a}) and B ({ok_b}), {n_a} entries"
    );
}

/// A host still holding the old key after another host's `rekey` seals nothing under it: its
/// writes are refused (the data key's id checked with each transaction) until it locks itself,
/// so every record of the vault still authenticates under the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rekey_elsewhere_a_host_with_the_old_key_writes_nothing() {
    use session_vault_proto::model::{Peer, PeerKind};

    let Some(cluster) = Cluster::start_or_skip("rekey and writes of another vaultd") else {
        return;
    };
    let db = cluster.create_database();
    let (a, b) = (Env::new(), Env::new());
    let (args_a, args_b) = two_hosts(&cluster, &db, &a, &b);
    let (_da, ca) = a.start_initialized(&refs(&args_a)).await;
    let (db_, cb) = b.start_unlocked(&refs(&args_b)).await;
    // A bot on B with a shared handle (no lease, so the rekey is not refused).
    let hb = open_session(&cb, "bot", false).await;
    let peer = |id: i64| {
        let mut p = Peer::new(PeerKind::User, id);
        p.access_hash = Some(id * 7);
        p
    };
    let cache = |id: i64| {
        cb.call(Request::CachePeers {
            handle: hb,
            peers: vec![peer(id)],
        })
    };
    assert!(
        matches!(cache(1).await, Ok(Response::Ok)),
        "B writes before"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await; // committed

    let r = ca
        .call(Request::Rekey {
            passphrase: passphrase(PASS),
            kdf: Some(CHEAP_KDF_SPEC),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "rekey on A: {r:?}");
    // At once, before B's next check (every 0.5 s) has locked it: B still holds the old key.
    let after = cache(2).await;
    let refused = match &after {
        Ok(Response::Ok) => false,
        Err(e) => {
            let m = e.wire().map(|w| w.message.clone()).unwrap_or_default();
            assert!(
                m.contains("rekeyed by another vaultd") || m.contains("locked"),
                "{e:?}"
            );
            true
        }
        other => panic!("B's write after the rekey: {other:?}"),
    };
    assert!(
        refused,
        "B's write under the old key was accepted\n{}",
        db_.log()
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Every record, B's earlier write included (re-sealed by the rekey), authenticates.
    match ca.call(Request::Verify).await {
        Ok(Response::Verified(report)) => {
            assert!(
                report.failures.is_empty(),
                "records sealed under the old key: {:?}",
                report.failures
            );
            assert!(report.peers >= 1, "B's first peer is there: {report:?}");
        }
        other => panic!("verify on A: {other:?}"),
    }
}

/// Two daemons creating the same names at the same moment: for each name exactly one
/// creates it and the other gets `name_taken` (the conflict is retried after a re-read, at
/// most three tries), never a storage error; both then list every name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_name_on_two_daemons_give_name_taken() {
    use session_vault_proto::message::ErrorCode;
    use session_vault_proto::model::SessionData;

    let Some(cluster) = Cluster::start_or_skip("conflicts across vaultd on PostgreSQL") else {
        return;
    };
    let db = cluster.create_database();
    let (a, b) = (Env::new(), Env::new());
    let (args_a, args_b) = two_hosts(&cluster, &db, &a, &b);
    let (_da, ca) = a.start_initialized(&refs(&args_a)).await;
    let (db_, cb) = b.start_unlocked(&refs(&args_b)).await;
    let create = |name: String| Request::ImportSession {
        name,
        data: SessionData::default(),
        replace: false,
        owner_uid: None,
        force: false,
    };
    let n = 12;
    let mut created = 0;
    for i in 0..n {
        let name = format!("race-{i}");
        let (ra, rb) = tokio::join!(ca.call(create(name.clone())), cb.call(create(name)));
        for r in [ra, rb] {
            match r {
                Ok(Response::Ok) => created += 1,
                Err(e) => {
                    let w = e.wire().expect("a wire error");
                    assert_eq!(w.code, ErrorCode::NameTaken, "{}\n{}", w.message, db_.log());
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(created, n, "each name created exactly once");
    let (la, lb) = (names(&ca).await, names(&cb).await);
    assert_eq!(la.len(), n);
    assert_eq!(la, lb);
}
