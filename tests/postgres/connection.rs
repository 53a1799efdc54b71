//! Reaching the PostgreSQL store: over verified TLS (and a warning where the channel is not
//! verified), the password from a file only, and the same daemon riding out a restart of
//! PostgreSQL without losing an acknowledged durable write.

use std::time::{Duration, Instant};

use session_vault_proto::message::{ErrorCode, Request, Response};

use super::{refs, store_args};
use crate::util::pg::{Cluster, Tcp};
use crate::util::*;

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
    set_home_dc(&c, h, 5).await;
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
    assert_home_dc(&c, h, 5, "after restart").await;
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vaultd ignored SESSION_VAULT_STORE and started on its data dir");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("vaultd's output");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(log.contains("--store-password-file"), "{log}");
    assert!(!log.contains(cluster.password()), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_survived_without_restarting_vaultd_and_loses_no_durable_write() {
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
        set_home_dc(&c, h, dc).await;
        acknowledged = dc;
    }
    assert_home_dc(&c, h, acknowledged, "before the restart").await;

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
    assert_home_dc(&c, h, 6, "read back").await;

    // Every acknowledged durable write is in PostgreSQL: a fresh daemon reads the last one.
    drop(c);
    d.terminate();
    cluster.kill();
    cluster.pg_ctl_start();
    let (_d, c) = env.start_unlocked(&refs(&args)).await;
    let h = open_session(&c, "bot", false).await;
    assert_home_dc(&c, h, acknowledged, "after a crash of PostgreSQL").await;
}
