//! The audit log's types: one entry per admin act or session open, and the pages `audit`
//! answers with, verification findings included (`PROTOCOL.md` §9, "Admin: audit log").
//!
//! The daemon seals each [`AuditEntry`] in the vault, chained to the one before it; it
//! verifies the chain as it reads a page and reports what does not hold as
//! [`AuditProblem`]s. Every string in an entry comes from the kernel or from a client
//! (executable path, systemd unit, session name): a client shows it escaped.

use serde::{Deserialize, Serialize};

/// One audited event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// Unix seconds of the event.
    pub time: i64,
    /// The requesting peer's uid, as the kernel reported it.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its pid, where the kernel reported one.
    pub pid: Option<u32>,
    /// Its executable (`/proc/PID/exe` at connect time), or `unknown`.
    pub exe: String,
    /// Its systemd unit (the last `.service` or `.scope` of its cgroup), where it has one.
    pub unit: Option<String>,
    /// What was asked: the request's wire name (`unlock`, `grant`, `open_session`, …).
    pub action: String,
    /// The session it named, where it named one.
    pub session: Option<String>,
    /// More about the act, never a secret (`uid 1000`, `exclusive`, …).
    pub detail: Option<String>,
    /// `ok`, or the error code's wire name (`bad_passphrase`, `permission_denied`, …).
    pub result: String,
}

/// What kind of break in the log a verification found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditProblemKind {
    /// Entries `first_seq..=last_seq` are not in the log (deleted).
    Missing,
    /// Entry `first_seq` failed authentication (its bytes were edited, or it was moved).
    Altered,
    /// Entry `first_seq` authenticates but does not follow the entry before it (replaced or
    /// reordered).
    Unlinked,
    /// The log ends before entry `last_seq`, which the vault's sealed head says was written:
    /// entries `first_seq..=last_seq` were cut off its end.
    Truncated,
}

/// A break in the log found while reading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditProblem {
    /// What is wrong.
    pub kind: AuditProblemKind,
    /// The first entry concerned.
    pub first_seq: u64,
    /// The last entry concerned (equal to `first_seq` for a single entry).
    pub last_seq: u64,
    /// The finding, for a person (`entry 17 missing`).
    pub message: String,
}

/// One page of the log, answering `audit`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The entries of the page that pass the request's filters, oldest first.
    pub entries: Vec<AuditEntry>,
    /// The breaks found among the entries this page read (filtered out or not).
    pub problems: Vec<AuditProblem>,
    /// The highest entry number this page read: the next page's `after_seq`.
    pub scanned_to: u64,
    /// Whether entries beyond `scanned_to` remain to be read.
    pub more: bool,
}
