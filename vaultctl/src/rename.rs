//! `vaultctl rename`: rename a session.

use std::io::Write;

use session_vault_proto::message::Request;

use super::output::sanitize;
use super::{CtlError, DaemonClient};

/// Rename a session
///
/// Its contents, owner and grants stay. Fails if NEW is taken. Processes that open the
/// session by name need the new name afterwards.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The session's current name
    pub old: String,
    /// Its new name
    pub new: String,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let message = format!(
        "Renamed session \"{}\" to \"{}\".",
        sanitize(&args.old),
        sanitize(&args.new)
    );
    daemon.call_ok(
        Request::RenameSession {
            old: args.old,
            new: args.new,
        },
        "rename",
    )?;
    writeln!(out, "{message}")?;
    Ok(())
}
