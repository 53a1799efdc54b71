//! `vaultctl unlock`: unlock the vault with its passphrase.

use std::io::Write;

use session_vault_proto::message::{ErrorCode, Request, VaultState};

use super::prompt::{self, PASSPHRASE, PassphraseArgs};
use super::recovery_key::{self, RECOVERY_KEY};
use super::{CtlError, DaemonClient, PASSPHRASE_HELP};

/// Unlock the vault with its passphrase
///
/// The daemon derives the key from the passphrase (Argon2id), which takes a moment. Wrong
/// passphrases are throttled daemon-wide: after a failure, vaultctl says how long to wait
/// before the next attempt. Sent within a few seconds of someone's wrong passphrase, an
/// attempt is held back unchecked: vaultctl waits and sends it again by itself. Unlocking
/// an unlocked vault succeeds without asking. With --recovery-key, the vault's recovery key
/// (`vaultctl recovery-key add`) is asked for instead, and checked for typos first.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
#[command(after_long_help = PASSPHRASE_HELP)]
pub struct Args {
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Unlock with the recovery key instead of the passphrase (asked on the terminal, or read
    /// from --passphrase-file/--passphrase-fd); its group checks are verified before it is sent
    #[arg(long)]
    pub recovery_key: bool,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let pending = prompt::prepare(
        &args.passphrase.source(),
        if args.recovery_key {
            RECOVERY_KEY
        } else {
            PASSPHRASE
        },
        false,
        prompt::stdin_is_terminal(),
    )?;
    let link = daemon.connect()?;
    match link.vault_state() {
        VaultState::Unlocked => {
            writeln!(out, "The vault is already unlocked.")?;
            return Ok(());
        }
        VaultState::Uninitialized => {
            return Err(link.state_error(ErrorCode::Uninitialized, "the vault is not initialized"));
        }
        VaultState::Locked => {}
    }
    let mut passphrase = pending.resolve_on_terminal()?;
    if args.recovery_key {
        passphrase = recovery_key::checked(&passphrase)?;
    }
    link.call_passphrase_ok(
        || Request::Unlock {
            passphrase: passphrase.clone(),
            recovery: args.recovery_key,
        },
        "unlock",
    )?;
    writeln!(out, "The vault is unlocked.")?;
    Ok(())
}
