//! The daemon's one transfer slot (a backup or a restore in progress, see the parent
//! module), the hold a request keeps on it while it works, and `transfer_end`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use session_vault_proto::message::{Response, WireError};

use super::{TRANSFER_IDLE, invalid};
use crate::server::context::Conn;

/// The file name prefix of transfer files in the data directory.
const PREFIXES: [&str; 2] = [".backup-", ".restore-"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Backup,
    Restore,
}

#[derive(Debug)]
struct Transfer {
    id: u64,
    kind: Kind,
    path: PathBuf,
    size: u64,
    sha256: Vec<u8>,
    /// Restore: bytes received so far.
    written: u64,
    /// A request is working on it (a backup being taken, a chunk written, a commit).
    busy: bool,
    last_used: Instant,
}

/// A request's hold on the transfer it works on: ends the transfer (deleting its file) when
/// dropped, unless [`Hold::keep`] hands it back, so that a request abandoned midway (its
/// connection gone) cannot leave the one transfer slot busy.
pub(super) struct Hold<'a> {
    transfers: &'a Transfers,
    pub(super) id: u64,
}

impl Hold<'_> {
    /// Hands the transfer back for later requests, with `written` bytes received.
    pub(super) fn keep(self, written: u64) {
        self.transfers.put_back(self.id, Some(written));
        std::mem::forget(self);
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.transfers.put_back(self.id, None);
    }
}

/// The daemon's transfer (at most one).
#[derive(Default)]
pub struct Transfers {
    current: Mutex<Option<Transfer>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Transfers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Transfer>> {
        // Only field updates run under this lock.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves the one transfer slot (busy) for a new transfer of `kind` in `dir`; drops an
    /// idle one and files left over.
    pub(super) fn start(
        &self,
        kind: Kind,
        dir: &Path,
        size: u64,
        sha256: Vec<u8>,
    ) -> Result<(Hold<'_>, PathBuf), WireError> {
        let mut cur = self.lock();
        if let Some(t) = cur.as_ref() {
            if t.busy || t.last_used.elapsed() < TRANSFER_IDLE {
                return Err(invalid(
                    "another backup or restore is in progress; try again when it is done",
                ));
            }
        }
        *cur = None;
        remove_leftovers(dir);
        let id = self.new_id();
        let name = match kind {
            Kind::Backup => format!("{}{id}.db", PREFIXES[0]),
            Kind::Restore => format!("{}{id}.db", PREFIXES[1]),
        };
        let path = dir.join(name);
        *cur = Some(Transfer {
            id,
            kind,
            path: path.clone(),
            size,
            sha256,
            written: 0,
            busy: true,
            last_used: Instant::now(),
        });
        Ok((
            Hold {
                transfers: self,
                id,
            },
            path,
        ))
    }

    /// A transfer id no other transfer has had: backups and restores here, streamed imports
    /// and exports ([`super::super::stream`]) alike, so that `transfer_end` names one of them.
    pub fn new_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Marks transfer `id` of `kind` busy and returns a hold on it and a copy of what a
    /// request needs.
    #[allow(clippy::type_complexity)]
    pub(super) fn take(
        &self,
        id: u64,
        kind: Kind,
    ) -> Result<(Hold<'_>, PathBuf, u64, Vec<u8>, u64), WireError> {
        let mut cur = self.lock();
        match cur.as_mut() {
            Some(t) if t.id == id && t.kind == kind => {
                if t.busy {
                    return Err(invalid("a request on this transfer is still running"));
                }
                t.busy = true;
                t.last_used = Instant::now();
                let hold = Hold {
                    transfers: self,
                    id,
                };
                Ok((hold, t.path.clone(), t.size, t.sha256.clone(), t.written))
            }
            _ => Err(invalid(format!(
                "no transfer {id} in progress (ended, or dropped after {} s unused)",
                TRANSFER_IDLE.as_secs()
            ))),
        }
    }

    /// Ends a request on transfer `id`: done with it (`written` bytes so far), or gone.
    fn put_back(&self, id: u64, written: Option<u64>) {
        let mut cur = self.lock();
        let Some(t) = cur.as_mut().filter(|t| t.id == id) else {
            return;
        };
        match written {
            Some(w) => {
                t.written = w;
                t.busy = false;
                t.last_used = Instant::now();
            }
            None => {
                let _ = std::fs::remove_file(&t.path);
                *cur = None;
            }
        }
    }

    pub(super) fn set_info(&self, id: u64, size: u64, sha256: Vec<u8>) {
        if let Some(t) = self.lock().as_mut().filter(|t| t.id == id) {
            t.size = size;
            t.sha256 = sha256;
        }
    }
}

/// Deletes transfer files in `dir` (called with no transfer in use).
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if PREFIXES.iter().any(|p| name.starts_with(p)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `transfer_end`: a backup or restore here, or this connection's streamed import or
/// export ([`super::super::stream`]).
pub fn transfer_end(conn: &Conn, id: u64) -> Result<Response, WireError> {
    if conn.daemon.streams.end(conn.id, id) {
        return Ok(Response::Ok);
    }
    let t = &conn.daemon.transfers;
    let mut cur = t.lock();
    match cur.as_ref() {
        Some(x) if x.id == id && !x.busy => {
            let _ = std::fs::remove_file(&x.path);
            *cur = None;
            Ok(Response::Ok)
        }
        Some(x) if x.id == id => Err(invalid("a request on this transfer is still running")),
        _ => Err(invalid(format!("no transfer {id} in progress"))),
    }
}
