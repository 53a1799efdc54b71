//! Reading back what the store holds: the manifest checked against the keyslots and sessions
//! at unlock, and re-reading the engine's state after a rolled-back transaction or another
//! daemon's change. Same `Engine` as `mod.rs`, split along this seam to keep files small.

use super::manifest::{self, Manifest};
use super::{Engine, KeyState, Refreshed, audit};
use crate::vault::crypto::{Keys, PAD_FIXED};
use crate::vault::error::{EngineError, Result};
use crate::vault::store::Store;

impl<S: Store> Engine<S> {
    /// The manifest, checked against the keyslots and sessions in the file (see
    /// [`manifest`]); for a vault written before manifests, a new one (written in the open
    /// transaction, with the session records re-sealed at its generation).
    pub(super) fn verified_manifest(&mut self, keys: &Keys) -> Result<Manifest> {
        let vault_id = *keys.vault_id();
        let slots = self.store.keyslots()?;
        let rows = self.store.sessions()?;
        if let Some(m) = Manifest::load(&mut self.store, keys)? {
            m.check_keyslots(&vault_id, &slots)?;
            // Session records are checked against their floors when read (every read of a
            // session goes through them), so that one damaged session does not lock out the
            // others.
            m.check_sessions(rows.iter().map(|r| r.id))?;
            return Ok(m);
        }
        if rows
            .iter()
            .any(|r| r.record.first() != Some(&crate::vault::crypto::RECORD_FORMAT_V1))
        {
            return Err(manifest::PLACE.corrupt(
                "the manifest is missing while records written after it exist (deleted)",
            ));
        }
        let m = Manifest {
            generation: 1,
            keyslots: slots
                .iter()
                .map(|s| (s.slot, s.checksum(&vault_id)))
                .collect(),
            sessions: rows.iter().map(|r| (r.id, 1)).collect(),
            audit_seq: 0,
        };
        for row in &rows {
            let (place_row, opened) = Self::open_session_row(keys, row)?;
            let place = Self::session_place(row.id, &place_row);
            let sealed = keys.seal(&place, m.generation, &opened.plain, PAD_FIXED)?;
            self.store
                .put_session_record(row.id, &sealed, row.updated_at)?;
        }
        m.store(&mut self.store, keys)?;
        tracing::info!(
            sessions = rows.len(),
            "vault manifest written (first unlock by a build with rollback detection)"
        );
        Ok(m)
    }

    /// Re-reads what the engine caches from the store, after a rolled-back transaction.
    pub fn resync(&mut self) -> Result<()> {
        match self.store.header()? {
            // An `init` whose commit failed: the vault is uninitialized again.
            None => self.state = KeyState::Uninitialized,
            Some(h) => match &mut self.state {
                KeyState::Unlocked(u) => {
                    u.last_touch.clear();
                    Self::index_sessions(&mut self.store, u)?;
                    if let Some(m) = Manifest::load(&mut self.store, &u.keys)? {
                        // Another daemon's change read here must still be reported.
                        self.foreign_change |= m != u.manifest;
                        u.manifest = m;
                    }
                    u.audit = audit::Chain::load(&mut self.store, &u.keys)?;
                }
                _ => self.state = KeyState::Locked(h),
            },
        }
        self.tell_store_the_key();
        Ok(())
    }

    /// Follows changes other daemons sharing the store made (see [`Engine::follow`]) and
    /// reports what changed since the last report: re-reads after rolled-back writes and
    /// [`Engine::follow`]s of other callers count too, so a caller that acts on changes
    /// (ending handles a revoke elsewhere took away) misses none. Call with no transaction
    /// open.
    pub fn refresh(&mut self) -> Result<Refreshed> {
        self.follow()?;
        self.flush_kept_audit();
        if let Some(why) = self.locked_out.take() {
            self.foreign_change = false;
            return Ok(Refreshed::LockedOut(why));
        }
        Ok(if std::mem::take(&mut self.foreign_change) {
            Refreshed::Reloaded
        } else {
            Refreshed::Unchanged
        })
    }

    /// If the stored manifest is not the one this engine last read or wrote
    /// ([`Store::manifest_changed`]), re-reads the header, the manifest (checked against the
    /// keyslots and sessions, as at unlock), the session index and the audit log's head. If
    /// the manifest no longer opens with the keys held (another daemon ran `rekey`) or fails
    /// its checks, the engine locks itself: the keys it holds open nothing current. What it
    /// found is reported by the next [`Engine::refresh`].
    pub fn follow(&mut self) -> Result<()> {
        if !self.store.manifest_changed()? {
            return Ok(());
        }
        self.foreign_change = true;
        let keys = match &mut self.state {
            KeyState::Unlocked(u) => &u.keys,
            _ => {
                // Nothing cached but the header: re-read it (and note the manifest seen).
                self.store.manifest()?;
                self.state = match self.store.header()? {
                    None => KeyState::Uninitialized,
                    Some(h) => KeyState::Locked(h),
                };
                return Ok(());
            }
        };
        let vault_id = *keys.vault_id();
        let checked = (|| {
            let slots = self.store.keyslots()?;
            let rows = self.store.sessions()?;
            let m = Manifest::load(&mut self.store, keys)?
                .ok_or_else(|| manifest::PLACE.corrupt("the manifest is gone"))?;
            m.check_keyslots(&vault_id, &slots)?;
            m.check_sessions(rows.iter().map(|r| r.id))?;
            Ok::<_, EngineError>(m)
        })();
        let manifest = match checked {
            Ok(m) => m,
            Err(e @ EngineError::Storage { .. }) => return Err(e),
            Err(e) => {
                self.lock()?;
                self.locked_out = Some(e.to_string());
                return Ok(());
            }
        };
        let (store, u) = self.parts()?;
        u.manifest = manifest;
        u.last_touch.clear();
        Self::index_sessions(store, u)?;
        u.audit = audit::Chain::load(store, &u.keys)?;
        Ok(())
    }
}
