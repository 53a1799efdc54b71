//! The directories vaultd works in (its data directory and its socket's directory), trusted
//! only after a check through a descriptor.
//!
//! vaultd often runs as root, and whoever can write a directory's parent can pre-make the
//! directory, or put a symbolic link in its place, before vaultd first starts. So a directory
//! is opened `O_DIRECTORY | O_NOFOLLOW` (a link is refused, never followed) and `fstat`ed
//! through that descriptor: it must belong to vaultd's effective uid and be writable by
//! nobody else (no group or other write bit, sticky or not), or vaultd refuses to start with
//! the path and the fix. Files are then created relative to the descriptor (`openat`), so the
//! directory checked is the directory used. A directory vaultd creates itself gets the mode
//! it asks for, whatever the umask, set through the descriptor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// Why a directory is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// The path is a symbolic link.
    #[error(
        "the {what} directory {} is a symbolic link; vaultd does not follow links here: \
         give the real directory's path",
        path.display()
    )]
    Symlink {
        /// `data` or `socket`.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The path is not a directory.
    #[error("the {what} directory {} is not a directory", path.display())]
    NotADirectory {
        /// `data` or `socket`.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// Another uid owns it.
    #[error(
        "the {what} directory {} is owned by uid {owner}, not by vaultd's uid {euid}, so \
         that user could replace what vaultd keeps there; if it is vaultd's, run \
         `chown {euid} {}`, else choose another directory",
        path.display(),
        path.display()
    )]
    Owner {
        /// `data` or `socket`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// vaultd's effective uid.
        euid: u32,
    },
    /// Others than its owner may write it.
    #[error(
        "the {what} directory {} is writable by group or others (mode {mode:04o}), who could \
         replace what vaultd keeps there; run `chmod {fix:04o} {}`",
        path.display(),
        path.display()
    )]
    Writable {
        /// `data` or `socket`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// The mode vaultd creates it with.
        fix: u32,
    },
    /// A shared directory (sticky bit, such as `/tmp`): anyone may create names in it.
    #[error(
        "the {what} directory {} is a shared directory (mode {mode:04o}) where anyone may \
         create names; choose a directory of vaultd's own",
        path.display()
    )]
    Shared {
        /// `data` or `socket`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// Creating, opening or inspecting it failed.
    #[error("cannot use the {what} directory {}: {source}", path.display())]
    Io {
        /// `data` or `socket`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A directory that passed the checks, held open.
#[derive(Debug)]
pub struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl TrustedDir {
    /// Opens `path` as a trusted directory, creating it (and missing parents) with `mode` if
    /// it does not exist. `what` names it in errors (`data`, `socket`).
    pub fn open_or_create(path: &Path, mode: u32, what: &'static str) -> Result<Self, DirError> {
        let io_err = |source| DirError::Io {
            what,
            path: path.to_owned(),
            source,
        };
        let created = match std::fs::symlink_metadata(path) {
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut b = std::fs::DirBuilder::new();
                b.recursive(true);
                std::os::unix::fs::DirBuilderExt::mode(&mut b, mode);
                b.create(path).map_err(io_err)?;
                true
            }
            Err(e) => return Err(io_err(e)),
        };
        let fd = match rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // ELOOP for a link; ENOTDIR for a link under O_DIRECTORY on some kernels.
            Err(e) if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR => {
                let link =
                    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
                let path = path.to_owned();
                return Err(if link {
                    DirError::Symlink { what, path }
                } else {
                    DirError::NotADirectory { what, path }
                });
            }
            Err(e) => return Err(io_err(e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| io_err(e.into()))?;
        let euid = rustix::process::geteuid().as_raw();
        if st.st_uid != euid {
            return Err(DirError::Owner {
                what,
                path: path.to_owned(),
                owner: st.st_uid,
                euid,
            });
        }
        // Created with `mode` less the umask: give it exactly `mode`. Only now, once it is
        // known to be ours (another process may have made the path meanwhile).
        if created {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| io_err(e.into()))?;
        }
        let current = rustix::fs::fstat(&fd)
            .map_err(|e| io_err(e.into()))?
            .st_mode
            & 0o7777;
        if current & 0o1000 != 0 && current & 0o022 != 0 {
            return Err(DirError::Shared {
                what,
                path: path.to_owned(),
                mode: current,
            });
        }
        if current & 0o022 != 0 {
            return Err(DirError::Writable {
                what,
                path: path.to_owned(),
                mode: current,
                fix: mode,
            });
        }
        Ok(TrustedDir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The descriptor, for `openat` and friends.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path to this directory without symbolic links (its parent resolved), checked to
    /// name this very directory now; for code that can only open by path (SQLite), which
    /// then refuses any link on the way.
    pub fn resolved_path(&self) -> io::Result<PathBuf> {
        let name = self.path.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the path has no final name")
        })?;
        let parent = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let resolved = std::fs::canonicalize(parent)?.join(name);
        if !self.is_at(&resolved)? {
            return Err(io::Error::other(
                "the directory was moved or replaced while vaultd started",
            ));
        }
        Ok(resolved)
    }

    /// Whether `path` (not following a final link) is this directory.
    pub fn is_at(&self, path: &Path) -> io::Result<bool> {
        let mine = rustix::fs::fstat(&self.fd)?;
        let there = std::fs::symlink_metadata(path)?;
        Ok(there.file_type().is_dir() && there.dev() == mine.st_dev && there.ino() == mine.st_ino)
    }
}
