//! Each session's data rows in SQLite: one table per kind, rows in `rowid` order, the two
//! blind-index columns. The bodies of those `Store` methods (the trait impl in
//! `sqlite.rs` forwards `x` to `do_x`) and their helpers.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::vault::error::Result;
use crate::vault::store::{Index, IndexedRow, Row, Store, Table};

impl SqliteStore {
    /// The rows `sql` (`SELECT rowid, k, v …`) selects, each with its position.
    pub(super) fn positioned_rows(
        &mut self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<(i64, Row)>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get(0)?,
                Row {
                    key: r.get(1)?,
                    value: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The rows `sql` (`SELECT k, v, <index 1>, <index 2> … WHERE session = ?1`) selects,
    /// each with what it says of the two index columns.
    fn scan_with_indexes<T: rusqlite::types::FromSql>(
        &mut self,
        sql: &str,
        session: i64,
    ) -> Result<Vec<(Row, [T; 2])>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([session], indexed_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Clears the index values `idx` from every other row of the session: an index value
    /// names one row ([`Store::put`]). Each is looked for first: a value no other row holds
    /// (a new username, or one the row itself keeps) costs a read, not an `UPDATE` (whose
    /// statement journal and halt were most of a named peer's write). Peers of a file at
    /// schema 5 or later take theirs through the map instead (`peers.rs`, `take_peer_values`).
    pub(super) fn take_index_values(
        &mut self,
        table: Table,
        session: i64,
        key: &[u8],
        idx: [Option<&[u8]>; 2],
    ) -> Result<()> {
        let statements = [
            (
                per_table!(
                    table,
                    "SELECT 1 FROM ",
                    " WHERE session = ?1 AND i1 = ?2 AND k <> ?3"
                ),
                per_table!(
                    table,
                    "UPDATE ",
                    " SET i1 = NULL WHERE session = ?1 AND i1 = ?2 AND k <> ?3"
                ),
            ),
            (
                per_table!(
                    table,
                    "SELECT 1 FROM ",
                    " WHERE session = ?1 AND i2 = ?2 AND k <> ?3"
                ),
                per_table!(
                    table,
                    "UPDATE ",
                    " SET i2 = NULL WHERE session = ?1 AND i2 = ?2 AND k <> ?3"
                ),
            ),
        ];
        for (v, (held, clear)) in idx.into_iter().zip(statements) {
            let Some(v) = v else { continue };
            if self
                .conn
                .prepare_cached(held)?
                .exists(params![session, v, key])?
            {
                self.conn
                    .prepare_cached(clear)?
                    .execute(params![session, v, key])?;
            }
        }
        Ok(())
    }

    pub(super) fn do_get(
        &mut self,
        table: Table,
        session: i64,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let sql = per_table!(table, "SELECT v FROM ", " WHERE session = ?1 AND k = ?2");
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params![session, key], |r| r.get(0))
            .optional()?)
    }

    pub(super) fn do_put(
        &mut self,
        table: Table,
        session: i64,
        row: &Row,
        idx: [Option<&[u8]>; 2],
    ) -> Result<()> {
        let sql = per_table!(
            table,
            "INSERT INTO ",
            " (session, k, v, i1, i2) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (session, k) DO UPDATE SET v = excluded.v, i1 = excluded.i1, i2 = excluded.i2"
        );
        self.take_index_values(table, session, &row.key, idx)?;
        self.conn
            .prepare_cached(sql)?
            .execute(params![session, row.key, row.value, idx[0], idx[1]])?;
        Ok(())
    }

    pub(super) fn do_insert_absent(
        &mut self,
        table: Table,
        session: i64,
        rows: &[(Row, [Option<&[u8]>; 2])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        // The insert's own uniqueness check is the one index seek a new row costs; only a
        // row that was there is read.
        let sql = per_table!(
            table,
            "INSERT INTO ",
            " (session, k, v, i1, i2) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (session, k) DO NOTHING"
        );
        let mut out = Vec::with_capacity(rows.len());
        for (row, idx) in rows {
            let inserted = self
                .conn
                .prepare_cached(sql)?
                .execute(params![session, row.key, row.value, idx[0], idx[1]])?;
            if inserted == 0 {
                out.push(self.get(table, session, &row.key)?);
                continue;
            }
            self.take_index_values(table, session, &row.key, *idx)?;
            out.push(None);
        }
        Ok(out)
    }

    pub(super) fn do_put_last(&mut self, table: Table, session: i64, row: &Row) -> Result<()> {
        // REPLACE deletes the old row and inserts a new one with a larger rowid: the row moves
        // to the end of the table's order, as grammers' MemorySession moves a channel.
        let sql = per_table!(
            table,
            "INSERT OR REPLACE INTO ",
            " (session, k, v) VALUES (?1, ?2, ?3)"
        );
        self.conn
            .prepare_cached(sql)?
            .execute(params![session, row.key, row.value])?;
        Ok(())
    }

    pub(super) fn do_scan(&mut self, table: Table, session: i64) -> Result<Vec<Row>> {
        let sql = per_table!(
            table,
            "SELECT k, v FROM ",
            " WHERE session = ?1 ORDER BY rowid"
        );
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([session], |r| {
            Ok(Row {
                key: r.get(0)?,
                value: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub(super) fn do_scan_page(
        &mut self,
        table: Table,
        session: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        // A walk down the rowid B-tree from the cursor: each page costs its own rows (and the
        // rows of other sessions interleaved with them), never a sort of the session. The
        // unary `+` keeps the planner off the `(session, k)` index, through which it would
        // read every row of the session and sort them, per page (a warm start of 100k peers
        // took 2.7 s so, 0.40-0.50 s without: the restarted-bot benchmark).
        let sql = per_table!(
            table,
            "SELECT rowid, k, v FROM ",
            " WHERE +session = ?1 AND rowid < ?2 ORDER BY rowid DESC LIMIT ?3"
        );
        self.positioned_rows(
            sql,
            params![session, before.unwrap_or(i64::MAX), i64::from(limit)],
        )
    }

    pub(super) fn do_scan_keys_after(
        &mut self,
        table: Table,
        session: i64,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        // A range of the `(session, k)` index; every key is above the empty blob.
        let sql = per_table!(
            table,
            "SELECT rowid, k, v FROM ",
            " WHERE session = ?1 AND k > ?2 ORDER BY k LIMIT ?3"
        );
        self.positioned_rows(
            sql,
            params![session, after.unwrap_or(&[]), i64::from(limit)],
        )
    }

    pub(super) fn do_scan_indexed(
        &mut self,
        table: Table,
        session: i64,
    ) -> Result<Vec<(Row, [bool; 2])>> {
        let sql = per_table!(
            table,
            "SELECT k, v, i1 IS NOT NULL, i2 IS NOT NULL FROM ",
            " WHERE session = ?1 ORDER BY rowid"
        );
        self.scan_with_indexes(sql, session)
    }

    pub(super) fn do_scan_all(&mut self, table: Table, session: i64) -> Result<Vec<IndexedRow>> {
        let sql = per_table!(
            table,
            "SELECT k, v, i1, i2 FROM ",
            " WHERE session = ?1 ORDER BY rowid"
        );
        self.scan_with_indexes(sql, session)
    }

    pub(super) fn do_clear(&mut self, table: Table, session: i64) -> Result<()> {
        let sql = per_table!(table, "DELETE FROM ", " WHERE session = ?1");
        self.conn.prepare_cached(sql)?.execute([session])?;
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
                " WHERE session = ?1 AND i1 = ?2"
            ),
            Index::Phone => per_table!(
                table,
                "SELECT k, v FROM ",
                " WHERE session = ?1 AND i2 = ?2"
            ),
        };
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params![session, value], |r| {
                Ok(Row {
                    key: r.get(0)?,
                    value: r.get(1)?,
                })
            })
            .optional()?)
    }

    pub(super) fn do_clear_some(&mut self, table: Table, session: i64, limit: u32) -> Result<u64> {
        // Table names are the store's own (`Table::name`), never a client's.
        let t = table.name();
        let sql = format!(
            "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE session = ?1 LIMIT ?2)"
        );
        let n = self
            .conn
            .prepare_cached(&sql)?
            .execute(params![session, i64::from(limit)])?;
        Ok(n as u64)
    }

    pub(super) fn do_count_up_to(&mut self, table: Table, session: i64, limit: u32) -> Result<u64> {
        let t = table.name();
        let sql = format!("SELECT count(*) FROM (SELECT 1 FROM {t} WHERE session = ?1 LIMIT ?2)");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![session, i64::from(limit)], |r| r.get::<_, i64>(0))?
            as u64)
    }

    pub(super) fn do_count(&mut self, table: Table, session: i64) -> Result<u64> {
        let sql = per_table!(table, "SELECT count(*) FROM ", " WHERE session = ?1");
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row([session], |r| r.get::<_, i64>(0))? as u64)
    }
}

/// A row read as `k, v, <index 1>, <index 2>`, with what it says of the two index columns.
pub(super) fn indexed_row<T: rusqlite::types::FromSql>(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(Row, [T; 2])> {
    Ok((
        Row {
            key: r.get(0)?,
            value: r.get(1)?,
        },
        [r.get(2)?, r.get(3)?],
    ))
}
