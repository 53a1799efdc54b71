//! Peer maps of large sessions read off the storage thread.
//!
//! **Why.** A session's map of peer keys ([`super::peer_keys`]) is read from the table the
//! first time one of its peers is looked up after the vault was unlocked or the map was
//! dropped to stay within [`super::peer_keys::MAX_KEYS`]: about 0.1–0.25 s per million peers.
//! Read on the storage thread, that read held every other session's requests up for as long,
//! and a socket-group member owning two sessions of a few million peers could alternate them
//! so that each use dropped the other's map and read its own again: every bot on the host
//! stalled for most of each second.
//!
//! **How.** The storage thread reads a missing map itself only if the session holds at most
//! [`super::peer_keys::READ_HERE_MAX`] rows (a few ms). A larger session's job is refused
//! before it changed anything ([`EngineError::KeysNeeded`]); the caller (`Vault`) asks this
//! module's thread to read the map on its own connection ([`KeyBuilds::build`]: concurrent
//! asks for one session share one read), then sends the job again; the storage thread takes
//! the map ([`KeyBuilds::take`]) when the job runs, at once, so nothing runs between the two.
//! Meanwhile the storage thread serves every other session; the session's own requests wait
//! for its map, as they waited before.
//!
//! **Why the map taken is the table's.** The thread reads in a transaction of its own, which
//! sees every commit up to its start. Before it starts, it notes [`KeyBuilds`]' count of
//! commits (`as_of`); the storage connection counts each commit after `COMMIT` returned and
//! notes, for each session whose map's rows it changed, the number of the last commit that
//! did ([`super::peer_keys::PeerKeys::committed_as`]). A map is taken only if no commit after
//! `as_of` changed its session, none of its rows changed in the open transaction, and the maps
//! were not all forgotten since (a lock: [`super::peer_keys::PeerKeys::clear`]); else it is
//! dropped and read again. A map whose rows changed in the open transaction is never dropped to
//! make room (it is read here if it must be read), and re-applying acknowledged writes after a
//! failed commit reads any map here, whatever its size: refusing one would lose the write.
//!
//! **Bounds.** One read at a time; maps read and not yet taken hold at most
//! [`super::peer_keys::MAX_KEYS`] entries together (the oldest are dropped); large maps dropped
//! by the storage thread are zeroized and freed here too. A job asks at most
//! [`BUILD_ROUNDS`] times; a map dropped again each time before its job ran (the vault's
//! sessions hold more peers together than the maps may) is answered `busy`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, params};

use super::peer_keys::{self, MAX_KEYS, SessionKeys};
use crate::vault::error::{EngineError, Result, StorageErrorKind};

/// How many times a job may ask for its session's map to be read elsewhere before it is
/// answered `busy` (`Vault`).
pub const BUILD_ROUNDS: u32 = 4;

/// The read of a session's map: rowid, key and index values of each row in its range, at
/// most `?3` of them (-1: all).
pub const MAP_ROWS: &str =
    "SELECT rowid, k, i1, i2 FROM peers WHERE rowid BETWEEN ?1 AND ?2 LIMIT ?3";

/// A map read on the thread, waiting to be taken by the storage thread.
pub struct Built {
    /// The session it maps.
    session: i64,
    /// The [`super::peer_keys::PeerKeys`] generation it was asked for in.
    pub generation: u64,
    /// [`KeyBuilds`]' count of commits before its read began: it holds all of those.
    pub as_of: u64,
    /// The map.
    pub keys: SessionKeys,
}

enum Task {
    Build { session: i64, generation: u64 },
    Discard(SessionKeys),
}

type Waiters = Vec<tokio::sync::oneshot::Sender<Result<()>>>;

/// What the storage connection, the thread and the callers share.
struct Builds {
    /// To the thread; `None` once it stopped.
    tx: Mutex<Option<Sender<Task>>>,
    /// Commits of the storage connection (see the module docs).
    commits: AtomicU64,
    /// The generation of maps now ([`KeyBuilds::clear`]): a read asked for in an older one is
    /// dropped when it ends rather than kept.
    generation: AtomicU64,
    /// Maps read and not yet taken, oldest first.
    built: Mutex<Vec<Built>>,
    /// Callers waiting for a session's read, by session: the first one asked for it.
    waiting: Mutex<HashMap<i64, Waiters>>,
}

/// A handle to the thread that reads maps; cheap to clone (each [`EngineError::KeysNeeded`]
/// carries one).
#[derive(Clone)]
pub struct KeyBuilds(Arc<Builds>);

impl std::fmt::Debug for KeyBuilds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBuilds")
    }
}

/// The thread; stops and closes its connection when dropped (before the storage connection,
/// which closes last and removes the WAL).
pub struct KeyBuilder {
    builds: KeyBuilds,
    thread: Option<JoinHandle<()>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyBuilder {
    /// Opens another connection to the vault at `path` (it only reads) and starts the thread.
    pub fn start(path: &Path) -> Result<KeyBuilder> {
        let conn = super::file::second_connection(path)?;
        conn.execute_batch("PRAGMA query_only = ON;")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (tx, rx) = channel();
        let builds = KeyBuilds(Arc::new(Builds {
            tx: Mutex::new(Some(tx)),
            commits: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            built: Mutex::new(Vec::new()),
            waiting: Mutex::new(HashMap::new()),
        }));
        let shared = builds.clone();
        let thread = std::thread::Builder::new()
            .name("vault-keys".into())
            .spawn(move || run(&conn, &rx, &shared))
            .map_err(|e| EngineError::Storage {
                kind: StorageErrorKind::Other,
                message: format!("cannot start the peer map thread: {e}"),
            })?;
        Ok(KeyBuilder {
            builds,
            thread: Some(thread),
        })
    }

    /// The handle callers and the storage connection use.
    pub fn builds(&self) -> KeyBuilds {
        self.builds.clone()
    }
}

impl Drop for KeyBuilder {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it then closes its connection.
        locked(&self.builds.0.tx).take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Whoever still waits learns that the store closed.
        locked(&self.builds.0.waiting).clear();
        locked(&self.builds.0.built).clear();
    }
}

impl KeyBuilds {
    /// Has session `session`'s map read on the thread, for maps of `generation`; returns once
    /// it waits to be taken (or the read failed: a damaged row is [`EngineError::Corrupt`]).
    pub async fn build(&self, session: i64, generation: u64) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut waiting = locked(&self.0.waiting);
            let waiters = waiting.entry(session).or_default();
            waiters.push(tx);
            if waiters.len() == 1 {
                let sent = locked(&self.0.tx).as_ref().is_some_and(|t| {
                    t.send(Task::Build {
                        session,
                        generation,
                    })
                    .is_ok()
                });
                if !sent {
                    waiting.remove(&session);
                    return Err(EngineError::Closed);
                }
            }
        }
        rx.await.map_err(|_| EngineError::Closed)?
    }

    /// Session `session`'s map, if one was read and not taken yet.
    pub fn take(&self, session: i64) -> Option<Built> {
        let mut built = locked(&self.0.built);
        let at = built.iter().position(|b| b.session == session)?;
        Some(built.remove(at))
    }

    /// Drops `keys` on the thread (zeroized and freed there); here if it stopped.
    pub fn discard(&self, keys: SessionKeys) {
        let tx = locked(&self.0.tx);
        if let Some(t) = tx.as_ref() {
            // A failed send hands the map back inside the error, dropped here.
            let _ = t.send(Task::Discard(keys));
        }
    }

    /// Drops every map read and not taken, and any read of an older generation than
    /// `generation` when it ends (the vault locked).
    pub fn clear(&self, generation: u64) {
        self.0.generation.fetch_max(generation, Ordering::SeqCst);
        let maps = std::mem::take(&mut *locked(&self.0.built));
        for b in maps {
            self.discard(b.keys);
        }
    }

    /// Counts a commit of the storage connection; its number.
    pub fn committed(&self) -> u64 {
        self.0.commits.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Keeps `b` to be taken, within [`MAX_KEYS`] entries of maps not taken (dropping the
    /// oldest, and any older read of the same session).
    fn deposit(&self, b: Built) {
        if b.generation < self.0.generation.load(Ordering::SeqCst) {
            return;
        }
        let mut built = locked(&self.0.built);
        built.retain(|old| old.session != b.session);
        built.push(b);
        let mut held: usize = built.iter().map(|b| b.keys.len()).sum();
        while held > MAX_KEYS && built.len() > 1 {
            held -= built.remove(0).keys.len();
        }
    }
}

fn run(conn: &Connection, rx: &Receiver<Task>, builds: &KeyBuilds) {
    while let Ok(task) = rx.recv() {
        let (session, generation) = match task {
            Task::Discard(keys) => {
                drop(keys);
                continue;
            }
            Task::Build {
                session,
                generation,
            } => (session, generation),
        };
        let as_of = builds.0.commits.load(Ordering::SeqCst);
        let answer = read_map(conn, session).map(|keys| {
            builds.deposit(Built {
                session,
                generation,
                as_of,
                keys,
            });
        });
        if let Err(e) = &answer {
            tracing::warn!(session_id = session, error = %e, "vault could not read a session's peer map");
        }
        let waiters = locked(&builds.0.waiting)
            .remove(&session)
            .unwrap_or_default();
        for w in waiters {
            let _ = w.send(answer.clone());
        }
    }
}

/// Session `session`'s map as a transaction begun now sees the table.
fn read_map(conn: &Connection, session: i64) -> Result<SessionKeys> {
    let range = peer_keys::range(session)?;
    conn.execute_batch("BEGIN")?;
    let map = conn.prepare_cached(MAP_ROWS).and_then(|mut stmt| {
        let rows = stmt.query_map(params![range.0, range.1, -1], |r| {
            Ok((r.get(0)?, r.get(1)?, [r.get(2)?, r.get(3)?]))
        })?;
        Ok(SessionKeys::new(session, range, rows.map(|r| Ok(r?))))
    });
    let _ = conn.execute_batch("COMMIT");
    map?
}
