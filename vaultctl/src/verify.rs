//! `vaultctl verify`: read and authenticate every record of the vault, and count them.

use std::io::Write;

use session_vault_proto::backup::VerifyReport;
use session_vault_proto::message::{Request, Response};

use super::output::{sanitize, write_json};
use super::{CtlError, DaemonClient};

/// Read and authenticate every record of the vault
///
/// The daemon opens every record (keyslots against the manifest, the manifest, each session's
/// record, DC options and auth keys, cached peers, update state, sent files), checks that it
/// authenticates where it is, and reports the counts. Any record that fails is listed with
/// where it is, and vaultctl exits 1. The vault must be unlocked; bots keep running (their
/// requests wait between sessions, not for the whole pass).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let report = match daemon.connect()?.call(Request::Verify)? {
        Response::Verified(r) => r,
        _ => return Err(CtlError::unexpected(daemon.socket(), "verify")),
    };
    if args.json {
        write_json(out, &report)?;
    } else {
        write_report(out, &report)?;
    }
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(CtlError::Aborted(format!(
            "{} record(s) or check(s) failed to authenticate: the vault is damaged or was tampered with",
            report.failures.len()
        )))
    }
}

/// The report as lines for a person (also what `restore` prints).
pub(crate) fn write_report(out: &mut dyn Write, r: &VerifyReport) -> std::io::Result<()> {
    writeln!(
        out,
        "keyslots {}, sessions {}, DC options {}, peers {}, update states {}, sent files {}; \
         {} records read",
        r.keyslots, r.sessions, r.dc_options, r.peers, r.update_states, r.sent_files, r.records
    )?;
    if r.failures.is_empty() {
        writeln!(out, "Every record authenticated.")?;
    }
    for f in &r.failures {
        writeln!(
            out,
            "FAILED {}: {}",
            sanitize(&f.place),
            sanitize(&f.reason)
        )?;
    }
    Ok(())
}
