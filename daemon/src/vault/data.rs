//! [`Vault`]'s session and data operations: sessions (create, import, export, rename,
//! delete, ACL, extras) and each session's rows (DC options, peers, update state, sent files).
//! Same `Vault` as `mod.rs`, split along this seam to keep files small.

use session_vault_proto::model::{
    DcOption, Peer, PeerKey, SentFile, SessionAcl, SessionData, SessionExtras, SessionSummary,
    UpdateStateChange, UpdatesState,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Vault;
use super::engine::{self, IfExists, SessionId};
use super::error::Result;
use super::store::Table;
use super::worker::Class;
use super::worker::{INLINE_STATE_ROWS, inline_peers};

/// The most rows (peers, DC options, channel states, sent files) one non-admin `export`
/// answer carries: the whole session is decrypted into one frame, held until the client
/// reads it. A million rows is at most ~200 MB on the wire, under the Rust client's 256 MiB
/// response limit; a larger session (any uid can fill one of its own) would only make the
/// daemon hold gigabytes for an answer no client takes. Its peers are read in pages instead
/// (`export` with `without_peers`, then `list_peers`).
pub const EXPORT_ROWS_MAX: u64 = 1_000_000;

/// Channel states per storage job of [`Vault::updates_state`].
pub const STATE_PAGE: u32 = 512;

/// DC options and sent files per storage job of [`Vault::export_in_pages`].
pub const EXPORT_PAGE: u32 = 512;

/// A check a multi-job write makes as each job is applied: whether its caller may still
/// write (its handle still open; see [`Vault::cache_peers_while`]).
pub type Still = Arc<dyn Fn() -> bool + Send + Sync>;

/// A [`Still`] that always holds (callers without a handle: tests, admin tools).
fn always() -> Still {
    Arc::new(|| true)
}

/// Channel states written per storage job of a whole update state
/// ([`Vault::set_update_state`]): about 10 ms of sealing and inserts.
pub const STATE_CHUNK: usize = 4096;

/// Rows deleted per storage job when a session's table is cleared in slices (about 8 ms for
/// peers): [`Vault::replace_contents`], and a whole update state replacing many channels.
pub const CLEAR_SLICE: u32 = 20_000;

impl Vault {
    /// Creates an empty session (grammers' defaults). Durable.
    pub async fn create_session(&self, name: &str, acl: SessionAcl) -> Result<SessionId> {
        let name = name.to_owned();
        self.call_retrying(move |e| e.create_session(&name, acl.clone()))
            .await
    }

    /// Stores a whole session in one durable transaction. Durable.
    pub async fn import(
        &self,
        name: &str,
        data: SessionData,
        if_exists: IfExists,
        acl: SessionAcl,
    ) -> Result<SessionId> {
        let name = name.to_owned();
        self.call_retrying_alone(move |e| e.import(&name, &data, if_exists, acl.clone()))
            .await
    }

    /// Replaces everything a session holds, keeping its name and ACL. Durable. The rows it
    /// held are deleted first, in bounded jobs (`clear_in_slices`): a session's
    /// million peers went in one job of half a second, which any uid could have sent again
    /// and again (an import into its own session). A failure after that leaves the session
    /// with those rows gone and the rest as it was, as an import interrupted after its first
    /// request does.
    pub async fn replace_contents(&self, sid: SessionId, data: SessionData) -> Result<()> {
        self.replace_contents_while(sid, data, always())
            .await
            .map(drop)
    }

    /// [`Self::replace_contents`] while `still()` holds when each of its jobs is applied
    /// (its caller's handle open: see [`Self::cache_peers_while`]); `Ok(false)` once it did
    /// not, and nothing more was written.
    pub async fn replace_contents_while(
        &self,
        sid: SessionId,
        data: SessionData,
        still: Still,
    ) -> Result<bool> {
        for table in [Table::Peers, Table::Channels, Table::SentFiles] {
            if !self.clear_in_slices(sid, table, 0, &still).await? {
                return Ok(false);
            }
        }
        self.call(Class::Durable, move |e| {
            if !still() {
                return Ok(false);
            }
            e.replace_contents(sid, &data).map(|()| true)
        })
        .await
    }

    /// Deletes the session's rows of `table` in jobs of [`CLEAR_SLICE`] rows (cache class)
    /// while more than `keep` are left, so that the whole-table write that follows deletes
    /// at most `keep`; each job only while `still()` holds (`Ok(false)` once it did not).
    /// Not on PostgreSQL, where a job waits on the server, not the CPU.
    async fn clear_in_slices(
        &self,
        sid: SessionId,
        table: Table,
        keep: u32,
        still: &Still,
    ) -> Result<bool> {
        if self.inner.postgres {
            return Ok(true);
        }
        loop {
            let left = self
                .read(move |e| e.count_up_to(sid, table, keep + 1))
                .await?;
            if left <= u64::from(keep) {
                return Ok(true);
            }
            let still = Arc::clone(still);
            let deleted = self
                .call(Class::Cache, move |e| {
                    if !still() {
                        return Ok(None);
                    }
                    e.clear_some(sid, table, CLEAR_SLICE).map(Some)
                })
                .await?;
            match deleted {
                None => return Ok(false),
                Some(0) => return Ok(true),
                Some(_) => {}
            }
        }
    }

    /// Everything a session holds (for admins: any size).
    pub async fn export(&self, sid: SessionId) -> Result<SessionData> {
        self.export_at_most(sid, u64::MAX).await
    }

    /// Everything a session holds, if it has at most `max_rows` rows (else `Invalid`, before
    /// anything is read: its peers are read in pages, [`Self::peers_page`]). A non-admin's is
    /// bounded by [`EXPORT_ROWS_MAX`], and read in pages ([`Self::export_in_pages`]); an
    /// admin's (`u64::MAX`) in one job, one snapshot.
    pub async fn export_at_most(&self, sid: SessionId, max_rows: u64) -> Result<SessionData> {
        if max_rows != u64::MAX {
            return self.export_in_pages(sid, max_rows, true).await;
        }
        self.fresh(Class::Read, move |e| e.export(sid, max_rows))
            .await
    }

    /// Everything a session holds but its peers (read with [`Self::peers_page`]), if it has
    /// at most `max_rows` other rows; in pages as [`Self::export_at_most`].
    pub async fn export_without_peers(&self, sid: SessionId, max_rows: u64) -> Result<SessionData> {
        if max_rows != u64::MAX {
            return self.export_in_pages(sid, max_rows, false).await;
        }
        self.fresh(Class::Read, move |e| e.export_without_peers(sid, max_rows))
            .await
    }

    /// [`Self::export_at_most`] (`with_peers`) or [`Self::export_without_peers`] read in
    /// bounded jobs: the record, then each table in pages ([`EXPORT_PAGE`] rows, peers
    /// [`PEER_PAGE_MAX`](session_vault_proto::message::PEER_PAGE_MAX)), so that a session of a
    /// million rows, which any uid may fill, does not hold every other request up while it
    /// is decrypted (one job took about a second). Not one snapshot: a row written meanwhile
    /// is read at one of its values, a peer added after the first page of peers is left out,
    /// and rows added past `max_rows` meanwhile make it `Invalid` as a larger session would.
    pub async fn export_in_pages(
        &self,
        sid: SessionId,
        max_rows: u64,
        with_peers: bool,
    ) -> Result<SessionData> {
        let mut data = self
            .fresh(Class::Read, move |e| {
                e.export_record(sid, max_rows, with_peers)
            })
            .await?;
        let mut dc_options: Vec<DcOption> = self.rows_in_pages(sid, Table::DcOptions).await?;
        dc_options.sort_by_key(|d| d.id);
        data.dc_options = dc_options;
        data.updates_state = self.updates_state(sid).await?;
        data.sent_files = self.rows_in_pages(sid, Table::SentFiles).await?;
        if with_peers {
            let mut before = None;
            loop {
                let (page, next) = self.peers_page(sid, before, 0).await?;
                data.peers.extend(page);
                match next {
                    Some(n) => before = Some(n),
                    None => break,
                }
            }
            // Pages come newest first; an export lists peers oldest first.
            data.peers.reverse();
        }
        let rows = [
            data.dc_options.len(),
            data.updates_state.channels.len(),
            data.sent_files.len(),
            data.peers.len(),
        ]
        .iter()
        .map(|n| *n as u64)
        .sum::<u64>();
        if rows > max_rows {
            return Err(engine::export_too_large(rows, max_rows));
        }
        Ok(data)
    }

    /// Every row of `table` of session `sid`, read [`EXPORT_PAGE`] at a time in key order
    /// (one job each), returned in write order.
    async fn rows_in_pages<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        sid: SessionId,
        table: Table,
    ) -> Result<Vec<T>> {
        let mut rows: Vec<(i64, T)> = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (page, next) = self
                .fresh(Class::Read, move |e| {
                    e.rows_page::<T>(sid, table, after.as_deref(), EXPORT_PAGE)
                })
                .await?;
            rows.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        rows.sort_by_key(|(pos, _)| *pos);
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }

    /// Resolves a session name.
    pub async fn open_session(&self, name: &str) -> Result<SessionId> {
        let name = name.to_owned();
        self.read(move |e| e.open_session(&name)).await
    }

    /// Summaries of every session.
    pub async fn list_sessions(&self) -> Result<Vec<SessionSummary>> {
        let listed = self.list_sessions_with_ids().await?;
        Ok(listed.into_iter().map(|(_, s)| s).collect())
    }

    /// Summaries of every session with their ids, read in one consistent pass (for callers
    /// that look more up by id, such as lease holders).
    pub async fn list_sessions_with_ids(&self) -> Result<Vec<(SessionId, SessionSummary)>> {
        self.fresh(Class::Read, |e| e.list_sessions()).await
    }

    /// Renames a session. Durable.
    pub async fn rename_session(&self, old: &str, new: &str) -> Result<()> {
        let (old, new) = (old.to_owned(), new.to_owned());
        self.call_retrying(move |e| e.rename_session(&old, &new))
            .await
    }

    /// Deletes a session. Durable.
    pub async fn delete_session(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.call_retrying_alone(move |e| e.delete_session(&name))
            .await
    }

    /// The session's record: home DC, self user, extras, ACL.
    pub async fn session_record(&self, sid: SessionId) -> Result<engine::SessionRecord> {
        self.read(move |e| e.session_record(sid)).await
    }

    /// Sets the home DC. Durable.
    pub async fn set_home_dc(&self, sid: SessionId, dc: i32) -> Result<()> {
        self.fresh(Class::Durable, move |e| e.set_home_dc(sid, dc))
            .await
    }

    /// Sets Telethon/Pyrogram extras. Durable.
    pub async fn set_extras(&self, sid: SessionId, extras: SessionExtras) -> Result<()> {
        self.fresh(Class::Durable, move |e| e.set_extras(sid, extras.clone()))
            .await
    }

    /// Replaces a session's ACL. Durable.
    pub async fn set_acl(&self, sid: SessionId, acl: SessionAcl) -> Result<()> {
        self.call_retrying(move |e| e.set_acl(sid, acl.clone()))
            .await
    }

    /// All DC options.
    pub async fn dc_options(&self, sid: SessionId) -> Result<Vec<DcOption>> {
        self.read(move |e| e.dc_options(sid)).await
    }

    /// Sets one DC option (auth key included). Durable.
    pub async fn set_dc_option(&self, sid: SessionId, dc: DcOption) -> Result<()> {
        self.call(Class::Durable, move |e| e.set_dc_option(sid, &dc))
            .await
    }

    /// A peer by identity.
    pub async fn peer(&self, sid: SessionId, key: PeerKey) -> Result<Option<Peer>> {
        self.read(move |e| e.peer(sid, key)).await
    }

    /// Prepares the store for look-ups of `sid`'s peers, on the storage thread (an open does it:
    /// SQLite reads the session's map of peer keys then, not at a first look-up that may run
    /// inline on a runtime thread; PostgreSQL, for a session whose lease this daemon holds,
    /// the session's peer keys, so that a new peer is known new without a query).
    pub async fn prepare_peers(&self, sid: SessionId) -> Result<()> {
        self.fresh(Class::Read, move |e| e.prepare_peers(sid)).await
    }

    /// A page of cached peers, newest first, and the next page's cursor (a warm start).
    /// Queued on the storage thread (a page is up to 1000 rows, too long to run inline).
    pub async fn peers_page(
        &self,
        sid: SessionId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<Peer>, Option<i64>)> {
        self.call(Class::Read, move |e| e.peers_page(sid, before, limit))
            .await
    }

    /// The self user's peer.
    pub async fn self_peer(&self, sid: SessionId) -> Result<Option<Peer>> {
        self.read(move |e| e.self_peer(sid)).await
    }

    /// A peer by username (case-insensitive).
    pub async fn peer_by_username(&self, sid: SessionId, username: &str) -> Result<Option<Peer>> {
        let username = username.to_owned();
        self.read(move |e| e.peer_by_username(sid, &username)).await
    }

    /// A peer by phone.
    pub async fn peer_by_phone(&self, sid: SessionId, phone: &str) -> Result<Option<Peer>> {
        let phone = phone.to_owned();
        self.read(move |e| e.peer_by_phone(sid, &phone)).await
    }

    /// [`Vault::cache_peers`] if `still()` holds when the write is applied (on the storage
    /// thread, or inline): `Ok(false)` if it did not, and nothing was written. A caller whose
    /// right to write may be withdrawn meanwhile (a handle ended by a revoke) checks it in
    /// order with the act that withdraws it ([`Vault::settle`]).
    pub async fn cache_peers_while(
        &self,
        sid: SessionId,
        peers: Vec<Peer>,
        still: Still,
    ) -> Result<bool> {
        let small = inline_peers(&peers);
        self.call_cache_while(small, still, move |e| e.cache_peers(sid, &peers))
            .await
    }

    /// A cache-class write `f` ([`Self::call_cache`]) applied only if `still()` holds when it
    /// is: `Ok(false)` if it did not, and nothing was written.
    async fn call_cache_while(
        &self,
        small: bool,
        still: Still,
        f: impl Fn(&mut super::worker::SqliteEngine) -> Result<()> + Send + Sync + 'static,
    ) -> Result<bool> {
        let refused = Arc::new(AtomicBool::new(false));
        let first = AtomicBool::new(true);
        let refusing = Arc::clone(&refused);
        let result = self
            .call_cache(small, move |e| {
                // Asked until a run wrote it (a run refused before it wrote, its session's
                // peer map to be read first, is sent again): a re-apply (after a failed
                // commit) is of a write already acknowledged.
                if first.load(Ordering::SeqCst) && !still() {
                    refusing.store(true, Ordering::SeqCst);
                    return Err(super::EngineError::Closed);
                }
                let written = f(e);
                first.store(written.is_err(), Ordering::SeqCst);
                written
            })
            .await;
        if refused.load(Ordering::SeqCst) {
            return Ok(false);
        }
        result.map(|()| true)
    }

    /// Caches a batch of peers (merging). Cache class.
    pub async fn cache_peers(&self, sid: SessionId, peers: Vec<Peer>) -> Result<()> {
        let small = inline_peers(&peers);
        self.call_cache(small, move |e| e.cache_peers(sid, &peers))
            .await
    }

    /// The full update state.
    ///
    /// Read in pages of [`STATE_PAGE`] channels, one storage job each, so that a session
    /// following tens of thousands of channels (or a hostile one filled with them) does not
    /// hold every other request up for the whole read; see
    /// [`engine::Engine::updates_state_page`] for what a write between two pages does.
    pub async fn updates_state(&self, sid: SessionId) -> Result<UpdatesState> {
        let (first, mut channels, mut next) = self
            .fresh(Class::Read, move |e| {
                e.updates_state_page(sid, None, STATE_PAGE)
            })
            .await?;
        let mut state = first.ok_or(super::EngineError::Closed)?;
        while let Some(after) = next {
            let (_, page, more) = self
                .fresh(Class::Read, move |e| {
                    e.updates_state_page(sid, Some(&after), STATE_PAGE)
                })
                .await?;
            channels.extend(page);
            next = more;
        }
        // Back into write order (each key is read once: the pages are key ranges).
        channels.sort_by_key(|(pos, _)| *pos);
        state.channels = channels.into_iter().map(|(_, c)| c).collect();
        Ok(state)
    }

    /// Whether `change` would add rows to the session ([`engine::Engine::update_state_grows`]).
    pub async fn update_state_grows(
        &self,
        sid: SessionId,
        change: UpdateStateChange,
    ) -> Result<bool> {
        self.read(move |e| e.update_state_grows(sid, &change)).await
    }

    /// Applies an update-state change. Cache class. A whole state replacing more than 4096
    /// channels (a session can gather any number, one channel update at a time) has them
    /// deleted in slices of [`CLEAR_SLICE`] first, and one of more than [`STATE_CHUNK`]
    /// channels is written a chunk per job.
    pub async fn set_update_state(&self, sid: SessionId, change: UpdateStateChange) -> Result<()> {
        self.set_update_state_while(sid, change, always())
            .await
            .map(drop)
    }

    /// [`Self::set_update_state`] while `still()` holds when each of its jobs is applied
    /// (see [`Self::cache_peers_while`]).
    pub async fn set_update_state_while(
        &self,
        sid: SessionId,
        change: UpdateStateChange,
        still: Still,
    ) -> Result<bool> {
        let UpdateStateChange::All(mut state) = change else {
            // One small job, as any single write (not asked: `still` is for writes of
            // several jobs).
            return self
                .call_cache(true, move |e| e.set_update_state(sid, &change))
                .await
                .map(|()| true);
        };
        // Past a chunk, the channels after the first go in jobs of their own (a frame holds
        // ~70k: one job of them held every other request up for ~160 ms). Readers between
        // two of them see the first ones only, as a paged read between two writes may.
        let rest = if state.channels.len() > STATE_CHUNK {
            state.channels.split_off(STATE_CHUNK)
        } else {
            Vec::new()
        };
        // Its rows: the scalars and each channel.
        let small = state.channels.len() < INLINE_STATE_ROWS;
        let change = Arc::new(UpdateStateChange::All(state));
        let mut rounds = 0;
        loop {
            let change = Arc::clone(&change);
            let first = self
                .call_cache_while(small, Arc::clone(&still), move |e| {
                    e.set_update_state(sid, &change)
                })
                .await;
            match first {
                // More old channels than its job deletes (a session gathers any number, one
                // channel update at a time): deleted in slices first.
                Err(super::EngineError::ClearFirst) if rounds < 3 => {
                    rounds += 1;
                    let keep = engine::CLEAR_HERE_MAX;
                    if !self
                        .clear_in_slices(sid, Table::Channels, keep, &still)
                        .await?
                    {
                        return Ok(false);
                    }
                }
                Ok(true) => break,
                other => return other,
            }
        }
        for chunk in rest.chunks(STATE_CHUNK) {
            let chunk = chunk.to_vec();
            if !self
                .call_cache_while(false, Arc::clone(&still), move |e| {
                    e.append_channels(sid, &chunk)
                })
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Caches a sent file. Cache class.
    pub async fn put_sent_file(&self, sid: SessionId, file: SentFile) -> Result<()> {
        self.call_cache(true, move |e| e.put_sent_file(sid, &file))
            .await
    }

    /// A sent file by (md5, size, type).
    pub async fn sent_file(
        &self,
        sid: SessionId,
        md5: Vec<u8>,
        size: i64,
        file_type: i32,
    ) -> Result<Option<SentFile>> {
        self.read(move |e| e.sent_file(sid, &md5, size, file_type))
            .await
    }
}
