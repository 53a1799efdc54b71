//! The vault state machine and its operations, run on the storage thread.
//!
//! [`Engine`] owns the [`Store`] and the [`KeyState`]; every method is synchronous and is
//! called only by the storage thread ([`super::worker`]), which wraps writes in savepoints
//! and group-commits them. Argon2 never runs here: keyslots are opened by the caller off the
//! runtime and the resulting DEK is handed in ([`Engine::install_keys`]).
//!
//! `mod.rs` holds the state machine, sessions and the sealed-row helpers; `data.rs` the
//! per-session data rows (DC options, peers, update state, sent files); `record.rs` the
//! records' plaintext encoding (positional MessagePack; older vaults' named maps still read);
//! `names.rs` session names: [`validate_name`], namespaces, the lookup `open_session` uses;
//! `sessions.rs` sessions and their sealed record;
//! `manifest.rs` the vault generation and the sealed manifest that make rollbacks of
//! keyslots, ACLs and sessions show as `Corrupt`; `rekey.rs` keyslot changes and `rekey`
//! (a new DEK, every record re-sealed in one transaction); `verify.rs` the pass that reads and
//! authenticates every record (`vaultctl verify`, and a backup before it is restored).
//!
//! Record layout (all sealed with [`Keys::seal`], keyed by blind indexes):
//! - `sessions.record`: [`SessionRecord`] (home DC, self user, extras, ACL);
//! - `dc_options`: one [`DcOption`](session_vault_proto::model::DcOption) per DC id;
//! - `peers`: one [`Peer`](session_vault_proto::model::Peer) per (kind, id), with blinded username and phone columns;
//! - `state`: the scalar update state ([`ScalarState`]);
//! - `channels`: one [`ChannelState`](session_vault_proto::model::ChannelState) per channel, in write order;
//! - `sent_files`: Telethon's [`SentFile`](session_vault_proto::model::SentFile) cache;
//! - `meta.manifest`: the [`Manifest`] (vault generation, current keyslots, live sessions).

use std::collections::HashMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use session_vault_proto::message::VaultState;
use session_vault_proto::model::{PeerKind, SelfUser, SessionAcl, SessionExtras};

use super::crypto::{Keys, Keyslot, PAD_FIXED, PAD_SMALL, RecordPlace, SecretKey, VAULT_ID_LEN};
use super::error::{EngineError, Result};
use super::store::{Header, Row, SessionRow, Store, Table};

pub mod audit;
mod data;
pub mod manifest;
pub mod names;
mod record;
mod rekey;
mod sessions;
mod verify;

#[cfg(test)]
pub(crate) use data::FORCED_PEER_WRITES;
pub use names::validate_name;

pub use manifest::Manifest;
use record::{decode, encode};

/// What an import does when a session of its name exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfExists {
    /// Refuse it with `NameTaken`.
    Refuse,
    /// Delete the existing session first, in the same transaction.
    Replace,
}

/// Internal id of a session: stable across renames, never reused after a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub i64);

/// Whether the engine holds the keys, and what it holds with them; locking replaces
/// `Unlocked`, whose keys zeroize on drop. Its wire form, without the keys, is
/// [`VaultState`] (`VaultState::from(&key_state)`).
pub enum KeyState {
    /// No keyslot yet.
    Uninitialized,
    /// Initialized, keys not in memory.
    Locked(Header),
    /// Keys in memory, sessions indexed by name.
    Unlocked(Box<Unlocked>),
}

impl From<&KeyState> for VaultState {
    fn from(state: &KeyState) -> VaultState {
        match state {
            KeyState::Uninitialized => VaultState::Uninitialized,
            KeyState::Locked(_) => VaultState::Locked,
            KeyState::Unlocked(_) => VaultState::Unlocked,
        }
    }
}

/// What exists only while the vault is unlocked.
pub struct Unlocked {
    keys: Box<Keys>,
    by_name: HashMap<String, SessionId>,
    names: HashMap<SessionId, String>,
    last_touch: HashMap<SessionId, i64>,
    header: Header,
    /// The verified manifest, kept in step with the store (re-read after a rollback).
    manifest: Manifest,
    /// Where the audit log's next entry goes.
    audit: audit::Chain,
}

/// What [`Engine::refresh`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// Nobody else changed the vault.
    Unchanged,
    /// Another daemon changed it; the engine re-read what it caches.
    Reloaded,
    /// Another daemon changed it so that this engine's keys no longer open it (`rekey`), or
    /// what it changed failed the checks of an unlock: the engine locked itself. Why.
    LockedOut(String),
}

/// The sealed per-session record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Home DC id.
    pub home_dc: i32,
    /// Logged-in account, where known.
    pub self_user: Option<SelfUser>,
    /// Telethon/Pyrogram extras.
    pub extras: SessionExtras,
    /// Who may use the session.
    pub acl: SessionAcl,
}

/// The scalar part of the update state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalarState {
    pts: i32,
    qts: i32,
    date: i32,
    seq: i32,
}

const STATE_UPDATES: &[u8] = b"updates";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Lower-cases a username and strips a leading `@`, for case-insensitive lookups.
pub fn normalize_username(username: &str) -> String {
    username.trim_start_matches('@').to_lowercase()
}

/// Keeps the digits of a phone number, for lookups that ignore `+`, spaces and dashes.
pub fn normalize_phone(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

/// The padding size class of a table's records: DC options all one size (an auth key's
/// presence does not show), the rest in small steps.
fn pad_class(table: Table) -> usize {
    match table {
        Table::DcOptions => PAD_FIXED,
        _ => PAD_SMALL,
    }
}

fn kind_byte(kind: PeerKind) -> u8 {
    match kind {
        PeerKind::User => 1,
        PeerKind::Chat => 2,
        PeerKind::Channel => 3,
    }
}

/// The vault engine. Generic over its [`Store`]; SQLite is the default.
pub struct Engine<S: Store> {
    store: S,
    state: KeyState,
    /// Audit events waiting for the keys ([`audit`]).
    pending_audit: audit::Pending,
    /// Another daemon's change was read since the last [`Engine::refresh`] report.
    foreign_change: bool,
    /// Why the engine locked itself on such a change, until reported.
    locked_out: Option<String>,
    /// How `cache_peers` writes ([`data::PeerWrites`]).
    peer_writes: data::PeerWrites,
}

impl<S: Store> Engine<S> {
    /// Wraps an opened store; the vault starts `Uninitialized` or `Locked`.
    pub fn new(mut store: S) -> Result<Self> {
        let state = match store.header()? {
            None => KeyState::Uninitialized,
            Some(h) => KeyState::Locked(h),
        };
        Ok(Engine {
            store,
            state,
            pending_audit: audit::Pending::default(),
            foreign_change: false,
            locked_out: None,
            peer_writes: data::PeerWrites::default(),
        })
    }

    /// The store, for the storage thread's transaction control.
    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }

    /// The current state.
    pub fn state(&self) -> VaultState {
        VaultState::from(&self.state)
    }

    /// Number of sessions, when unlocked.
    pub fn session_count(&self) -> Option<usize> {
        match &self.state {
            KeyState::Unlocked(u) => Some(u.by_name.len()),
            _ => None,
        }
    }

    /// The vault id and keyslots, for the caller to open off the runtime.
    pub fn keyslots(&mut self) -> Result<([u8; VAULT_ID_LEN], Vec<Keyslot>)> {
        let header = match &self.state {
            KeyState::Uninitialized => return Err(EngineError::Uninitialized),
            KeyState::Locked(h) => h.clone(),
            KeyState::Unlocked(u) => u.header.clone(),
        };
        Ok((header.vault_id, self.store.keyslots()?))
    }

    /// Writes the header and the first keyslot, and unlocks with `dek`. Durable write.
    pub fn initialize(&mut self, header: Header, slot: Keyslot, dek: SecretKey) -> Result<()> {
        if !matches!(self.state, KeyState::Uninitialized) {
            return Err(EngineError::AlreadyInitialized);
        }
        self.store.put_header(&header)?;
        self.store.put_keyslot(&slot)?;
        let keys = Keys::derive(header.vault_id, dek);
        let manifest = Manifest {
            generation: 1,
            keyslots: [(slot.slot, slot.checksum(&header.vault_id))].into(),
            sessions: Default::default(),
            audit_seq: 0,
        };
        manifest.store(&mut self.store, &keys)?;
        self.state = KeyState::Unlocked(Box::new(Unlocked {
            keys,
            by_name: HashMap::new(),
            names: HashMap::new(),
            last_touch: HashMap::new(),
            header,
            manifest,
            audit: audit::Chain::default(),
        }));
        self.tell_store_the_key();
        // `init` runs in the storage thread's open transaction: append there.
        self.drain_pending_audit()
    }

    /// Installs the DEK a keyslot opened to, and indexes the sessions.
    pub fn install_keys(&mut self, dek: SecretKey) -> Result<()> {
        let header = match &self.state {
            KeyState::Uninitialized => return Err(EngineError::Uninitialized),
            KeyState::Locked(h) => h.clone(),
            // Already unlocked: the caller proved the passphrase; keep the keys we have.
            KeyState::Unlocked(_) => return Ok(()),
        };
        let keys = Keys::derive(header.vault_id, dek);
        let manifest = self.in_transaction(|e| e.verified_manifest(&keys))?;
        let chain = audit::Chain::load(&mut self.store, &keys)?;
        let mut unlocked = Unlocked {
            keys,
            by_name: HashMap::new(),
            names: HashMap::new(),
            last_touch: HashMap::new(),
            header,
            manifest,
            audit: chain,
        };
        Self::index_sessions(&mut self.store, &mut unlocked)?;
        self.state = KeyState::Unlocked(Box::new(unlocked));
        self.tell_store_the_key();
        self.flush_pending_audit();
        Ok(())
    }

    /// Tells the store which data key the engine holds now, if any
    /// ([`Store::set_data_key_id`]). Called after every change of [`KeyState`].
    fn tell_store_the_key(&mut self) {
        let id = match &self.state {
            KeyState::Unlocked(u) => Some(u.keys.data_key_id()),
            _ => None,
        };
        self.store.set_data_key_id(id);
    }

    /// Runs `f` in a transaction of its own (for barrier jobs, which run with none open):
    /// committed if it succeeds, rolled back (and the engine's state re-read) if not.
    fn in_transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.store.begin()?;
        let result = f(self).and_then(|v| self.store.commit().map(|()| v));
        if result.is_err() {
            if let Err(e) = self.store.rollback() {
                tracing::error!(error = %e, "vault rollback failed");
            }
            if let Err(e) = self.resync() {
                tracing::error!(error = %e, "vault could not re-read its state after a rollback");
            }
        }
        result
    }

    /// The manifest, checked against the keyslots and sessions in the file (see
    /// [`manifest`]); for a vault written before manifests, a new one (written in the open
    /// transaction, with the session records re-sealed at its generation).
    fn verified_manifest(&mut self, keys: &Keys) -> Result<Manifest> {
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
            .any(|r| r.record.first() != Some(&super::crypto::RECORD_FORMAT_V1))
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

    /// Opens a session row's record with `keys`; returns its AAD row key too.
    fn open_session_row(
        keys: &Keys,
        row: &SessionRow,
    ) -> Result<(Vec<u8>, super::crypto::records::Opened)> {
        let place_row = Self::session_row_key(&row.name);
        let opened = keys.open(&Self::session_place(row.id, &place_row), &row.record)?;
        Ok((place_row, opened))
    }

    fn session_place(id: i64, row: &[u8]) -> RecordPlace<'_> {
        RecordPlace {
            table: "sessions",
            session_id: id,
            row,
        }
    }

    fn index_sessions(store: &mut S, u: &mut Unlocked) -> Result<()> {
        u.by_name.clear();
        u.names.clear();
        for row in store.sessions()? {
            u.by_name.insert(row.name.clone(), SessionId(row.id));
            u.names.insert(SessionId(row.id), row.name);
        }
        Ok(())
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

    /// Wipes the keys. Idempotent; refused while uninitialized.
    pub fn lock(&mut self) -> Result<()> {
        let header = match &self.state {
            KeyState::Uninitialized => return Err(EngineError::Uninitialized),
            KeyState::Locked(_) => return Ok(()),
            KeyState::Unlocked(u) => u.header.clone(),
        };
        // Dropping the Unlocked value zeroizes the DEK and both subkeys.
        self.state = KeyState::Locked(header);
        self.tell_store_the_key();
        Ok(())
    }

    /// The DEK, to seal a new keyslot with (passphrase change).
    pub fn with_dek<T>(&self, f: impl FnOnce(&SecretKey) -> T) -> Result<T> {
        match &self.state {
            KeyState::Unlocked(u) => Ok(f(u.keys.dek())),
            KeyState::Locked(_) => Err(EngineError::Locked),
            KeyState::Uninitialized => Err(EngineError::Uninitialized),
        }
    }

    fn unlocked(&self) -> Result<&Unlocked> {
        match &self.state {
            KeyState::Unlocked(u) => Ok(u),
            KeyState::Locked(_) => Err(EngineError::Locked),
            KeyState::Uninitialized => Err(EngineError::Uninitialized),
        }
    }

    /// The store and the unlocked state at once (for writes that need both).
    fn parts(&mut self) -> Result<(&mut S, &mut Unlocked)> {
        match &mut self.state {
            KeyState::Unlocked(u) => Ok((&mut self.store, u)),
            KeyState::Locked(_) => Err(EngineError::Locked),
            KeyState::Uninitialized => Err(EngineError::Uninitialized),
        }
    }

    /// The current vault generation, which every record written now carries.
    fn generation(&self) -> Result<u64> {
        Ok(self.unlocked()?.manifest.generation)
    }

    /// Bumps the vault generation, lets `f` update the manifest for the new generation, and
    /// stores it, in the open transaction. Returns the new generation.
    fn bump(&mut self, f: impl FnOnce(&mut Manifest, u64)) -> Result<u64> {
        let (store, u) = self.parts()?;
        u.manifest.generation += 1;
        u.manifest.audit_seq = u.audit.head.seq;
        let g = u.manifest.generation;
        f(&mut u.manifest, g);
        u.manifest.store(store, &u.keys)?;
        Ok(g)
    }

    fn unlocked_mut(&mut self) -> Result<&mut Unlocked> {
        match &mut self.state {
            KeyState::Unlocked(u) => Ok(u),
            KeyState::Locked(_) => Err(EngineError::Locked),
            KeyState::Uninitialized => Err(EngineError::Uninitialized),
        }
    }

    fn live(&self, sid: SessionId) -> Result<&Unlocked> {
        let u = self.unlocked()?;
        if u.names.contains_key(&sid) {
            Ok(u)
        } else {
            Err(EngineError::NoSuchSession {
                name: "(deleted while open)".into(),
            })
        }
    }

    // ---- generic rows -------------------------------------------------------------------------

    fn row_key(&self, sid: SessionId, table: Table, key: &[u8]) -> Result<[u8; 16]> {
        Ok(self.live(sid)?.keys.blind(table.name(), sid.0, "key", key))
    }

    fn seal_row<T: Serialize>(
        &self,
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
        let u = self.live(sid)?;
        let value = u
            .keys
            .seal(&place, u.manifest.generation, &encode(v)?, pad_class(table))?;
        Ok(Row {
            key: key.to_vec(),
            value,
        })
    }

    fn open_row<T: DeserializeOwned>(&self, sid: SessionId, table: Table, row: &Row) -> Result<T> {
        self.open_at(sid, table, &row.key, &row.value)
    }

    /// Opens and decodes the sealed `value` of the row keyed `key` (blinded).
    fn open_at<T: DeserializeOwned>(
        &self,
        sid: SessionId,
        table: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<T> {
        open_in(self.live(sid)?, sid, table, key, value)
    }

    fn get_row<T: DeserializeOwned>(
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

    fn scan_rows<T: DeserializeOwned>(&mut self, sid: SessionId, table: Table) -> Result<Vec<T>> {
        self.live(sid)?;
        let rows = self.store.scan(table, sid.0)?;
        rows.iter().map(|r| self.open_row(sid, table, r)).collect()
    }
}

/// Opens and decodes the sealed `value` of the row keyed `key` (blinded) with the keys of `u`:
/// what [`Engine::open_at`] does, without the engine, so that several threads can open rows of
/// one page at once (`data::Engine::peers_page`).
fn open_in<T: DeserializeOwned>(
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
