//! Opening the file that `vaultctl import` reads (and with `--shred` destroys), so that its
//! author cannot point vaultctl, usually run as root, at anything else.
//!
//! The threat: the author of a session file controls its path. Root following a symbolic
//! link there would read (and shred) another user's session; a hard link makes a second name
//! for someone else's file; a path swapped after a check makes the next open land elsewhere.
//! So the file is opened once, and everything after goes through that descriptor:
//!
//! 1. the parent directory is opened (`O_PATH|O_DIRECTORY`; links in the directories above
//!    are followed, as the system's own layout may use them), and the final name inside it
//!    with `O_NOFOLLOW`, so a symbolic link is never followed, whoever made it;
//! 2. `fstat` on that descriptor: a regular file (on Linux the first open is `O_PATH`, so a
//!    FIFO, socket or device is never really opened: no blocking, no driver side effects),
//!    with one link, owned by an accepted uid ([`Owners`]), at most 1 GiB;
//! 3. the same inode is opened for reading (or reading and writing with `--shred`) through
//!    `/proc/self/fd/N`, which the kernel resolves to the open file, not to its name; the
//!    importer reads from it ([`session_vault_formats::Input::File`]), and the shred writes zeros
//!    through it ([`SourceFile::shred`]).
//!
//! The owner rule: a file of the caller's real uid, of root, of the user who ran `sudo`
//! (`SUDO_UID`), or of the uid given with `--source-owner`. Root reading a file that another
//! user owns, on a path that user controls, is the confused-deputy attack: the owner could
//! have put a third user's session behind a linked directory. Naming the expected owner keeps
//! the check meaningful (a blanket "any owner" switch would not: the attacker's directory
//! link would lead to any uid's file).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, Stat};

use session_vault_formats::MAX_INPUT_BYTES;

/// The owners whose files `vaultctl import` reads and shreds.
pub(crate) struct Owners {
    /// The real uid vaultctl runs as.
    caller: u32,
    /// The user who ran `sudo`, when vaultctl runs under it.
    sudo_uid: Option<u32>,
    /// `--source-owner`.
    named: Option<u32>,
}

impl Owners {
    /// This process's real uid, `SUDO_UID`, and the `--source-owner` uid if given.
    ///
    /// `SUDO_UID` is trusted as `sudo` sets it: whoever controls vaultctl's environment is
    /// the one running it, and could name any owner with `--source-owner` anyway.
    pub(crate) fn of_this_process(named: Option<u32>) -> Owners {
        Owners {
            caller: rustix::process::getuid().as_raw(),
            sudo_uid: std::env::var("SUDO_UID").ok().and_then(|v| v.parse().ok()),
            named,
        }
    }

    fn accepts(&self, uid: u32) -> bool {
        uid == 0 || uid == self.caller || Some(uid) == self.sudo_uid || Some(uid) == self.named
    }

    /// The accepted owners, for a person.
    fn describe(&self) -> String {
        let mut who = vec![match self.caller {
            0 => "you (root)".to_owned(),
            uid => format!("you (uid {uid})"),
        }];
        if let Some(u) = self.sudo_uid.filter(|&u| u != self.caller && u != 0) {
            who.push(format!("uid {u} who ran sudo"));
        }
        if let Some(u) = self.named.filter(|&u| u != self.caller && u != 0) {
            who.push(format!("uid {u} (--source-owner)"));
        }
        if self.caller != 0 {
            who.push("root".to_owned());
        }
        match who.split_last() {
            Some((last, [one])) => format!("{one} or {last}"),
            Some((last, rest)) if !rest.is_empty() => format!("{}, or {last}", rest.join(", ")),
            _ => who.join(""),
        }
    }
}

/// Why a source file is refused. Each message names the path and the reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// The path has no final name (`/`, `..`).
    #[error("{} does not name a file", .path.display())]
    NoFileName { path: PathBuf },
    /// The final name is a symbolic link.
    #[error(
        "{} is a symbolic link (to {target}): vaultctl does not follow links, so that a link \
         cannot make it read or shred someone else's file",
        .path.display()
    )]
    Symlink {
        path: PathBuf,
        target: String,
        resolved: Option<PathBuf>,
    },
    /// A directory, FIFO, socket or device.
    #[error("{} is not a regular file but {kind}", .path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// More than one name for the same file.
    #[error(
        "{} has {links} hard links: another name of this file may be in a place someone else \
         controls, or be someone else's file, so vaultctl neither reads nor shreds it",
        .path.display()
    )]
    HardLinks { path: PathBuf, links: u64 },
    /// Owned by a uid not accepted.
    #[error(
        "{} is owned by uid {uid}, not by {allowed}: vaultctl (often run as root) does not read \
         or shred a file of another user unless told whose file to expect, since that user \
         controls the path and could have put someone else's session there",
        .path.display()
    )]
    Owner {
        path: PathBuf,
        uid: u32,
        allowed: String,
    },
    /// Larger than any session.
    #[error("{} is larger than 1 GiB: not a session", .path.display())]
    TooLarge { path: PathBuf },
    /// The open itself failed.
    #[error("cannot open {}{}: {source}", .path.display(), if *.write { " for reading and writing (--shred writes zeros over it)" } else { "" })]
    Open {
        path: PathBuf,
        write: bool,
        source: io::Error,
    },
}

impl SourceError {
    /// The next step, if one is known.
    pub(crate) fn hint(&self) -> Option<String> {
        match self {
            SourceError::Symlink {
                resolved: Some(real),
                ..
            } => Some(format!(
                "if that is the file you mean, pass its real path: {} (it must then pass the \
                 owner and link checks too)",
                real.display()
            )),
            SourceError::Symlink { .. } => Some("pass the real path of the file".to_owned()),
            SourceError::NotRegular { .. } => Some(
                "pass a session file, a session string, or - to read one from standard input"
                    .to_owned(),
            ),
            SourceError::HardLinks { path, .. } => Some(format!(
                "if it is yours, copy it (cp {p} COPY), import the copy, and remove the other \
                 names yourself",
                p = path.display()
            )),
            SourceError::Owner { uid, .. } => Some(format!(
                "if it is the session of uid {uid} you mean to import, pass --source-owner {uid}"
            )),
            _ => None,
        }
    }
}

/// A source file opened and checked, and what is needed to shred it safely.
pub(crate) struct SourceFile {
    /// The open file (read-only, or read-write for `--shred`).
    pub(crate) file: File,
    /// The path as given, for messages.
    pub(crate) path: PathBuf,
    /// The directory the file was found in (for the name check and the unlink).
    pub(super) dir: OwnedFd,
    /// The file's name in `dir`.
    pub(super) name: OsString,
    /// The file's `fstat` at open.
    pub(super) stat: Stat,
}

/// Opens `path` as described in the module docs; `write` for `--shred`.
pub(crate) fn open(path: &Path, owners: &Owners, write: bool) -> Result<SourceFile, SourceError> {
    let open_err = |source: io::Error| SourceError::Open {
        path: path.to_owned(),
        write,
        source,
    };
    let (parent, name) = split(path).ok_or_else(|| SourceError::NoFileName {
        path: path.to_owned(),
    })?;
    let dir = rfs::openat(
        rfs::CWD,
        parent,
        DIR_FLAGS | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| open_err(e.into()))?;
    let (fd, stat) = open_inode(&dir, name, write).map_err(|e| match e {
        Opened::Refused(kind) => refusal(path, &dir, name, kind),
        Opened::Failed(e) => open_err(e),
    })?;
    let links = link_count(&stat);
    if links != 1 {
        return Err(SourceError::HardLinks {
            path: path.to_owned(),
            links,
        });
    }
    if !owners.accepts(stat.st_uid) {
        return Err(SourceError::Owner {
            path: path.to_owned(),
            uid: stat.st_uid,
            allowed: owners.describe(),
        });
    }
    if u64::try_from(stat.st_size)
        .ok()
        .is_none_or(|n| n > MAX_INPUT_BYTES)
    {
        return Err(SourceError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(SourceFile {
        file: File::from(fd),
        path: path.to_owned(),
        dir,
        name: name.to_owned(),
        stat,
    })
}

/// The number of links of a file: `nlink_t` is 64 bits on some targets, 32 on others.
/// (`From`, lossless either way; on the 64-bit ones the conversion is the identity.)
#[allow(clippy::useless_conversion)]
pub(super) fn link_count(stat: &Stat) -> u64 {
    u64::from(stat.st_nlink)
}

/// `path`'s directory (`.` when it has none) and final name.
fn split(path: &Path) -> Option<(&Path, &OsStr)> {
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some((parent, name))
}

/// The result of opening the final name.
enum Opened {
    /// Not a regular file: its type.
    Refused(FileType),
    /// The system refused.
    Failed(io::Error),
}

impl From<rustix::io::Errno> for Opened {
    fn from(e: rustix::io::Errno) -> Opened {
        Opened::Failed(e.into())
    }
}

/// How the directory is opened: `O_PATH` where it exists (no read permission needed).
#[cfg(any(target_os = "linux", target_os = "android"))]
const DIR_FLAGS: OFlags = OFlags::PATH;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const DIR_FLAGS: OFlags = OFlags::RDONLY;

fn access(write: bool) -> OFlags {
    let mode = if write { OFlags::RDWR } else { OFlags::RDONLY };
    mode | OFlags::CLOEXEC | OFlags::NOCTTY
}

/// Opens `name` in `dir` without following a link and returns it with its `fstat`, if it is
/// a regular file. Linux: an `O_PATH` handle is checked first and then reopened through
/// `/proc/self/fd`, so that nothing but a regular file is ever really opened.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn open_inode(dir: &OwnedFd, name: &OsStr, write: bool) -> Result<(OwnedFd, Stat), Opened> {
    let handle = rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = rfs::fstat(&handle)?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(Opened::Refused(kind));
    }
    let reopened = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let fd = rfs::open(reopened.as_str(), access(write), Mode::empty()).map_err(|e| {
        Opened::Failed(io::Error::new(
            e.kind(),
            format!("cannot reopen it through {reopened} (is /proc mounted?): {e}"),
        ))
    })?;
    same_inode(fd, &stat)
}

/// Opens `name` in `dir` without following a link (`O_NONBLOCK`, so that a FIFO does not
/// block) and returns it with its `fstat`, if it is a regular file.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn open_inode(dir: &OwnedFd, name: &OsStr, write: bool) -> Result<(OwnedFd, Stat), Opened> {
    let flags = access(write) | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let fd = match rfs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::LOOP => {
            let st = rfs::statat(dir, name, rfs::AtFlags::SYMLINK_NOFOLLOW)?;
            return Err(Opened::Refused(FileType::from_raw_mode(st.st_mode)));
        }
        Err(e) => return Err(e.into()),
    };
    let stat = rfs::fstat(&fd)?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(Opened::Refused(kind));
    }
    Ok((fd, stat))
}

/// Returns `fd` with its `fstat`, after checking it is the file `expected` describes.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn same_inode(fd: OwnedFd, expected: &Stat) -> Result<(OwnedFd, Stat), Opened> {
    let stat = rfs::fstat(&fd)?;
    if (stat.st_dev, stat.st_ino) != (expected.st_dev, expected.st_ino) {
        // The kernel reopens the open file itself; this cannot happen, and is not trusted.
        return Err(Opened::Failed(io::Error::other(
            "the reopened descriptor is another file",
        )));
    }
    Ok((fd, stat))
}

/// The refusal of a final name of type `kind`.
fn refusal(path: &Path, dir: &OwnedFd, name: &OsStr, kind: FileType) -> SourceError {
    let path = path.to_owned();
    let kind = match kind {
        FileType::Symlink => {
            let target = rfs::readlinkat(dir, name, Vec::new())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "an unreadable target".to_owned());
            // Only for the hint: the path a person would pass instead (checked afresh then).
            let resolved = std::fs::canonicalize(&path).ok();
            return SourceError::Symlink {
                path,
                target,
                resolved,
            };
        }
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "a file of an unknown type",
    };
    SourceError::NotRegular { path, kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners() -> Owners {
        Owners {
            caller: rustix::process::getuid().as_raw(),
            sudo_uid: None,
            named: None,
        }
    }

    #[test]
    fn a_regular_file_opens_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.session");
        std::fs::write(&p, b"abc").unwrap();
        let f = open(&p, &owners(), false).unwrap();
        assert_eq!(std::io::read_to_string(&f.file).unwrap(), "abc");
        assert_eq!(f.stat.st_size, 3);
    }

    #[test]
    fn links_fifos_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, b"abc").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        let e = open(&link, &owners(), false).err().unwrap();
        assert!(matches!(&e, SourceError::Symlink { target, .. } if target == "real"));
        assert!(e.hint().unwrap().contains(&real.display().to_string()));
        let hard = dir.path().join("hard");
        std::fs::hard_link(&real, &hard).unwrap();
        let e = open(&hard, &owners(), true).err().unwrap();
        assert!(matches!(e, SourceError::HardLinks { links: 2, .. }), "{e}");
        let fifo = dir.path().join("fifo");
        rfs::mknodat(rfs::CWD, &fifo, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
        for (p, kind) in [
            (&fifo, "a FIFO (named pipe)"),
            (&dir.path().to_owned(), "a directory"),
        ] {
            let e = open(p, &owners(), true).err().unwrap();
            assert!(
                matches!(e, SourceError::NotRegular { kind: k, .. } if k == kind),
                "{e}"
            );
        }
        assert!(matches!(
            open(Path::new("/"), &owners(), false),
            Err(SourceError::NoFileName { .. })
        ));
    }

    #[test]
    fn owners_are_described_plainly() {
        let o = Owners {
            caller: 0,
            sudo_uid: Some(1000),
            named: Some(1001),
        };
        assert!(o.accepts(0) && o.accepts(1000) && o.accepts(1001) && !o.accepts(1002));
        assert_eq!(
            o.describe(),
            "you (root), uid 1000 who ran sudo, or uid 1001 (--source-owner)"
        );
        let o = Owners {
            caller: 1000,
            sudo_uid: None,
            named: None,
        };
        assert_eq!(o.describe(), "you (uid 1000) or root");
    }
}
