//! `vaultctl disconnect`: end the connections (and so the handles and leases) of clients.

use std::io::Write;

use session_vault_proto::message::{Request, Response};

use super::output::sanitize;
use super::{CtlError, DaemonClient};

/// End the connections of the clients of a session, or of a process
///
/// With NAME, ends every connection that has the session open; with --pid, every connection
/// of that process; with both, the connections of that process that have the session open.
/// Their handles end at once and their leases with them, so that another process can open
/// the session exclusively as soon as this returns; then the daemon closes the connections.
/// A client that reconnects by itself may open the session again: stop it to keep it out.
/// Exits 1 when no client matched.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
#[group(id = "target", required = true, multiple = true, args = ["name", "pid"])]
pub struct Args {
    /// The session whose clients to disconnect
    pub name: Option<String>,
    /// The process id whose connections to end
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    // What was ended, and what to say when nothing matched.
    let (what, none) = match (&args.name, args.pid) {
        (Some(name), Some(pid)) => {
            let name = sanitize(name);
            (
                format!("session \"{name}\" in pid {pid}"),
                format!("no client of session \"{name}\" is connected from pid {pid}"),
            )
        }
        (Some(name), None) => {
            let name = sanitize(name);
            (
                format!("session \"{name}\""),
                format!("no client of session \"{name}\" is connected"),
            )
        }
        (None, Some(pid)) => (
            format!("pid {pid}"),
            format!("no client with pid {pid} is connected"),
        ),
        (None, None) => return Err(CtlError::usage("give a session NAME or --pid PID")),
    };
    let request = Request::Disconnect {
        session: args.name,
        pid: args.pid,
    };
    let connections = match daemon.connect()?.call(request)? {
        Response::Disconnected { connections } => connections,
        _ => return Err(CtlError::unexpected(daemon.socket(), "disconnect")),
    };
    if connections == 0 {
        return Err(CtlError::Aborted(none));
    }
    writeln!(out, "Disconnected {connections} client(s) of {what}.")?;
    Ok(())
}
