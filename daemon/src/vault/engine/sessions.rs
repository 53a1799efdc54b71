//! Sessions: create, import, export, rename, delete, list, and the sealed session record
//! (home DC, self user, extras, ACL). Same `Engine` as `mod.rs`, split along this seam to
//! keep files small. Creates, renames, deletes and ACL changes bump the vault generation
//! (`manifest`).

use session_vault_proto::model::{
    SelfUser, SessionAcl, SessionData, SessionExtras, SessionSummary, UpdateStateChange,
};

use super::record::{decode, encode};
use super::{Engine, IfExists, SessionId, SessionRecord, now, validate_name};
use crate::vault::crypto::PAD_FIXED;
use crate::vault::error::{EngineError, Result};
use crate::vault::store::{Store, Table};

/// The tables whose rows an export carries, peers first (an export without them skips it).
const EXPORTED: [Table; 4] = [
    Table::Peers,
    Table::DcOptions,
    Table::Channels,
    Table::SentFiles,
];

/// The answer to an export of a session of `rows` rows (peers, DC options, channel states,
/// sent files) when one answer carries at most `max_rows`.
pub fn export_too_large(rows: u64, max_rows: u64) -> EngineError {
    EngineError::Invalid(format!(
        "the session holds {rows} rows (peers, DC options, channel states, sent files), more \
         than one export answer carries ({max_rows}); an exclusive holder reads the peers in \
         pages (export without_peers, then list_peers; protocol 1.5 and later)"
    ))
}

impl<S: Store> Engine<S> {
    // ---- sessions -------------------------------------------------------------------------

    /// Resolves a name to the session's id.
    pub fn open_session(&self, name: &str) -> Result<SessionId> {
        self.unlocked()?
            .by_name
            .get(name)
            .copied()
            .ok_or_else(|| EngineError::NoSuchSession { name: name.into() })
    }

    /// The current name of a session.
    pub fn session_name(&self, sid: SessionId) -> Result<String> {
        Ok(self.live(sid)?.names[&sid].clone())
    }

    /// Creates a session holding what grammers' `SessionData::default()` holds. Durable.
    pub fn create_session(&mut self, name: &str, acl: SessionAcl) -> Result<SessionId> {
        self.import(name, &SessionData::default(), IfExists::Refuse, acl)
    }

    /// Stores `data` as session `name` in the current transaction (all or nothing with it).
    /// With [`IfExists::Replace`], an existing session of that name is deleted first. Durable.
    pub fn import(
        &mut self,
        name: &str,
        data: &SessionData,
        if_exists: IfExists,
        acl: SessionAcl,
    ) -> Result<SessionId> {
        validate_name(name)?;
        if let Some(&old) = self.unlocked()?.by_name.get(name) {
            if if_exists == IfExists::Refuse {
                return Err(EngineError::NameTaken { name: name.into() });
            }
            self.store.delete_session(old.0)?;
            let u = self.unlocked_mut()?;
            u.by_name.remove(name);
            u.names.remove(&old);
            u.manifest.sessions.remove(&old.0);
        }
        let t = now();
        let sid = SessionId(self.store.insert_session(name, t)?);
        self.bump(|m, g| {
            m.sessions.insert(sid.0, g);
        })?;
        {
            let u = self.unlocked_mut()?;
            u.by_name.insert(name.to_owned(), sid);
            u.names.insert(sid, name.to_owned());
        }
        self.write_contents(sid, data, acl)?;
        Ok(sid)
    }

    /// Replaces everything session `sid` holds with `data`, keeping its name and ACL. Durable.
    pub fn replace_contents(&mut self, sid: SessionId, data: &SessionData) -> Result<()> {
        let acl = self.session_record(sid)?.acl;
        for table in Table::ALL {
            self.store.clear(table, sid.0)?;
        }
        self.write_contents(sid, data, acl)
    }

    pub(super) fn write_contents(
        &mut self,
        sid: SessionId,
        data: &SessionData,
        acl: SessionAcl,
    ) -> Result<()> {
        let record = SessionRecord {
            home_dc: data.home_dc,
            self_user: data.self_user,
            extras: data.extras.clone(),
            acl,
        };
        self.put_session_record(sid, &record)?;
        for dc in &data.dc_options {
            self.set_dc_option(sid, dc)?;
        }
        self.cache_peers(sid, &data.peers)?;
        self.set_update_state(sid, &UpdateStateChange::All(data.updates_state.clone()))?;
        for f in &data.sent_files {
            self.put_sent_file(sid, f)?;
        }
        Ok(())
    }

    /// Everything a session holds; refused (`Invalid`), before anything is read, for a
    /// session of more than `max_rows` peers, DC options, channel states and sent files in
    /// all (a client reads the peers in pages instead).
    pub fn export(&mut self, sid: SessionId, max_rows: u64) -> Result<SessionData> {
        self.check_export_rows(sid, &EXPORTED, max_rows)?;
        let mut data = self.export_unbounded_without_peers(sid)?;
        data.peers = self.peers(sid)?;
        Ok(data)
    }

    /// [`Self::export`] with the peers left out (a client reads them in bounded pages with
    /// [`Self::peers_page`]); refused past `max_rows` DC options, channel states and sent
    /// files.
    pub fn export_without_peers(&mut self, sid: SessionId, max_rows: u64) -> Result<SessionData> {
        self.check_export_rows(sid, &EXPORTED[1..], max_rows)?;
        self.export_unbounded_without_peers(sid)
    }

    /// `Invalid` if the session holds more than `max_rows` rows of `tables`: an export is
    /// decrypted whole into one answer.
    fn check_export_rows(&mut self, sid: SessionId, tables: &[Table], max_rows: u64) -> Result<()> {
        self.live(sid)?;
        if max_rows == u64::MAX {
            return Ok(());
        }
        let mut rows = 0u64;
        for &t in tables {
            rows = rows.saturating_add(self.store.count(t, sid.0)?);
        }
        if rows > max_rows {
            return Err(export_too_large(rows, max_rows));
        }
        Ok(())
    }

    /// What [`Self::export`] holds besides the session's rows (home DC, self user, extras;
    /// the rest left empty and default), once the session is found to hold at most
    /// `max_rows` rows (of every table, or all but its peers): the first of the jobs that
    /// read a session in pages (`Vault::export_at_most`).
    pub fn export_record(
        &mut self,
        sid: SessionId,
        max_rows: u64,
        with_peers: bool,
    ) -> Result<SessionData> {
        let tables = if with_peers {
            &EXPORTED[..]
        } else {
            &EXPORTED[1..]
        };
        self.check_export_rows(sid, tables, max_rows)?;
        let record = self.session_record(sid)?;
        Ok(SessionData {
            home_dc: record.home_dc,
            dc_options: Vec::new(),
            self_user: record.self_user,
            peers: Vec::new(),
            updates_state: Default::default(),
            sent_files: Vec::new(),
            extras: record.extras,
        })
    }

    fn export_unbounded_without_peers(&mut self, sid: SessionId) -> Result<SessionData> {
        let record = self.session_record(sid)?;
        Ok(SessionData {
            home_dc: record.home_dc,
            dc_options: self.dc_options(sid)?,
            self_user: record.self_user,
            peers: Vec::new(),
            updates_state: self.updates_state(sid)?,
            sent_files: self.sent_files(sid)?,
            extras: record.extras,
        })
    }

    /// Runs `f` in a transaction of its own, committed before it returns (rolled back, and
    /// the engine's state re-read, if it fails): for barrier jobs, which run with none open.
    pub fn in_own_transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.in_transaction(f)
    }

    /// Renames a session. Durable.
    pub fn rename_session(&mut self, old: &str, new: &str) -> Result<()> {
        validate_name(new)?;
        let sid = self.open_session(old)?;
        if old == new {
            return Ok(());
        }
        if self.unlocked()?.by_name.contains_key(new) {
            return Err(EngineError::NameTaken { name: new.into() });
        }
        // The name is bound into the record's AAD: re-seal it under the new name, in the
        // same transaction as the rename.
        let record = self.session_record(sid)?;
        self.store.rename_session(sid.0, new)?;
        // The old name's row, put back, is older than this floor.
        self.bump(|m, g| {
            m.sessions.insert(sid.0, g);
        })?;
        let u = self.unlocked_mut()?;
        u.by_name.remove(old);
        u.by_name.insert(new.to_owned(), sid);
        u.names.insert(sid, new.to_owned());
        self.put_session_record(sid, &record)
    }

    /// Deletes a session and all its rows. Durable.
    pub fn delete_session(&mut self, name: &str) -> Result<()> {
        let sid = self.open_session(name)?;
        self.store.delete_session(sid.0)?;
        self.bump(|m, _| {
            m.sessions.remove(&sid.0);
        })?;
        let u = self.unlocked_mut()?;
        u.by_name.remove(name);
        u.names.remove(&sid);
        u.last_touch.remove(&sid);
        Ok(())
    }

    /// A summary of every session, by name.
    pub fn list_sessions(&mut self) -> Result<Vec<(SessionId, SessionSummary)>> {
        self.unlocked()?;
        let rows = self.store.sessions()?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let sid = SessionId(row.id);
            let record = self.open_session_record(sid, &row.name, &row.record)?;
            let has_auth_key = self
                .dc_option(sid, record.home_dc)?
                .is_some_and(|dc| dc.auth_key.is_some());
            out.push((
                sid,
                SessionSummary {
                    name: row.name,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                    home_dc: record.home_dc,
                    has_auth_key,
                    user_id: record.self_user.map(|u| u.id),
                    peer_count: self.store.count(Table::Peers, row.id)?,
                    owner_uid: record.acl.owner_uid,
                },
            ));
        }
        Ok(out)
    }

    /// The row key of a session record: its name is bound into the AAD, so that names
    /// swapped or edited in the file make the record `Corrupt` instead of handing one
    /// session's keys out under another's name.
    pub(super) fn session_row_key(name: &str) -> Vec<u8> {
        let mut row = b"record\0".to_vec();
        row.extend_from_slice(name.as_bytes());
        row
    }

    pub(super) fn open_session_record(
        &self,
        sid: SessionId,
        name: &str,
        sealed: &[u8],
    ) -> Result<SessionRecord> {
        let row = Self::session_row_key(name);
        let place = Self::session_place(sid.0, &row);
        let u = self.unlocked()?;
        let opened = u.keys.open(&place, sealed)?;
        u.manifest.check_session_record(&place, opened.generation)?;
        decode(&place, &opened.plain)
    }

    /// The sealed session record (home DC, self user, extras, ACL).
    pub fn session_record(&mut self, sid: SessionId) -> Result<SessionRecord> {
        self.live(sid)?;
        let row = self
            .store
            .session(sid.0)?
            .ok_or_else(|| EngineError::NoSuchSession {
                name: "(deleted while open)".into(),
            })?;
        self.open_session_record(sid, &row.name, &row.record)
    }

    pub(super) fn put_session_record(
        &mut self,
        sid: SessionId,
        record: &SessionRecord,
    ) -> Result<()> {
        let u = self.live(sid)?;
        let row = Self::session_row_key(&u.names[&sid]);
        let place = Self::session_place(sid.0, &row);
        let sealed = u
            .keys
            .seal(&place, u.manifest.generation, &encode(record)?, PAD_FIXED)?;
        let t = now();
        self.store.put_session_record(sid.0, &sealed, t)?;
        self.unlocked_mut()?.last_touch.insert(sid, t);
        Ok(())
    }

    pub(super) fn update_record(
        &mut self,
        sid: SessionId,
        f: impl FnOnce(&mut SessionRecord),
    ) -> Result<()> {
        self.live(sid)?;
        self.store.lock_session(sid.0, false)?;
        let mut record = self.session_record(sid)?;
        let before = record.clone();
        f(&mut record);
        if record != before {
            self.put_session_record(sid, &record)?;
        }
        Ok(())
    }

    /// Bumps `updated_at` at most once a second per session.
    pub(super) fn touch(&mut self, sid: SessionId) -> Result<()> {
        let t = now();
        let u = self.unlocked_mut()?;
        if u.last_touch.get(&sid) != Some(&t) {
            u.last_touch.insert(sid, t);
            self.store.touch_session(sid.0, t)?;
        }
        Ok(())
    }

    // ---- home DC, extras, ACL ---------------------------------------------------------------

    /// The home DC id.
    pub fn home_dc(&mut self, sid: SessionId) -> Result<i32> {
        Ok(self.session_record(sid)?.home_dc)
    }

    /// Sets the home DC id. Durable.
    pub fn set_home_dc(&mut self, sid: SessionId, dc: i32) -> Result<()> {
        self.update_record(sid, |r| r.home_dc = dc)
    }

    /// Sets Telethon/Pyrogram extras. Durable.
    pub fn set_extras(&mut self, sid: SessionId, extras: SessionExtras) -> Result<()> {
        self.update_record(sid, |r| r.extras = extras)
    }

    /// Replaces the session's ACL. Durable. Bumps the vault generation and raises the
    /// session's floor to it, so that the record with the old ACL, put back, is `Corrupt`.
    pub fn set_acl(&mut self, sid: SessionId, acl: SessionAcl) -> Result<()> {
        self.live(sid)?;
        self.store.lock_session(sid.0, true)?;
        let mut record = self.session_record(sid)?;
        if record.acl == acl {
            return Ok(());
        }
        record.acl = acl;
        self.bump(|m, g| {
            m.sessions.insert(sid.0, g);
        })?;
        self.put_session_record(sid, &record)
    }

    /// The logged-in account.
    pub fn self_user(&mut self, sid: SessionId) -> Result<Option<SelfUser>> {
        Ok(self.session_record(sid)?.self_user)
    }
}
