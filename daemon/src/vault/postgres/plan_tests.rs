//! The plans PostgreSQL keeps for the store's prepared statements. A statement's generic
//! plan is fixed after a few executions and reused until the table is analyzed, so a plan
//! chosen while a table was nearly empty (a new vault, before autovacuum's first analyze)
//! must stay sound once the table is large. Skipped with a loud message without PostgreSQL.

use super::PostgresStore;
use super::test_cluster::Cluster;
use crate::vault::store::{Store, Table};

fn key(i: u32) -> Vec<u8> {
    let mut k = vec![0u8; 16];
    k[..4].copy_from_slice(&i.to_be_bytes());
    k
}

/// `get_many`'s plan, cached while `peers` was empty, once the session holds 50k peers: one
/// primary-key probe per key, never a walk over the session's rows in `(session, seq)` order
/// (the plan `k = ANY($2)` got: 30–190 ms per call in the benchmark, until autovacuum
/// analyzed the table).
#[test]
fn get_many_keeps_a_primary_key_plan_once_the_table_grew() {
    let Some(cluster) = Cluster::start_or_skip("cached plans of the PostgreSQL store") else {
        return;
    };
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let target = super::PgTarget::with_password_from(&cluster.url(&db), Some(&pw)).expect("target");
    let mut store = PostgresStore::open(target).expect("store");
    store.begin().unwrap();
    let sid = store.insert_session("big", 1).unwrap();
    store.commit().unwrap();

    // The session's peers, `from..to`, written behind the store's back (not analyzed).
    let fill = |from: u32, to: u32| {
        cluster.psql(
            &db,
            &format!(
                "INSERT INTO peers (session, k, v) SELECT {sid}, \
                 int4send(i) || '\\x000000000000000000000000'::bytea, '\\x00'::bytea \
                 FROM generate_series({from}, {}) i",
                to - 1
            ),
        )
    };
    // Executed often enough while the table is small (its first hundreds of peers) for
    // PostgreSQL to settle on its generic plan (after five custom ones).
    let keys: Vec<Vec<u8>> = (0..100).map(key).collect();
    let asked: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    for round in 0..8 {
        store.get_many(Table::Peers, sid, &asked).unwrap();
        fill(100_000 + round * 100, 100_000 + (round + 1) * 100);
    }
    // Then the session grows to 50k peers, still not analyzed.
    fill(0, 50_000);
    let found = store.get_many(Table::Peers, sid, &asked).unwrap();
    assert!(found.iter().all(Option::is_some), "every key is found");

    let client = store.client().expect("connected");
    let row = client
        .query_one(
            "SELECT name, generic_plans FROM pg_prepared_statements \
             WHERE statement LIKE '%FROM peers%' AND statement LIKE '%$2%' \
             AND statement NOT LIKE '%i1%' AND statement NOT LIKE '%seq%'",
            &[],
        )
        .expect("get_many's prepared statement");
    let (name, generic): (String, i64) = (row.get(0), row.get(1));
    assert!(generic > 0, "PostgreSQL uses its generic plan ({generic})");
    let literal: Vec<String> = keys
        .iter()
        .map(|k| {
            let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
            format!("'\\x{hex}'::bytea")
        })
        .collect();
    let plan: Vec<String> = client
        .query(
            &format!(
                "EXPLAIN EXECUTE {name}({sid}, ARRAY[{}])",
                literal.join(",")
            ),
            &[],
        )
        .expect("EXPLAIN EXECUTE")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("peers_pkey"), "{plan}");
    assert!(!plan.contains("peers_order"), "{plan}");
}
