//! Sealed rows: blinding a row's key, sealing and opening its record at the vault generation,
//! and reading one row or a whole table of a session. Same `Engine` as `mod.rs`, split along
//! this seam to keep files small.

use serde::{Serialize, de::DeserializeOwned};

use super::record::{decode, encode};
use super::{Engine, SessionId, Unlocked, pad_class};
use crate::vault::crypto::{RecordPlace, scrubbed_once};
use crate::vault::error::Result;
use crate::vault::store::{Row, Store, Table};

impl<S: Store> Engine<S> {
    // ---- generic rows -------------------------------------------------------------------------

    pub(super) fn row_key(&self, sid: SessionId, table: Table, key: &[u8]) -> Result<[u8; 16]> {
        Ok(blind_in(self.live(sid)?, sid, table, key))
    }

    pub(super) fn seal_row<T: Serialize>(
        &self,
        sid: SessionId,
        table: Table,
        key: &[u8],
        v: &T,
    ) -> Result<Row> {
        seal_in(self.live(sid)?, sid, table, key, v)
    }

    pub(super) fn open_row<T: DeserializeOwned>(
        &self,
        sid: SessionId,
        table: Table,
        row: &Row,
    ) -> Result<T> {
        self.open_at(sid, table, &row.key, &row.value)
    }

    /// Opens and decodes the sealed `value` of the row keyed `key` (blinded).
    pub(super) fn open_at<T: DeserializeOwned>(
        &self,
        sid: SessionId,
        table: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<T> {
        open_in(self.live(sid)?, sid, table, key, value)
    }

    pub(super) fn get_row<T: DeserializeOwned>(
        &mut self,
        sid: SessionId,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>> {
        let k = self.row_key(sid, table, key)?;
        self.get_row_at(sid, table, &k)
    }

    /// [`Self::get_row`] by an already blinded key (callers that also write the row blind
    /// its key once).
    fn get_row_at<T: DeserializeOwned>(
        &mut self,
        sid: SessionId,
        table: Table,
        blinded: &[u8],
    ) -> Result<Option<T>> {
        match self.store.get(table, sid.0, blinded)? {
            None => Ok(None),
            Some(value) => self.open_at(sid, table, blinded, &value).map(Some),
        }
    }

    pub(super) fn scan_rows<T: DeserializeOwned>(
        &mut self,
        sid: SessionId,
        table: Table,
    ) -> Result<Vec<T>> {
        self.live(sid)?;
        let rows = self.store.scan(table, sid.0)?;
        rows.iter().map(|r| self.open_row(sid, table, r)).collect()
    }

    /// Deletes up to `limit` of the session's rows of `table` ([`Store::clear_some`]); how
    /// many.
    pub fn clear_some(&mut self, sid: SessionId, table: Table, limit: u32) -> Result<u64> {
        self.live(sid)?;
        self.store.clear_some(table, sid.0, limit)
    }

    /// The session's rows of `table`, counted up to `limit` ([`Store::count_up_to`]).
    pub fn count_up_to(&mut self, sid: SessionId, table: Table, limit: u32) -> Result<u64> {
        self.live(sid)?;
        self.store.count_up_to(table, sid.0, limit)
    }

    /// Up to `limit` rows of `table` in key order after key `after` (from the first with
    /// `None`), each with its position (its place in write order), and the key to continue
    /// after (`None` after the last page). Pages of separate calls are not one snapshot.
    #[allow(clippy::type_complexity)]
    pub fn rows_page<T: DeserializeOwned>(
        &mut self,
        sid: SessionId,
        table: Table,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<(Vec<(i64, T)>, Option<Vec<u8>>)> {
        self.live(sid)?;
        let rows = self.store.scan_keys_after(table, sid.0, after, limit)?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|(_, r)| r.key.clone()))
            .flatten();
        let opened = rows
            .iter()
            .map(|(pos, r)| Ok((*pos, self.open_row(sid, table, r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((opened, next))
    }
}

/// The blind key of the row keyed `key` with the keys of `u`: what [`Engine::row_key`] does,
/// without the engine (for [`par_map`]).
pub(super) fn blind_in(u: &Unlocked, sid: SessionId, table: Table, key: &[u8]) -> [u8; 16] {
    u.keys.blind(table.name(), sid.0, "key", key)
}

/// Seals `v` as the record of the row keyed `key` (blinded) with the keys of `u`: what
/// [`Engine::seal_row`] does, without the engine, so that several threads can seal rows of
/// one batch at once (`data::Engine::cache_peers`).
pub(super) fn seal_in<T: Serialize>(
    u: &Unlocked,
    sid: SessionId,
    table: Table,
    key: &[u8],
    v: &T,
) -> Result<Row> {
    let place = RecordPlace {
        table: table.name(),
        session_id: sid.0,
        row: key,
    };
    let value = u
        .keys
        .seal(&place, u.manifest.generation, &encode(v)?, pad_class(table))?;
    Ok(Row {
        key: key.to_vec(),
        value,
    })
}

/// `items` mapped by `f`, in order: on two threads when there are at least `min` of them (the
/// second half on the [`helper`] thread, its stack scrubbed as [`scrubbed_once`] does),
/// otherwise on this one. For the AEAD and HMAC passes over a batch of rows, which need
/// nothing but the keys.
pub(super) fn par_map<T: Sync, R: Send>(
    items: &[T],
    min: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let helper = if items.len() >= min.max(2) {
        helper()
    } else {
        None
    };
    let Some(helper) = helper else {
        return items.iter().map(&f).collect();
    };
    let (first, second) = items.split_at(items.len() / 2);
    let f = &f;
    let mut rest = None;
    let out = helper.in_place_scope(|s| {
        s.spawn(|_| {
            rest = Some(scrubbed_once(|| {
                second.iter().map(f).collect::<Result<Vec<R>>>()
            }));
        });
        first.iter().map(f).collect::<Result<Vec<R>>>()
    });
    // The scope returned once the helper's half was done (a panic there resumed here).
    let mut out = out?;
    out.extend(rest.expect("the helper ran its half")?);
    Ok(out)
}

/// The helper thread of [`par_map`]: one, started at first use and kept, so that a batch pays
/// a wake-up (a few µs) rather than a thread's start (tens of µs). `None` if it could not be
/// started: batches then run on the caller's thread alone.
fn helper() -> Option<&'static rayon_core::ThreadPool> {
    static HELPER: std::sync::OnceLock<Option<rayon_core::ThreadPool>> = std::sync::OnceLock::new();
    HELPER
        .get_or_init(|| {
            rayon_core::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "vault-crypto".into())
                .build()
                .map_err(
                    |e| tracing::warn!(error = %e, "no crypto helper thread; batches run on one"),
                )
                .ok()
        })
        .as_ref()
}

/// Opens and decodes the sealed `value` of the row keyed `key` (blinded) with the keys of `u`:
/// what [`Engine::open_at`] does, without the engine, so that several threads can open rows of
/// one page at once (`data::Engine::peers_page`).
pub(super) fn open_in<T: DeserializeOwned>(
    u: &Unlocked,
    sid: SessionId,
    table: Table,
    key: &[u8],
    value: &[u8],
) -> Result<T> {
    let place = RecordPlace {
        table: table.name(),
        session_id: sid.0,
        row: key,
    };
    let opened = u.keys.open(&place, value)?;
    u.manifest.check_generation(&place, opened.generation)?;
    decode(&place, &opened.plain)
}
