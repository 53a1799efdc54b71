//! `migrate_store`: a copy of a whole vault, as its sealed rows, from the store a daemon runs
//! on into an empty PostgreSQL database.
//!
//! No key is needed or used: every row keeps its bytes, and since both stores have the same
//! row shapes and every record's AAD binds the vault id, the table, the session id and the
//! row key (never a store-specific position), the copy opens with the same passphrase.
//! Session ids are therefore copied as they are (`OVERRIDING SYSTEM VALUE`), and the target's
//! id sequence moved past them; rows keep their order (each draws a new `seq` in source
//! order) and their blinded index values.
//!
//! Crash safety: the whole copy is one target transaction, which first takes an exclusive
//! lock on the target's `meta` table (two copies into one database cannot interleave) and
//! checks that the target holds no vault. Every row is then read back from the target inside
//! that transaction and compared byte for byte with the source; only then is it committed.
//! Any error, a mismatch, or a lost connection rolls it back: the target is left as it was
//! (its schema created by [`PostgresStore::open`], no vault in it).
//!
//! Neither transaction is ended by `idle_in_transaction_session_timeout` (vaultd's own or the
//! role's): each waits on the other database between statements, as long as the largest
//! session takes to copy (see [`super::idle`]).
//!
//! The source is read in one read-only transaction ([`Store::begin_snapshot`]): this daemon
//! writes nothing meanwhile (the vault is locked and the copy runs as one job of the storage
//! thread), and on a PostgreSQL source shared by other daemons the copy is the vault as it was
//! at one moment (`REPEATABLE READ`), never a mix of rows from before and after another
//! host's write. What other hosts write after that moment is not in the copy: stop or lock
//! them before switching them over.

use session_vault_proto::backup::MigrateInfo;

use super::super::error::{EngineError, Result};
use super::super::store::{SessionRow, Store, Table};
use super::{PgTarget, PostgresStore};

/// Audit entries read per page.
const AUDIT_PAGE: u32 = 1_000;

fn refused(message: String) -> EngineError {
    EngineError::Invalid(message)
}

fn mismatch(what: &str) -> EngineError {
    EngineError::Storage {
        kind: super::super::error::StorageErrorKind::Other,
        message: format!(
            "the copy read back from PostgreSQL differs from the source ({what}); nothing was \
             committed"
        ),
    }
}

/// Everything the source holds that the copy carries, in a comparable form.
#[derive(PartialEq, Eq)]
struct Snapshot {
    header: Option<super::super::store::Header>,
    keyslots: Vec<super::super::crypto::Keyslot>,
    manifest: Option<Vec<u8>>,
    audit_head: Option<Vec<u8>>,
    audit: Vec<(u64, Vec<u8>)>,
    sessions: Vec<SessionRow>,
}

fn read_audit<S: Store + ?Sized>(store: &mut S) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = store.audit_range(from, AUDIT_PAGE)?;
        let Some(last) = page.last().map(|e| e.0) else {
            return Ok(out);
        };
        let full = page.len() == AUDIT_PAGE as usize;
        out.extend(page);
        if !full {
            return Ok(out);
        }
        from = last + 1;
    }
}

fn snapshot<S: Store + ?Sized>(store: &mut S) -> Result<Snapshot> {
    let mut sessions = store.sessions()?;
    sessions.sort_by_key(|s| s.id);
    Ok(Snapshot {
        header: store.header()?,
        keyslots: store.keyslots()?,
        manifest: store.manifest()?,
        audit_head: store.audit_head()?,
        audit: read_audit(store)?,
        sessions,
    })
}

/// Copies the vault in `source` into the empty database `target`, verifies it and commits.
pub fn copy_into<S: Store + ?Sized>(source: &mut S, target: &PgTarget) -> Result<MigrateInfo> {
    source.begin_snapshot()?;
    let copied = copy_from_snapshot(source, target);
    let ended = source.rollback();
    let info = copied?;
    ended?;
    Ok(info)
}

/// [`copy_into`], with the source's snapshot open.
fn copy_from_snapshot<S: Store + ?Sized>(source: &mut S, target: &PgTarget) -> Result<MigrateInfo> {
    let src = snapshot(source)?;
    if src.header.is_none() {
        return Err(refused(
            "the vault is not initialized: there is nothing to migrate".into(),
        ));
    }
    let mut dst = PostgresStore::open(target.clone())?;
    dst.begin()?;
    // Not ended for sitting idle while the source is read (see `idle`): a database no other
    // vaultd uses yet, locked by this copy only.
    let result = dst
        .batch(super::idle::NO_TIMEOUT_LOCAL)
        .and_then(|()| copy_in_txn(source, &src, &mut dst));
    match result {
        Ok(info) => {
            dst.commit()?;
            Ok(info)
        }
        Err(e) => {
            let _ = dst.rollback();
            Err(e)
        }
    }
}

fn copy_in_txn<S: Store + ?Sized>(
    source: &mut S,
    src: &Snapshot,
    dst: &mut PostgresStore,
) -> Result<MigrateInfo> {
    // Held until the transaction ends: a second copy (or a daemon initializing a vault there)
    // waits, then finds the vault this one committed.
    dst.batch("LOCK TABLE meta, keyslots, sessions, audit IN EXCLUSIVE MODE")?;
    let shown = dst.display().to_owned();
    if dst.header()?.is_some() {
        return Err(refused(format!(
            "{shown} already holds a vault; migrate into an empty database (the copy never \
             merges or overwrites)"
        )));
    }
    let sessions_there = dst.sessions()?.len();
    let keyslots_there = dst.keyslots()?.len();
    let audit_there = dst.audit_last()?.is_some();
    if sessions_there != 0 || keyslots_there != 0 || audit_there {
        return Err(refused(format!(
            "{shown} holds the rows of a vault without its header (sessions {sessions_there}, \
             keyslots {keyslots_there}); migrate into an empty database"
        )));
    }

    let header = src.header.as_ref().expect("checked by the caller");
    dst.put_header(header)?;
    for slot in &src.keyslots {
        dst.put_keyslot(slot)?;
    }
    if let Some(m) = &src.manifest {
        dst.put_manifest(m)?;
    }
    for (seq, entry) in &src.audit {
        dst.put_audit(*seq, entry)?;
    }
    if let Some(h) = &src.audit_head {
        dst.put_audit_head(h)?;
    }
    let mut info = MigrateInfo {
        target: shown,
        keyslots: src.keyslots.len() as u64,
        sessions: src.sessions.len() as u64,
        rows: 0,
        audit_entries: src.audit.len() as u64,
    };
    for s in &src.sessions {
        dst.exec(
            "INSERT INTO sessions (id, name, created_at, updated_at, record)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5)",
            &[&s.id, &s.name, &s.created_at, &s.updated_at, &s.record],
        )?;
    }
    if !src.sessions.is_empty() {
        // New sessions get ids above every copied one (ids are never reused).
        dst.batch(
            "SELECT setval(pg_get_serial_sequence('sessions', 'id'), \
             (SELECT max(id) FROM sessions))",
        )?;
    }
    for s in &src.sessions {
        for table in Table::ALL {
            let rows = source.scan_all(table, s.id)?;
            let sql = per_table!(
                table,
                "INSERT INTO ",
                " (session, k, v, i1, i2) VALUES ($1, $2, $3, $4, $5)"
            );
            for (row, [i1, i2]) in &rows {
                dst.exec(sql, &[&s.id, &row.key, &row.value, i1, i2])?;
            }
            info.rows += rows.len() as u64;
            // Read back inside the transaction: the target's rows, in order, with their
            // index values, equal to the source's.
            if dst.scan_all(table, s.id)? != rows {
                return Err(mismatch(&format!(
                    "table {} of session id {}",
                    table.name(),
                    s.id
                )));
            }
        }
    }
    let back = snapshot(dst)?;
    if back.header != src.header {
        return Err(mismatch("vault header"));
    }
    if back.keyslots != src.keyslots {
        return Err(mismatch("keyslots"));
    }
    if back.manifest != src.manifest {
        return Err(mismatch("manifest"));
    }
    if back.audit_head != src.audit_head || back.audit != src.audit {
        return Err(mismatch("audit log"));
    }
    if back.sessions != src.sessions {
        return Err(mismatch("sessions"));
    }
    Ok(info)
}
