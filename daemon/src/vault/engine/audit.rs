//! The audit log: a sealed, hash-chained, append-only list of entries inside the vault.
//!
//! Each entry ([`AuditEntry`], proto's type) is stored as one record of table `audit`, row =
//! its number (`seq`, from 1, no gaps), sealed with the record key like every other record:
//! AAD = vault id ‖ `audit` ‖ 0 ‖ seq (big-endian) ‖ format, so an entry edited or moved to
//! another number fails authentication. Its plaintext is the entry plus `prev`, the SHA-256
//! of the previous entry's plaintext (zeros for entry 1): an entry replaced by another valid
//! one, or entries reordered, break that link. The hash is over plaintexts, not ciphertexts,
//! so `rekey` re-seals entries without touching the chain.
//!
//! The **head** (`meta.audit_head`, sealed) holds the last number and hash and is rewritten
//! with every append, in the same transaction: deleting the newest entries shows as
//! `truncated`, and so does deleting the head while entries exist. The manifest
//! ([`super::manifest`]) records the log's last number at each generation bump (admin acts
//! such as grant, create, rename, passwd), so deleting the head together with every entry
//! back to before the last bump is noticed too. What a file thief with no key cannot do:
//! add, edit, reorder or delete entries unnoticed. What stays possible, as for the rest of
//! the vault: putting back a whole older copy of the file (entries, head and manifest
//! consistently), which drops the entries written since that copy.
//!
//! Entries of events while the vault is locked or uninitialized (a wrong passphrase at
//! `unlock`) cannot be sealed; the engine keeps up to [`PENDING_MAX`] in memory and appends
//! them at the next unlock or `init`; beyond that the oldest are dropped and an entry says
//! how many. The daemon also logs every entry to its journal when it happens.
//!
//! Reading ([`Engine::audit_page`]) verifies as it goes and reports each break once
//! ([`AuditProblem`]): a gap in the numbers (`missing`), an entry that fails authentication
//! (`altered`), an entry whose link does not match the one before it (`unlinked`), and a log
//! that ends before its head or the manifest says (`truncated`).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use session_vault_proto::audit::{AuditEntry, AuditPage, AuditProblem, AuditProblemKind};
use sha2::{Digest, Sha256};

use super::record::{decode, encode};
use super::{Engine, KeyState};
use crate::vault::crypto::{Keys, PAD_SMALL, RecordPlace};
use crate::vault::error::Result;
use crate::vault::store::Store;

/// The most events kept in memory while the vault is locked.
pub const PENDING_MAX: usize = 256;

/// The most entries one `audit` page reads.
pub const PAGE_MAX: u32 = 1000;

/// The AAD place of the head record.
const HEAD_PLACE: RecordPlace<'static> = RecordPlace {
    table: "meta",
    session_id: 0,
    row: b"audit_head",
};

/// A chain link: SHA-256 of an entry's plaintext.
type Link = [u8; 32];

/// What each `audit` row seals.
#[derive(Serialize, Deserialize)]
struct Sealed {
    entry: AuditEntry,
    prev: Link,
}

/// The sealed head: the last entry's number and link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The last entry's number (0: none yet).
    pub seq: u64,
    /// The SHA-256 of its plaintext (zeros: none yet).
    pub hash: Link,
}

/// The log's state while unlocked: where the next entry goes, and what was wrong with the
/// head at unlock (reported by [`Engine::audit_page`]).
#[derive(Clone, Debug, Default)]
pub struct Chain {
    /// The head as appended to.
    pub head: Head,
    /// A problem with the stored head found at unlock (missing while entries exist, or
    /// altered); appends then continued from the last entry found.
    pub head_problem: Option<AuditProblem>,
}

/// Events waiting for the keys (see the module docs), each with the id its
/// [`Engine::audit`] call was given.
#[derive(Default)]
pub struct Pending {
    entries: VecDeque<(u64, AuditEntry)>,
    dropped: u64,
}

/// A fresh id for an entry's [`Engine::audit`] calls: a write applied again after a failed
/// commit passes the same id, and is kept once; two events alike (one client opening a
/// session twice in a second) have two ids, and are kept both.
pub fn entry_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn place(seq: &[u8; 8]) -> RecordPlace<'_> {
    RecordPlace {
        table: "audit",
        session_id: 0,
        row: seq,
    }
}

fn problem(kind: AuditProblemKind, first_seq: u64, last_seq: u64) -> AuditProblem {
    let what = if first_seq == last_seq {
        format!("entry {first_seq}")
    } else {
        format!("entries {first_seq}-{last_seq}")
    };
    let message = match kind {
        AuditProblemKind::Missing => format!("{what} missing (deleted)"),
        AuditProblemKind::Altered => format!("{what} altered (fails authentication)"),
        AuditProblemKind::Unlinked => {
            format!("{what} does not follow the entry before it (replaced or reordered)")
        }
        AuditProblemKind::Truncated => {
            format!("{what} missing from the end of the log (truncated)")
        }
    };
    AuditProblem {
        kind,
        first_seq,
        last_seq,
        message,
    }
}

/// Opens a stored entry: its contents, previous link and own link.
fn open_entry(keys: &Keys, seq: u64, sealed: &[u8]) -> Option<(AuditEntry, Link, Link)> {
    let row = seq.to_be_bytes();
    let place = place(&row);
    let opened = keys.open(&place, sealed).ok()?;
    let s: Sealed = decode(&place, &opened.plain).ok()?;
    if s.entry.seq != seq {
        return None;
    }
    Some((s.entry, s.prev, Sha256::digest(&opened.plain[..]).into()))
}

impl Chain {
    /// Reads the head at unlock (see [`Chain`]); never fails the unlock for the log's sake.
    pub(super) fn load<S: Store>(store: &mut S, keys: &Keys) -> Result<Chain> {
        // `None`: no head; `Some(None)`: a head that does not open.
        let stored = store.audit_head()?.map(|sealed| {
            keys.open(&HEAD_PLACE, &sealed)
                .ok()
                .and_then(|o| decode::<Head>(&HEAD_PLACE, &o.plain).ok())
        });
        let last = store.audit_last()?;
        match (stored, last) {
            (Some(Some(head)), _) => Ok(Chain {
                head,
                head_problem: None,
            }),
            (None, None) => Ok(Chain::default()),
            (found, last) => {
                let (seq, sealed) = last.unwrap_or_default();
                let hash = open_entry(keys, seq, &sealed).map_or([0; 32], |(_, _, h)| h);
                let head_problem = Some(match found {
                    Some(_) => AuditProblem {
                        message: "the log's sealed head is altered".into(),
                        ..problem(AuditProblemKind::Altered, 0, 0)
                    },
                    None => AuditProblem {
                        message: format!(
                            "the log's sealed head is missing: entries after {seq} may have \
                             been cut off (truncated)"
                        ),
                        ..problem(AuditProblemKind::Truncated, seq + 1, seq + 1)
                    },
                });
                Ok(Chain {
                    head: Head { seq, hash },
                    head_problem,
                })
            }
        }
    }
}

impl<S: Store> Engine<S> {
    /// Records `entry` (its `seq` is assigned here): appended in the open transaction while
    /// unlocked, else kept in memory until the next unlock (see the module docs).
    ///
    /// `wait`: an admin act's entry waits for the log's lock (held by another daemon's open
    /// transaction that appended, until it commits). Any other entry (a session open) does
    /// not: while another daemon holds the lock, it is kept in memory like an entry made
    /// while locked (and so is every such entry after it, in order), and appended by a later
    /// `Engine::flush_kept_audit` (every coherence check), so that a paused host's open
    /// transaction cannot hold this daemon's storage thread, and every request behind it, for
    /// its idle timeout.
    ///
    /// `id` ([`entry_id`]) names the event: a write applied again passes the same one.
    pub fn audit(&mut self, entry: AuditEntry, wait: bool, id: u64) -> Result<()> {
        match &self.state {
            KeyState::Unlocked(_) if wait => {
                self.append_audit(entry, true)?;
                Ok(())
            }
            KeyState::Unlocked(_) => {
                if self.pending_audit.entries.is_empty() && self.pending_audit.dropped == 0 {
                    if self.append_audit(entry.clone(), false)? {
                        return Ok(());
                    }
                    self.keep_audit(id, entry);
                    return Ok(());
                }
                // Behind the entries already waiting, in order (they are appended in a
                // transaction of their own, which a failed commit of this one cannot undo).
                self.keep_audit(id, entry);
                Ok(())
            }
            _ => {
                self.keep_audit(id, entry);
                Ok(())
            }
        }
    }

    /// Keeps `entry` for a later append (once per `id`: a re-applied write does not keep it
    /// twice, while another event with the same fields is kept too).
    fn keep_audit(&mut self, id: u64, entry: AuditEntry) {
        let p = &mut self.pending_audit;
        if p.entries.iter().any(|(kept, _)| *kept == id) {
            return;
        }
        if p.entries.len() >= PENDING_MAX {
            p.entries.pop_front();
            p.dropped += 1;
        }
        p.entries.push_back((id, entry));
    }

    /// Whether entries are kept in memory while the vault is unlocked (the log's lock was
    /// held elsewhere when they were made).
    pub(super) fn audit_kept_unlocked(&self) -> bool {
        matches!(self.state, KeyState::Unlocked(_))
            && (!self.pending_audit.entries.is_empty() || self.pending_audit.dropped > 0)
    }

    /// Appends the entries kept while another daemon held the log's lock, in a transaction of
    /// its own, if the lock is free now (called by every coherence check, with no transaction
    /// open); keeps them otherwise, and if the append or its commit fails.
    pub(super) fn flush_kept_audit(&mut self) {
        if !self.audit_kept_unlocked() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_audit);
        let result = self.in_transaction(|e| {
            if e.store.try_lock_audit()?.is_none() {
                return Ok(false);
            }
            e.append_pending(&pending).map(|()| true)
        });
        match result {
            Ok(true) => {}
            Ok(false) => self.pending_audit = pending,
            Err(e) => {
                tracing::warn!(error = %e, "audit entries kept while the log was locked elsewhere could not be appended yet");
                self.pending_audit = pending;
            }
        }
    }

    /// Appends the events kept while locked, in a transaction of its own; called right after
    /// the keys are installed by a barrier job. A failure keeps them for the next unlock.
    pub(super) fn flush_pending_audit(&mut self) {
        if self.pending_audit.entries.is_empty() && self.pending_audit.dropped == 0 {
            return;
        }
        let pending = std::mem::take(&mut self.pending_audit);
        let result = self.in_transaction(|e| e.append_pending(&pending));
        if let Err(e) = result {
            tracing::error!(error = %e, "audit entries kept while locked could not be appended");
            self.pending_audit = pending;
        }
    }

    /// Appends the events kept while locked in the open transaction (`init`).
    pub(super) fn drain_pending_audit(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending_audit);
        self.append_pending(&pending)
    }

    fn append_pending(&mut self, pending: &Pending) -> Result<()> {
        if pending.dropped > 0 {
            self.append_audit(
                AuditEntry {
                    seq: 0,
                    time: super::now(),
                    uid: crate::server::config::current_euid(),
                    gid: current_egid(),
                    pid: Some(std::process::id()),
                    exe: "vaultd".into(),
                    unit: None,
                    action: "audit_dropped".into(),
                    session: None,
                    detail: Some(format!(
                        "{} earlier events kept in memory (the vault locked, or the log locked by \
                     another vaultd) were dropped (over {PENDING_MAX})",
                        pending.dropped
                    )),
                    result: "ok".into(),
                },
                true,
            )?;
        }
        for (_, entry) in pending.entries.iter().cloned() {
            self.append_audit(entry, true)?;
        }
        Ok(())
    }

    /// Appends `entry`; `false` (nothing written) if `wait` is off and another daemon holds
    /// the log's lock.
    fn append_audit(&mut self, mut entry: AuditEntry, wait: bool) -> Result<bool> {
        let (store, u) = self.parts()?;
        // Other daemons sharing the store append too: take the log's lock (until commit) and
        // continue from the head as it is now, so that the entries of every daemon form one
        // chain.
        let reload = if wait {
            store.lock_audit()?
        } else {
            match store.try_lock_audit()? {
                Some(reload) => reload,
                None => return Ok(false),
            }
        };
        if reload {
            u.audit = Chain::load(store, &u.keys)?;
        }
        let seq = u.audit.head.seq + 1;
        entry.seq = seq;
        let plain = encode(&Sealed {
            entry,
            prev: u.audit.head.hash,
        })?;
        let hash: Link = Sha256::digest(&plain[..]).into();
        let g = u.manifest.generation;
        let sealed = u
            .keys
            .seal(&place(&seq.to_be_bytes()), g, &plain, PAD_SMALL)?;
        store.put_audit(seq, &sealed)?;
        let head = Head { seq, hash };
        let sealed_head = u.keys.seal(&HEAD_PLACE, g, &encode(&head)?, PAD_SMALL)?;
        store.put_audit_head(&sealed_head)?;
        u.audit.head = head;
        Ok(true)
    }

    /// The last audit entry's number (for the manifest's floor).
    pub(super) fn audit_seq(&self) -> u64 {
        match &self.state {
            KeyState::Unlocked(u) => u.audit.head.seq,
            _ => 0,
        }
    }

    /// Reads up to `limit` entries after `after_seq`, verifying each (see the module docs),
    /// and returns those at or after `since` that name `session`.
    pub fn audit_page(
        &mut self,
        after_seq: u64,
        limit: u32,
        since: Option<i64>,
        session: Option<&str>,
    ) -> Result<AuditPage> {
        let limit = if limit == 0 {
            PAGE_MAX
        } else {
            limit.min(PAGE_MAX)
        };
        let (store, u) = self.parts()?;
        // The entry before the page too, for the first link.
        let mut rows = store.audit_range(after_seq, limit + 2)?;
        let mut link: Option<Link> = if after_seq == 0 { Some([0; 32]) } else { None };
        if rows.first().is_some_and(|(seq, _)| *seq == after_seq) {
            let (seq, sealed) = rows.remove(0);
            link = open_entry(&u.keys, seq, &sealed).map(|(_, _, h)| h);
        }
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let mut page = AuditPage {
            more,
            scanned_to: after_seq,
            ..AuditPage::default()
        };
        let mut expected = after_seq + 1;
        for (seq, sealed) in rows {
            if seq > expected {
                page.problems
                    .push(problem(AuditProblemKind::Missing, expected, seq - 1));
                link = None;
            }
            expected = seq + 1;
            page.scanned_to = seq;
            let Some((entry, prev, hash)) = open_entry(&u.keys, seq, &sealed) else {
                page.problems
                    .push(problem(AuditProblemKind::Altered, seq, seq));
                link = None;
                continue;
            };
            if link.is_some_and(|l| l != prev) {
                page.problems
                    .push(problem(AuditProblemKind::Unlinked, seq, seq));
            }
            link = Some(hash);
            let wanted = since.is_none_or(|t| entry.time >= t)
                && session.is_none_or(|s| entry.session.as_deref() == Some(s));
            if wanted {
                page.entries.push(entry);
            }
        }
        if !more {
            let last = page.scanned_to;
            let head = u.audit.head;
            if let Some(p) = &u.audit.head_problem {
                page.problems.push(p.clone());
            }
            if head.seq > last {
                page.problems
                    .push(problem(AuditProblemKind::Truncated, last + 1, head.seq));
            } else if head.seq == last && last > 0 && link.is_some_and(|l| l != head.hash) {
                page.problems
                    .push(problem(AuditProblemKind::Unlinked, last, last));
            }
            let floor = u.manifest.audit_seq;
            if floor > head.seq.max(last) {
                page.problems.push(AuditProblem {
                    message: format!(
                        "entries {}-{floor} missing: the manifest records entry {floor}, the \
                         log ends at {} (truncated, its head with it)",
                        head.seq.max(last) + 1,
                        head.seq.max(last)
                    ),
                    ..problem(AuditProblemKind::Truncated, head.seq.max(last) + 1, floor)
                });
            }
        }
        Ok(page)
    }

    /// Re-seals every audit entry and the head under `new` (for `rekey`), at generation `g`.
    /// An entry that does not open is left as it is (it stays `altered`).
    pub(super) fn reseal_audit(&mut self, new: &Keys, g: u64) -> Result<()> {
        let (store, u) = self.parts()?;
        let mut from = 1;
        loop {
            let rows = store.audit_range(from, PAGE_MAX)?;
            let Some((last, _)) = rows.last() else { break };
            from = last + 1;
            for (seq, sealed) in rows {
                let row = seq.to_be_bytes();
                let Ok(opened) = u.keys.open(&place(&row), &sealed) else {
                    tracing::warn!(seq, "rekey: audit entry does not open; left as it is");
                    continue;
                };
                let resealed = new.seal(&place(&row), g, &opened.plain, PAD_SMALL)?;
                store.put_audit(seq, &resealed)?;
            }
        }
        if u.audit.head.seq > 0 {
            let sealed = new.seal(&HEAD_PLACE, g, &encode(&u.audit.head)?, PAD_SMALL)?;
            store.put_audit_head(&sealed)?;
        }
        Ok(())
    }
}

/// vaultd's effective gid (on Windows its user id: no primary group is recorded).
fn current_egid() -> u32 {
    #[cfg(unix)]
    {
        rustix::process::getegid().as_raw()
    }
    #[cfg(not(unix))]
    {
        crate::server::config::current_euid()
    }
}
