//! `vaultctl recovery-key add|remove`, and what `init`, `unlock` and `passwd` share for the
//! recovery key: checking a typed key and printing a new one.
//!
//! The daemon makes the key (128 bits from the OS RNG) and returns it once; vaultctl prints
//! it and keeps no copy. A typed key is checked here first (each group carries a check,
//! `session_vault_proto::recovery`), so a typo is reported with its group, before the
//! daemon is asked.

use std::io::Write;

use session_vault_proto::message::{Passphrase, Request, Response};
use session_vault_proto::recovery::{self, RecoveryKey};

use super::prompt::Which;
use super::{BlockingConnection, CtlError, DaemonClient};

/// Manage the vault's recovery key (a second way in, for a forgotten passphrase)
///
/// `add` makes a new random recovery key and shows it once: 8 groups of 6 digits, each group
/// with a check digit's worth of redundancy, like a BitLocker recovery key. Write it down and
/// keep it apart from the vault; vaultctl and the daemon keep no copy. It opens the vault
/// like the passphrase (`vaultctl unlock --recovery-key`) and sets a new passphrase when the
/// old one is forgotten (`vaultctl passwd --recovery-key`). A vault has at most one: `add`
/// again replaces it (the old key stops working). `remove` deletes it. `rekey` deletes it too
/// (add it again afterwards). Both need the vault unlocked.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do with the recovery key.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Make a new recovery key (replacing any earlier one) and print it, once
    Add,
    /// Delete the recovery key
    Remove,
}

/// The recovery key, where `unlock --recovery-key` and `passwd --recovery-key` read it.
pub(crate) const RECOVERY_KEY: Which = Which {
    name: "recovery key",
    file_flag: "--passphrase-file",
    fd_flag: "--passphrase-fd",
};

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let link = daemon.connect()?;
    match args.action {
        Action::Add => add(&link, out),
        Action::Remove => {
            link.call_ok(Request::RemoveRecoveryKey, "recovery-key remove")?;
            writeln!(
                out,
                "The recovery key is removed: it no longer opens the vault."
            )?;
            Ok(())
        }
    }
}

/// Asks the daemon for a new recovery key and prints it.
pub(crate) fn add(link: &BlockingConnection, out: &mut dyn Write) -> Result<(), CtlError> {
    let key = match link.call(Request::AddRecoveryKey)? {
        Response::RecoveryKey(key) => key,
        _ => return Err(CtlError::unexpected(&link.socket, "recovery-key add")),
    };
    // The daemon's text, checked as a typed key would be: what is printed parses back.
    let bytes = recovery::parse(key.expose())
        .map_err(|_| CtlError::unexpected(&link.socket, "recovery-key add"))?;
    let key = RecoveryKey::from_bytes(&bytes);
    writeln!(
        out,
        "Recovery key (shown only now; write it down and keep it apart from the vault):\n\n    {}\n\n\
         It opens the vault in place of the passphrase (`vaultctl unlock --recovery-key`), and\n\
         sets a new passphrase when the old one is forgotten (`vaultctl passwd --recovery-key`).\n\
         Any earlier recovery key no longer works.",
        key.expose()
    )?;
    Ok(())
}

/// Checks a typed recovery key locally (the group checks) and returns its canonical text, to
/// send; a usage error naming the wrong group otherwise, without asking the daemon.
pub(crate) fn checked(typed: &Passphrase) -> Result<Passphrase, CtlError> {
    let text = std::str::from_utf8(typed.expose())
        .map_err(|_| CtlError::usage(recovery::ParseError::BadCharacter.to_string()))?;
    let bytes = recovery::parse(text).map_err(|e| CtlError::usage(e.to_string()))?;
    let key = RecoveryKey::from_bytes(&bytes);
    Ok(Passphrase::new(key.expose().as_bytes().to_vec()))
}
