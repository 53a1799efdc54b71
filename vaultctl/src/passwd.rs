//! `vaultctl passwd`: change the vault's passphrase.

use std::io::Write;
use std::path::PathBuf;

use session_vault_proto::message::{ErrorCode, Request, VaultState};

use super::prompt::{self, CURRENT_PASSPHRASE, NEW_PASSPHRASE, Source};
use super::recovery_key::{self, RECOVERY_KEY};
use super::{CtlError, DaemonClient, KdfArgs, strength};

const PASSWD_PASSPHRASE_HELP: &str = "\
The current passphrase comes from exactly one of:
  --passphrase-file FILE      the first line of FILE (its \\n or \\r\\n removed)
  --passphrase-fd N           the first line of the inherited file descriptor N
  (neither)                   a prompt on the terminal, without echo
The new passphrase comes from exactly one of:
  --new-passphrase-file FILE  the first line of FILE
  --new-passphrase-fd N       the first line of the inherited file descriptor N
  (neither)                   a prompt on the terminal, asked twice, without echo
Prompts happen only when stdin is a terminal, else vaultctl exits 2. Both may come from one
fd, which is read one line at a time: `--passphrase-fd 3 --new-passphrase-fd 3` takes the
first line of fd 3 as the current passphrase and the second as the new one. Passphrases are
never taken from a command-line argument or an environment variable.";

/// Change the vault's passphrase
///
/// Rewrites the keyslot the current passphrase opens so that the new one opens it instead;
/// the sessions are not re-encrypted. The new keyslot gets the --kdf-* cost when given, else
/// the daemon's default (giving the same passphrase again with a higher cost is allowed).
/// A new passphrase that zxcvbn estimates below score 3 (10^8 guesses) is refused with the
/// reason, unless --weak-passphrase is given. With --recovery-key the recovery key stands in
/// for the current passphrase (the passphrase was forgotten).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
#[command(after_long_help = PASSWD_PASSPHRASE_HELP)]
pub struct Args {
    /// Read the current passphrase from the first line of FILE
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "passphrase_fd",
        value_hint = clap::ValueHint::FilePath,
        help_heading = "Passphrase input"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// Read the current passphrase from the first line of the inherited file descriptor N
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(i32).range(0..),
        help_heading = "Passphrase input"
    )]
    pub passphrase_fd: Option<i32>,
    /// Read the new passphrase from the first line of FILE
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "new_passphrase_fd",
        value_hint = clap::ValueHint::FilePath,
        help_heading = "Passphrase input"
    )]
    pub new_passphrase_file: Option<PathBuf>,
    /// Read the new passphrase from the first line of the inherited file descriptor N
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(i32).range(0..),
        help_heading = "Passphrase input"
    )]
    pub new_passphrase_fd: Option<i32>,
    #[command(flatten)]
    pub kdf: KdfArgs,
    #[command(flatten)]
    pub strength: strength::StrengthArgs,
    /// The current credential is the recovery key, not the passphrase (a forgotten
    /// passphrase): the passphrase keyslot is rewritten for the new passphrase and the
    /// recovery key keeps working. It comes from --passphrase-file/--passphrase-fd or the
    /// terminal, and is checked for typos first
    #[arg(long)]
    pub recovery_key: bool,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let tty = prompt::stdin_is_terminal();
    // The current passphrase first: with one fd for both, it is the first line.
    let old = prompt::prepare(
        &Source::from_flags(args.passphrase_file, args.passphrase_fd),
        if args.recovery_key {
            RECOVERY_KEY
        } else {
            CURRENT_PASSPHRASE
        },
        false,
        tty,
    )?;
    let new = prompt::prepare(
        &Source::from_flags(args.new_passphrase_file, args.new_passphrase_fd),
        NEW_PASSPHRASE,
        true,
        tty,
    )?;
    let link = daemon.connect()?;
    if link.vault_state() == VaultState::Uninitialized {
        return Err(link.state_error(ErrorCode::Uninitialized, "the vault is not initialized"));
    }
    let mut old = old.resolve_on_terminal()?;
    if args.recovery_key {
        old = recovery_key::checked(&old)?;
    }
    let new = new.resolve_on_terminal()?;
    args.strength.check(&new, "new passphrase")?;
    let kdf = args.kdf.spec();
    link.call_passphrase_ok(
        || Request::ChangePassphrase {
            old: old.clone(),
            new: new.clone(),
            kdf,
            recovery: args.recovery_key,
        },
        "passwd",
    )?;
    writeln!(out, "The passphrase is changed.")?;
    Ok(())
}
