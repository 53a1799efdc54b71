//! `vaultctl rm`: delete a session.

use std::io::{self, Write};

use session_vault_proto::message::Request;

use super::list::shown_name;
use super::prompt;
use super::{CtlError, DaemonClient};

/// Delete a session and everything in it
///
/// Removes the session's auth keys, peers, update state and grants for good. On a terminal
/// vaultctl asks first (type the session's name, or y); --yes skips the question, and is
/// required when stdin is not a terminal. A session held open by a process cannot be deleted
/// until that process lets go of it, unless --force: then the daemon ends that process's
/// handle and lease at once (its next request on the session fails) and deletes.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The session to delete
    pub name: String,
    /// Delete without asking (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Delete even while a process holds the session open: its handle and lease end at once
    #[arg(long)]
    pub force: bool,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let shown = shown_name(&args.name);
    if !args.yes {
        if !prompt::stdin_is_terminal() {
            return Err(CtlError::usage_with_hint(
                format!(
                    "refusing to delete session \"{shown}\" without confirmation: stdin is not a terminal"
                ),
                "pass --yes to delete without asking",
            ));
        }
        let confirmed = prompt::confirm_deletion(
            &args.name,
            &shown,
            &mut io::stdin().lock(),
            &mut io::stderr().lock(),
        )
        .map_err(|source| CtlError::Input {
            what: "confirmation",
            from: "the terminal".into(),
            source,
        })?;
        if !confirmed {
            return Err(CtlError::Aborted(format!(
                "aborted; session \"{shown}\" was not deleted"
            )));
        }
    }
    daemon.call_ok(
        Request::DeleteSession {
            name: args.name,
            force: args.force,
        },
        "rm",
    )?;
    writeln!(out, "Deleted session \"{shown}\".")?;
    Ok(())
}
