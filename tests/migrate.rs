//! `vaultctl migrate-store --to postgres://…` (issue 16, item 1): a SQLite vault copied into
//! an empty PostgreSQL database as its sealed rows, in one transaction, read back before it
//! commits; a daemon started on that database unlocks with the same passphrase and serves
//! every session as it was. Refused while unlocked, into a database holding a vault, and with
//! a password in the connection string; a copy that fails midway leaves the target without a
//! vault. Skips loudly where PostgreSQL is not installed, like the other PostgreSQL tests.

use std::path::Path;

use session_vault_client::Connection;
use session_vault_proto::message::{ErrorCode, PeerQuery, Request, Response};
use session_vault_proto::model::{
    AuthKey, ChannelState, DcOption, Peer, PeerKind, SelfUser, SentFile, SessionData,
    SessionSummary, UpdatesState,
};

use crate::util::pg::{Cluster, Tcp};
use crate::util::*;

/// A session with something in every table: DC options with auth keys, peers (one with a
/// username, for the blind index), update state with channels, sent files.
fn session(seed: i64) -> SessionData {
    let mut peers = Vec::new();
    for i in 0..20 {
        let mut p = Peer::new(PeerKind::User, seed * 1_000 + i);
        p.access_hash = Some(i * 31 + seed);
        if i == 3 {
            p.username = Some(format!("user{seed}"));
            p.phone = Some(format!("+1555000{seed}"));
        }
        peers.push(p);
    }
    SessionData {
        home_dc: 2,
        dc_options: (1..=3)
            .map(|id| DcOption {
                id,
                ipv4: Some(format!("149.154.175.{}:443", 50 + id).parse().unwrap()),
                ipv6: None,
                auth_key: Some(AuthKey::new([seed as u8 + id as u8; 256])),
            })
            .collect(),
        self_user: Some(SelfUser {
            id: seed * 1_000 + 3,
            bot: false,
        }),
        peers,
        updates_state: UpdatesState {
            pts: 10 + seed as i32,
            qts: 2,
            date: 1_700_000_000,
            seq: 5,
            channels: (0..4)
                .map(|i| ChannelState {
                    id: seed * 100 + i,
                    pts: 7 + i as i32,
                })
                .collect(),
        },
        sent_files: vec![SentFile {
            md5_digest: vec![seed as u8; 16],
            file_size: 1234,
            file_type: 1,
            id: 99 + seed,
            hash: 77,
        }],
        ..SessionData::default()
    }
}

async fn export(c: &Connection, name: &str) -> SessionData {
    match c.call(Request::ExportSession { name: name.into() }).await {
        Ok(Response::SessionData(d)) => d,
        other => panic!("export {name}: {other:?}"),
    }
}

async fn summaries(c: &Connection) -> Vec<SessionSummary> {
    match c.call(Request::ListSessions).await {
        Ok(Response::Sessions(list)) => list.into_iter().map(|l| l.summary).collect(),
        other => panic!("list: {other:?}"),
    }
}

async fn audit_actions(c: &Connection) -> Vec<(u64, String)> {
    match c
        .call(Request::Audit {
            after_seq: 0,
            limit: 0,
            since: None,
            session: None,
        })
        .await
    {
        Ok(Response::AuditPage(p)) => {
            assert!(p.problems.is_empty(), "audit problems: {:?}", p.problems);
            p.entries.into_iter().map(|e| (e.seq, e.action)).collect()
        }
        other => panic!("audit: {other:?}"),
    }
}

fn migrate(env: &Env, url: &str, pw: &Path, json: bool) -> std::process::Output {
    let mut args = vec![
        "migrate-store",
        "--to",
        url,
        "--to-password-file",
        pw.to_str().unwrap(),
    ];
    if json {
        args.push("--json");
    }
    env.ctl(&args)
}

/// The rows of a vault in database `db`, counted (all 0: no vault there), or `no schema`.
fn vault_rows(cluster: &Cluster, db: &str) -> String {
    if cluster.psql(db, "SELECT to_regclass('meta') IS NULL") == "t" {
        return "no schema".into();
    }
    cluster.psql(
        db,
        "SELECT (SELECT count(*) FROM meta) || ',' || (SELECT count(*) FROM keyslots) || ',' || \
         (SELECT count(*) FROM sessions) || ',' || (SELECT count(*) FROM peers) || ',' || \
         (SELECT count(*) FROM audit)",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_vault_migrates_into_postgres_and_unlocks_there_with_the_same_passphrase() {
    let Some(cluster) = Cluster::start_or_skip("vaultctl migrate-store") else {
        return;
    };
    let db = cluster.create_database();
    let url = cluster.url(&db);

    // A SQLite vault with two sessions, a grant, a recovery key and audit entries.
    let src = Env::new();
    let pw = src.path().join("pgpass");
    cluster.write_password_file(&pw);
    let (d, c) = src.start_initialized(&[]).await;
    for (name, seed) in [("alpha", 1), ("beta", 2)] {
        let r = c
            .call(Request::ImportSession {
                name: name.into(),
                data: session(seed),
                replace: false,
                owner_uid: None,
                force: false,
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "import {name}: {r:?}");
    }
    let r = c
        .call(Request::Grant {
            name: "alpha".into(),
            uid: Some(4242),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "grant: {r:?}");
    let r = c.call(Request::AddRecoveryKey).await;
    assert!(
        matches!(r, Ok(Response::RecoveryKey(_))),
        "recovery key: {r:?}"
    );
    let before = [export(&c, "alpha").await, export(&c, "beta").await];
    let listed = summaries(&c).await;
    let audit_before = audit_actions(&c).await;
    assert!(audit_before.len() >= 4, "{audit_before:?}");

    // Refused while unlocked: nothing may write during the copy.
    let out = migrate(&src, &url, &pw, false);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unlocked"), "{}", stderr(&out));
    assert_eq!(
        vault_rows(&cluster, &db),
        "no schema",
        "refused before connecting"
    );

    // Refused with a password in the connection string, which is never echoed.
    let with_pw = url.replacen("svtest@", &format!("svtest:{}@", cluster.password()), 1);
    let out = src.ctl(&["migrate-store", "--to", &with_pw]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    assert!(
        stderr(&out).contains("holds a password"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(cluster.password()));
    assert!(!stdout(&out).contains(cluster.password()));
    // The daemon refuses it too, to a client other than vaultctl, without echoing it.
    let r = c
        .call(Request::MigrateStore {
            url: with_pw.clone(),
            password: None,
        })
        .await;
    let shown = format!("{r:?}");
    assert_eq!(err_code(r), ErrorCode::InvalidRequest);
    assert!(shown.contains("password"), "{shown}");
    assert!(!shown.contains(cluster.password()), "{shown}");

    let r = c.call(Request::Lock).await;
    assert!(matches!(r, Ok(Response::Ok)), "lock: {r:?}");
    let out = migrate(&src, &url, &pw, true);
    assert_success(&out, "vaultctl migrate-store --json");
    let info: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(info["sessions"], 2, "{info}");
    assert_eq!(info["keyslots"], 2, "passphrase and recovery key: {info}");
    // Per session: 3 DC options, 20 peers, 4 channels, 1 sent file and the state row(s).
    assert!(info["rows"].as_u64().unwrap() >= 2 * 28, "{info}");
    assert_eq!(
        info["audit_entries"],
        audit_before.len() + 4,
        "and those of `audit`, the two refused `migrate_store` and `lock`: {info}"
    );
    assert!(!stdout(&out).contains(cluster.password()));

    // Into a database that holds a vault: refused, by name.
    let out = migrate(&src, &url, &pw, false);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already holds a vault"),
        "{}",
        stderr(&out)
    );
    let log = d.log();
    assert!(!log.contains(cluster.password()), "no password in the log");
    drop(c);
    d.terminate();

    // A second daemon on the database unlocks with the same passphrase and serves it all.
    let dst = Env::new();
    let dpw = dst.path().join("pgpass");
    cluster.write_password_file(&dpw);
    let store = [
        "--store",
        url.as_str(),
        "--store-password-file",
        dpw.to_str().unwrap(),
    ];
    let (d2, c2) = dst.start_unlocked(&store).await;
    assert_eq!(export(&c2, "alpha").await, before[0]);
    assert_eq!(export(&c2, "beta").await, before[1]);
    assert_eq!(summaries(&c2).await, listed);
    let h = open_session(&c2, "beta", false).await;
    let r = c2
        .call(Request::GetPeer {
            handle: h,
            query: PeerQuery::Username("user2".into()),
        })
        .await;
    assert!(
        matches!(&r, Ok(Response::Peer(Some(p))) if p.id == 2_003),
        "the blind username index came along: {r:?}"
    );
    let audit_after = audit_actions(&c2).await;
    assert_eq!(
        audit_after[..audit_before.len()],
        audit_before[..],
        "the audit log came along, its chain intact"
    );
    match c2.call(Request::Status).await {
        Ok(Response::Status(s)) => assert_eq!(s.recovery_key, Some(true)),
        other => panic!("status: {other:?}"),
    }
    let out = dst.ctl(&["verify"]);
    assert_success(&out, "vaultctl verify on the migrated vault");
    // New sessions get fresh ids after the copied ones.
    let r = c2
        .call(Request::ImportSession {
            name: "gamma".into(),
            data: session(3),
            replace: false,
            owner_uid: None,
            force: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "a new session: {r:?}");
    assert_eq!(export(&c2, "gamma").await.peers.len(), 20);
    assert_eq!(export(&c2, "alpha").await, before[0], "no id was reused");
    drop(c2);
    d2.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_midway_leaves_the_target_without_a_vault_and_postgres_copies_too() {
    let Some(cluster) = Cluster::start_or_skip("vaultctl migrate-store") else {
        return;
    };
    let db = cluster.create_database();
    let url = cluster.url(&db);

    // The target's schema made by a daemon that never initialized a vault there; then a
    // trigger that fails the copy once the session rows are being written.
    let tmp = Env::new();
    let tpw = tmp.path().join("pgpass");
    cluster.write_password_file(&tpw);
    let d = tmp.start_with(&[
        "--store",
        &url,
        "--store-password-file",
        tpw.to_str().unwrap(),
    ]);
    tmp.assert_serving().await;
    d.terminate();
    cluster.psql(
        &db,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON peers FOR EACH ROW EXECUTE FUNCTION refuse()",
    );

    let src = Env::new();
    let pw = src.path().join("pgpass");
    cluster.write_password_file(&pw);
    let (d, c) = src.start_initialized(&[]).await;
    let r = c
        .call(Request::ImportSession {
            name: "alpha".into(),
            data: session(1),
            replace: false,
            owner_uid: None,
            force: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "import: {r:?}");
    let alpha = export(&c, "alpha").await;
    let r = c.call(Request::Lock).await;
    assert!(matches!(r, Ok(Response::Ok)), "lock: {r:?}");

    let out = migrate(&src, &url, &pw, false);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("injected failure"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        vault_rows(&cluster, &db),
        "0,0,0,0,0",
        "the header, keyslots and session written before the failure were rolled back"
    );

    // No password anywhere and no terminal to ask on: none is sent, and the server's
    // refusal is the answer.
    cluster.psql(&db, "DROP TRIGGER refuse ON peers");
    let out = src.ctl(&["migrate-store", "--to", &url]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot connect to PostgreSQL"),
        "{}",
        stderr(&out)
    );

    // The same target, the trigger gone, the password from the systemd credential: the copy
    // goes through.
    let creds = src.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    cluster.write_password_file(&creds.join("store-password"));
    let out = src
        .ctl_cmd(&["migrate-store", "--to", &url])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_success(&out, "vaultctl migrate-store");
    let text = stdout(&out);
    assert!(text.contains("sessions 1"), "{text}");
    assert!(text.contains("--store postgres://"), "{text}");
    drop(c);
    d.terminate();

    // From that PostgreSQL database into another one: the same copy, by a daemon running on
    // PostgreSQL (locked, as it starts).
    let db2 = cluster.create_database();
    let on_pg = Env::new();
    let pg_pw = on_pg.path().join("pgpass");
    cluster.write_password_file(&pg_pw);
    let store = |db: &str| {
        vec![
            "--store".to_owned(),
            cluster.url(db),
            "--store-password-file".to_owned(),
            pg_pw.display().to_string(),
        ]
    };
    let args = store(&db);
    let d = on_pg.start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = migrate(&on_pg, &cluster.url(&db2), &pg_pw, false);
    assert_success(&out, "vaultctl migrate-store from PostgreSQL");
    d.terminate();
    let args = store(&db2);
    let (d, c) = on_pg
        .start_unlocked(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert_eq!(export(&c, "alpha").await, alpha);
    drop(c);
    d.terminate();
}

/// `migrate-store --to 'postgres://…?sslmode=verify-full&sslrootcert=CA'`: the copy goes over
/// TLS checked against the CA (verify-full cannot succeed in the clear); against a CA that did
/// not sign the server's certificate it is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_goes_over_verified_tls() {
    let Some(cluster) = Cluster::start_tcp_or_skip(
        "vaultctl migrate-store over TLS",
        Tcp::Tls(vec!["localhost".into()]),
    ) else {
        return;
    };
    let db = cluster.create_database();
    let url = |ca: &Path| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            cluster.tcp_url("localhost", &db),
            ca.display()
        )
    };
    let src = Env::new();
    let pw = src.path().join("pgpass");
    cluster.write_password_file(&pw);
    let (d, c) = src.start_initialized(&[]).await;
    let r = c
        .call(Request::ImportSession {
            name: "alpha".into(),
            data: session(1),
            replace: false,
            owner_uid: None,
            force: false,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "import: {r:?}");
    let before = export(&c, "alpha").await;
    let r = c.call(Request::Lock).await;
    assert!(matches!(r, Ok(Response::Ok)), "lock: {r:?}");

    let out = migrate(&src, &url(&cluster.other_ca_file()), &pw, false);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("UnknownIssuer"), "{}", stderr(&out));
    assert_eq!(vault_rows(&cluster, &db), "no schema");

    let out = migrate(&src, &url(&cluster.ca_file()), &pw, true);
    assert_success(&out, "vaultctl migrate-store over verify-full");
    let info: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(info["sessions"], 1, "{info}");
    assert!(
        !d.log().contains(cluster.password()),
        "no password in the log"
    );
    drop(c);
    d.terminate();

    // The copy is there, and readable by a daemon on it over TLS.
    let dst = Env::new();
    let dpw = dst.path().join("pgpass");
    cluster.write_password_file(&dpw);
    let good = url(&cluster.ca_file());
    let store = [
        "--store",
        &good,
        "--store-password-file",
        dpw.to_str().unwrap(),
    ];
    let (d2, c2) = dst.start_unlocked(&store).await;
    assert_eq!(export(&c2, "alpha").await, before);
    let ssl = cluster.psql(
        &db,
        "SELECT bool_and(s.ssl)::text FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'vaultd'",
    );
    assert_eq!(ssl, "true", "vaultd's connections are encrypted");
    drop(c2);
    d2.terminate();
}
