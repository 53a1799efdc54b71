//! The vault state machine and its operations, run on the storage thread.
//!
//! [`Engine`] owns the [`Store`] and the [`KeyState`]; every method is synchronous and is
//! called only by the storage thread ([`super::worker`]), which wraps writes in savepoints
//! and group-commits them. Argon2 never runs here: keyslots are opened by the caller off the
//! runtime and the resulting DEK is handed in ([`Engine::install_keys`]).
//!
//! `mod.rs` holds the state machine and the session index; `rows.rs` the sealed-row helpers;
//! `follow.rs` the manifest checked at unlock and the re-reads after a rollback or another
//! daemon's change; `data.rs` the per-session data rows (DC options, peers, sent files) and
//! `state.rs` the update state; `record.rs` the
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

use serde::{Deserialize, Serialize};
use session_vault_proto::message::VaultState;
use session_vault_proto::model::{PeerKind, SelfUser, SessionAcl, SessionExtras};

use super::crypto::{Keys, Keyslot, PAD_FIXED, PAD_SMALL, RecordPlace, SecretKey, VAULT_ID_LEN};
use super::error::{EngineError, Result};
use super::store::{Header, SessionRow, Store, Table};

pub mod audit;
mod data;
mod follow;
pub mod manifest;
pub mod names;
mod record;
mod rekey;
mod rows;
mod sessions;
mod state;
mod verify;

#[cfg(test)]
pub(crate) use data::FORCED_PEER_WRITES;
pub use names::validate_name;
pub use sessions::export_too_large;
pub use state::CLEAR_HERE_MAX;

pub use manifest::Manifest;

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
}
