//! `vaultctl init`: create the vault's first keyslot.

use std::io::Write;

use session_vault_proto::message::{ErrorCode, Request, VaultState};

use super::prompt::{self, PASSPHRASE, PassphraseArgs};
use super::{CtlError, DaemonClient, KdfArgs, PASSPHRASE_HELP, recovery_key, strength};

/// Initialize the vault with its first passphrase (and leave it unlocked)
///
/// Creates the vault's data key and stores it wrapped under the passphrase (keyslot 0).
/// On a terminal the passphrase is asked twice. A passphrase that zxcvbn estimates below
/// score 3 (10^8 guesses) is refused with the reason, unless --weak-passphrase is given. Without the
/// --kdf-* flags the daemon's default Argon2id cost applies. A vault whose passphrase is
/// lost opens only with its recovery key: --recovery-key makes one and prints it, once.
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
    /// Also make a recovery key and print it, once (see `vaultctl recovery-key`)
    #[arg(long)]
    pub recovery_key: bool,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let pending = prompt::prepare(
        &args.passphrase.source(),
        PASSPHRASE,
        true,
        prompt::stdin_is_terminal(),
    )?;
    let link = daemon.connect()?;
    if link.vault_state() != VaultState::Uninitialized {
        return Err(link.state_error(
            ErrorCode::AlreadyInitialized,
            "the vault is already initialized",
        ));
    }
    let passphrase = pending.resolve_on_terminal()?;
    args.strength.check(&passphrase, "passphrase")?;
    link.call_ok(
        Request::Init {
            passphrase,
            kdf: args.kdf.spec(),
        },
        "init",
    )?;
    writeln!(out, "The vault is initialized and unlocked.")?;
    if args.recovery_key {
        recovery_key::add(&link, out)?;
    }
    Ok(())
}
