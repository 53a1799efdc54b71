//! `vaultd --store postgres://…`: the vault in a PostgreSQL database instead of `vault.db`,
//! shared by daemons with their own data dirs and sockets ("hosts"), each unlocking for
//! itself; the password only ever from a file. One cluster per test (a few seconds): these
//! tests are few; they skip with a loud message where PostgreSQL is not installed.

use session_vault_proto::message::{Request, Response};

use crate::util::pg::Cluster;
use crate::util::*;

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
    use std::time::{Duration, Instant};

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
            Err(e)
                if matches!(
                    e.wire().map(|w| &w.code),
                    Some(ErrorCode::SessionBusy { .. })
                ) =>
            {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "no takeover after 5 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("open on B: {other:?}"),
        }
    };
    let took = t.elapsed();
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
