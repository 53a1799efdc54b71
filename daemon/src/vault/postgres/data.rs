//! Each session's data rows in PostgreSQL: reads answered by the held writes where they
//! decide them, writes deferred while an operation is open, and the scans. The bodies of
//! those `Store` methods; the trait impl in `mod.rs` forwards `x` to `do_x`.

use std::collections::HashMap;

use super::errors::pg_error;
use super::rows::{data_row, positioned_row};
use super::{PostgresStore, cache};
use crate::vault::error::Result;
use crate::vault::store::{Index, IndexedRow, Row, Store, Table};

impl PostgresStore {
    pub(super) fn do_get(
        &mut self,
        table: Table,
        session: i64,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let sql = per_table!(table, "SELECT v FROM ", " WHERE session = $1 AND k = $2");
        // A row's value changes only by a write of its key or a clear of its table, so the
        // held writes answer it, or cannot change the server's answer: they stay held.
        if let Some(v) = self.held_row(table, session, key) {
            return Ok(v);
        }
        // Then the lease holder's cache of committed rows (see `cache`).
        if let Some(v) = self.cache.get(table, session, key) {
            return Ok(v);
        }
        let v: Option<Vec<u8>> = self
            .query_opt_now(sql, &[&session, &key])?
            .map(|r| r.get(0));
        self.point_reads += 1;
        self.cache.fill(table, session, key, v.as_deref());
        Ok(v)
    }

    pub(super) fn do_prepare_peers(&mut self, session: i64) -> Result<()> {
        // The peer keys of a session this daemon holds the lease of, so that a new peer is
        // known new without asking (see `cache`); once per lease, bounded.
        if !self.cache.wants_peer_keys(session) {
            return Ok(());
        }
        let rows = self.query(
            "SELECT k FROM peers WHERE session = $1 LIMIT $2",
            &[&session, &(cache::PEER_KEYS_MAX + 1)],
        )?;
        let whole = rows.len() as i64 <= cache::PEER_KEYS_MAX;
        let keys = whole.then(|| rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect());
        self.cache.set_peer_keys(session, keys);
        Ok(())
    }

    pub(super) fn do_get_many(
        &mut self,
        table: Table,
        session: i64,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.len() < 2 {
            return keys.iter().map(|k| self.get(table, session, k)).collect();
        }
        // What the deferred writes or the cache decide (as in `get`), then the rest in one
        // statement.
        let answers: Vec<Option<Option<Vec<u8>>>> = keys
            .iter()
            .map(|k| {
                self.held_row(table, session, k)
                    .or_else(|| self.cache.get(table, session, k))
            })
            .collect();
        let asked: Vec<&[u8]> = keys
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_none())
            .map(|(k, _)| *k)
            .collect();
        let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        if !asked.is_empty() {
            // One primary-key probe per key, whatever the statistics say. With
            // `k = ANY($2)`, the plan cached for this prepared statement while the table was
            // small (before PostgreSQL first analyzed it) scans the session's whole
            // `(session, seq)` index and filters on `k`, and stays cached until the table is
            // analyzed (autovacuum: a minute or more): 30–190 ms per call for a session that
            // grew to 100k peers meanwhile. A lateral subquery with `LIMIT 1` is not
            // flattened into a join, so each key is an equality on the whole primary key.
            let sql = per_table!(
                table,
                "SELECT p.k, p.v FROM unnest($2::bytea[]) AS u(k), LATERAL (SELECT k, v FROM ",
                " WHERE session = $1 AND k = u.k LIMIT 1) AS p"
            );
            // The held writes cannot change these rows (see `get`).
            let (client, stmt) = self.stmt(sql)?;
            let rows = client.query(&stmt, &[&session, &asked]).map_err(pg_error)?;
            self.point_reads += 1;
            found = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            for k in &asked {
                self.cache
                    .fill(table, session, k, found.get(*k).map(Vec::as_slice));
            }
        }
        Ok(answers
            .into_iter()
            .zip(keys)
            .map(|(a, k)| a.unwrap_or_else(|| found.get(*k).cloned()))
            .collect())
    }

    pub(super) fn do_put(
        &mut self,
        table: Table,
        session: i64,
        row: &Row,
        idx: [Option<&[u8]>; 2],
    ) -> Result<()> {
        if self.deferring() {
            self.deferred_write(session);
            self.deferred
                .writes
                .put(table, session, &row.key, &row.value, idx);
            return self.bound_held();
        }
        self.fence(session)?;
        if let Some(i1) = idx[0] {
            let sql = per_table!(
                table,
                "UPDATE ",
                " SET i1 = NULL WHERE session = $1 AND i1 = $2 AND k <> $3"
            );
            self.exec(sql, &[&session, &i1, &row.key])?;
        }
        if let Some(i2) = idx[1] {
            let sql = per_table!(
                table,
                "UPDATE ",
                " SET i2 = NULL WHERE session = $1 AND i2 = $2 AND k <> $3"
            );
            self.exec(sql, &[&session, &i2, &row.key])?;
        }
        let sql = per_table!(
            table,
            "INSERT INTO ",
            " (session, k, v, i1, i2) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (session, k) DO UPDATE SET v = excluded.v, i1 = excluded.i1, i2 = excluded.i2"
        );
        self.exec(sql, &[&session, &row.key, &row.value, &idx[0], &idx[1]])?;
        Ok(())
    }

    pub(super) fn do_insert_absent(
        &mut self,
        table: Table,
        session: i64,
        rows: &[(Row, [Option<&[u8]>; 2])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        // One read of every key (answered by the held writes where they decide it, else in
        // one round trip), then held inserts of the absent ones.
        let keys: Vec<&[u8]> = rows.iter().map(|(row, _)| &row.key[..]).collect();
        let stored = self.get_many(table, session, &keys)?;
        for ((row, indexes), value) in rows.iter().zip(&stored) {
            if value.is_none() {
                self.put(table, session, row, *indexes)?;
            }
        }
        Ok(stored)
    }

    pub(super) fn do_put_last(&mut self, table: Table, session: i64, row: &Row) -> Result<()> {
        if self.deferring() {
            self.deferred_write(session);
            self.deferred
                .writes
                .put_last(table, session, &row.key, &row.value);
            return self.bound_held();
        }
        self.fence(session)?;
        // A new `seq` moves the row to the end of the table's order, as SQLite's REPLACE
        // (delete, insert with a new rowid) does; its index columns are cleared likewise.
        let sql = per_table!(
            table,
            "INSERT INTO ",
            " (session, k, v) VALUES ($1, $2, $3)
             ON CONFLICT (session, k) DO UPDATE
             SET v = excluded.v, i1 = NULL, i2 = NULL, seq = nextval('row_seq')"
        );
        self.exec(sql, &[&session, &row.key, &row.value])?;
        Ok(())
    }

    pub(super) fn do_scan(&mut self, table: Table, session: i64) -> Result<Vec<Row>> {
        let sql = per_table!(
            table,
            "SELECT k, v FROM ",
            " WHERE session = $1 ORDER BY seq"
        );
        Ok(self.query(sql, &[&session])?.iter().map(data_row).collect())
    }

    pub(super) fn do_scan_page(
        &mut self,
        table: Table,
        session: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        // `(session, seq)` is indexed on peers and channels (the tables paged): a page is an
        // index range; on the others PostgreSQL keeps the top `limit` of the session's rows.
        let sql = per_table!(
            table,
            "SELECT seq, k, v FROM ",
            " WHERE session = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );
        let limit = i64::from(limit);
        let rows = self.query(sql, &[&session, &before.unwrap_or(i64::MAX), &limit])?;
        Ok(rows.iter().map(positioned_row).collect())
    }

    pub(super) fn do_scan_keys_after(
        &mut self,
        table: Table,
        session: i64,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        // A range of the primary key `(session, k)`; every key is above the empty one.
        let sql = per_table!(
            table,
            "SELECT seq, k, v FROM ",
            " WHERE session = $1 AND k > $2 ORDER BY k LIMIT $3"
        );
        let after: &[u8] = after.unwrap_or(&[]);
        let rows = self.query(sql, &[&session, &after, &i64::from(limit)])?;
        Ok(rows.iter().map(positioned_row).collect())
    }

    pub(super) fn do_scan_indexed(
        &mut self,
        table: Table,
        session: i64,
    ) -> Result<Vec<(Row, [bool; 2])>> {
        let sql = per_table!(
            table,
            "SELECT k, v, i1 IS NOT NULL, i2 IS NOT NULL FROM ",
            " WHERE session = $1 ORDER BY seq"
        );
        self.scan_with_indexes(sql, session)
    }

    pub(super) fn do_scan_all(&mut self, table: Table, session: i64) -> Result<Vec<IndexedRow>> {
        let sql = per_table!(
            table,
            "SELECT k, v, i1, i2 FROM ",
            " WHERE session = $1 ORDER BY seq"
        );
        self.scan_with_indexes(sql, session)
    }

    pub(super) fn do_clear(&mut self, table: Table, session: i64) -> Result<()> {
        if self.deferring() {
            self.deferred_write(session);
            self.deferred.writes.clear(table, session);
            return self.bound_held();
        }
        self.fence(session)?;
        let sql = per_table!(table, "DELETE FROM ", " WHERE session = $1");
        self.exec(sql, &[&session])?;
        Ok(())
    }

    pub(super) fn do_find(
        &mut self,
        table: Table,
        session: i64,
        index: Index,
        value: &[u8],
    ) -> Result<Option<Row>> {
        let sql = match index {
            Index::Username => per_table!(
                table,
                "SELECT k, v FROM ",
                " WHERE session = $1 AND i1 = $2"
            ),
            Index::Phone => per_table!(
                table,
                "SELECT k, v FROM ",
                " WHERE session = $1 AND i2 = $2"
            ),
        };
        Ok(self
            .query_opt(sql, &[&session, &value])?
            .as_ref()
            .map(data_row))
    }

    pub(super) fn do_count(&mut self, table: Table, session: i64) -> Result<u64> {
        let sql = per_table!(table, "SELECT count(*) FROM ", " WHERE session = $1");
        let n: i64 = self
            .query_opt(sql, &[&session])?
            .map(|r| r.get(0))
            .unwrap_or(0);
        Ok(n as u64)
    }
}
