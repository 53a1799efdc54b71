//! The storage thread: sole owner of the engine (and so of the SQLite connection), fed by a
//! channel, with group commit.
//!
//! Each message is a job of one [`Class`]. The thread drains everything queued, applies the
//! writes inside one open transaction (each in a savepoint, so a failed operation leaves
//! nothing behind), then:
//! - answers **cache**-class writes as soon as they are applied (later reads see them, since
//!   they share the connection) and commits them within the flush interval;
//! - answers **durable**-class writes only after the commit that holds them returned, i.e.
//!   after the WAL was fsynced (`synchronous=FULL`);
//! - runs **barrier** jobs (lock, install keys, close) after committing whatever is pending.
//!
//! If a commit fails (disk full, I/O error) the transaction is rolled back: durable writers
//! get the error, the engine re-reads its caches, and cache-class writes acknowledged since
//! the last commit are lost — the bounded loss DESIGN.md allows that class.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::error::VaultError;
use super::sqlite::SqliteStore;
use super::store::Store;

/// The engine as the storage thread runs it.
pub type SqliteEngine = Engine<SqliteStore>;

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
pub type Completion = Box<dyn FnOnce(Option<VaultError>) + Send>;

/// A job's body: runs on the engine, or is handed the error that kept it from running.
pub type JobFn =
    Box<dyn FnOnce(Result<&mut SqliteEngine, VaultError>) -> (bool, Completion) + Send>;

/// A unit of work for the storage thread.
pub struct Job {
    /// Its durability class.
    pub class: Class,
    /// Runs on the engine (or is handed the error that kept it from running); says whether
    /// it succeeded and how to answer.
    pub run: JobFn,
}

struct Worker {
    engine: SqliteEngine,
    flush_interval: Duration,
    in_txn: bool,
    /// When the oldest uncommitted cache-class write was applied.
    dirty_since: Option<Instant>,
    /// Durable writers waiting for the next commit.
    waiting: Vec<Completion>,
    /// A `Stop` job ran: leave the loop, closing the database.
    stopping: bool,
}

/// The storage thread's main loop; returns when every sender is gone.
pub fn run(engine: SqliteEngine, rx: Receiver<Job>, flush_interval: Duration) {
    let mut w = Worker {
        engine,
        flush_interval,
        in_txn: false,
        dirty_since: None,
        waiting: Vec::new(),
        stopping: false,
    };
    while !w.stopping {
        let first = match w.dirty_since {
            Some(since) => {
                let left = (since + w.flush_interval).saturating_duration_since(Instant::now());
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
        if let Some(job) = first {
            w.apply(job);
            // Group commit: take everything that queued up meanwhile into the same transaction.
            for job in rx.try_iter().take(4096) {
                if w.stopping {
                    break;
                }
                w.apply(job);
            }
        }
        let flush_due = w
            .dirty_since
            .is_some_and(|s| s.elapsed() >= w.flush_interval);
        if !w.waiting.is_empty() || flush_due {
            w.commit();
        }
    }
    w.commit();
}

impl Worker {
    fn apply(&mut self, job: Job) {
        match job.class {
            Class::Read => {
                let (_, done) = (job.run)(Ok(&mut self.engine));
                done(None);
            }
            Class::Barrier | Class::Stop => {
                self.commit();
                let (_, done) = (job.run)(Ok(&mut self.engine));
                done(None);
                self.stopping |= job.class == Class::Stop;
            }
            Class::Cache | Class::Durable => {
                if let Err(e) = self.begin_op() {
                    let (_, done) = (job.run)(Err(e));
                    done(None);
                    return;
                }
                let (ok, done) = (job.run)(Ok(&mut self.engine));
                let store = self.engine.store();
                let ended = if ok {
                    store.release()
                } else {
                    store.rollback_to_savepoint()
                };
                if let Err(e) = ended {
                    self.abort(&e);
                    done(Some(e));
                    return;
                }
                if !ok {
                    // The job's own error is its answer; nothing of it was kept on disk, and
                    // what it changed in the engine's memory is re-read from disk.
                    if let Err(e) = self.engine.resync() {
                        tracing::error!(error = %e, "vault could not re-read its state after a failed write");
                    }
                    done(None);
                    return;
                }
                match job.class {
                    Class::Durable => self.waiting.push(done),
                    _ => {
                        self.dirty_since.get_or_insert_with(Instant::now);
                        done(None);
                    }
                }
            }
        }
    }

    fn begin_op(&mut self) -> Result<(), VaultError> {
        if !self.in_txn {
            self.engine.store().begin()?;
            self.in_txn = true;
        }
        self.engine.store().savepoint()
    }

    fn commit(&mut self) {
        if !self.in_txn {
            for done in self.waiting.drain(..) {
                done(None);
            }
            return;
        }
        match self.engine.store().commit() {
            Ok(()) => {
                self.in_txn = false;
                self.dirty_since = None;
                for done in self.waiting.drain(..) {
                    done(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "vault commit failed; rolling back");
                self.abort(&e);
            }
        }
    }

    /// Rolls the open transaction back and fails every waiting durable writer with `err`.
    fn abort(&mut self, err: &VaultError) {
        if self.dirty_since.is_some() {
            tracing::warn!("cache-class writes acknowledged since the last commit were lost");
        }
        if let Err(e) = self.engine.store().rollback() {
            tracing::error!(error = %e, "vault rollback failed");
        }
        self.in_txn = false;
        self.dirty_since = None;
        if let Err(e) = self.engine.resync() {
            tracing::error!(error = %e, "vault could not re-read its state after a rollback");
        }
        for done in self.waiting.drain(..) {
            done(Some(err.clone()));
        }
    }
}
