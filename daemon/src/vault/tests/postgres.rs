//! The engine suite on the PostgreSQL store: every test below, written for SQLite, runs
//! again with its vault in a fresh database of one throwaway cluster
//! ([`crate::vault::postgres::test_cluster`]), through [`with_postgres`]. Tests that read or
//! edit the SQLite file itself (crash images, tampering, file migrations, backups) stay
//! SQLite-only; the plaintext scan runs over a `pg_dump` (raw and with `bytea` decoded) and
//! the database's files in the cluster.
//!
//! One cluster for the whole group (initdb + start cost ~1–2 s); skipped with a loud message
//! when PostgreSQL is not installed.
//!
//! Beside the suite, tests of the PostgreSQL store itself, with two stores standing for two
//! daemons on one database: leases and fencing ([`fencing`]), the transaction's held writes
//! ([`held_writes`]) what one store's transactions meet of another's ([`isolation`]), and the lease holder's
//! row cache ([`row_cache`]).

use std::sync::Arc;

use super::support::with_postgres;
use crate::vault::postgres::test_cluster::Cluster;
use crate::vault::postgres::{Holder, PgTarget, PostgresStore};

mod busy;
mod fencing;
mod held_writes;
mod isolation;
mod row_cache;

/// The store-agnostic tests of the suite, by name.
const CASES: &[(&str, fn())] = &[
    (
        "bounded_jobs::a_bounded_export_read_in_pages_is_the_one_job_export",
        super::bounded_jobs::a_bounded_export_read_in_pages_is_the_one_job_export,
    ),
    (
        "bounded_jobs::a_session_keeps_at_most_64_dc_options",
        super::bounded_jobs::a_session_keeps_at_most_64_dc_options,
    ),
    (
        "bounded_jobs::replacing_a_large_session_or_its_channels_deletes_in_bounded_jobs",
        super::bounded_jobs::replacing_a_large_session_or_its_channels_deletes_in_bounded_jobs,
    ),
    (
        "roundtrip::full_session_round_trips_through_lock_and_reopen",
        super::roundtrip::full_session_round_trips_through_lock_and_reopen,
    ),
    (
        "semantics::update_state_changes_follow_memory_session",
        super::semantics::update_state_changes_follow_memory_session,
    ),
    (
        "semantics::a_state_of_many_channels_reads_back_whole_in_write_order",
        super::semantics::a_state_of_many_channels_reads_back_whole_in_write_order,
    ),
    (
        "peers::peer_pages_list_every_peer_newest_first",
        super::peers::peer_pages_list_every_peer_newest_first,
    ),
    (
        "peers::a_later_cache_of_a_peer_merges_field_by_field",
        super::peers::a_later_cache_of_a_peer_merges_field_by_field,
    ),
    (
        "peers::a_peer_cached_as_self_becomes_the_self_user",
        super::peers::a_peer_cached_as_self_becomes_the_self_user,
    ),
    (
        "peers::a_username_moved_to_another_peer_resolves_to_the_new_holder",
        super::peers::a_username_moved_to_another_peer_resolves_to_the_new_holder,
    ),
    (
        "peers::caching_peers_by_insert_first_reads_back_as_by_read_first",
        super::peers::caching_peers_by_insert_first_reads_back_as_by_read_first,
    ),
    (
        "peers::a_username_handed_over_in_one_batch_resolves_alike_by_either_write_path",
        super::peers::a_username_handed_over_in_one_batch_resolves_alike_by_either_write_path,
    ),
    (
        "durability::cache_writes_are_visible_at_once_and_durable_within_the_flush_interval",
        super::durability::cache_writes_are_visible_at_once_and_durable_within_the_flush_interval,
    ),
    (
        "durability::cache_writes_wait_for_the_timer_or_ride_along_with_a_durable_commit",
        super::durability::cache_writes_wait_for_the_timer_or_ride_along_with_a_durable_commit,
    ),
    (
        "durability::a_refused_write_leaves_nothing_behind",
        super::durability::a_refused_write_leaves_nothing_behind,
    ),
    (
        "passphrase::wrong_passphrase_is_refused_and_changes_nothing",
        super::passphrase::wrong_passphrase_is_refused_and_changes_nothing,
    ),
    (
        "passphrase::changed_passphrase_keeps_the_data_and_retires_the_old_one",
        super::passphrase::changed_passphrase_keeps_the_data_and_retires_the_old_one,
    ),
    (
        "passphrase::passphrase_change_with_a_wrong_old_passphrase_is_refused",
        super::passphrase::passphrase_change_with_a_wrong_old_passphrase_is_refused,
    ),
    (
        "passphrase::empty_passphrase_is_refused_at_init",
        super::passphrase::empty_passphrase_is_refused_at_init,
    ),
    (
        "passphrase::init_twice_is_refused",
        super::passphrase::init_twice_is_refused,
    ),
    (
        "passphrase::every_operation_is_refused_while_locked",
        super::passphrase::every_operation_is_refused_while_locked,
    ),
    (
        "passphrase::two_events_alike_while_locked_are_two_entries_after_unlock",
        super::passphrase::two_events_alike_while_locked_are_two_entries_after_unlock,
    ),
    (
        "passphrase::every_operation_is_refused_while_uninitialized",
        super::passphrase::every_operation_is_refused_while_uninitialized,
    ),
    (
        "passphrase::lookups_with_empty_keys_are_refused_while_locked",
        super::passphrase::lookups_with_empty_keys_are_refused_while_locked,
    ),
    (
        "recovery::a_second_add_replaces_the_first_key",
        super::recovery::a_second_add_replaces_the_first_key,
    ),
    (
        "recovery::forgotten_passphrase_is_replaced_with_the_recovery_key",
        super::recovery::forgotten_passphrase_is_replaced_with_the_recovery_key,
    ),
    (
        "recovery::rekey_drops_the_recovery_key",
        super::recovery::rekey_drops_the_recovery_key,
    ),
    (
        "recovery::a_removed_or_replaced_recovery_keyslot_put_back_is_corrupt",
        super::recovery::a_removed_or_replaced_recovery_keyslot_put_back_is_corrupt,
    ),
    (
        "recovery::adding_or_removing_needs_the_vault_unlocked",
        super::recovery::adding_or_removing_needs_the_vault_unlocked,
    ),
    (
        "rollback::a_manifest_rolled_back_under_newer_records_is_corrupt",
        super::rollback::a_manifest_rolled_back_under_newer_records_is_corrupt,
    ),
    (
        "plaintext::no_secret_reaches_the_disk_in_plaintext",
        super::plaintext::no_secret_reaches_the_disk_in_plaintext,
    ),
];

/// A new database of `cluster`, its name and a target for it, with the password in a file of
/// the returned temp dir (keep it while the target is used).
fn new_database(cluster: &Cluster) -> (tempfile::TempDir, String, PgTarget) {
    let db = cluster.create_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("pgpass");
    cluster.write_password_file(&pw);
    let target = PgTarget::with_password_from(&cluster.url(&db), Some(&pw)).expect("target");
    (dir, db, target)
}

/// Two stores, as two daemons would hold them, on one new database of `cluster`; the temp
/// dir holds the password file (keep it while the stores are used).
fn two_stores(cluster: &Cluster) -> (tempfile::TempDir, PostgresStore, PostgresStore) {
    let (dir, _, target) = new_database(cluster);
    let a = PostgresStore::open(target.clone()).expect("store a");
    let b = PostgresStore::open(target).expect("store b");
    (dir, a, b)
}

/// A lease holder on `host` (its instance named after it): client `pid`, uid 1000.
fn holder(host: &str, pid: u32) -> Holder {
    Holder {
        host: host.into(),
        instance: format!("{host}-instance"),
        pid: Some(pid),
        uid: Some(1000),
    }
}

#[test]
fn the_engine_suite_passes_on_postgres() {
    let Some(cluster) = Cluster::start_or_skip("the engine suite on PostgreSQL") else {
        return;
    };
    let cluster = Arc::new(cluster);
    let started = std::time::Instant::now();
    for (name, case) in CASES {
        let t = std::time::Instant::now();
        eprintln!("postgres: {name} ...");
        with_postgres(&cluster, case);
        eprintln!("postgres: {name}: ok in {} ms", t.elapsed().as_millis());
    }
    eprintln!(
        "postgres: {} cases in {:.1} s",
        CASES.len(),
        started.elapsed().as_secs_f64()
    );
}

/// See
/// `durability::acknowledged_cache_writes_survive_a_failed_commit_whose_replay_could_not_begin`.
#[test]
fn acknowledged_cache_writes_survive_a_failed_commit_whose_replay_could_not_begin_on_postgres() {
    let Some(cluster) =
        Cluster::start_or_skip("acknowledged writes after a re-apply that could not begin")
    else {
        return;
    };
    let cluster = Arc::new(cluster);
    with_postgres(
        &cluster,
        super::durability::acknowledged_cache_writes_survive_a_failed_commit_whose_replay_could_not_begin,
    );
}

/// The control of the repro above: the same failure, but a barrier job runs first once the
/// server is back (`commit` retries the re-apply before anything begins a transaction).
#[test]
fn acknowledged_cache_writes_survive_a_failed_commit_when_a_barrier_retries_the_replay() {
    let Some(cluster) = Cluster::start_or_skip("acknowledged writes re-applied by a barrier")
    else {
        return;
    };
    let cluster = Arc::new(cluster);
    with_postgres(&cluster, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(super::durability::replay_could_not_begin(true));
    });
}
