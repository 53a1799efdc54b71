//! `vaultctl export`: write a vault session out as a Telethon, Pyrogram or grammers session.
//!
//! The output is a plaintext credential, so: the daemon admits the request from admin uids
//! only; vaultctl warns on stderr; files are created with mode 0600 (a private temporary
//! file beside the target, then linked into place, so that an existing file is never
//! overwritten unless --force, and a half-written one is never visible); a string is not
//! written to a terminal unless --force (it would stay in the scrollback).

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use session_vault_proto::backup::decode_session;
use session_vault_proto::message::{Request, Response};
use session_vault_proto::model::SessionData;
use zeroize::Zeroizing;

use super::format_arg;
use super::output::sanitize;
use super::{CtlError, DaemonClient, transfer};
use session_vault_formats::{self as formats, Format, sqlite_io};

/// `export --long-help` after the options: the formats written (from [`Format`] itself).
fn after_help() -> String {
    format!(
        "Formats (--format):\n{}{AFTER_FORMATS}",
        format_arg::export_table()
    )
}

const AFTER_FORMATS: &str = "
What the chosen format cannot hold (peers for strings, names for grammers, other DCs' keys
for Telethon, ...) is listed on stderr.

The output can log in to the Telegram account: keep it as you would a password, and prefer
importing it straight into the program that needs it.";

/// Export a session as a Telethon, Pyrogram or grammers session (plaintext!)
///
/// Writes session NAME in the chosen format to --output FILE (created with mode 0600;
/// an existing file is kept unless --force), or a string to standard output (not to a
/// terminal unless --force). The result is a plaintext credential. Admin only.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment, after_long_help = after_help())]
pub struct Args {
    /// The session to export
    pub name: String,
    /// The format to write
    #[arg(long, value_parser = format_arg::export_parser())]
    pub format: Format,
    /// Write to FILE (mode 0600) instead of standard output
    #[arg(long, short = 'o', value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub output: Option<PathBuf>,
    /// Overwrite an existing FILE; write a string to a terminal
    #[arg(long)]
    pub force: bool,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let format = args.format;
    // Usage checks first: nothing is asked of the daemon for an export bound to fail.
    match &args.output {
        None if !format.is_string() => {
            return Err(CtlError::usage_with_hint(
                format!("{} is a file format: it needs --output FILE", format.name()),
                "e.g. --output bot.session",
            ));
        }
        None if io::stdout().is_terminal() && !args.force => {
            return Err(CtlError::usage_with_hint(
                "refusing to print a session string on a terminal: it would stay in the \
                 scrollback",
                "pass --output FILE, pipe it to the program that needs it, or --force",
            ));
        }
        Some(path) if !args.force && std::fs::symlink_metadata(path).is_ok() => {
            return Err(CtlError::usage_with_hint(
                format!("{} exists", path.display()),
                "choose another file, or pass --force to replace it",
            ));
        }
        _ => {}
    }
    let data = fetch(daemon, &args.name)?;
    eprintln!(
        "vaultctl: warning: the exported session is a plaintext credential: whoever holds it \
         can use the Telegram account. Keep it private and delete it when done."
    );
    let failed = |e: formats::FormatError| CtlError::Aborted(format!("cannot export: {e}"));
    let lost = match (&args.output, format.is_string()) {
        (None, _) => {
            let (text, lost) = formats::export_string(&data, format).map_err(failed)?;
            writeln!(out, "{}", &*text)?;
            lost
        }
        (Some(path), true) => {
            let (text, lost) = formats::export_string(&data, format).map_err(failed)?;
            let mut line = zeroize::Zeroizing::new(text.as_bytes().to_vec());
            line.push(b'\n');
            place(path, args.force, |tmp| {
                let mut f = sqlite_io::new_file_0600(tmp)?;
                f.write_all(&line)?;
                f.sync_all()
            })?;
            lost
        }
        (Some(path), false) => {
            let mut lost = Vec::new();
            place(path, args.force, |tmp| {
                lost = formats::export_file(&data, format, tmp).map_err(io::Error::other)?;
                Ok(())
            })?;
            lost
        }
    };
    if !lost.is_empty() {
        eprintln!(
            "vaultctl: note: {} cannot hold: {}",
            format.name(),
            sanitize(&lost.join("; "))
        );
    }
    if let Some(path) = &args.output {
        writeln!(
            out,
            "Exported session \"{}\" as {} to {} (mode 0600).",
            sanitize(&args.name),
            format.name(),
            path.display()
        )?;
    }
    Ok(())
}

/// The session's data: read in chunks (`export_begin`, `export_chunk`, checked against its
/// SHA-256) from a daemon of protocol 1.4 or later, so that a session of any size comes in
/// frames well under a frame limit; in one `export_session` answer from an older one.
fn fetch(daemon: &DaemonClient, name: &str) -> Result<SessionData, CtlError> {
    let link = daemon.connect()?;
    if link.daemon_minor() < 4 {
        return match link.call(Request::ExportSession { name: name.into() })? {
            Response::SessionData(d) => Ok(d),
            _ => Err(CtlError::unexpected(daemon.socket(), "export")),
        };
    }
    let info = match link.call(Request::ExportBegin { name: name.into() })? {
        Response::Transfer(t) => t,
        _ => return Err(CtlError::unexpected(daemon.socket(), "export")),
    };
    let mut bytes = Zeroizing::new(Vec::new());
    // Room for the whole at once, so that the buffer never moves and leaves a copy behind.
    bytes.reserve_exact(usize::try_from(info.size).unwrap_or(0));
    let received = transfer::receive(
        &link,
        &info,
        |id, offset| Request::ExportChunk { id, offset },
        &mut |chunk| {
            if bytes.len() + chunk.len() > bytes.capacity() {
                return Err(CtlError::Aborted(
                    "the daemon sent more than the export's announced size".into(),
                ));
            }
            bytes.extend_from_slice(chunk);
            Ok(())
        },
        "export",
    );
    let _ = link.call(Request::TransferEnd { id: info.id });
    received?;
    decode_session(&bytes)
        .map_err(|e| CtlError::Aborted(format!("the daemon's export does not decode: {e}")))
}

/// Writes `path` through `write`, which must create the temporary file it is given (mode
/// 0600). The temporary file sits beside `path` and is renamed over it (`force`) or linked to
/// it (otherwise: fails if `path` appeared meanwhile), so a partial file is never visible.
fn place(
    path: &Path,
    force: bool,
    write: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<(), CtlError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let (placeholder, tmp) = sqlite_io::create_private(&dir, &format!(".{name}.vaultctl"))
        .map_err(|e| output_error(path, e))?;
    drop(placeholder);
    // The writers create the file themselves (create_new): free the name for them.
    let result = std::fs::remove_file(&tmp)
        .and_then(|()| write(&tmp))
        .and_then(|()| {
            if force {
                std::fs::rename(&tmp, path)
            } else {
                std::fs::hard_link(&tmp, path).and_then(|()| std::fs::remove_file(&tmp))
            }
        });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(output_error(path, e));
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn output_error(path: &Path, e: io::Error) -> CtlError {
    if e.kind() == io::ErrorKind::AlreadyExists {
        return CtlError::usage_with_hint(
            format!("{} exists", path.display()),
            "choose another file, or pass --force to replace it",
        );
    }
    CtlError::Aborted(format!("cannot write {}: {e}", path.display()))
}
