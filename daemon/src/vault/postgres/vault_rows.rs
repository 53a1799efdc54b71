//! The vault's own rows in PostgreSQL: header, keyslots, the sealed manifest (written
//! compare-and-set), the data key's id and the audit log; and the locks between daemons (a
//! session's row, the audit appends' advisory lock). The bodies of those `Store` methods;
//! the trait impl in `mod.rs` forwards `x` to `do_x`.

use super::errors::CONFLICT_MESSAGE;
use super::rows::{audit_row, u32_col};
use super::{AUDIT_LOCK, DATA_KEY_ID, DATA_KEY_LOCK, PostgresStore, begin_sql};
use crate::vault::crypto::{KdfParams, Keyslot, VAULT_ID_LEN};
use crate::vault::error::{EngineError, Result, StorageErrorKind};
use crate::vault::store::{Header, audit_seq};

impl PostgresStore {
    pub(super) fn do_header(&mut self) -> Result<Option<Header>> {
        let Some(id) = self.meta("vault_id")? else {
            return Ok(None);
        };
        let vault_id: [u8; VAULT_ID_LEN] = id
            .as_slice()
            .try_into()
            .map_err(|_| self.not_a_vault("vault id has the wrong length".into()))?;
        let created = self.meta("created_at")?.unwrap_or_default();
        let created_at = i64::from_be_bytes(created.try_into().unwrap_or([0; 8]));
        Ok(Some(Header {
            vault_id,
            created_at,
        }))
    }

    pub(super) fn do_put_header(&mut self, header: &Header) -> Result<()> {
        self.put_meta("vault_id", &header.vault_id)?;
        self.put_meta("created_at", &header.created_at.to_be_bytes())
    }

    pub(super) fn do_keyslots(&mut self) -> Result<Vec<Keyslot>> {
        let rows = self.query(
            "SELECT slot, kind, m_cost, t_cost, p_cost, salt, wrapped, check_sum
             FROM keyslots ORDER BY slot",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Keyslot {
                    slot: u32_col(r, 0)?,
                    kind: r.get(1),
                    kdf: KdfParams {
                        m_cost_kib: u32_col(r, 2)?,
                        t_cost: u32_col(r, 3)?,
                        p_cost: u32_col(r, 4)?,
                    },
                    salt: r.get(5),
                    wrapped: r.get(6),
                    check: r.get(7),
                })
            })
            .collect()
    }

    pub(super) fn do_put_keyslot(&mut self, s: &Keyslot) -> Result<()> {
        self.exec(
            "INSERT INTO keyslots (slot, kind, m_cost, t_cost, p_cost, salt, wrapped, check_sum)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (slot) DO UPDATE SET kind = excluded.kind, m_cost = excluded.m_cost,
                 t_cost = excluded.t_cost, p_cost = excluded.p_cost, salt = excluded.salt,
                 wrapped = excluded.wrapped, check_sum = excluded.check_sum",
            &[
                &i64::from(s.slot),
                &s.kind,
                &i64::from(s.kdf.m_cost_kib),
                &i64::from(s.kdf.t_cost),
                &i64::from(s.kdf.p_cost),
                &s.salt,
                &s.wrapped,
                &s.check,
            ],
        )?;
        Ok(())
    }

    pub(super) fn do_delete_keyslots(&mut self) -> Result<()> {
        self.exec("DELETE FROM keyslots", &[])?;
        Ok(())
    }

    pub(super) fn do_delete_keyslot(&mut self, slot: u32) -> Result<()> {
        self.exec("DELETE FROM keyslots WHERE slot = $1", &[&i64::from(slot)])?;
        Ok(())
    }

    pub(super) fn do_manifest(&mut self) -> Result<Option<Vec<u8>>> {
        let m = self.meta("manifest")?;
        self.manifest_seen = m.clone();
        Ok(m)
    }

    pub(super) fn do_put_manifest(&mut self, sealed: &[u8]) -> Result<()> {
        // Compare-and-set against the manifest this store last read or wrote: two daemons
        // must not overwrite each other's manifest (each would drop the other's sessions from
        // it, which every later unlock reports as `Corrupt`). The loser gets a clear error
        // and re-reads the vault at its next unlock.
        let n = match &self.manifest_seen {
            Some(seen) => {
                let seen = seen.clone();
                self.exec(
                    "UPDATE meta SET v = $2 WHERE k = 'manifest' AND v = $1",
                    &[&seen, &sealed],
                )?
            }
            None => self.exec(
                "INSERT INTO meta (k, v) VALUES ('manifest', $1) ON CONFLICT (k) DO NOTHING",
                &[&sealed],
            )?,
        };
        if n == 0 {
            return Err(EngineError::Storage {
                kind: StorageErrorKind::Busy,
                message: CONFLICT_MESSAGE.into(),
            });
        }
        self.manifest_seen = Some(sealed.to_vec());
        Ok(())
    }

    pub(super) fn do_manifest_changed(&mut self) -> Result<bool> {
        let stored = self.meta("manifest")?;
        Ok(stored != self.manifest_seen)
    }

    pub(super) fn do_lock_session(&mut self, id: i64, admin: bool) -> Result<()> {
        // Locks in one order everywhere: the session's lease row (the fencing check, which
        // the record's write would run next anyway), then its `sessions` row. A delete takes
        // them in that order too (lease row deleted first); a record change taking the
        // session row first once deadlocked with another host's delete of the session.
        if !admin {
            self.fence(id)?;
        }
        self.exec("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", &[&id])?;
        if admin {
            // The fence is passed for this operation's writes of the session (see the trait),
            // not for the rest of the transaction: another handle's write of the session in
            // the same group commit is checked as ever.
            self.admin_pass.push(id);
        }
        Ok(())
    }

    pub(super) fn do_set_data_key_id(&mut self, id: Option<[u8; 16]>) {
        self.begin_sql = begin_sql(id.as_ref());
    }

    pub(super) fn do_replace_data_key_id(&mut self, id: &[u8; 16]) -> Result<()> {
        // Waits for the other daemons' open transactions (which hold the lock shared since
        // their `BEGIN`) and keeps new ones waiting until this one ends; this store's own
        // shared hold does not conflict with itself.
        self.exec("SELECT pg_advisory_xact_lock($1)", &[&DATA_KEY_LOCK])?;
        self.exec(
            "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            &[&DATA_KEY_ID, &&id[..]],
        )?;
        Ok(())
    }

    pub(super) fn do_lock_audit(&mut self) -> Result<bool> {
        // Held until the transaction ends, so two daemons' entries cannot both take the same
        // number or link to the same predecessor: the chain stays one.
        self.exec("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
        Ok(true)
    }

    pub(super) fn do_try_lock_audit(&mut self) -> Result<Option<bool>> {
        let got = self
            .query_opt("SELECT pg_try_advisory_xact_lock($1)", &[&AUDIT_LOCK])?
            .is_some_and(|r| r.get::<_, bool>(0));
        Ok(got.then_some(true))
    }

    pub(super) fn do_put_audit(&mut self, seq: u64, sealed: &[u8]) -> Result<()> {
        self.exec(
            "INSERT INTO audit (seq, entry) VALUES ($1, $2) \
             ON CONFLICT (seq) DO UPDATE SET entry = excluded.entry",
            &[&audit_seq(seq)?, &sealed],
        )?;
        Ok(())
    }

    pub(super) fn do_audit_range(
        &mut self,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let rows = self.query(
            "SELECT seq, entry FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2",
            &[&audit_seq(from_seq)?, &i64::from(limit)],
        )?;
        Ok(rows.iter().map(audit_row).collect())
    }

    pub(super) fn do_audit_last(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        Ok(self
            .query_opt(
                "SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1",
                &[],
            )?
            .as_ref()
            .map(audit_row))
    }

    pub(super) fn do_audit_head(&mut self) -> Result<Option<Vec<u8>>> {
        self.meta("audit_head")
    }

    pub(super) fn do_put_audit_head(&mut self, sealed: &[u8]) -> Result<()> {
        self.put_meta("audit_head", sealed)
    }

    pub(super) fn do_checkpoint(&mut self) -> Result<()> {
        // Rewrites the two tables into new files (the old ones are unlinked), so a replaced
        // keyslot's bytes do not stay in a live table file. See the module doc for the WAL.
        self.batch("VACUUM FULL keyslots, meta")
    }
}
