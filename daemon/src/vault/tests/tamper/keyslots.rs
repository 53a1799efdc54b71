//! Tampering with keyslots and the vault id: any edit of a keyslot's KDF parameters, salt,
//! wrapped key, kind or number, or of the vault id, makes `unlock` and `change_passphrase`
//! fail with `Corrupt` (checked before any key derivation, so a 4 GiB memory cost costs
//! nothing); a downgrade with a forged checksum is still refused by the AEAD.

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::super::support::*;
use super::Fixture;
use crate::vault::{EngineError, VaultState};

/// `Keyslot::aad` and `Keyslot::checksum`, restated: lets the test forge a consistent
/// checksum, as an attacker who read the source would.
fn forged_check(c: &Connection) -> Vec<u8> {
    fn field(buf: &mut Vec<u8>, f: &[u8]) {
        buf.extend_from_slice(&(f.len() as u32).to_be_bytes());
        buf.extend_from_slice(f);
    }
    let vault_id: Vec<u8> = c
        .query_row("SELECT v FROM meta WHERE k = 'vault_id'", [], |r| r.get(0))
        .unwrap();
    let (slot, kind, m, t, p, salt, wrapped): (u32, String, u32, u32, u32, Vec<u8>, Vec<u8>) = c
        .query_row(
            "SELECT slot, kind, m_cost, t_cost, p_cost, salt, wrapped FROM keyslots",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .unwrap();
    let mut aad = Vec::new();
    field(&mut aad, b"session-vault keyslot v1");
    field(&mut aad, &vault_id);
    field(&mut aad, &slot.to_be_bytes());
    field(&mut aad, kind.as_bytes());
    field(&mut aad, b"argon2id-v19");
    for x in [m, t, p] {
        field(&mut aad, &x.to_be_bytes());
    }
    field(&mut aad, &salt);
    let mut h = Sha256::new();
    h.update(&aad);
    h.update(&wrapped);
    h.finalize().to_vec()
}

fn flip_blob(c: &Connection, select: &str, update: &str) {
    let mut v: Vec<u8> = c.query_row(select, [], |r| r.get(0)).unwrap();
    let i = v.len() / 2;
    v[i] ^= 0x01;
    assert_eq!(c.execute(update, [v]).unwrap(), 1);
}

#[tokio::test]
async fn edited_keyslot_is_corrupt_at_unlock() {
    let f = Fixture::new().await;
    type Edit = fn(&Connection);
    let cases: [(&str, Edit); 12] = [
        ("m_cost doubled", |c| {
            c.execute_batch("UPDATE keyslots SET m_cost = m_cost * 2")
                .unwrap()
        }),
        ("m_cost lowered", |c| {
            c.execute_batch("UPDATE keyslots SET m_cost = 8").unwrap()
        }),
        // Checked before any key derivation: a 4 GiB Argon2 run would take this test down.
        ("m_cost 4 GiB", |c| {
            c.execute_batch("UPDATE keyslots SET m_cost = 4194304")
                .unwrap()
        }),
        ("t_cost raised", |c| {
            c.execute_batch("UPDATE keyslots SET t_cost = t_cost + 1")
                .unwrap()
        }),
        ("t_cost zero", |c| {
            c.execute_batch("UPDATE keyslots SET t_cost = 0").unwrap()
        }),
        ("p_cost raised", |c| {
            c.execute_batch("UPDATE keyslots SET p_cost = p_cost + 1")
                .unwrap()
        }),
        ("salt", |c| {
            flip_blob(
                c,
                "SELECT salt FROM keyslots",
                "UPDATE keyslots SET salt = ?1",
            )
        }),
        ("wrapped key", |c| {
            flip_blob(
                c,
                "SELECT wrapped FROM keyslots",
                "UPDATE keyslots SET wrapped = ?1",
            )
        }),
        ("checksum", |c| {
            flip_blob(
                c,
                "SELECT check_sum FROM keyslots",
                "UPDATE keyslots SET check_sum = ?1",
            )
        }),
        ("kind", |c| {
            c.execute_batch("UPDATE keyslots SET kind = 'recovery'")
                .unwrap()
        }),
        ("slot number", |c| {
            c.execute_batch("UPDATE keyslots SET slot = 7").unwrap()
        }),
        ("vault id", |c| {
            flip_blob(
                c,
                "SELECT v FROM meta WHERE k = 'vault_id'",
                "UPDATE meta SET v = ?1 WHERE k = 'vault_id'",
            )
        }),
    ];
    for (what, edit) in cases {
        let t = crash_image(&f.pristine);
        edit(&raw(&t.db()));
        let vault = open(&t);
        let r = vault.unlock(PASS).await;
        assert!(
            matches!(
                r,
                Err(EngineError::Corrupt {
                    table: "keyslots",
                    ..
                })
            ),
            "{what}: unlock gave {r:?}"
        );
        assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
        let r = vault
            .change_passphrase(PASS, b"new passphrase", fast_kdf())
            .await;
        assert!(
            matches!(r, Err(EngineError::Corrupt { .. })),
            "{what}: change_passphrase gave {r:?}"
        );
        close(vault).await;
    }

    // Control: an unedited copy unlocks.
    let t = crash_image(&f.pristine);
    let vault = open(&t);
    vault.unlock(PASS).await.expect("unedited copy unlocks");
    close(vault).await;
}

#[tokio::test]
async fn downgraded_keyslot_with_a_forged_checksum_never_unlocks() {
    // The checksum is no security boundary: an attacker can recompute it. The AEAD's AAD,
    // which binds the KDF parameters, must still refuse the downgraded slot.
    let f = Fixture::new().await;
    let t = crash_image(&f.pristine);
    {
        let c = raw(&t.db());
        c.execute_batch("UPDATE keyslots SET m_cost = 8, t_cost = 1, p_cost = 1")
            .unwrap();
        let check = forged_check(&c);
        c.execute("UPDATE keyslots SET check_sum = ?1", [check])
            .unwrap();
    }
    let vault = open(&t);
    let r = vault.unlock(PASS).await;
    // BadPassphrase (not Corrupt) shows the forged checksum passed and the AEAD refused.
    assert!(
        matches!(r, Err(EngineError::BadPassphrase)),
        "downgraded slot: {r:?}"
    );
    assert_eq!(vault.status().await.unwrap().state, VaultState::Locked);
    close(vault).await;

    // Control: the forger's checksum is right (an unedited slot with it still unlocks).
    let t = crash_image(&f.pristine);
    {
        let c = raw(&t.db());
        let check = forged_check(&c);
        let stored: Vec<u8> = c
            .query_row("SELECT check_sum FROM keyslots", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, stored, "the restated checksum matches the engine's");
    }
}
