//! `idle_in_transaction_session_timeout` against a real PostgreSQL (the test cluster): what
//! each policy leaves in force beside a role's setting, that a transaction left idle longer is
//! ended (and the store recovers), and that `migrate-store`'s read snapshot is not. Skipped
//! with a loud message without PostgreSQL.

use std::time::Duration;

use super::{IdleTimeout, InForce};
use crate::vault::error::{EngineError, StorageErrorKind};
use crate::vault::postgres::test_cluster::Cluster;
use crate::vault::postgres::{PgTarget, PostgresStore};
use crate::vault::store::Store;

/// A store on `db`, its connections applying `idle`.
fn store(cluster: &Cluster, db: &str, pw: &std::path::Path, idle: IdleTimeout) -> PostgresStore {
    let target = PgTarget::with_password_from(&cluster.url(db), Some(pw))
        .expect("target")
        .with_idle_timeout(idle);
    PostgresStore::open(target).expect("store")
}

fn in_force(s: &PostgresStore) -> (Duration, String) {
    let InForce { timeout, source } = s.idle_timeout_in_force().expect("connected").clone();
    (timeout, source)
}

/// The setting as the store's connection has it now (in or out of a transaction).
fn now(s: &mut PostgresStore) -> String {
    s.query_opt_now(
        "SELECT current_setting('idle_in_transaction_session_timeout')",
        &[],
    )
    .expect("current_setting")
    .expect("a row")
    .get(0)
}

#[test]
fn the_default_gives_way_to_the_role_and_an_explicit_value_does_not() {
    let Some(cluster) = Cluster::start_or_skip("idle_in_transaction_session_timeout policies")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let secs = Duration::from_secs;

    // Nothing set on the database's side: the default is vaultd's.
    let plain = cluster.create_database();
    let s = store(&cluster, &plain, &pw, IdleTimeout::Default(secs(7)));
    assert_eq!(in_force(&s), (secs(7), "session".into()));
    let s = store(&cluster, &plain, &pw, IdleTimeout::Unset);
    assert_eq!(in_force(&s).0, Duration::ZERO, "left as the server has it");

    // The operator set one on the role, in this database: the default keeps it.
    let set = cluster.create_database();
    cluster.psql(
        &set,
        &format!(
            "ALTER ROLE {} IN DATABASE {set} SET idle_in_transaction_session_timeout = '30s'",
            crate::vault::postgres::test_cluster::USER
        ),
    );
    let s = store(&cluster, &set, &pw, IdleTimeout::Default(secs(7)));
    assert_eq!(in_force(&s), (secs(30), "database user".into()));
    // An explicit value (`--store-idle-transaction-timeout`) wins, zero included.
    let s = store(&cluster, &set, &pw, IdleTimeout::Set(secs(2)));
    assert_eq!(in_force(&s), (secs(2), "session".into()));
    let s = store(&cluster, &set, &pw, IdleTimeout::Set(Duration::ZERO));
    assert_eq!(in_force(&s), (Duration::ZERO, "session".into()));
}

#[test]
fn an_idle_transaction_is_ended_and_the_store_recovers_but_a_snapshot_is_not() {
    let Some(cluster) = Cluster::start_or_skip("idle_in_transaction_session_timeout effects")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let db = cluster.create_database();
    let mut s = store(
        &cluster,
        &db,
        &pw,
        IdleTimeout::Set(Duration::from_millis(500)),
    );
    assert_eq!(now(&mut s), "500ms");

    // A transaction left idle past the timeout (its host paused): PostgreSQL ends the
    // session; the next statement fails as a lost connection, and nothing of it is kept.
    s.begin().unwrap();
    s.insert_session("never committed", 1).unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let err = s.sessions().expect_err("the session was ended");
    assert!(
        matches!(
            &err,
            EngineError::Storage {
                kind: StorageErrorKind::Io,
                ..
            }
        ),
        "{err}"
    );
    s.rollback().unwrap();
    assert!(s.sessions().unwrap().is_empty(), "reconnected; rolled back");
    assert_eq!(now(&mut s), "500ms", "the new connection has it too");

    // `migrate-store`'s read snapshot waits on its target between reads: never ended.
    s.begin_snapshot().unwrap();
    assert_eq!(now(&mut s), "0");
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        s.sessions().unwrap().is_empty(),
        "the snapshot is still open"
    );
    s.rollback().unwrap();
    assert_eq!(now(&mut s), "500ms", "the exemption ended with it");
}
