//! `verify`: read and authenticate every record of the unlocked vault, and count them.
//!
//! Run by the storage thread in several jobs (the vault-wide part, then one per session), so
//! that other sessions' requests get in between. A record that fails authentication or
//! decoding (`Corrupt`) is reported with where it is and the pass goes on; a storage error
//! ends it. What is checked: the manifest (opened under the current keys, at the generation
//! it names); every keyslot against the manifest's checksums; the session rows against the
//! manifest's list; each session record (AAD binds its id and name, not older than its last
//! ACL change); and every row of every per-session table (AAD binds table, session and row
//! key; not newer than the manifest), decoded as the type it must hold. Index columns
//! (blinded username and phone) are outside the AEAD and are checked by every lookup instead.

use serde::de::DeserializeOwned;
use session_vault_proto::backup::{VerifyFailure, VerifyReport};
use session_vault_proto::model::{ChannelState, DcOption, Peer, SentFile};

use super::manifest::Manifest;
use super::{Engine, ScalarState, SessionId};
use crate::vault::error::{EngineError, Result};
use crate::vault::store::{Store, Table};

/// At most this many failures are listed (with a count of the rest).
pub const MAX_LISTED_FAILURES: usize = 100;

/// Adds a failure to `report`, or counts it in the last entry once the list is full.
fn fail(report: &mut VerifyReport, place: String, err: &EngineError) {
    if report.failures.len() < MAX_LISTED_FAILURES {
        report.failures.push(VerifyFailure {
            place,
            reason: err.to_string(),
        });
    } else if report.failures.len() == MAX_LISTED_FAILURES {
        report.failures.push(VerifyFailure {
            place: "…".into(),
            reason: "more failures (not listed)".into(),
        });
    }
}

/// `Corrupt` is a finding; anything else (storage, locked) ends the pass.
fn finding(e: EngineError) -> Result<EngineError> {
    match e {
        EngineError::Corrupt { .. } => Ok(e),
        other => Err(other),
    }
}

impl<S: Store> Engine<S> {
    /// The vault-wide part: the manifest, the keyslots and the session list. Returns the
    /// sessions to verify next ([`Engine::verify_session`]).
    pub fn verify_vault(&mut self, report: &mut VerifyReport) -> Result<Vec<(SessionId, String)>> {
        let (store, u) = self.parts()?;
        let vault_id = *u.keys.vault_id();
        let slots = store.keyslots()?;
        report.keyslots = slots.len() as u64;
        let rows = store.sessions()?;
        match Manifest::load(store, &u.keys) {
            Ok(Some(m)) => {
                report.records += 1;
                if let Err(e) = m.check_keyslots(&vault_id, &slots) {
                    fail(report, "keyslots".into(), &finding(e)?);
                }
                if let Err(e) = m.check_sessions(rows.iter().map(|r| r.id)) {
                    fail(report, "sessions".into(), &finding(e)?);
                }
            }
            Ok(None) => fail(
                report,
                "manifest".into(),
                &EngineError::Corrupt {
                    table: "meta",
                    session_id: 0,
                    row: "manifest".into(),
                    reason: "the manifest is missing",
                },
            ),
            Err(e) => fail(report, "manifest".into(), &finding(e)?),
        }
        Ok(rows
            .into_iter()
            .map(|r| (SessionId(r.id), r.name))
            .collect())
    }

    /// Every record of one session: its session record, DC options, peers, update state
    /// and sent files.
    pub fn verify_session(
        &mut self,
        sid: SessionId,
        name: &str,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let Some(row) = self.store.session(sid.0)? else {
            // Deleted since the list was read.
            return Ok(());
        };
        report.sessions += 1;
        report.records += 1;
        if let Err(e) = self.open_session_record(sid, &row.name, &row.record) {
            fail(report, format!("session {name:?}: record"), &finding(e)?);
        }
        report.dc_options += self.verify_table::<DcOption>(sid, name, Table::DcOptions, report)?;
        report.peers += self.verify_table::<Peer>(sid, name, Table::Peers, report)?;
        report.update_states +=
            self.verify_table::<ScalarState>(sid, name, Table::State, report)?;
        report.update_states +=
            self.verify_table::<ChannelState>(sid, name, Table::Channels, report)?;
        report.sent_files += self.verify_table::<SentFile>(sid, name, Table::SentFiles, report)?;
        Ok(())
    }

    /// Opens every row of `table` for `sid` as a `T`; returns how many rows there were.
    fn verify_table<T: DeserializeOwned>(
        &mut self,
        sid: SessionId,
        name: &str,
        table: Table,
        report: &mut VerifyReport,
    ) -> Result<u64> {
        let rows = self.store.scan(table, sid.0)?;
        for row in &rows {
            report.records += 1;
            if let Err(e) = self.open_at::<T>(sid, table, &row.key, &row.value) {
                let e = finding(e)?;
                fail(report, format!("session {name:?}: {}", table.name()), &e);
            }
        }
        Ok(rows.len() as u64)
    }
}
