//! `vaultctl restore`: replace the vault by a backup, through the daemon.
//!
//! vaultctl sends the file in chunks with its size and SHA-256; the daemon writes it into a
//! private file of its data directory, checks it (whole, intact, a vault of a schema it
//! knows, every record authenticated with the backup's passphrase given here), and only then
//! swaps it in, keeping the vault it replaces beside it as `vault.db.before-restore-TIME`.
//! The vault must be locked (or uninitialized): `vaultctl lock` first. Restoring into a
//! stopped daemon's data directory (an offline mode) does not exist: start the daemon
//! (it starts locked) and restore through it.

use std::io::Write;
use std::path::PathBuf;

use session_vault_proto::backup::Blob;
use session_vault_proto::message::{ErrorCode, Request, Response, VaultState};
use sha2::{Digest, Sha256};

use super::prompt::{self, CURRENT_PASSPHRASE, PassphraseArgs};
use super::recovery_key::{self, RECOVERY_KEY};
use super::{CtlError, DaemonClient, PASSPHRASE_HELP, transfer, verify::write_report};

/// Replace the vault by a backup (the vault must be locked)
///
/// Sends FILE (written by `vaultctl backup`) to the daemon, which refuses it unless it is a
/// whole, undamaged vault whose every record authenticates under the passphrase given here
/// (the backup's, which is the vault's passphrase at the time of the backup). Only then does
/// the daemon put it in place of the current vault, which it keeps beside it as
/// vault.db.before-restore-UNIXTIME (delete it once satisfied). A refused file changes nothing.
///
/// The vault must be locked (`vaultctl lock`) or uninitialized (a new host). Afterwards it is
/// locked: unlock it with the backup's passphrase. Sessions open in bots are ended (their
/// next request fails; the client library reconnects and opens them again).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
#[command(after_long_help = PASSPHRASE_HELP)]
pub struct Args {
    /// The backup file
    #[arg(value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub file: PathBuf,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Open the backup with its recovery key instead of its passphrase (asked on the
    /// terminal, or read from --passphrase-file/--passphrase-fd); its group checks are
    /// verified before it is sent
    #[arg(long)]
    pub recovery_key: bool,
}

fn unreadable(args: &Args, e: std::io::Error) -> CtlError {
    CtlError::usage(format!("cannot read {}: {e}", args.file.display()))
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let pending = prompt::prepare(
        &args.passphrase.source(),
        if args.recovery_key {
            RECOVERY_KEY
        } else {
            CURRENT_PASSPHRASE
        },
        false,
        prompt::stdin_is_terminal(),
    )?;
    let (size, sha256) = {
        let mut f = std::fs::File::open(&args.file).map_err(|e| unreadable(&args, e))?;
        let mut h = Sha256::new();
        let n = std::io::copy(&mut f, &mut h).map_err(|e| unreadable(&args, e))?;
        (n, h.finalize().to_vec())
    };
    let link = daemon.connect()?;
    if link.vault_state() == VaultState::Unlocked {
        return Err(link.state_error(
            ErrorCode::InvalidRequest,
            "the vault is unlocked: lock it first (`vaultctl lock`), then restore",
        ));
    }
    if args.recovery_key && link.daemon_minor() < 4 {
        return Err(link.state_error(
            ErrorCode::Unsupported,
            &format!(
                "vaultd speaks protocol 1.{}; `restore_commit` with a recovery key needs 1.4 — \
                 upgrade vaultd",
                link.daemon_minor()
            ),
        ));
    }
    let mut passphrase = pending.resolve_on_terminal()?;
    if args.recovery_key {
        passphrase = recovery_key::checked(&passphrase)?;
    }
    let id = match link.call(Request::RestoreBegin {
        size,
        sha256: Blob(sha256),
    })? {
        Response::Transfer(t) => t.id,
        _ => return Err(CtlError::unexpected(daemon.socket(), "restore")),
    };
    let sent = (|| {
        let mut f = std::fs::File::open(&args.file).map_err(|e| unreadable(&args, e))?;
        transfer::send(
            &link,
            id,
            size,
            &mut f,
            |id, offset, data| Request::RestoreChunk { id, offset, data },
            |e| unreadable(&args, e),
            "restore",
        )?;
        match link.call(Request::RestoreCommit {
            id,
            passphrase: passphrase.clone(),
            recovery: args.recovery_key,
        })? {
            Response::Restored(info) => Ok(info),
            _ => Err(CtlError::unexpected(daemon.socket(), "restore")),
        }
    })();
    let info = match sent {
        Ok(info) => info,
        Err(e) => {
            // The daemon drops a refused transfer by itself; this covers the rest.
            let _ = link.call(Request::TransferEnd { id });
            return Err(e);
        }
    };
    writeln!(out, "Restored the vault from {}.", args.file.display())?;
    write_report(out, &info.report)?;
    if let Some(previous) = &info.previous {
        writeln!(
            out,
            "The vault it replaced is kept as {previous} (delete it once satisfied)."
        )?;
    }
    writeln!(
        out,
        "The vault is locked: unlock it with the backup's passphrase (`vaultctl unlock`)."
    )?;
    Ok(())
}
