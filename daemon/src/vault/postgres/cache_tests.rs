//! The row cache's own rules, without a server: what a transaction's end leaves, the peer keys
//! as a superset, the bound.

use std::time::Duration;

use super::{RowCache, Stamp};
use crate::vault::store::Table;

const P: Table = Table::Peers;

fn leased(sessions: &[i64]) -> RowCache {
    let mut c = RowCache::default();
    for &s in sessions {
        c.taken(s, false, Stamp::now(), Duration::from_secs(60));
    }
    c
}

#[test]
fn a_commit_keeps_the_values_sent_and_forgets_the_rest_a_failed_one_forgets_all() {
    let mut c = leased(&[1]);
    c.fill(P, 1, b"a", Some(b"old a"));
    c.fill(P, 1, b"b", Some(b"old b"));
    c.fill(P, 1, b"c", Some(b"old c"));

    // a: written and sent; b: written, never sent (an operation rolled back); c: untouched.
    c.begun();
    c.wrote(P, 1, b"a");
    c.wrote(P, 1, b"b");
    assert_eq!(c.get(P, 1, b"a"), None, "a touched key is not answered");
    c.fill(P, 1, b"b", Some(b"uncommitted"));
    c.sending().row(P, 1, b"a", b"new a");
    c.committed();
    assert_eq!(c.get(P, 1, b"a"), Some(Some(b"new a".to_vec())));
    assert_eq!(
        c.get(P, 1, b"b"),
        None,
        "an unsent write's key is asked again"
    );
    assert_eq!(c.get(P, 1, b"c"), Some(Some(b"old c".to_vec())));

    // A commit whose outcome is unknown forgets what it wrote, values sent or not.
    c.begun();
    c.wrote(P, 1, b"a");
    c.sending().row(P, 1, b"a", b"maybe");
    c.commit_failed();
    assert_eq!(c.get(P, 1, b"a"), None);
    assert_eq!(c.get(P, 1, b"c"), Some(Some(b"old c".to_vec())));

    // A rollback leaves the committed rows.
    c.fill(P, 1, b"a", Some(b"new a"));
    c.begun();
    c.wrote(P, 1, b"a");
    c.rolled_back();
    assert_eq!(c.get(P, 1, b"a"), Some(Some(b"new a".to_vec())));

    // A clear in the transaction: nothing of the table answered until its end, then only
    // what was written after it.
    c.begun();
    c.cleared(P, 1);
    assert_eq!(c.get(P, 1, b"c"), None);
    c.wrote(P, 1, b"d");
    {
        let mut s = c.sending();
        s.clear(P, 1);
        s.row(P, 1, b"d", b"after the clear");
    }
    c.committed();
    assert_eq!(c.get(P, 1, b"c"), None);
    assert_eq!(c.get(P, 1, b"d"), Some(Some(b"after the clear".to_vec())));
}

#[test]
fn peer_keys_answer_absent_only_for_keys_never_written() {
    let mut c = leased(&[1]);
    assert!(c.wants_peer_keys(1));
    c.begun();
    c.wrote(P, 1, b"written before the load");
    c.set_peer_keys(1, Some([b"stored".to_vec()].into_iter().collect()));
    assert!(!c.wants_peer_keys(1));
    c.rolled_back();
    assert_eq!(c.get(P, 1, b"never"), Some(None), "known absent");
    assert_eq!(
        c.get(P, 1, b"stored"),
        None,
        "present, value unknown: asked"
    );
    assert_eq!(c.get(P, 1, b"written before the load"), None);
    // Written and the commit's outcome unknown: no longer known absent.
    c.begun();
    c.wrote(P, 1, b"k");
    c.commit_failed();
    assert_eq!(c.get(P, 1, b"k"), None);
    // Another table is never known absent this way.
    assert_eq!(c.get(Table::State, 1, b"never"), None);
    // Parked, nothing is answered; dropped, nothing is kept.
    c.given_back(1);
    assert_eq!(c.get(P, 1, b"never"), None);
    c.taken(1, true, Stamp::now(), Duration::from_secs(60));
    assert_eq!(c.get(P, 1, b"never"), Some(None), "kept across a re-take");
    c.taken(1, false, Stamp::now(), Duration::from_secs(60));
    assert_eq!(c.get(P, 1, b"never"), None, "not kept");
    // A session too large for its keys is not read again at each open, until it is cleared.
    assert!(c.wants_peer_keys(1));
    c.set_peer_keys(1, None);
    c.taken(1, false, Stamp::now(), Duration::from_secs(60));
    assert!(!c.wants_peer_keys(1));
    c.cleared(P, 1);
    assert!(c.wants_peer_keys(1));
}

#[test]
fn the_cache_stays_within_its_bound_dropping_parked_then_least_recent_sessions() {
    let mut c = RowCache::with_max_bytes(64 << 10);
    for s in 1..=3 {
        c.taken(s, false, Stamp::now(), Duration::from_secs(60));
    }
    let value = vec![7u8; 1000];
    for i in 0..20u32 {
        c.fill(P, 1, &i.to_be_bytes(), Some(&value));
        c.fill(P, 2, &i.to_be_bytes(), Some(&value));
    }
    c.given_back(2);
    assert!(c.get(P, 1, &0u32.to_be_bytes()).is_some());
    // Session 3 grows past the bound: session 2 (parked) goes first, then 1.
    for i in 0..50u32 {
        c.fill(P, 3, &i.to_be_bytes(), Some(&value));
        assert!(c.bytes() <= 64 << 10, "{} bytes", c.bytes());
    }
    c.taken(2, true, Stamp::now(), Duration::from_secs(60));
    assert!(
        c.get(P, 2, &0u32.to_be_bytes()).is_none(),
        "the parked one went"
    );
    assert!(
        c.get(P, 1, &0u32.to_be_bytes()).is_none(),
        "then the least recent"
    );
    assert!(c.get(P, 3, &49u32.to_be_bytes()).is_some());
    // One session larger than the bound keeps none of its rows rather than the bound broken.
    for i in 0..100u32 {
        c.fill(P, 3, &i.to_be_bytes(), Some(&value));
    }
    assert!(c.bytes() <= 64 << 10);
}

#[test]
fn a_lease_past_its_time_to_live_by_the_clock_is_not_answered_from() {
    let mut c = RowCache::default();
    let ttl = Duration::from_millis(50);
    c.taken(1, false, Stamp::now(), ttl);
    c.fill(P, 1, b"a", Some(b"v"));
    assert_eq!(c.get(P, 1, b"a"), Some(Some(b"v".to_vec())));
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(c.get(P, 1, b"a"), None, "expired as this host counts it");
    c.renewed(1, Stamp::now(), ttl);
    assert_eq!(c.get(P, 1, b"a"), Some(Some(b"v".to_vec())), "renewed");
    // Taken long before now (a host that slept through its lease): nothing answered.
    let a_while_ago = Stamp(Stamp::now().0.saturating_sub(Duration::from_secs(3600)));
    c.taken(2, false, a_while_ago, Duration::from_secs(60));
    c.fill(P, 2, b"a", Some(b"v"));
    assert_eq!(c.get(P, 2, b"a"), None);
    assert!(Stamp::now() >= a_while_ago);
}
