//! `vaultctl revoke`: withdraw a uid's or a gid's access to a session.

use std::io::Write;

use session_vault_proto::message::Request;

use super::output::sanitize;
use super::{CtlError, DaemonClient, Grantee};

/// Withdraw a uid's or a gid's access to a session
///
/// Removes a grant made with `vaultctl grant`; the owner and the admins keep their access.
/// A process that has the session open already keeps it until it closes it. Give exactly
/// one of --uid or --gid.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The session
    pub name: String,
    #[command(flatten)]
    pub who: Grantee,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let message = format!(
        "Revoked the access of {} to session \"{}\".",
        args.who,
        sanitize(&args.name)
    );
    daemon.call_ok(
        Request::Revoke {
            name: args.name,
            uid: args.who.uid(),
            gid: args.who.gid(),
        },
        "revoke",
    )?;
    writeln!(out, "{message}")?;
    Ok(())
}
