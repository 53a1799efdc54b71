//! `vaultctl lock`: flush and wipe the vault's keys.

use std::io::Write;

use session_vault_proto::message::Request;

use super::{CtlError, DaemonClient};

/// Lock the vault: flush, and wipe its keys from the daemon's memory
///
/// Every session request then gets a `locked` error until `vaultctl unlock`; connected
/// clients are told. Locking a locked vault succeeds.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {}

pub(super) fn run(_args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    daemon.call_ok(Request::Lock, "lock")?;
    writeln!(out, "The vault is locked.")?;
    Ok(())
}
