//! The peers table (schema version 5): rows numbered in insertion order within each session's
//! range of rowids, found by key, and since version 6 by username and phone, through the
//! in-memory map of [`super::peer_keys`]. The
//! bodies of the `Store` methods for [`Table::Peers`]; the other tables stay in `data.rs`.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::data::indexed_row;
use super::key_builds::MAP_ROWS;
use super::peer_keys::{self, Key, ReadMap, SessionKeys};
use crate::vault::error::{EngineError, Result};
use crate::vault::store::{Index, IndexedRow, Row};

/// New peer rows per `INSERT` statement of a batch: one statement's execution (step, halt,
/// reset, bindings cleared) for many rows rather than for each.
const INSERT_CHUNK: usize = 32;

/// `INSERT OR FAIL INTO peers (id, session, k, v) VALUES (?, ?, ?, ?), …` of
/// [`INSERT_CHUNK`] rows. `OR FAIL` rather than the default `ABORT`: a statement that may
/// abort after writing some of its rows makes SQLite copy every page it touches into a
/// statement journal first, to undo them alone; a failing row here fails the whole
/// operation, which the worker rolls back (transaction or savepoint) anyway.
static INSERT_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let values = vec!["(?, ?, ?, ?)"; INSERT_CHUNK].join(", ");
    format!("INSERT OR FAIL INTO peers (id, session, k, v) VALUES {values}")
});

impl SqliteStore {
    /// Keeps at most `max` peer keys in memory (tests of [`peer_keys::MAX_KEYS`]'s eviction).
    #[cfg(test)]
    pub fn set_peer_keys_max(&mut self, max: usize) {
        self.peer_keys.set_max_keys(max);
    }

    /// Session maps read, dropped to stay within the maximum, and read by an inline job (tests).
    #[cfg(test)]
    pub fn peer_maps_stats(&self) -> (u64, u64, u64) {
        let k = &self.peer_keys;
        (k.read, k.evicted, k.read_inline)
    }

    /// Session maps read elsewhere and taken, and the most rows one read here took (tests).
    #[cfg(test)]
    pub fn peer_maps_elsewhere_stats(&self) -> (u64, usize) {
        (self.peer_keys.adopted, self.peer_keys.largest_read_here)
    }

    /// Reads maps of sessions of more than `max` rows elsewhere, if that thread runs (tests).
    #[cfg(test)]
    pub fn set_peer_maps_read_here_max(&mut self, max: usize) {
        self.peer_keys.set_read_here_max(max);
    }

    /// Forgets session `session`'s map, as a look-up that found a row moved does (tests).
    #[cfg(test)]
    pub fn forget_peer_map(&mut self, session: i64) {
        self.peer_keys.forget(session);
    }

    /// The generation of maps a read elsewhere is asked for in (tests).
    #[cfg(test)]
    pub fn peer_maps_generation(&self) -> u64 {
        self.peer_keys.generation()
    }

    /// Session `session`'s map, read from the table if it is not in memory: taken from
    /// those read on another thread, or read here if the session is small or must be read
    /// here ([`PeerKeys::read_where`]); a larger one is [`EngineError::KeysNeeded`], before
    /// anything was written ([`super::key_builds`]).
    fn peer_keys(&mut self, session: i64) -> Result<&mut SessionKeys> {
        let range = peer_keys::range(session)?;
        if self.peer_keys.has(session) {
            return Ok(self.peer_keys.session(session).expect("checked above"));
        }
        if let Some(keys) = self.peer_keys.take_built(session) {
            return Ok(self.peer_keys.adopt(session, keys));
        }
        // A whole session's keys are no inline job (the map was dropped since the open
        // read it): the storage thread reads them.
        if crate::vault::worker::running_inline() {
            return Err(EngineError::NotInline);
        }
        let at_most = match self
            .peer_keys
            .read_where(session, crate::vault::worker::replaying())?
        {
            ReadMap::Whole => -1,
            ReadMap::AtMost(n) => i64::try_from(n).unwrap_or(i64::MAX - 1) + 1,
        };
        let mut stmt = self.conn.prepare_cached(MAP_ROWS)?;
        let rows = stmt.query_map(params![range.0, range.1, at_most], |r| {
            Ok((r.get(0)?, r.get(1)?, [r.get(2)?, r.get(3)?]))
        })?;
        let keys = SessionKeys::new(session, range, rows.map(|r| Ok(r?)))?;
        drop(stmt);
        if at_most >= 0 && i64::try_from(keys.rows()).unwrap_or(i64::MAX) >= at_most {
            self.peer_keys.found_large(session, keys);
            return Err(self.peer_keys.too_large(session));
        }
        Ok(self.peer_keys.insert(session, keys))
    }

    /// The rowid and value of the peer of key `k`, if the session holds it. A map entry whose
    /// row is gone or holds another key (an insert SQLite rolled back by itself) makes the
    /// map be read again, once.
    fn locate_peer(&mut self, session: i64, k: &Key) -> Result<Option<(i64, Vec<u8>)>> {
        for _ in 0..2 {
            // A map read just now (here or elsewhere) is the table's: a mismatch is damage.
            let fresh = !self.peer_keys.has(session);
            let Some(id) = self.peer_keys(session)?.get(k) else {
                return Ok(None);
            };
            let row: Option<(Vec<u8>, Vec<u8>)> = self
                .conn
                .prepare_cached("SELECT k, v FROM peers WHERE rowid = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match row {
                Some((stored, v)) if stored == k[..] => return Ok(Some((id, v))),
                _ if fresh => break,
                _ => self.peer_keys.forget(session),
            }
        }
        // Read afresh from the table, the map still named a row without that key.
        Err(EngineError::Corrupt {
            table: "peers",
            session_id: session,
            row: "(the row its key names)".into(),
            reason: "a peer row does not hold the key it is found by",
        })
    }

    /// Inserts a new peer row (the caller found none of its key) at the end of the session's
    /// range, giving it the index values `idx` ([`Self::take_peer_values`]), and into the map
    /// once the insert succeeded.
    fn insert_peer(
        &mut self,
        session: i64,
        k: Key,
        row: &Row,
        idx: [Option<&[u8]>; 2],
    ) -> Result<()> {
        let range = peer_keys::range(session)?;
        let id = self.peer_keys(session)?.next_id(range)?;
        self.take_peer_values(session, id, idx)?;
        self.conn
            .prepare_cached(
                "INSERT INTO peers (id, session, k, v, i1, i2) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![id, session, row.key, row.value, idx[0], idx[1]])?;
        // The map is in memory: read above, and nothing between could drop it.
        self.peer_keys.inserted(session, k, id);
        Ok(())
    }

    pub(super) fn peers_prepare(&mut self, session: i64) -> Result<()> {
        self.peer_keys(session).map(|_| ())
    }

    pub(super) fn peers_get(&mut self, session: i64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let k = peer_keys::key(key)?;
        Ok(self.locate_peer(session, &k)?.map(|(_, v)| v))
    }

    pub(super) fn peers_put(
        &mut self,
        session: i64,
        row: &Row,
        idx: [Option<&[u8]>; 2],
    ) -> Result<()> {
        let k = peer_keys::key(&row.key)?;
        // Located first: a look-up refused inline (its map dropped) must have written nothing.
        let found = self.locate_peer(session, &k)?;
        match found {
            Some((id, _)) => {
                self.take_peer_values(session, id, idx)?;
                self.conn
                    .prepare_cached("UPDATE peers SET v = ?2, i1 = ?3, i2 = ?4 WHERE rowid = ?1")?
                    .execute(params![id, row.value, idx[0], idx[1]])?;
                Ok(())
            }
            None => self.insert_peer(session, k, row, idx),
        }
    }

    /// Gives row `id` (stored, or about to be inserted) the index values `idx`: a value the
    /// map says another row took is cleared there, if that row still holds it. An index value
    /// names one row ([`crate::vault::store::Store::put`]); the map finds its holder without
    /// an index on the table (schema version 6).
    fn take_peer_values(&mut self, session: i64, id: i64, idx: [Option<&[u8]>; 2]) -> Result<()> {
        const CLEAR: [&str; 2] = [
            "UPDATE peers SET i1 = NULL WHERE rowid = ?1 AND i1 = ?2",
            "UPDATE peers SET i2 = NULL WHERE rowid = ?1 AND i2 = ?2",
        ];
        for (j, v) in idx.into_iter().enumerate() {
            let Some(v) = v else { continue };
            let v = peer_keys::key(v)?;
            match self.peer_keys(session)?.holder(j, &v) {
                Some(holder) if holder == id => {}
                Some(holder) => {
                    self.conn
                        .prepare_cached(CLEAR[j])?
                        .execute(params![holder, &v[..]])?;
                    self.peer_keys.value_taken(session, j, v, id);
                }
                None => self.peer_keys.value_taken(session, j, v, id),
            }
        }
        Ok(())
    }

    /// The peer row holding index value `value` of `index`, through the map: the row it
    /// names is read and checked to hold the value still (an entry whose row gave it up is
    /// dropped: then no row holds it).
    pub(super) fn peers_find(
        &mut self,
        session: i64,
        index: Index,
        value: &[u8],
    ) -> Result<Option<Row>> {
        let Ok(v) = peer_keys::key(value) else {
            return Ok(None);
        };
        let (j, sql) = match index {
            Index::Username => (0, "SELECT k, v, i1 FROM peers WHERE rowid = ?1"),
            Index::Phone => (1, "SELECT k, v, i2 FROM peers WHERE rowid = ?1"),
        };
        let Some(id) = self.peer_keys(session)?.holder(j, &v) else {
            return Ok(None);
        };
        let row = self
            .conn
            .prepare_cached(sql)?
            .query_row([id], |r| {
                let held: Option<Vec<u8>> = r.get(2)?;
                Ok((
                    Row {
                        key: r.get(0)?,
                        value: r.get(1)?,
                    },
                    held,
                ))
            })
            .optional()?;
        match row {
            Some((row, Some(held))) if held == v[..] => Ok(Some(row)),
            _ => {
                self.peer_keys.value_dropped(session, j, &v);
                Ok(None)
            }
        }
    }

    pub(super) fn peers_insert_absent(
        &mut self,
        session: i64,
        rows: &[(Row, [Option<&[u8]>; 2])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if rows.iter().any(|(_, idx)| idx.iter().any(Option::is_some)) {
            // Index values go to the last row written with them: one row at a time.
            return self.peers_insert_absent_each(session, rows);
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Every row located first (a look-up refused inline, its map dropped, writes nothing).
        let mut out = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        for (row, _) in rows {
            let k = peer_keys::key(&row.key)?;
            out.push(self.locate_peer(session, &k)?.map(|(_, v)| v));
            keys.push(k);
        }
        // The absent ones numbered in order, entered in the map and inserted. On an error the
        // map may name rows the table does not hold: it is read again at its next use.
        let written = self
            .number_absent(session, rows, keys, &mut out)
            .and_then(|new| self.insert_peer_rows(session, &new));
        if written.is_err() {
            self.peer_keys.forget(session);
        }
        written.map(|()| out)
    }

    /// Numbers the rows of `rows` that `found` says are absent, in order, and enters them in
    /// the session's map; a key given twice is numbered once, the later copies answered in
    /// `found` with the first one's value, as inserting them one at a time would.
    fn number_absent<'r>(
        &mut self,
        session: i64,
        rows: &'r [(Row, [Option<&[u8]>; 2])],
        keys: Vec<Key>,
        found: &mut [Option<Vec<u8>>],
    ) -> Result<Vec<(i64, &'r Row)>> {
        let range = peer_keys::range(session)?;
        let first = self.peer_keys(session)?.next_id(range)?;
        let mut new: Vec<(i64, &Row)> = Vec::new();
        for ((row, _), (k, found)) in rows.iter().zip(keys.into_iter().zip(found)) {
            if found.is_some() {
                continue;
            }
            match self.peer_keys.session(session).and_then(|m| m.get(&k)) {
                Some(id) if id >= first => {
                    let (_, earlier) =
                        new[usize::try_from(id - first).expect("numbered from first")];
                    *found = Some(earlier.value.clone());
                }
                Some(_) => {
                    // Located as absent, and nothing but this loop changed the map since.
                    return Err(EngineError::Corrupt {
                        table: "peers",
                        session_id: session,
                        row: String::new(),
                        reason: "a peer key found absent a moment ago is in the map",
                    });
                }
                None => {
                    let id = peer_keys::in_range(
                        first + i64::try_from(new.len()).expect("a batch fits i64"),
                        range,
                    )?;
                    self.peer_keys.inserted(session, k, id);
                    new.push((id, row));
                }
            }
        }
        Ok(new)
    }

    /// Inserts `rows` (rowid, row), [`INSERT_CHUNK`] to a statement.
    fn insert_peer_rows(&mut self, session: i64, rows: &[(i64, &Row)]) -> Result<()> {
        let mut chunks = rows.chunks_exact(INSERT_CHUNK);
        if chunks.len() > 0 {
            let mut stmt = self.conn.prepare_cached(&INSERT_MANY)?;
            for chunk in &mut chunks {
                let mut n = 0;
                for (id, row) in chunk {
                    stmt.raw_bind_parameter(n + 1, id)?;
                    stmt.raw_bind_parameter(n + 2, session)?;
                    stmt.raw_bind_parameter(n + 3, &row.key)?;
                    stmt.raw_bind_parameter(n + 4, &row.value)?;
                    n += 4;
                }
                stmt.raw_execute()?;
            }
        }
        if !chunks.remainder().is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached("INSERT INTO peers (id, session, k, v) VALUES (?1, ?2, ?3, ?4)")?;
            for (id, row) in chunks.remainder() {
                stmt.execute(params![id, session, row.key, row.value])?;
            }
        }
        Ok(())
    }

    /// [`Self::peers_insert_absent`] one row at a time, each taking its index values.
    fn peers_insert_absent_each(
        &mut self,
        session: i64,
        rows: &[(Row, [Option<&[u8]>; 2])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(rows.len());
        for (row, idx) in rows {
            let k = peer_keys::key(&row.key)?;
            if let Some((_, v)) = self.locate_peer(session, &k)? {
                out.push(Some(v));
                continue;
            }
            self.insert_peer(session, k, row, *idx)?;
            out.push(None);
        }
        Ok(out)
    }

    pub(super) fn peers_put_last(&mut self, session: i64, row: &Row) -> Result<()> {
        // A row moved to the end of the order: deleted, then inserted anew.
        let k = peer_keys::key(&row.key)?;
        if let Some((id, _)) = self.locate_peer(session, &k)? {
            self.conn
                .prepare_cached("DELETE FROM peers WHERE rowid = ?1")?
                .execute([id])?;
            // The map still names the deleted row: read it again at its next use.
            self.peer_keys.forget(session);
            self.peer_keys.changed(session);
        }
        self.insert_peer(session, k, row, [None, None])
    }

    /// The rows `sql` (`SELECT … WHERE rowid BETWEEN ?1 AND ?2 …`) selects from the session's
    /// range, each as `f` reads it.
    fn peers_in_range<T>(
        &mut self,
        sql: &str,
        session: i64,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let range = peer_keys::range(session)?;
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![range.0, range.1], f)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub(super) fn peers_scan(&mut self, session: i64) -> Result<Vec<Row>> {
        self.peers_in_range(
            "SELECT k, v FROM peers WHERE rowid BETWEEN ?1 AND ?2 ORDER BY rowid",
            session,
            |r| {
                Ok(Row {
                    key: r.get(0)?,
                    value: r.get(1)?,
                })
            },
        )
    }

    pub(super) fn peers_scan_page(
        &mut self,
        session: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        // A walk down the rowid B-tree from the cursor, within the session's range only.
        let range = peer_keys::range(session)?;
        let below = before.map_or(range.1, |b| b.saturating_sub(1).min(range.1));
        self.positioned_rows(
            "SELECT rowid, k, v FROM peers WHERE rowid BETWEEN ?1 AND ?2
             ORDER BY rowid DESC LIMIT ?3",
            params![range.0, below, i64::from(limit)],
        )
    }

    pub(super) fn peers_scan_keys_after(
        &mut self,
        session: i64,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<(i64, Row)>> {
        // No index orders peers by key: each page sorts the session's keys above `after`
        // (no caller pages peers by key; channels are paged so).
        let range = peer_keys::range(session)?;
        self.positioned_rows(
            "SELECT rowid, k, v FROM peers WHERE rowid BETWEEN ?1 AND ?2 AND k > ?3
             ORDER BY k LIMIT ?4",
            params![range.0, range.1, after.unwrap_or(&[]), i64::from(limit)],
        )
    }

    pub(super) fn peers_scan_indexed(&mut self, session: i64) -> Result<Vec<(Row, [bool; 2])>> {
        self.peers_in_range(
            "SELECT k, v, i1 IS NOT NULL, i2 IS NOT NULL FROM peers
             WHERE rowid BETWEEN ?1 AND ?2 ORDER BY rowid",
            session,
            indexed_row,
        )
    }

    pub(super) fn peers_scan_all(&mut self, session: i64) -> Result<Vec<IndexedRow>> {
        self.peers_in_range(
            "SELECT k, v, i1, i2 FROM peers WHERE rowid BETWEEN ?1 AND ?2 ORDER BY rowid",
            session,
            indexed_row,
        )
    }

    pub(super) fn peers_clear(&mut self, session: i64) -> Result<()> {
        let range = peer_keys::range(session)?;
        self.conn
            .prepare_cached("DELETE FROM peers WHERE rowid BETWEEN ?1 AND ?2")?
            .execute(params![range.0, range.1])?;
        self.peer_keys.forget(session);
        self.peer_keys.changed(session);
        Ok(())
    }

    pub(super) fn peers_clear_some(&mut self, session: i64, limit: u32) -> Result<u64> {
        let range = peer_keys::range(session)?;
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM peers WHERE rowid IN
                 (SELECT rowid FROM peers WHERE rowid BETWEEN ?1 AND ?2 LIMIT ?3)",
            )?
            .execute(params![range.0, range.1, i64::from(limit)])?;
        if n > 0 {
            // The map names deleted rows: read again at its next use.
            self.peer_keys.forget(session);
            self.peer_keys.changed(session);
        }
        Ok(n as u64)
    }

    pub(super) fn peers_count_up_to(&mut self, session: i64, limit: u32) -> Result<u64> {
        let range = peer_keys::range(session)?;
        Ok(self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM peers WHERE rowid BETWEEN ?1 AND ?2 LIMIT ?3)",
            )?
            .query_row(params![range.0, range.1, i64::from(limit)], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    pub(super) fn peers_count(&mut self, session: i64) -> Result<u64> {
        let range = peer_keys::range(session)?;
        Ok(self
            .conn
            .prepare_cached("SELECT count(*) FROM peers WHERE rowid BETWEEN ?1 AND ?2")?
            .query_row(params![range.0, range.1], |r| r.get::<_, i64>(0))? as u64)
    }
}
