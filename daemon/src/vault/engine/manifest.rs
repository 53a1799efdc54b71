//! The vault generation and the sealed manifest: what makes a rollback of keyslots, ACLs or
//! whole sessions in a stolen or writable `vault.db` show as `Corrupt`.
//!
//! The **generation** `G` (u64) counts the vault's security-relevant changes. It is bumped in
//! the same transaction as every keyslot change (`passwd`), every ACL change (grant, revoke,
//! import, `set_acl`), every session create, delete and rename, and `rekey`. Every record
//! written carries the generation current at its writing, authenticated (record format 2,
//! see [`crate::vault::crypto::records`]).
//!
//! The **manifest** is one sealed record (table `meta`, session 0, row `manifest`) holding:
//! - `G`;
//! - for each keyslot, the SHA-256 checksum of its current version (the checksum covers the
//!   slot's salt, KDF parameters and wrapped key, so any older version differs);
//! - for each live session, its *floor*: the generation of its last ACL change, create or
//!   rename;
//! - the audit log's last entry number at the bump ([`super::audit`]).
//!
//! Checks, each answered with `Corrupt`:
//! - at unlock: a keyslot that differs from the manifest's (an old keyslot put back), a
//!   keyslot missing from it or added to it; a session row absent from the manifest (a
//!   deleted session put back) or a manifest session without its row (one deleted); a missing
//!   manifest while a session record of format 2 exists (the manifest deleted to pass for a
//!   vault written before manifests);
//! - on every read of a session record (which every session request and `list` does first):
//!   a record older than the session's floor (an old ACL or name put back);
//! - on every record read: a generation above `G` (the manifest itself rolled back while
//!   newer rows exist).
//!
//! The manifest cannot be forged without the DEK. Why keyslots are named by checksum and not
//! by a generation in their AAD: a keyslot is sealed off the storage thread (Argon2), before
//! the generation of the transaction that stores it is known; its checksum needs no such
//! guess and no change to the keyslot format.
//!
//! What stays possible (README, security model): a consistent rollback of the whole file
//! (every row, the manifest included, from one older copy: nothing on the host is trusted to
//! remember the newest generation); an older version of a row other than a session record,
//! written within the same generation (peers, update state, DC options between two
//! security-relevant changes); deleting a peer, DC option or other per-session row. And an
//! attacker who knows an old passphrase and holds the matching old keyslot knows the DEK, so
//! can forge everything: only `rekey` (a new DEK) takes that away.
//!
//! Vaults written before manifests existed get one at their first unlock (`G` = 1, the
//! keyslots and sessions found), and their session records are re-sealed in format 2 in the
//! same transaction, so that deleting the manifest later is noticed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::{decode, encode};
use crate::vault::crypto::{Keys, Keyslot, PAD_SMALL, RecordPlace};
use crate::vault::error::{EngineError, Result};
use crate::vault::store::Store;

/// Where the manifest record lives (its AAD).
pub(super) const PLACE: RecordPlace<'static> = RecordPlace {
    table: "meta",
    session_id: 0,
    row: b"manifest",
};

/// The manifest's contents (see the module docs). Positional MessagePack like every record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The vault generation.
    pub generation: u64,
    /// Keyslot number → checksum of its current version.
    pub keyslots: BTreeMap<u32, Vec<u8>>,
    /// Session id → floor generation (last ACL change, create or rename).
    pub sessions: BTreeMap<i64, u64>,
    /// The audit log's last entry number when the generation was last bumped (a floor the
    /// log may not end below: [`super::audit`]). Absent (0) in manifests written before the
    /// log existed.
    #[serde(default)]
    pub audit_seq: u64,
}

/// Why a record above the manifest's generation is refused. On a store several daemons
/// share it is first taken as this daemon's view being older than another's change
/// ([`is_newer_than_manifest`]): the vault re-reads the manifest and tries once more.
const NEWER_THAN_MANIFEST: &str =
    "record is newer than the manifest (the manifest was rolled back)";

/// Whether `e` refused a record newer than the manifest held (see `NEWER_THAN_MANIFEST`).
pub fn is_newer_than_manifest(e: &EngineError) -> bool {
    matches!(e, EngineError::Corrupt { reason, .. } if *reason == NEWER_THAN_MANIFEST)
}

fn corrupt(reason: &'static str) -> EngineError {
    PLACE.corrupt(reason)
}

impl Manifest {
    /// Reads and opens the manifest, if the vault has one.
    pub(super) fn load<S: Store>(store: &mut S, keys: &Keys) -> Result<Option<Manifest>> {
        let Some(sealed) = store.manifest()? else {
            return Ok(None);
        };
        let opened = keys.open(&PLACE, &sealed)?;
        let m: Manifest = decode(&PLACE, &opened.plain)?;
        if opened.generation != m.generation {
            return Err(corrupt(
                "manifest sealed at another generation than it names",
            ));
        }
        Ok(Some(m))
    }

    /// Seals and stores the manifest.
    pub(super) fn store<S: Store>(&self, store: &mut S, keys: &Keys) -> Result<()> {
        let sealed = keys.seal(&PLACE, self.generation, &encode(self)?, PAD_SMALL)?;
        store.put_manifest(&sealed)
    }

    /// Checks the keyslots in the file against the manifest.
    pub(super) fn check_keyslots(&self, vault_id: &[u8], slots: &[Keyslot]) -> Result<()> {
        if slots.len() != self.keyslots.len() {
            return Err(corrupt(
                "a keyslot was added or removed behind the vault's back",
            ));
        }
        for slot in slots {
            match self.keyslots.get(&slot.slot) {
                Some(sum) if *sum == slot.checksum(vault_id) => {}
                _ => {
                    return Err(EngineError::Corrupt {
                        table: "keyslots",
                        session_id: 0,
                        row: slot.slot.to_string(),
                        reason: "keyslot is not the current version (rolled back or replaced)",
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks the session ids in the file against the manifest.
    pub(super) fn check_sessions(&self, ids: impl Iterator<Item = i64>) -> Result<()> {
        let mut n = 0;
        for id in ids {
            n += 1;
            if !self.sessions.contains_key(&id) {
                return Err(EngineError::Corrupt {
                    table: "sessions",
                    session_id: id,
                    row: String::new(),
                    reason: "session is not in the manifest (a deleted session put back)",
                });
            }
        }
        if n != self.sessions.len() {
            return Err(corrupt(
                "a session of the manifest is missing from the file",
            ));
        }
        Ok(())
    }

    /// Checks a record's generation: not above `G`.
    pub(super) fn check_generation(&self, place: &RecordPlace<'_>, generation: u64) -> Result<()> {
        if generation > self.generation {
            return Err(place.corrupt(NEWER_THAN_MANIFEST));
        }
        Ok(())
    }

    /// Checks a session record's generation: not above `G`, not below the session's floor.
    pub(super) fn check_session_record(
        &self,
        place: &RecordPlace<'_>,
        generation: u64,
    ) -> Result<()> {
        self.check_generation(place, generation)?;
        match self.sessions.get(&place.session_id) {
            None => Err(place.corrupt("session is not in the manifest")),
            Some(&floor) if generation < floor => Err(place.corrupt(
                "session record is older than its last ACL change or rename (rolled back)",
            )),
            Some(_) => Ok(()),
        }
    }
}
