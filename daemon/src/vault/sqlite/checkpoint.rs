//! WAL checkpoints off the commit path: a thread with a second, read-only-in-effect
//! connection to the vault file that copies committed WAL frames into the database file.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that crosses its threshold (1000
//! pages by default), on the storage thread: every writer queued behind that commit waited
//! for the copy and the database file's fsync (10–20 ms under a steady peer fill, the
//! `cache_peers` p99). The storage connection therefore runs with `wal_autocheckpoint = 0`,
//! and after each commit it *nudges* this thread, which runs a `PASSIVE` checkpoint on its
//! own connection once the WAL file holds [`MIN_WAL_BYTES`]: it copies what is committed into the database file and fsyncs it while the
//! storage thread goes on committing into the WAL (WAL mode lets one writer and a
//! checkpointer work at once). Nudges arriving during a checkpoint are coalesced, and
//! checkpoints are at least [`MIN_GAP`] apart, so an idle-ish vault pays one extra fsync per
//! gap at most, on this thread.
//!
//! A PASSIVE checkpoint never waits for the writer, so under a write stream it might never
//! catch up with the WAL's head, and SQLite restarts the WAL from its beginning only when a
//! write transaction *begins* after a complete copy. When the WAL holds more than
//! [`WAL_CAP_FRAMES`] frames the thread asks the
//! storage connection (an atomic flag) to run one checkpoint itself after its next commit:
//! only the tail not yet copied is left by then, and the WAL restarts at the following write.
//!
//! Durability and crash-safety are SQLite's WAL rules, unchanged: a commit is durable once
//! its WAL frames are fsynced (`synchronous=FULL`, on the storage connection); a checkpoint
//! only copies committed frames and fsyncs the database file before it lets the WAL be
//! reused. Both connections have `secure_delete=ON`, so what a checkpoint writes over is
//! zeroed wherever SQLite frees a page.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::vault::error::Result;

/// The shortest time between two background checkpoints.
pub const MIN_GAP: Duration = Duration::from_millis(100);

/// Below this WAL file size no checkpoint runs (SQLite's own default threshold, 1000 pages
/// of 4 KiB): a small vault keeps its few pages in the WAL, as it did with SQLite's automatic
/// checkpoint, and a database file on a nearly full disk does not grow by copies.
pub const MIN_WAL_BYTES: u64 = 1000 * 4096;

/// WAL frames (pages) above which the storage connection finishes a checkpoint itself
/// (32 MiB of 4 KiB pages).
pub const WAL_CAP_FRAMES: i64 = 8_192;

/// The checkpointer thread; stops and closes its connection when dropped (before the
/// storage connection closes, so that the storage connection is the last one and removes
/// the WAL).
pub struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Set by the thread when the WAL outgrew [`WAL_CAP_FRAMES`] without a complete
    /// checkpoint; taken by [`Checkpointer::take_overdue`].
    overdue: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Opens a second connection to the vault at `path` and starts the thread.
    pub fn start(path: &Path) -> Result<Checkpointer> {
        let conn = super::file::second_connection(path)?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA secure_delete = ON;
             PRAGMA wal_autocheckpoint = 0;",
        )?;
        conn.busy_timeout(Duration::from_millis(50))?;
        let (tx, rx) = sync_channel(1);
        let overdue = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&overdue);
        let path = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("vault-checkpoint".into())
            .spawn(move || run(conn, rx, flag, path))
            .map_err(|e| crate::vault::error::EngineError::Storage {
                kind: crate::vault::error::StorageErrorKind::Other,
                message: format!("cannot start the checkpoint thread: {e}"),
            })?;
        Ok(Checkpointer {
            nudge: Some(tx),
            thread: Some(thread),
            overdue,
        })
    }

    /// Tells the thread that a commit happened (never blocks; nudges coalesce).
    pub fn nudge(&self) {
        if let Some(tx) = &self.nudge {
            match tx.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {}
            }
        }
    }

    /// Whether the storage connection should checkpoint itself now (see the module docs).
    pub fn take_overdue(&self) -> bool {
        self.overdue.swap(false, Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it then closes its connection.
        self.nudge = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: Connection, rx: Receiver<()>, overdue: Arc<AtomicBool>, path: PathBuf) {
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let mut last = Instant::now() - MIN_GAP;
    while rx.recv().is_ok() {
        let wait = (last + MIN_GAP).saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            // Coalesce the commits of the gap into one checkpoint. A disconnect here is the
            // store closing: stop without a last checkpoint (the storage connection, closing
            // last, checkpoints everything).
            match rx.recv_timeout(wait) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while rx.try_recv().is_ok() {}
        }
        last = Instant::now();
        let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if wal_len < MIN_WAL_BYTES {
            continue;
        }
        let answer: rusqlite::Result<(i64, i64, i64)> =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            });
        match answer {
            Ok((_, log, copied)) => {
                // Even a complete copy does not restart a WAL that the storage connection's
                // open transaction still reads: SQLite restarts it only at a write that began
                // after the copy. So past the cap the storage connection copies the rest itself
                // right after a commit, before its next transaction begins.
                let _ = copied;
                if log > WAL_CAP_FRAMES {
                    overdue.store(true, Ordering::Relaxed);
                }
            }
            // Busy (the storage connection runs a checkpoint of its own) is harmless: the next
            // nudge tries again.
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "vault background checkpoint failed");
            }
        }
    }
}
