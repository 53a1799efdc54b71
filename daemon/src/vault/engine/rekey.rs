//! Keyslot changes and `rekey`, run on the storage thread as barrier jobs: each opens its
//! own transaction, commits it, then checkpoints the WAL (`Store::checkpoint`) so that the
//! keyslot it replaced does not linger in the log.
//!
//! `rekey` replaces the DEK: every record is opened with the old keys and sealed again under
//! the new ones, every blinded row key and index value computed again under the new index
//! key, rows re-inserted in their old order (channels and peers are read back in write
//! order), and every keyslot replaced by the one new slot; all in one transaction, so a crash
//! leaves the old vault or the new one, nothing between. The old keys are swapped out only
//! once the commit returned. Session ids stay, so open handles and leases survive; requests
//! wait on the storage thread meanwhile. `rekey` thereby drops the recovery keyslot too.
//!
//! The recovery keyslot ([`Engine::set_recovery_keyslot`]) is one more keyslot of kind
//! `recovery`, recorded in the manifest like any other, so an old or removed one put back
//! into the file is `Corrupt`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use session_vault_proto::model::{ChannelState, DcOption, Peer, SentFile};

use super::manifest::Manifest;
use super::record::encode;
use super::{Engine, KeyState, STATE_UPDATES, ScalarState, SessionId, SessionRecord, pad_class};
use crate::vault::crypto::{KIND_RECOVERY, Keys, Keyslot, PAD_FIXED, RecordPlace, SecretKey};
use crate::vault::error::{EngineError, Result};
use crate::vault::store::{Row, Store, Table};

impl<S: Store> Engine<S> {
    /// Replaces (or adds) keyslot `slot.slot`, wrapping `dek`, and records it in the manifest
    /// at a new generation; then checkpoints. The caller proved a passphrase by opening a
    /// keyslot to get `dek`, so the vault may be locked: the manifest is then opened with keys
    /// derived from `dek` for this call only.
    pub fn replace_keyslot(&mut self, slot: Keyslot, dek: SecretKey) -> Result<()> {
        let header = match &self.state {
            KeyState::Uninitialized => return Err(EngineError::Uninitialized),
            KeyState::Locked(h) => h.clone(),
            KeyState::Unlocked(u) => u.header.clone(),
        };
        let checksum = slot.checksum(&header.vault_id);
        let unlocked = matches!(self.state, KeyState::Unlocked(_));
        let temporary = (!unlocked).then(|| Keys::derive(header.vault_id, dek));
        self.in_transaction(|e| {
            let mut m = match &temporary {
                Some(keys) => e.verified_manifest(keys)?,
                None => e.unlocked()?.manifest.clone(),
            };
            m.generation += 1;
            m.keyslots.insert(slot.slot, checksum);
            e.store.put_keyslot(&slot)?;
            match (&temporary, &mut e.state) {
                (Some(keys), _) => m.store(&mut e.store, keys),
                (None, KeyState::Unlocked(u)) => {
                    m.store(&mut e.store, &u.keys)?;
                    u.manifest = m;
                    Ok(())
                }
                (None, _) => Err(EngineError::Locked),
            }
        })?;
        self.store.checkpoint()
    }

    /// Writes `slot` as the vault's only recovery keyslot (any other recovery keyslot is
    /// deleted), recorded in the manifest at a new generation; then checkpoints. The vault
    /// must be unlocked and `dek` must be its current DEK, the one `slot` wraps: a recovery
    /// keyslot sealed before a `rekey` that ran meanwhile is refused.
    pub fn set_recovery_keyslot(&mut self, slot: Keyslot, dek: SecretKey) -> Result<()> {
        let u = self.unlocked()?;
        if u.keys.dek().expose() != dek.expose() {
            return Err(EngineError::Invalid(
                "the data key changed while the recovery key was made (a rekey ran); add it again"
                    .into(),
            ));
        }
        let checksum = slot.checksum(u.keys.vault_id());
        self.in_transaction(|e| {
            let old = e.recovery_slots()?;
            for n in &old {
                e.store.delete_keyslot(*n)?;
            }
            e.store.put_keyslot(&slot)?;
            e.bump(|m, _| {
                for n in &old {
                    m.keyslots.remove(n);
                }
                m.keyslots.insert(slot.slot, checksum);
            })?;
            Ok(())
        })?;
        self.store.checkpoint()
    }

    /// Deletes the recovery keyslot, recorded in the manifest at a new generation; then
    /// checkpoints. `Ok(false)` when there is none. The vault must be unlocked.
    pub fn remove_recovery_keyslot(&mut self) -> Result<bool> {
        self.unlocked()?;
        let removed = self.in_transaction(|e| {
            let old = e.recovery_slots()?;
            if old.is_empty() {
                return Ok(false);
            }
            for n in &old {
                e.store.delete_keyslot(*n)?;
            }
            e.bump(|m, _| {
                for n in &old {
                    m.keyslots.remove(n);
                }
            })?;
            Ok(true)
        })?;
        if removed {
            self.store.checkpoint()?;
        }
        Ok(removed)
    }

    /// Whether the vault has a recovery keyslot; `None` while uninitialized.
    pub fn has_recovery_key(&mut self) -> Result<Option<bool>> {
        if matches!(self.state, KeyState::Uninitialized) {
            return Ok(None);
        }
        Ok(Some(!self.recovery_slots()?.is_empty()))
    }

    fn recovery_slots(&mut self) -> Result<Vec<u32>> {
        Ok(self
            .store
            .keyslots()?
            .iter()
            .filter(|s| s.kind == KIND_RECOVERY)
            .map(|s| s.slot)
            .collect())
    }

    /// Replaces the DEK with `dek` and every keyslot with `slot` (which wraps it): see the
    /// module docs. The vault must be unlocked.
    pub fn rekey(&mut self, slot: Keyslot, dek: SecretKey) -> Result<()> {
        let vault_id = *self.unlocked()?.keys.vault_id();
        let new = Keys::derive(vault_id, dek);
        let manifest = self.in_transaction(|e| e.reseal_all(&new, &slot))?;
        let (_, u) = self.parts()?;
        // The old keys are dropped (wiped) here.
        u.keys = new;
        u.manifest = manifest;
        self.tell_store_the_key();
        self.store.checkpoint()
    }

    fn reseal_all(&mut self, new: &Keys, slot: &Keyslot) -> Result<Manifest> {
        // Other daemons sharing the store: wait until none has a transaction open (what they
        // wrote is then here to be re-sealed) and keep them from starting one until this
        // commits; after it, their transactions are refused until they hold the new key.
        self.store.replace_data_key_id(&new.data_key_id())?;
        // They append to the audit log too: hold its lock until this transaction ends, so
        // none appends under the old key meanwhile, and re-seal the log as it is now.
        let (store, u) = self.parts()?;
        if store.lock_audit()? {
            u.audit = super::audit::Chain::load(store, &u.keys)?;
        }
        let g = self.generation()? + 1;
        let rows = self.store.sessions()?;
        for row in &rows {
            let sid = SessionId(row.id);
            let record: SessionRecord = self.open_session_record(sid, &row.name, &row.record)?;
            let key = Self::session_row_key(&row.name);
            let place = Self::session_place(row.id, &key);
            let sealed = new.seal(&place, g, &encode(&record)?, PAD_FIXED)?;
            self.store
                .put_session_record(row.id, &sealed, row.updated_at)?;
            self.reseal_table(new, g, sid, Table::DcOptions, |d: &DcOption| {
                (d.id.to_be_bytes().to_vec(), [None, None])
            })?;
            self.reseal_table(new, g, sid, Table::Peers, |p: &Peer| {
                let [u, ph] = Self::peer_index_values(p);
                (Self::peer_key_bytes(p.key()).to_vec(), [u, ph])
            })?;
            self.reseal_table(new, g, sid, Table::State, |_: &ScalarState| {
                (STATE_UPDATES.to_vec(), [None, None])
            })?;
            self.reseal_table(new, g, sid, Table::Channels, |c: &ChannelState| {
                (c.id.to_be_bytes().to_vec(), [None, None])
            })?;
            self.reseal_table(new, g, sid, Table::SentFiles, |f: &SentFile| {
                let k = Self::sent_file_key(&f.md5_digest, f.file_size, f.file_type);
                (k, [None, None])
            })?;
        }
        self.reseal_audit(new, g)?;
        let m = Manifest {
            generation: g,
            keyslots: [(slot.slot, slot.checksum(new.vault_id()))].into(),
            sessions: rows.iter().map(|r| (r.id, g)).collect(),
            audit_seq: self.audit_seq(),
        };
        self.store.delete_keyslots()?;
        self.store.put_keyslot(slot)?;
        m.store(&mut self.store, new)?;
        Ok(m)
    }

    /// Re-seals every row of `table` for `sid` under `new`, in the same order. `keys` gives a
    /// record's raw row key and its index values (username, phone); an index value is kept
    /// only where the old row had one (a username taken over by another peer stays cleared).
    fn reseal_table<T: Serialize + DeserializeOwned>(
        &mut self,
        new: &Keys,
        g: u64,
        sid: SessionId,
        table: Table,
        keys: impl Fn(&T) -> (Vec<u8>, [Option<String>; 2]),
    ) -> Result<()> {
        let rows = self.store.scan_indexed(table, sid.0)?;
        self.store.clear(table, sid.0)?;
        for (row, had) in rows {
            let value: T = self.open_at(sid, table, &row.key, &row.value)?;
            let (raw, idx) = keys(&value);
            let k = new.blind(table.name(), sid.0, "key", &raw);
            let place = RecordPlace {
                table: table.name(),
                session_id: sid.0,
                row: &k,
            };
            let sealed = new.seal(&place, g, &encode(&value)?, pad_class(table))?;
            let blinded = [("username", &idx[0], had[0]), ("phone", &idx[1], had[1])].map(
                |(field, v, had)| {
                    v.as_ref()
                        .filter(|_| had)
                        .map(|v| new.blind(table.name(), sid.0, field, v.as_bytes()))
                },
            );
            let row = Row {
                key: k.to_vec(),
                value: sealed,
            };
            self.store.put(
                table,
                sid.0,
                &row,
                [
                    blinded[0].as_ref().map(|b| &b[..]),
                    blinded[1].as_ref().map(|b| &b[..]),
                ],
            )?;
        }
        Ok(())
    }
}
