//! The transaction's held writes (`postgres::Held`) at the PostgreSQL store: kept on the
//! client, one version per row, and sent at `COMMIT`; what they leave, and how the store
//! sends them after a failed commit.

use super::new_database;
use crate::vault::postgres::PostgresStore;
use crate::vault::postgres::test_cluster::Cluster;
use crate::vault::store::{Index, IndexedRow, Row, Store, Table};

/// One row write of [`held_writes_leave_what_the_writes_left`]'s script.
#[derive(Clone, Copy)]
enum W<'a> {
    Put(Table, usize, &'a [u8], &'a [u8], [Option<&'a [u8]>; 2]),
    PutLast(Table, usize, &'a [u8], &'a [u8]),
    Clear(Table, usize),
    Touch(usize, i64),
}

/// The transaction's held writes (`postgres::Held`): operations' row writes are kept on the
/// client, one version per row, and sent at `COMMIT`. The same script of operations, run
/// once in one transaction (held, coalesced) and once with every write sent and committed
/// on its own, leaves the same rows: values, index values (taken over by later writes of
/// other rows), row order (`seq`: first insert, `put_last` moves a row to the end, `put`
/// keeps its place), clears followed by writes, `updated_at`. Rolled-back operations leave
/// nothing, including their overwrite of a row an earlier operation wrote; a row rewritten by
/// 200 operations is held once and reaches the table as one row version.
#[test]
fn held_writes_leave_what_the_writes_left() {
    use W::*;

    let Some(cluster) = Cluster::start_or_skip("PostgreSQL held writes") else {
        return;
    };
    // The held store, and the reference one, each on a database of its own.
    let (_held_dir, held_db, held_target) = new_database(&cluster);
    let (_ref_dir, ref_db, ref_target) = new_database(&cluster);
    let (mut a, mut r) = (
        PostgresStore::open(held_target).expect("store"),
        PostgresStore::open(ref_target).expect("store"),
    );
    let mut sids = Vec::new();
    for s in [&mut a, &mut r] {
        s.begin().unwrap();
        let ids = [
            s.insert_session("one", 1).unwrap(),
            s.insert_session("two", 1).unwrap(),
        ];
        s.commit().unwrap();
        sids.push(ids);
    }
    assert_eq!(sids[0], sids[1], "the same session ids in both databases");
    let sid = sids[0];
    let apply = |s: &mut PostgresStore, w: W| match w {
        Put(t, i, k, v, idx) => s.put(
            t,
            sid[i],
            &Row {
                key: k.to_vec(),
                value: v.to_vec(),
            },
            idx,
        ),
        PutLast(t, i, k, v) => s.put_last(
            t,
            sid[i],
            &Row {
                key: k.to_vec(),
                value: v.to_vec(),
            },
        ),
        Clear(t, i) => s.clear(t, sid[i]),
        Touch(i, now) => s.touch_session(sid[i], now),
    };
    // Rows both databases have before the transaction (committed, one statement each).
    let before = [
        Put(Table::Peers, 1, b"old1", b"o1", [Some(b"u-old"), None]),
        Put(Table::Peers, 1, b"old2", b"o2", [None, Some(b"p-old")]),
        PutLast(Table::Channels, 0, b"ch-old", b"c0"),
        PutLast(Table::Channels, 0, b"ch-old2", b"c0b"),
        Put(Table::Peers, 0, b"srv", b"s0", [Some(b"u-srv"), None]),
    ];
    for s in [&mut a, &mut r] {
        s.begin().unwrap();
        for w in before {
            apply(s, w).unwrap();
        }
        s.commit().unwrap();
    }
    // (writes, whether the operation fails and is rolled back)
    let ops: Vec<(Vec<W<'static>>, bool)> = vec![
        (
            vec![
                Put(Table::Peers, 0, b"A", b"a1", [Some(b"u"), None]),
                Put(Table::Peers, 0, b"B", b"b1", [Some(b"v"), Some(b"ph")]),
            ],
            false,
        ),
        // B takes username u from A, then moves to w: A has no username any more.
        (
            vec![Put(Table::Peers, 0, b"B", b"b2", [Some(b"u"), Some(b"ph")])],
            false,
        ),
        (
            vec![
                Put(Table::Peers, 0, b"B", b"b3", [Some(b"w"), None]),
                Touch(0, 5),
            ],
            false,
        ),
        // A server row's username taken by a held row.
        (
            vec![Put(Table::Peers, 0, b"C", b"c1", [Some(b"u-srv"), None])],
            false,
        ),
        (
            vec![
                PutLast(Table::Channels, 0, b"X", b"x1"),
                PutLast(Table::Channels, 0, b"Y", b"y1"),
                PutLast(Table::Channels, 0, b"X", b"x2"),
            ],
            false,
        ),
        // Fails: overwrites A and X, clears channels, takes w: none of it stays.
        (
            vec![
                Put(Table::Peers, 0, b"A", b"bad", [Some(b"w"), None]),
                Clear(Table::Channels, 0),
                PutLast(Table::Channels, 0, b"X", b"bad"),
                Touch(0, 99),
            ],
            true,
        ),
        // A keeps its place (its first insert), Y keeps the place put_last gave it.
        (
            vec![
                Put(Table::Peers, 0, b"A", b"a2", [None, None]),
                Put(Table::Channels, 0, b"Y", b"y2", [None, None]),
            ],
            false,
        ),
        // A server row moved to the end, another rewritten in place.
        (
            vec![
                PutLast(Table::Channels, 0, b"ch-old", b"c1"),
                Put(Table::Channels, 0, b"ch-old2", b"c1b", [None, None]),
                // A held row moved to the end by a later operation.
                PutLast(Table::Channels, 0, b"Y", b"y3"),
            ],
            false,
        ),
        // Session two: its server rows cleared, then written again; one cleared after.
        (
            vec![
                Put(Table::Peers, 1, b"old1", b"o1b", [Some(b"u-old"), None]),
                Clear(Table::Peers, 1),
                Put(Table::Peers, 1, b"new", b"n1", [None, Some(b"p-old")]),
                Put(Table::Peers, 1, b"old2", b"o2b", [None, None]),
                Touch(1, 6),
            ],
            false,
        ),
        (
            vec![
                PutLast(Table::Channels, 1, b"gone", b"g"),
                Clear(Table::Channels, 1),
            ],
            false,
        ),
        (vec![PutLast(Table::Channels, 1, b"after", b"f")], false),
    ];
    let run_op = |s: &mut PostgresStore, writes: &[W], fails: bool, held: bool| {
        if held {
            s.savepoint().unwrap();
        } else {
            s.begin().unwrap();
        }
        for &w in writes {
            apply(s, w).unwrap();
        }
        match (held, fails) {
            (true, true) => s.rollback_to_savepoint().unwrap(),
            (true, false) => s.release_op().unwrap().expect("kept"),
            (false, true) => s.rollback().unwrap(),
            (false, false) => s.commit().unwrap(),
        }
    };
    a.begin().unwrap();
    for (i, (writes, fails)) in ops.iter().enumerate() {
        run_op(&mut a, writes, *fails, true);
        run_op(&mut r, writes, *fails, false);
        if i == 3 {
            // A scan inside the transaction sends what is held first.
            let rows = a.scan_all(Table::Peers, sid[0]).unwrap();
            assert_eq!(rows, r.scan_all(Table::Peers, sid[0]).unwrap());
            assert_eq!(rows[1].0.key, b"A");
            assert_eq!(rows[1].1, [None, None], "A's username was taken by B");
            assert_eq!(a.held_rows(), 0, "sent by the scan");
        }
    }
    assert!(a.held_rows() > 0, "the operations' rows are held");
    // Reads inside the transaction see the held rows.
    assert_eq!(
        a.get(Table::Peers, sid[0], b"A").unwrap().as_deref(),
        Some(&b"a2"[..])
    );
    assert_eq!(
        a.get_many(Table::Peers, sid[1], &[b"old1", b"new", b"old2"])
            .unwrap(),
        [None, Some(b"n1".to_vec()), Some(b"o2b".to_vec())]
    );
    assert_eq!(a.get(Table::Channels, sid[1], b"gone").unwrap(), None);
    // One row rewritten by 200 operations: held once.
    let held_before = a.held_rows();
    let values: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for (i, v) in values.iter().enumerate() {
        let op = [
            Put(Table::State, 0, b"hot", v, [None, None]),
            Touch(0, 10 + i as i64),
        ];
        run_op(&mut a, &op, false, true);
        run_op(&mut r, &op, false, false);
        assert_eq!(a.held_rows(), held_before + 1);
    }
    assert_eq!(
        a.get(Table::State, sid[0], b"hot").unwrap().as_deref(),
        Some(&199u32.to_be_bytes()[..])
    );
    a.commit().unwrap();
    assert_eq!(a.held_rows(), 0);

    for (i, id) in sid.into_iter().enumerate() {
        for table in [Table::Peers, Table::Channels, Table::State] {
            assert_eq!(
                a.scan_all(table, id).unwrap(),
                r.scan_all(table, id).unwrap(),
                "session {i}, table {}",
                table.name()
            );
        }
        assert_eq!(
            a.session(id).unwrap().map(|s| s.updated_at),
            r.session(id).unwrap().map(|s| s.updated_at)
        );
        for (index, value) in [
            (Index::Username, &b"u"[..]),
            (Index::Username, b"w"),
            (Index::Username, b"u-srv"),
            (Index::Username, b"u-old"),
            (Index::Phone, b"ph"),
            (Index::Phone, b"p-old"),
        ] {
            assert_eq!(
                a.find(Table::Peers, id, index, value).unwrap(),
                r.find(Table::Peers, id, index, value).unwrap()
            );
        }
    }
    // Spot checks that the script did what it says (so the comparison compares something).
    let keys = |rows: Vec<IndexedRow>| -> Vec<Vec<u8>> {
        rows.into_iter().map(|(row, _)| row.key).collect()
    };
    assert_eq!(
        keys(a.scan_all(Table::Peers, sid[0]).unwrap()),
        [&b"srv"[..], b"A", b"B", b"C"].map(<[u8]>::to_vec)
    );
    assert_eq!(
        keys(a.scan_all(Table::Channels, sid[0]).unwrap()),
        [&b"ch-old2"[..], b"X", b"ch-old", b"Y"].map(<[u8]>::to_vec)
    );
    assert_eq!(
        a.find(Table::Peers, sid[0], Index::Username, b"w")
            .unwrap()
            .map(|r| r.key),
        Some(b"B".to_vec())
    );
    assert_eq!(
        a.find(Table::Peers, sid[0], Index::Username, b"u").unwrap(),
        None
    );
    assert_eq!(
        keys(a.scan_all(Table::Channels, sid[1]).unwrap()),
        [b"after".to_vec()]
    );
    assert_eq!(a.session(sid[0]).unwrap().unwrap().updated_at, 209);
    // The hot row reached its table once: the table's first and only row version.
    let ctid = cluster.psql(&held_db, "SELECT ctid FROM state");
    assert_eq!(ctid.trim(), "(0,1)", "one version of the hot row");
    let ctid = cluster.psql(&ref_db, "SELECT ctid FROM state");
    assert_ne!(ctid.trim(), "(0,1)", "200 versions when sent one by one");

    // Many distinct rows: the transaction holds a bounded amount and sends the rest early.
    a.begin().unwrap();
    let big = vec![0x5a; 300];
    let mut most = 0;
    for i in 0..2000u32 {
        a.savepoint().unwrap();
        a.put(
            Table::SentFiles,
            sid[1],
            &Row {
                key: i.to_be_bytes().to_vec(),
                value: big.clone(),
            },
            [None, None],
        )
        .unwrap();
        a.release_op().unwrap().expect("kept");
        most = most.max(a.held_rows());
    }
    assert!(0 < most && most < 1000, "held at most {most} rows");
    a.commit().unwrap();
    assert_eq!(a.count(Table::SentFiles, sid[1]).unwrap(), 2000);
}

/// Held writes go to the server at `COMMIT`, so a write the server refuses (here a trigger)
/// fails the commit, not its operation. After a failed commit the worker re-applies the
/// acknowledged writes, each in its own operation, and drops those that fail: the store then
/// sends each operation's writes at its end, so the refused one fails alone and the others
/// commit; once a commit succeeded, writes are held again.
#[test]
fn after_a_failed_commit_each_operation_is_sent_alone_until_one_commits() {
    let Some(cluster) = Cluster::start_or_skip("PostgreSQL held writes after a failed commit")
    else {
        return;
    };
    let (_dir, db, target) = new_database(&cluster);
    let mut a = PostgresStore::open(target).expect("store");
    a.begin().unwrap();
    let sid = a.insert_session("one", 1).unwrap();
    a.commit().unwrap();
    cluster.psql(
        &db,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON state FOR EACH ROW \
         WHEN (NEW.v = '\\x706f69736f6e'::bytea) EXECUTE FUNCTION refuse()",
    );
    let op = |s: &mut PostgresStore, k: &[u8], v: &[u8]| {
        s.savepoint().unwrap();
        let row = Row {
            key: k.to_vec(),
            value: v.to_vec(),
        };
        s.put(Table::State, sid, &row, [None, None]).unwrap();
        s.release_op().unwrap()
    };
    let ops = [
        (&b"k1"[..], &b"v1"[..]),
        (b"bad", b"poison"),
        (b"k2", b"v2"),
    ];
    a.begin().unwrap();
    for (k, v) in ops {
        op(&mut a, k, v).expect("held: the server has not seen it yet");
    }
    let err = a.commit().expect_err("the refused write fails the commit");
    assert!(err.to_string().contains("injected failure"), "{err}");
    a.rollback().unwrap();
    // The worker's re-apply: each acknowledged write in its own operation.
    a.begin().unwrap();
    let kept: Vec<bool> = ops.iter().map(|(k, v)| op(&mut a, k, v).is_ok()).collect();
    assert_eq!(kept, [true, false, true], "only the refused write fails");
    assert_eq!(a.held_rows(), 0, "sent, not held");
    a.commit().expect("the others commit");
    assert_eq!(
        a.get(Table::State, sid, b"k1").unwrap(),
        Some(b"v1".to_vec())
    );
    assert_eq!(
        a.get(Table::State, sid, b"k2").unwrap(),
        Some(b"v2".to_vec())
    );
    assert_eq!(a.get(Table::State, sid, b"bad").unwrap(), None);
    // Held again after a successful commit.
    a.begin().unwrap();
    op(&mut a, b"k3", b"v3").expect("kept");
    assert_eq!(a.held_rows(), 1);
    a.commit().unwrap();
    assert_eq!(
        a.get(Table::State, sid, b"k3").unwrap(),
        Some(b"v3".to_vec())
    );
}
