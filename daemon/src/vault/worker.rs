//! The storage thread: owner of the engine's writes (and so of the SQLite connection's
//! transactions), fed by a channel, with group commit; plus the inline fast path for reads.
//!
//! Each message is a job of one [`Class`]. The thread takes the first job, then everything
//! queued behind it (until a deadline, below), applies the writes inside one open
//! transaction (each in a savepoint, so a failed operation leaves nothing behind), then:
//! - answers **cache**-class writes as soon as they are applied (later reads see them, since
//!   they share the connection) and commits them within the flush interval;
//! - answers **durable**-class writes only after the commit that holds them returned, i.e.
//!   after the WAL was fsynced (`synchronous=FULL`);
//! - runs **barrier** jobs (lock, install keys, close) after committing whatever is pending.
//!
//! Deadlines: while draining its queue the thread stops and commits once the oldest
//! uncommitted cache-class write reaches the flush interval, or once a durable writer has
//! waited [`DURABLE_WAIT`] (whichever is first), so a steady stream of requests can postpone
//! neither.
//!
//! Inline reads and small cache-class writes: the engine sits behind a mutex ([`Shared`]). A
//! point read whose caller finds no job queued or running (so every write sent before it has
//! been applied) and the mutex free runs at once on the caller's thread, without the two
//! thread wake-ups of a channel hop; otherwise it is queued like any job. Reads see applied
//! but uncommitted writes either way. A small cache-class write (a few rows: the caller
//! decides) is applied inline on the same conditions, provided commits are succeeding: it is
//! applied in the open transaction exactly as the thread would apply it, acknowledged, and
//! left for the thread to commit. The first such write after a commit sends the thread an
//! empty job, so that a thread asleep with nothing to commit wakes and arms the flush
//! deadline. Commits, fsyncs, durable writes, barriers and whole-session jobs never run
//! inline.
//!
//! Storage faults: if a commit fails (disk full, I/O error) the transaction is rolled back
//! and durable writers get the error. Cache-class writes already acknowledged are **kept**:
//! each carries a redo closure, and the thread re-applies them in a fresh transaction, so
//! reads keep showing them and the next successful commit stores them. Until a commit
//! succeeds again the thread is *failing*: it answers new cache-class writes only after a
//! commit, like durable ones, so nothing more is acknowledged that the disk has not taken,
//! and the redo list stays bounded by one flush interval's writes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::engine::Engine;
use super::error::{EngineError, StorageErrorKind};
use super::store::Store;

mod inline;
mod replay;
use inline::inline;
pub use inline::{
    INLINE_PEERS, INLINE_STATE_ROWS, INLINE_TEXT_PER_PEER, inline_peers, replaying, running_inline,
};

/// The engine as the storage thread runs it, on whichever store the vault was opened with
/// (the name predates the PostgreSQL store).
pub type SqliteEngine = Engine<Backend>;

/// The longest a durable writer waits for the queue behind it to be drained before its
/// commit (the flush interval caps it too).
pub const DURABLE_WAIT: Duration = Duration::from_millis(2);

/// When a job's effects must be on disk before it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// No write.
    Read,
    /// Answered when applied; durable within the flush interval.
    Cache,
    /// Answered after its transaction is on disk.
    Durable,
    /// Runs with no transaction open (pending writes are committed first).
    Barrier,
    /// A barrier after which the thread stops: the connection closes (SQLite checkpoints and
    /// removes the WAL) and every later job fails with `Closed`.
    Stop,
}

/// Delivers a job's answer; gets the commit's error, if its commit failed.
pub type Completion = Box<dyn FnOnce(Option<EngineError>) + Send>;

/// A job's body: runs on the engine, or is handed the error that kept it from running.
pub type JobFn =
    Box<dyn FnOnce(Result<&mut SqliteEngine, EngineError>) -> (bool, Completion) + Send>;

/// Re-applies an acknowledged cache-class write after its transaction was rolled back.
pub type Redo = Arc<dyn Fn(&mut SqliteEngine) -> Result<(), EngineError> + Send + Sync>;

/// A unit of work for the storage thread.
pub struct Job {
    /// Its durability class.
    pub class: Class,
    /// Runs on the engine (or is handed the error that kept it from running); says whether
    /// it succeeded and how to answer.
    pub run: JobFn,
    /// For cache-class writes: how to apply it again (see the module doc on storage faults).
    pub redo: Option<Redo>,
}

/// Runs `f` as an inline job would run on a runtime thread (tests of what a store does then).
#[cfg(test)]
pub fn run_inline<T>(f: impl FnOnce() -> T) -> T {
    inline(f)
}

/// What the storage thread and inline readers share.
pub struct Shared {
    worker: Mutex<Worker>,
    /// Jobs sent and not yet applied. Inline reads run only when it is zero.
    queued: AtomicUsize,
    /// Whether small writes may run on the caller's thread: for SQLite (a few µs), never for
    /// PostgreSQL, whose client runs a runtime of its own (not allowed on a runtime thread)
    /// and whose round trips would hold a runtime worker. Point reads may on either: the
    /// PostgreSQL store answers inline only what its lease holder's cache holds, and refuses
    /// ([`EngineError::NotInline`]) before any statement, so that the read is queued.
    inline_writes: bool,
}

impl Shared {
    /// Wraps `engine` for [`run`].
    pub fn new(mut engine: SqliteEngine, flush_interval: Duration) -> Arc<Shared> {
        let inline_writes = matches!(engine.store(), Backend::Sqlite(_));
        Arc::new(Shared {
            inline_writes,
            worker: Mutex::new(Worker {
                engine: Some(engine),
                flush_interval,
                in_txn: false,
                dirty_since: None,
                waiting: Vec::new(),
                waiting_since: None,
                unflushed: Vec::new(),
                failing: false,
                stopping: false,
                guard_rest: false,
            }),
            queued: AtomicUsize::new(0),
        })
    }

    /// Counts a job about to be sent (undo with [`Shared::unsent`] if sending failed).
    pub fn sending(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    /// Un-counts a job whose send failed.
    pub fn unsent(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    /// Applies the cache-class write `redo` on the caller's thread if no job is queued or
    /// running, the engine is free and the storage is not failing; `None` means: queue it.
    /// `Some((answer, wake))`: the write's answer, and whether the storage thread must be woken
    /// (sent an empty job) to commit it, because nothing was waiting for a commit before it.
    pub fn try_cache(&self, redo: &Redo) -> Option<(Result<(), EngineError>, bool)> {
        if !self.inline_writes {
            return None;
        }
        let mut w = self.idle_worker()?;
        if w.failing || w.stopping || w.engine.is_none() {
            return None;
        }
        let wake = w.dirty_since.is_none();
        match inline(|| w.apply_cache(redo)) {
            // Refused before it wrote anything: queue it.
            Err(EngineError::NotInline) => None,
            answer => Some((answer, wake && w.dirty_since.is_some())),
        }
    }

    /// Runs the read `f` on the caller's thread if no job is queued or running and the
    /// engine is free; `None`: it did not run (or found it must run on the storage thread,
    /// [`EngineError::NotInline`]), queue it.
    pub fn try_read<T>(
        &self,
        f: &dyn Fn(&mut SqliteEngine) -> Result<T, EngineError>,
    ) -> Option<Result<T, EngineError>> {
        let mut w = self.idle_worker()?;
        let answer = match w.engine.as_mut() {
            Some(engine) => inline(|| f(engine)),
            None => Err(EngineError::Closed),
        };
        match answer {
            Err(EngineError::NotInline) => None,
            answer => Some(answer),
        }
    }

    /// The worker, if no job is queued or running (so every job sent before this call has
    /// been applied) and nobody holds it; never waits.
    fn idle_worker(&self) -> Option<MutexGuard<'_, Worker>> {
        if self.queued.load(Ordering::SeqCst) != 0 {
            return None;
        }
        match self.worker.try_lock() {
            Ok(w) => Some(w),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Worker> {
        self.worker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn applied(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Worker {
    /// `None` once the thread stopped (the database is closed).
    engine: Option<SqliteEngine>,
    flush_interval: Duration,
    in_txn: bool,
    /// When the oldest uncommitted cache-class write was applied.
    dirty_since: Option<Instant>,
    /// Writers waiting for the next commit.
    waiting: Vec<Completion>,
    /// When the oldest of `waiting` was applied.
    waiting_since: Option<Instant>,
    /// Acknowledged cache-class writes not yet committed.
    unflushed: Vec<Redo>,
    /// The last commit failed and none succeeded since.
    failing: bool,
    /// A `Stop` job ran: leave the loop, closing the database.
    stopping: bool,
    /// An unguarded write failed in the open transaction: the rest use savepoints.
    guard_rest: bool,
}

/// Whether `e` is the storage failing (I/O, a lost connection, a full or read-only disk)
/// rather than a write that no longer applies (its session deleted, its lease lost).
fn storage_fault(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Storage {
            kind: StorageErrorKind::Io | StorageErrorKind::DiskFull | StorageErrorKind::ReadOnly,
            ..
        }
    )
}

/// The storage thread's main loop; returns when every sender is gone or a `Stop` job ran.
pub fn run(shared: Arc<Shared>, rx: Receiver<Job>) {
    loop {
        let (dirty_since, flush_interval) = {
            let w = shared.lock();
            if w.stopping {
                break;
            }
            (w.dirty_since, w.flush_interval)
        };
        let first = match dirty_since {
            Some(since) => {
                let left = (since + flush_interval).saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            },
        };
        let mut w = shared.lock();
        if let Some(job) = first {
            w.apply(job);
            shared.applied();
            // Group commit: take what queued up meanwhile into the same transaction, until a
            // deadline is due.
            while !w.stopping && !w.commit_due() {
                let Ok(job) = rx.try_recv() else { break };
                w.apply(job);
                shared.applied();
            }
        }
        if !w.waiting.is_empty() || w.flush_due() || (w.failing && !w.in_txn) {
            w.commit();
        }
    }
    let mut w = shared.lock();
    w.commit();
    if !w.unflushed.is_empty() {
        tracing::error!(
            writes = w.unflushed.len(),
            "vault closed while its storage was failing: cache-class writes acknowledged since the last commit are lost"
        );
    }
    w.stopping = true;
    // Closing the connection lets SQLite checkpoint and remove the WAL.
    w.engine = None;
    drop(w);
    // Answer what is still queued (requests racing the stop).
    for job in rx.try_iter() {
        let (_, done) = (job.run)(Err(EngineError::Closed));
        done(None);
        shared.applied();
    }
}

impl Worker {
    fn engine(&mut self) -> Result<&mut SqliteEngine, EngineError> {
        self.engine.as_mut().ok_or(EngineError::Closed)
    }

    fn flush_due(&self) -> bool {
        self.dirty_since
            .is_some_and(|s| s.elapsed() >= self.flush_interval)
    }

    fn commit_due(&self) -> bool {
        self.flush_due()
            || self
                .waiting_since
                .is_some_and(|s| s.elapsed() >= DURABLE_WAIT.min(self.flush_interval))
    }

    fn apply(&mut self, job: Job) {
        match job.class {
            Class::Read => {
                let (_, done) = (job.run)(self.engine());
                done(None);
            }
            Class::Barrier | Class::Stop => {
                self.commit();
                let (_, done) = (job.run)(self.engine());
                done(None);
                self.stopping |= job.class == Class::Stop;
            }
            Class::Cache | Class::Durable => {
                let unguarded = job.class == Class::Cache && job.redo.is_some();
                let (kept, done) = self.in_op(unguarded, job.run);
                match kept {
                    // The job's own error is its answer.
                    Ok(Err(None)) => return done(None),
                    // Its writes failed as the store sent them, or the transaction was lost.
                    Ok(Err(Some(e))) | Err(e) => return done(Some(e)),
                    Ok(Ok(())) => {}
                }
                if job.class == Class::Cache && !self.failing {
                    self.dirty_since.get_or_insert_with(Instant::now);
                    if let Some(redo) = job.redo {
                        self.unflushed.push(redo);
                    }
                    done(None);
                } else {
                    // Durable, or cache-class while the storage fails: answered by the commit.
                    self.waiting_since.get_or_insert_with(Instant::now);
                    self.waiting.push(done);
                }
            }
        }
    }

    /// Runs one write in its own savepoint of the open transaction (begun if need be). `op`
    /// gets the engine, or the error that kept the write from starting, and says whether it
    /// succeeded. `Ok(Ok(()))`: applied. `Ok(Err(_))`: it failed or never started; nothing
    /// of it is kept, on disk or in the engine's memory (re-read from disk); the error is
    /// `Some` when `op` succeeded but the store then failed the writes it had deferred
    /// ([`Store::release_op`]), and is the operation's answer. `Err`: its savepoint could not
    /// end, and the transaction was aborted with that error.
    ///
    /// `replayable`: the write is a cache-class one with a redo closure. If everything else
    /// in the transaction can be redone too (no writer waits for this commit) and no
    /// unguarded write failed in it yet, it runs without a savepoint where the store gains
    /// by that ([`Store::unguarded_op`]); should it fail after it wrote, the whole
    /// transaction is rolled back and the acknowledged writes before it are re-applied
    /// ([`Worker::undo_unguarded`]), with the same outcome as a rollback to its savepoint.
    /// One such failure makes the rest of the transaction's writes use savepoints, so that a
    /// client whose writes keep failing costs at most one re-apply per group commit.
    fn in_op<R>(
        &mut self,
        replayable: bool,
        op: impl FnOnce(Result<&mut SqliteEngine, EngineError>) -> (bool, R),
    ) -> (Result<Result<(), Option<EngineError>>, EngineError>, R) {
        let may_skip = replayable && !self.failing && !self.guard_rest && self.waiting.is_empty();
        let unguarded = match self.begin_op(may_skip) {
            Ok(unguarded) => unguarded,
            Err(e) => return (Ok(Err(None)), op(Err(e)).1),
        };
        let engine = match self.engine() {
            Ok(engine) => engine,
            Err(e) => return (Ok(Err(None)), op(Err(e)).1),
        };
        let (ok, out) = op(Ok(engine));
        let store = engine.store();
        if unguarded {
            if ok {
                return match store.release_op() {
                    Ok(Ok(())) => (Ok(Ok(())), out),
                    Ok(Err(e)) | Err(e) => {
                        self.undo_unguarded();
                        (Ok(Err(Some(e))), out)
                    }
                };
            }
            // A write refused before it wrote anything (an unknown session, a bad argument:
            // what a client can provoke at will) leaves the transaction as it was.
            if store.rollback_to_savepoint().is_ok() {
                if let Err(e) = engine.resync() {
                    tracing::error!(error = %e, "vault could not re-read its state after a failed write");
                }
            } else {
                self.undo_unguarded();
            }
            return (Ok(Err(None)), out);
        }
        let ended = if ok {
            store.release_op()
        } else {
            store.rollback_to_savepoint().map(|()| Ok(()))
        };
        let kept = match ended {
            Err(e) => {
                self.abort(&e);
                return (Err(e), out);
            }
            Ok(Err(e)) => Err(Some(e)),
            Ok(Ok(())) if ok => Ok(()),
            Ok(Ok(())) => Err(None),
        };
        if kept.is_err() {
            if let Err(e) = engine.resync() {
                tracing::error!(error = %e, "vault could not re-read its state after a failed write");
            }
        }
        (Ok(kept), out)
    }

    /// A cache-class write applied outside [`Worker::apply`] (see [`Shared::try_cache`]),
    /// with the same savepoint and redo bookkeeping.
    fn apply_cache(&mut self, redo: &Redo) -> Result<(), EngineError> {
        let (kept, result) = self.in_op(true, |engine| {
            let result = engine.and_then(|e| redo(e));
            (result.is_ok(), result)
        });
        if let Err(Some(e)) = kept? {
            return Err(e);
        }
        result?;
        self.dirty_since.get_or_insert_with(Instant::now);
        self.unflushed.push(Arc::clone(redo));
        Ok(())
    }

    /// Begins an operation in the open transaction (begun if need be): unguarded if `may_skip`
    /// and the store gains by it (then `true`), else in a savepoint.
    ///
    /// Acknowledged writes still waiting to be re-applied (a failed commit whose re-apply
    /// could not even begin a transaction) are re-applied first, in the transaction this
    /// operation joins: a transaction begun without them would commit, and forget them.
    fn begin_op(&mut self, may_skip: bool) -> Result<bool, EngineError> {
        if !self.in_txn {
            self.guard_rest = false;
            if self.unflushed.is_empty() {
                self.engine()?.store().begin()?;
                self.in_txn = true;
            } else {
                self.replay(None)?;
            }
        }
        let store = self.engine()?.store();
        if may_skip {
            store.unguarded_op()
        } else {
            store.savepoint().map(|()| false)
        }
    }

    /// Undoes an unguarded operation that failed: rolls the transaction back, re-reads the
    /// engine's state and re-applies the acknowledged writes before it (nothing waits for
    /// this commit, or the operation would have had a savepoint). The rest of the new
    /// transaction's writes use savepoints.
    /// They stay due when they were (at the flush interval after the first of them).
    fn undo_unguarded(&mut self) {
        let due_since = self.dirty_since;
        self.roll_back();
        let _ = self.replay(due_since);
        self.guard_rest = true;
        if !self.in_txn && !self.unflushed.is_empty() {
            // Not even a transaction could begin to re-apply them: the storage is failing.
            tracing::warn!("vault storage is failing: cache-class writes now wait for a commit");
            self.failing = true;
        }
    }

    fn commit(&mut self) {
        if self.failing && !self.in_txn && !self.unflushed.is_empty() {
            // An earlier re-apply could not even begin a transaction: try again.
            let _ = self.replay(None);
        }
        if !self.in_txn {
            self.answer_waiting(None);
            return;
        }
        let committed = match self.engine() {
            Ok(engine) => engine.store().commit(),
            Err(e) => Err(e),
        };
        match committed {
            Ok(()) => {
                self.in_txn = false;
                self.dirty_since = None;
                self.unflushed.clear();
                if self.failing {
                    tracing::info!("vault storage recovered: writes are committed again");
                    self.failing = false;
                }
                self.answer_waiting(None);
            }
            Err(e) => {
                tracing::error!(error = %e, "vault commit failed; rolling back");
                self.abort(&e);
            }
        }
    }

    fn answer_waiting(&mut self, err: Option<&EngineError>) {
        self.waiting_since = None;
        for done in self.waiting.drain(..) {
            done(err.cloned());
        }
    }

    /// Rolls the open transaction back and re-reads the engine's state from the store.
    fn roll_back(&mut self) {
        if let Ok(engine) = self.engine() {
            if let Err(e) = engine.store().rollback() {
                tracing::error!(error = %e, "vault rollback failed");
            }
            if let Err(e) = engine.resync() {
                tracing::error!(error = %e, "vault could not re-read its state after a rollback");
            }
        }
        self.in_txn = false;
        self.dirty_since = None;
    }

    /// Rolls the open transaction back, fails every waiting writer with `err`, and re-applies
    /// the acknowledged cache-class writes (entering the failing state).
    fn abort(&mut self, err: &EngineError) {
        self.roll_back();
        self.answer_waiting(Some(err));
        if !self.failing {
            tracing::warn!("vault storage is failing: cache-class writes now wait for a commit");
            self.failing = true;
        }
        let _ = self.replay(None);
    }
}
