//! `import_begin`/`import_chunk`/`import_commit` and `export_begin`/`export_chunk` (admins):
//! a whole session moved in chunks, so that a session of any size travels in frames well
//! under the default frame limit ([`CHUNK_MAX`] bytes each, as backups and restores do, see
//! [`super::backup`]), and `transfer_end` ends either.
//!
//! The bytes are one MessagePack [`SessionData`](session_vault_proto::model::SessionData), as `import_session` carries it. They are
//! held in memory (zeroized when dropped: they hold auth keys), never in a file, and only for
//! the connection that began the transfer: one pending transfer per connection, dropped when
//! the connection ends, when it begins another, or at `transfer_end`. An import is stored only
//! at `import_commit`, by [`super::admin::import`], in the one durable transaction an
//! `import_session` makes: before it nothing is stored or visible, and an import abandoned at
//! any point leaves nothing. The memory a pending transfer holds is taken from the daemon's
//! request-memory budget ([`crate::server::limits::Limits::hold`]) for as long as it is held:
//! a transfer over half that budget is refused, and one that does not fit now waits for room.
//! Only admins may send these requests (as `import_session`), so no other uid can pin memory
//! this way.

use std::collections::HashMap;
use std::sync::Mutex;

use session_vault_proto::backup::{Blob, CHUNK_MAX, TransferInfo, decode_session, encode_session};
use session_vault_proto::message::{ErrorCode, Response, WireError};
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;
use zeroize::Zeroizing;

use crate::server::context::Conn;
use crate::server::errors::wire_error;

/// What `import_session` would take besides the data: kept from `import_begin` to
/// `import_commit`.
#[derive(Debug, Clone)]
pub struct Import {
    /// Session name.
    pub name: String,
    /// Replace an existing session.
    pub replace: bool,
    /// Owner uid (the requesting uid when `None`).
    pub owner_uid: Option<u32>,
    /// End a held lease on the session replaced.
    pub force: bool,
}

enum Kind {
    Import { import: Import, sha256: Vec<u8> },
    Export,
}

struct Pending {
    id: u64,
    kind: Kind,
    size: u64,
    /// Import: the bytes received so far (capacity `size`, reserved at once, so that it never
    /// moves and leaves a copy behind). Export: the whole encoded session.
    bytes: Zeroizing<Vec<u8>>,
    /// Its share of the daemon's request-memory budget, given back when dropped.
    _memory: OwnedSemaphorePermit,
}

/// The pending streamed transfers, one per connection at most, by connection id.
#[derive(Default)]
pub struct Streams {
    pending: Mutex<HashMap<u64, Pending>>,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        // Only map updates and byte copies run under this lock.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops connection `conn`'s transfer `id`; whether there was one.
    pub fn end(&self, conn: u64, id: u64) -> bool {
        let mut map = self.lock();
        if map.get(&conn).is_some_and(|p| p.id == id) {
            map.remove(&conn);
            true
        } else {
            false
        }
    }

    /// Drops whatever connection `conn` left pending (its bytes zeroized, its memory given
    /// back).
    pub fn connection_ended(&self, conn: u64) {
        self.lock().remove(&conn);
    }
}

fn invalid(message: impl Into<String>) -> WireError {
    wire_error(ErrorCode::InvalidRequest, message)
}

fn no_transfer(id: u64) -> WireError {
    invalid(format!(
        "no import or export {id} in progress on this connection (ended, committed, or \
         replaced by a later one)"
    ))
}

/// Takes `size` bytes from the memory budget, or says why it cannot.
async fn hold(conn: &Conn, size: u64, what: &str) -> Result<OwnedSemaphorePermit, WireError> {
    let limits = &conn.daemon.limits;
    limits.hold(size).await.ok_or_else(|| {
        invalid(format!(
            "the {what} is {size} bytes, more than this daemon holds for one transfer ({} \
             bytes, half its request memory); start vaultd with a larger \
             --request-memory-mib",
            limits.hold_max()
        ))
    })
}

/// `import_begin`: checks what can be checked before any byte arrives (the vault unlocked, a
/// free name unless `replace`), then reserves memory for `size` bytes.
pub async fn import_begin(
    conn: &Conn,
    import: Import,
    size: u64,
    sha256: Blob,
) -> Result<Response, WireError> {
    let d = &conn.daemon;
    if sha256.0.len() != 32 {
        return Err(invalid("sha256 must be 32 bytes"));
    }
    // A transfer begun on this connection before is dropped first: its memory is free to
    // count toward this one.
    d.streams.connection_ended(conn.id);
    match d.vault.open_session(&import.name).await {
        Ok(_) if !import.replace => {
            return Err(wire_error(
                ErrorCode::NameTaken,
                format!("a session named {:?} already exists", import.name),
            ));
        }
        Ok(_) => {}
        Err(crate::vault::EngineError::NoSuchSession { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let memory = hold(conn, size, "import").await?;
    let capacity = usize::try_from(size).map_err(|_| invalid("size too large"))?;
    let id = d.transfers.new_id();
    let pending = Pending {
        id,
        kind: Kind::Import {
            import,
            sha256: sha256.0.clone(),
        },
        size,
        bytes: Zeroizing::new(Vec::with_capacity(capacity)),
        _memory: memory,
    };
    d.streams.lock().insert(conn.id, pending);
    Ok(Response::Transfer(TransferInfo { id, size, sha256 }))
}

/// `import_chunk`: the next bytes, in order.
pub fn import_chunk(conn: &Conn, id: u64, offset: u64, data: Blob) -> Result<Response, WireError> {
    let mut map = conn.daemon.streams.lock();
    let p = map
        .get_mut(&conn.id)
        .filter(|p| p.id == id && matches!(p.kind, Kind::Import { .. }))
        .ok_or_else(|| no_transfer(id))?;
    let received = p.bytes.len() as u64;
    let len = data.0.len() as u64;
    if offset != received || data.0.len() > CHUNK_MAX || received + len > p.size {
        return Err(invalid(format!(
            "import chunk out of order or too long: offset {offset}, {len} bytes; {received} \
             of {} bytes received, chunks of at most {CHUNK_MAX} bytes",
            p.size
        )));
    }
    // Within the capacity reserved at `import_begin`: no reallocation.
    p.bytes.extend_from_slice(&data.0);
    let mut data = data;
    zeroize::Zeroize::zeroize(&mut data.0);
    Ok(Response::Ok)
}

/// `import_commit`: the transfer ends here whatever the outcome; the session is stored by
/// [`super::admin::import`] in one transaction.
pub async fn import_commit(conn: &Conn, id: u64) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let pending = {
        let mut map = d.streams.lock();
        match map.get(&conn.id) {
            Some(p) if p.id == id && matches!(p.kind, Kind::Import { .. }) => map.remove(&conn.id),
            _ => None,
        }
    }
    .ok_or_else(|| no_transfer(id))?;
    let Pending {
        kind: Kind::Import { import, sha256 },
        size,
        bytes,
        _memory,
        ..
    } = pending
    else {
        return Err(no_transfer(id));
    };
    if bytes.len() as u64 != size {
        return Err(invalid(format!(
            "the import is incomplete: {} of {size} bytes received; nothing was imported",
            bytes.len()
        )));
    }
    // Hashing and decoding megabytes: off the runtime.
    let data = tokio::task::spawn_blocking(move || {
        if Sha256::digest(&bytes[..]).as_slice() != sha256.as_slice() {
            return Err(wire_error(
                ErrorCode::Corrupt,
                "the import is not the one announced (its SHA-256 differs); nothing was imported",
            ));
        }
        decode_session(&bytes).map_err(|e| {
            invalid(format!(
                "the import is not a valid session ({e}); nothing was imported"
            ))
        })
    })
    .await
    .map_err(|e| wire_error(ErrorCode::Internal, format!("decode task failed: {e}")))??;
    let Import {
        name,
        replace,
        owner_uid,
        force,
    } = import;
    let answer = super::admin::import(conn, name, data, replace, owner_uid, force).await;
    drop(_memory);
    answer
}

/// `export_begin`: the whole session, encoded once and held for `export_chunk`.
pub async fn export_begin(conn: &Conn, name: String) -> Result<Response, WireError> {
    let d = &conn.daemon;
    d.streams.connection_ended(conn.id);
    let sid = d.vault.open_session(&name).await?;
    let data = d.vault.export(sid).await?;
    let bytes = tokio::task::spawn_blocking(move || {
        let bytes = encode_session(&data)
            .map_err(|e| wire_error(ErrorCode::Internal, format!("cannot encode: {e}")))?;
        let sha256 = Sha256::digest(&bytes[..]).to_vec();
        Ok::<_, WireError>((bytes, sha256))
    })
    .await
    .map_err(|e| wire_error(ErrorCode::Internal, format!("encode task failed: {e}")))?;
    let (bytes, sha256) = bytes?;
    let size = bytes.len() as u64;
    let memory = hold(conn, size, "export").await?;
    let id = d.transfers.new_id();
    d.streams.lock().insert(
        conn.id,
        Pending {
            id,
            kind: Kind::Export,
            size,
            bytes,
            _memory: memory,
        },
    );
    tracing::info!(uid = conn.peer.uid, name = %name.escape_debug(), bytes = size, "session export begun");
    Ok(Response::Transfer(TransferInfo {
        id,
        size,
        sha256: Blob(sha256),
    }))
}

/// `export_chunk`: up to [`CHUNK_MAX`] bytes from `offset`.
pub fn export_chunk(conn: &Conn, id: u64, offset: u64) -> Result<Response, WireError> {
    let map = conn.daemon.streams.lock();
    let p = map
        .get(&conn.id)
        .filter(|p| p.id == id && matches!(p.kind, Kind::Export))
        .ok_or_else(|| no_transfer(id))?;
    let start = usize::try_from(offset.min(p.size)).unwrap_or(p.bytes.len());
    let end = start.saturating_add(CHUNK_MAX).min(p.bytes.len());
    Ok(Response::Chunk(Blob(p.bytes[start..end].to_vec())))
}
