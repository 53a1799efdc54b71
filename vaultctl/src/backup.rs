//! `vaultctl backup`: an online, encrypted copy of the vault, written to a file of the
//! caller's (the daemon never writes where a client points it).
//!
//! The daemon takes the copy into a private file of its own (SQLite's online backup API;
//! bots wait at most a few milliseconds) and vaultctl reads it in chunks, checks its
//! SHA-256, and writes FILE through a temporary file beside it (mode 0600, fsynced) that is
//! then linked into place (or renamed over an existing FILE with --force), so that FILE is
//! either absent or whole. With --dir, the file is `DIR/vault-YYYYMMDDTHHMMSSZ.db` and --keep N
//! then deletes the oldest such files beyond the newest N.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use session_vault_proto::backup::TransferInfo;
use session_vault_proto::message::{Request, Response};

use super::output::format_utc;
use super::{BlockingConnection, CtlError, DaemonClient, transfer};

/// Back up the vault (online; the copy stays encrypted)
///
/// Writes a consistent copy of the whole vault, as the daemon holds it at the end of the
/// backup, to FILE (mode 0600). The copy is the same ciphertext as the vault: it is opened
/// by the passphrases of the vault at the time of the backup, and is safe to store off this
/// host. Works whether the vault is locked or unlocked; bots keep running (the daemon copies a
/// few hundred pages at a time, so a write waits a few milliseconds at most).
///
/// An existing FILE is replaced only with --force. With --dir DIR instead of FILE, the copy
/// is DIR/vault-YYYYMMDDTHHMMSSZ.db, and --keep N deletes the oldest vault-*.db files in DIR
/// beyond the newest N (for a nightly timer: see systemd/session-vault-backup.timer).
/// Restore with `vaultctl restore FILE`.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The file to write
    #[arg(
        value_name = "FILE",
        required_unless_present = "dir",
        conflicts_with = "dir",
        value_hint = clap::ValueHint::FilePath
    )]
    pub file: Option<PathBuf>,
    /// Write DIR/vault-YYYYMMDDTHHMMSSZ.db instead of FILE (DIR is created 0700 if missing)
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub dir: Option<PathBuf>,
    /// With --dir: keep the newest N backups in DIR, delete older vault-*.db files
    #[arg(long, value_name = "N", requires = "dir", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Replace FILE if it exists
    #[arg(long)]
    pub force: bool,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let path = match (&args.file, &args.dir) {
        (Some(f), _) => f.clone(),
        (None, Some(dir)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let stamp: String = format_utc(now)
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            dir.join(format!("vault-{stamp}.db"))
        }
        (None, None) => return Err(CtlError::usage("name a FILE or --dir DIR")),
    };
    if let Some(dir) = &args.dir {
        // A backup directory of its own: created private, like the files in it.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .map_err(|e| local(dir, "create the directory", e))?;
    }
    // In --dir, a backup of the same second is replaced by this newer one.
    let force = args.force || args.dir.is_some();
    if !force && path.exists() {
        return Err(exists(&path));
    }
    let link = daemon.connect()?;
    let info = match link.call(Request::BackupBegin)? {
        Response::Transfer(info) => info,
        _ => return Err(CtlError::unexpected(daemon.socket(), "backup")),
    };
    let written = write_backup(&link, &info, &path, force);
    // The daemon deletes its copy now; if this fails it does so at the next backup.
    let _ = link.call(Request::TransferEnd { id: info.id });
    written?;
    writeln!(
        out,
        "Backed up the vault to {} ({} bytes, SHA-256 {}).",
        path.display(),
        info.size,
        hex(&info.sha256.0)
    )?;
    if let (Some(dir), Some(keep)) = (&args.dir, args.keep) {
        for old in rotate(dir, keep as usize).map_err(|e| local(dir, "rotate backups in", e))? {
            writeln!(out, "Deleted the older backup {}.", old.display())?;
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn exists(path: &Path) -> CtlError {
    CtlError::usage_with_hint(
        format!("{} exists", path.display()),
        "choose another file, or pass --force to replace it",
    )
}

fn local(path: &Path, what: &str, e: io::Error) -> CtlError {
    CtlError::Aborted(format!("cannot {what} {}: {e}", path.display()))
}

/// Reads backup `info` from the daemon into `path` (see the module docs).
fn write_backup(
    link: &BlockingConnection,
    info: &TransferInfo,
    path: &Path,
    force: bool,
) -> Result<(), CtlError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let tmp = dir.join(format!(".{name}.vaultctl-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = opts.open(&tmp).map_err(|e| local(&tmp, "create", e))?;
    let result = (|| {
        transfer::receive(
            link,
            info,
            |id, offset| Request::BackupChunk { id, offset },
            &mut |chunk| file.write_all(chunk).map_err(|e| local(&tmp, "write", e)),
            "backup",
        )?;
        file.sync_all().map_err(|e| local(&tmp, "fsync", e))?;
        if force {
            std::fs::rename(&tmp, path).map_err(|e| local(path, "write", e))
        } else {
            std::fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    exists(path)
                } else {
                    local(path, "write", e)
                }
            })
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Deletes the oldest `vault-*.db` files in `dir` beyond the newest `keep` (by name: the
/// names sort by time); returns the deleted paths.
pub(crate) fn rotate(dir: &Path, keep: usize) -> io::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("vault-") && n.ends_with(".db"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    for n in names.into_iter().take(excess) {
        let p = dir.join(n);
        std::fs::remove_file(&p)?;
        deleted.push(p);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_backups_only() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "vault-20260101T000000Z.db",
            "vault-20260103T000000Z.db",
            "vault-20260102T000000Z.db",
            "other.db",
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let gone = rotate(dir.path(), 2).unwrap();
        assert_eq!(gone, vec![dir.path().join("vault-20260101T000000Z.db")]);
        assert!(dir.path().join("other.db").exists());
        assert!(dir.path().join("vault-20260103T000000Z.db").exists());
        assert!(rotate(dir.path(), 2).unwrap().is_empty());
    }
}
