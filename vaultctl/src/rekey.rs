//! `vaultctl rekey`: replace the vault's data-encryption key.

use std::io::Write;

use session_vault_proto::message::{ErrorCode, Request, Response, StatusInfo, VaultState};

use super::prompt::{self, CURRENT_PASSPHRASE, PassphraseArgs};
use super::{CtlError, DaemonClient, KdfArgs, PASSPHRASE_HELP, strength};

/// Replace the vault's data-encryption key
///
/// Makes a new random data key, seals every record again under it, and replaces every
/// keyslot with one new keyslot for the current passphrase (given here). Afterwards no
/// earlier passphrase or keyslot, from a saved copy of vault.db or otherwise, opens anything:
/// use it after `passwd` when the old passphrase may be known, or when a copy of the vault
/// may have leaked together with a passphrase. Other keyslots must be added again: the
/// recovery key is deleted too (`vaultctl recovery-key add` makes a new one). A
/// passphrase that zxcvbn estimates below score 3 is refused (change it with `passwd`
/// first), unless --weak-passphrase is given.
///
/// One transaction: a crash or power loss leaves the old vault or the new one. The vault must
/// be unlocked; the daemon stays up and open sessions keep working, but requests wait while it
/// runs (about 0.2 s for 10,000 cached peers, 3 s for 100,000). The passphrase is throttled like `unlock`.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
#[command(after_long_help = PASSPHRASE_HELP)]
pub struct Args {
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    #[command(flatten)]
    pub kdf: KdfArgs,
    #[command(flatten)]
    pub strength: strength::StrengthArgs,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let pending = prompt::prepare(
        &args.passphrase.source(),
        CURRENT_PASSPHRASE,
        false,
        prompt::stdin_is_terminal(),
    )?;
    let link = daemon.connect()?;
    match link.vault_state() {
        VaultState::Uninitialized => {
            return Err(link.state_error(ErrorCode::Uninitialized, "the vault is not initialized"));
        }
        VaultState::Locked => {
            return Err(link.state_error(
                ErrorCode::Locked,
                "the vault is locked: unlock it first, then rekey",
            ));
        }
        VaultState::Unlocked => {}
    }
    let passphrase = pending.resolve_on_terminal()?;
    // The passphrase becomes the only keyslot's: a weak one is refused here too (change it
    // with `passwd` first).
    args.strength.check(&passphrase, "passphrase")?;
    let kdf = args.kdf.spec();
    // Whether a recovery key exists now: rekey deletes it, and the note below says so.
    let had_recovery_key = matches!(
        link.call(Request::Status),
        Ok(Response::Status(StatusInfo {
            recovery_key: Some(true),
            ..
        }))
    );
    link.call_passphrase_ok(
        || Request::Rekey {
            passphrase: passphrase.clone(),
            kdf,
        },
        "rekey",
    )?;
    writeln!(
        out,
        "The vault is rekeyed: every record is sealed under a new key, and one keyslot is left."
    )?;
    if had_recovery_key {
        writeln!(
            out,
            "The recovery key was deleted with the other keyslots; `vaultctl recovery-key add` makes a new one."
        )?;
    }
    Ok(())
}
