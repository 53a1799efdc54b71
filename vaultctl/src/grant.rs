//! `vaultctl grant`: allow a uid or a gid to use a session.

use std::io::Write;

use session_vault_proto::message::Request;

use super::output::sanitize;
use super::{CtlError, DaemonClient, Grantee};

/// Allow a uid or a gid to use a session
///
/// Besides the admins, a session may be used by its owner (the uid that created it) and by
/// the uids and the members of the gids granted access. Give exactly one of --uid, --gid,
/// --sid or --group-sid.
///
/// On Windows, users and groups are SIDs: --sid and --group-sid map them to the ids the
/// daemon uses (an account S-1-5-21-…-RID is 0x30000 + RID, a builtin group S-1-5-32-X and a
/// well-known principal S-1-5-X are X, as Cygwin does), which --uid and --gid also take.
///
/// A member of a gid is a process whose primary group or, on Linux, one of whose
/// supplementary groups it is, as the kernel reports them when the process connects (a
/// process started before it joined a group is not a member). On other systems only the
/// primary group counts.
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
        "Granted {} access to session \"{}\".",
        args.who,
        sanitize(&args.name)
    );
    daemon.call_ok(
        Request::Grant {
            name: args.name,
            uid: args.who.uid(),
            gid: args.who.gid(),
        },
        "grant",
    )?;
    writeln!(out, "{message}")?;
    Ok(())
}
