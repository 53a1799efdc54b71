//! Re-applying acknowledged cache-class writes after their transaction was lost (a failed
//! commit, or an unguarded write's failure): [`Worker::replay`].

use std::sync::Arc;
use std::time::Instant;

use super::inline::{Mode, with_mode};
use super::{Worker, storage_fault};
use crate::vault::error::EngineError;
use crate::vault::store::Store;

impl Worker {
    /// Re-applies the acknowledged, uncommitted cache-class writes in a new transaction, due
    /// for commit a flush interval after `due_since` (after a failed commit: `None`, now, so
    /// that a failing disk is not retried in a loop). One that no longer applies (its session
    /// was deleted, the vault locked) is dropped and logged. Fails, keeping them all for the
    /// next try, if no transaction could begin or the storage failed while re-applying them.
    pub(super) fn replay(&mut self, due_since: Option<Instant>) -> Result<(), EngineError> {
        // Acknowledged writes are re-applied whatever it costs, even on an inline job's thread
        // (its failure rolled back the transaction they were in): none may be refused as
        // [`EngineError::NotInline`] or [`EngineError::KeysNeeded`], which would drop it.
        with_mode(Mode::Replay, || self.replay_now(due_since))
    }

    fn replay_now(&mut self, due_since: Option<Instant>) -> Result<(), EngineError> {
        if self.unflushed.is_empty() {
            return Ok(());
        }
        self.dirty_since = Some(due_since.unwrap_or_else(Instant::now));
        if let Err(e) = self.engine().and_then(|e| e.store().begin()) {
            tracing::error!(error = %e, "vault cannot begin a transaction to keep acknowledged writes; will retry");
            return Err(e);
        }
        self.in_txn = true;
        let redos = std::mem::take(&mut self.unflushed);
        let Some(engine) = self.engine.as_mut() else {
            return Ok(());
        };
        let mut dropped = 0usize;
        let mut kept = Vec::with_capacity(redos.len());
        let mut fault = None;
        for redo in &redos {
            let applied = engine
                .store()
                .savepoint()
                .and_then(|()| redo(engine))
                .and_then(|()| engine.store().release_op().and_then(|kept| kept));
            match applied {
                Ok(()) => kept.push(Arc::clone(redo)),
                // The storage failed, not the write: the transaction may be gone with it (a
                // lost connection), and with it what this pass re-applied. Keep them all.
                Err(e) if storage_fault(&e) => {
                    fault = Some(e);
                    break;
                }
                Err(_) => {
                    dropped += 1;
                    let _ = engine.store().rollback_to_savepoint();
                }
            }
        }
        if let Some(e) = fault {
            tracing::error!(error = %e, "vault storage failed while re-applying acknowledged writes; will retry");
            self.roll_back();
            self.dirty_since = Some(due_since.unwrap_or_else(Instant::now));
            self.unflushed = redos;
            return Err(e);
        }
        self.unflushed = kept;
        let Some(engine) = self.engine.as_mut() else {
            return Ok(());
        };
        if dropped > 0 {
            tracing::error!(
                writes = dropped,
                "acknowledged cache-class writes could not be re-applied after a failed commit and are lost"
            );
            if let Err(e) = engine.resync() {
                tracing::error!(error = %e, "vault could not re-read its state after a failed write");
            }
        }
        Ok(())
    }
}
