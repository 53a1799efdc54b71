//! [`Vault`]'s key operations: `init`, unlock (passphrase or recovery key), recovery keys,
//! `lock`, passphrase changes and `rekey`. Argon2 runs in `spawn_blocking`; keyslot changes run
//! as barrier jobs. Same `Vault` as `mod.rs`, split along this seam to keep files small.

use zeroize::Zeroizing;

use super::crypto::{self, KdfParams, Keyslot, SecretKey, VAULT_ID_LEN};
use super::error::{EngineError, Result};
use super::store::Header;
use super::worker::Class;
use super::{Vault, VaultState, blocking};

impl Vault {
    /// Initializes an empty vault: random vault id and DEK, keyslot 0 for `passphrase`.
    /// Runs Argon2 in `spawn_blocking`. Leaves the vault unlocked.
    pub async fn init(&self, passphrase: &[u8], kdf: KdfParams) -> Result<()> {
        if self.status().await?.state != VaultState::Uninitialized {
            return Err(EngineError::AlreadyInitialized);
        }
        crypto::check_new_passphrase(passphrase)?;
        let pass = Zeroizing::new(passphrase.to_vec());
        let (header, slot, dek) = blocking(move || {
            let mut vault_id = [0u8; VAULT_ID_LEN];
            crypto::fill_random(&mut vault_id)?;
            let dek = SecretKey::random()?;
            let slot = Keyslot::seal(&vault_id, 0, "passphrase", kdf, &pass, &dek)?;
            let created_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            Ok((
                Header {
                    vault_id,
                    created_at,
                },
                slot,
                dek,
            ))
        })
        .await?;
        self.call(Class::Durable, move |e| e.initialize(header, slot, dek))
            .await
    }

    /// Opens a passphrase keyslot with `passphrase` off the runtime; returns its number and
    /// the DEK.
    async fn open_keyslot(&self, passphrase: &[u8]) -> Result<(u32, SecretKey)> {
        self.open_keyslot_of(passphrase, false).await
    }

    /// Opens a keyslot with `secret` off the runtime, trying only the recovery keyslot when
    /// `recovery`, else only the others; returns its number and the DEK.
    async fn open_keyslot_of(&self, secret: &[u8], recovery: bool) -> Result<(u32, SecretKey)> {
        let (vault_id, slots) = self.call(Class::Read, |e| e.keyslots()).await?;
        let pass = Zeroizing::new(secret.to_vec());
        blocking(move || {
            let mut err = EngineError::BadPassphrase;
            let (wanted, others): (Vec<_>, Vec<_>) = slots
                .iter()
                .partition(|s| (s.kind == crypto::KIND_RECOVERY) == recovery);
            // A slot of the other kind is not tried, but a damaged or edited one (its kind
            // changed, say) is still reported if no slot opens.
            for slot in others {
                if let Err(e) = slot.verify_check(&vault_id) {
                    err = e;
                }
            }
            for slot in wanted {
                match slot.open(&vault_id, &pass) {
                    Ok(dek) => return Ok((slot.slot, dek)),
                    // A damaged slot says more than "wrong passphrase": report it if no slot opens.
                    Err(e @ EngineError::Corrupt { .. }) => err = e,
                    Err(EngineError::BadPassphrase) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(err)
        })
        .await
    }

    /// Unlocks with `passphrase` (Argon2 off the runtime). On an unlocked vault it only
    /// checks the passphrase. `BadPassphrase` changes nothing.
    pub async fn unlock(&self, passphrase: &[u8]) -> Result<()> {
        let (_, dek) = self.open_keyslot(passphrase).await?;
        self.call(Class::Barrier, move |e| e.install_keys(dek))
            .await
    }

    /// Unlocks with the recovery key's 16 bytes (only the recovery keyslot is tried).
    /// `BadPassphrase` when it does not open it, or there is no recovery keyslot.
    pub async fn unlock_with_recovery_key(&self, key: &[u8]) -> Result<()> {
        let (_, dek) = self.open_keyslot_of(key, true).await?;
        self.call(Class::Barrier, move |e| e.install_keys(dek))
            .await
    }

    /// Makes a new random recovery key and the recovery keyslot it opens, replacing any
    /// earlier one; returns the key's 16 bytes (to be shown once, never stored). The vault
    /// must be unlocked. The keyslot uses [`crypto::RECOVERY_KDF`] (the key has 128 random
    /// bits, so the KDF's cost protects nothing).
    pub async fn add_recovery_key(&self) -> Result<Zeroizing<[u8; 16]>> {
        let (vault_id, slots) = self.call(Class::Read, |e| e.keyslots()).await?;
        let dek = self
            .call(Class::Read, |e| {
                e.with_dek(|d| SecretKey::from_slice(d.expose()))
            })
            .await?
            .ok_or_else(|| EngineError::Invalid("the data key has the wrong length".into()))?;
        let slot_no = slots
            .iter()
            .find(|s| s.kind == crypto::KIND_RECOVERY)
            .or_else(|| slots.iter().max_by_key(|s| s.slot))
            .map_or(1, |s| {
                if s.kind == crypto::KIND_RECOVERY {
                    s.slot
                } else {
                    s.slot + 1
                }
            });
        let mut key = Zeroizing::new([0u8; 16]);
        crypto::fill_random(&mut key[..])?;
        let secret = key.clone();
        let (slot, dek) = blocking(move || {
            let slot = Keyslot::seal(
                &vault_id,
                slot_no,
                crypto::KIND_RECOVERY,
                crypto::RECOVERY_KDF,
                &secret[..],
                &dek,
            )?;
            Ok((slot, dek))
        })
        .await?;
        self.call(Class::Barrier, move |e| e.set_recovery_keyslot(slot, dek))
            .await?;
        Ok(key)
    }

    /// Deletes the recovery keyslot; `Ok(false)` when there is none. The vault must be
    /// unlocked.
    pub async fn remove_recovery_key(&self) -> Result<bool> {
        self.call(Class::Barrier, |e| e.remove_recovery_keyslot())
            .await
    }

    /// Commits pending writes and wipes the keys.
    pub async fn lock(&self) -> Result<()> {
        self.call(Class::Barrier, |e| e.lock()).await
    }

    /// Rewrites the keyslot `old` opens so that `new` opens it instead (fresh salt, `kdf`
    /// parameters). The data is not touched: the DEK stays the same, so whoever knows `old`
    /// and kept the old keyslot (a copy of the file) still holds the DEK; [`Vault::rekey`]
    /// takes that away. The manifest records the new keyslot at a new generation, so the old
    /// one put back is `Corrupt`; the WAL is checkpointed after the commit so that the old
    /// keyslot does not linger in it.
    pub async fn change_passphrase(&self, old: &[u8], new: &[u8], kdf: KdfParams) -> Result<()> {
        self.change_passphrase_with(old, false, new, kdf).await
    }

    /// [`Vault::change_passphrase`] where `old` is the recovery key's 16 bytes when
    /// `recovery`: then the passphrase keyslot (the lowest-numbered one that is not the
    /// recovery keyslot, 0 if none is left) is rewritten for `new`, and the recovery keyslot
    /// stays. The way back in when the passphrase is forgotten.
    pub async fn change_passphrase_with(
        &self,
        old: &[u8],
        recovery: bool,
        new: &[u8],
        kdf: KdfParams,
    ) -> Result<()> {
        crypto::check_new_passphrase(new)?;
        let (opened, dek) = self.open_keyslot_of(old, recovery).await?;
        let (vault_id, slots) = self.call(Class::Read, |e| e.keyslots()).await?;
        let slot_no = if recovery {
            slots
                .iter()
                .filter(|s| s.kind != crypto::KIND_RECOVERY)
                .map(|s| s.slot)
                .min()
                .unwrap_or(0)
        } else {
            opened
        };
        let pass = Zeroizing::new(new.to_vec());
        let (slot, dek) = blocking(move || {
            let slot = Keyslot::seal(
                &vault_id,
                slot_no,
                crypto::KIND_PASSPHRASE,
                kdf,
                &pass,
                &dek,
            )?;
            Ok((slot, dek))
        })
        .await?;
        self.call(Class::Barrier, move |e| e.replace_keyslot(slot, dek))
            .await
    }

    /// Replaces the DEK: a new random one, every record re-sealed and every blind index
    /// recomputed under its subkeys, and every keyslot replaced by one new keyslot 0 for
    /// `passphrase` (which must open a current passphrase keyslot; other keyslots, the
    /// recovery keyslot among them, must be added again).
    /// One transaction on the storage thread: a crash leaves the old vault or the new one.
    /// Requests wait meanwhile; open sessions keep their ids. The vault must be unlocked.
    /// Afterwards no old passphrase or keyslot opens anything.
    pub async fn rekey(&self, passphrase: &[u8], kdf: KdfParams) -> Result<()> {
        crypto::check_new_passphrase(passphrase)?;
        if self.status().await?.state != VaultState::Unlocked {
            // Checked before Argon2 runs; the storage thread checks again.
            return Err(EngineError::Locked);
        }
        let (_, old_dek) = self.open_keyslot(passphrase).await?;
        drop(old_dek);
        let (vault_id, _) = self.call(Class::Read, |e| e.keyslots()).await?;
        let pass = Zeroizing::new(passphrase.to_vec());
        let (slot, dek) = blocking(move || {
            let dek = SecretKey::random()?;
            let slot = Keyslot::seal(&vault_id, 0, "passphrase", kdf, &pass, &dek)?;
            Ok((slot, dek))
        })
        .await?;
        self.call(Class::Barrier, move |e| e.rekey(slot, dek)).await
    }
}
