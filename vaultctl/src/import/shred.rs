//! `--shred`: overwrite the imported file with zeros through the descriptor it was read from,
//! sync, and remove its name, only while that name still leads to that file.
//!
//! Before anything is written, the file must still have one link, the same size and
//! modification time as when it was read (else a program still writes to it, or it is not
//! the session that was imported), and its name in the directory it was opened in must
//! still be that file (`fstatat` without following links, device and inode compared). The
//! zeros go through the open descriptor, never through the path. The name is checked again
//! right before `unlinkat` on the same directory descriptor.
//!
//! The race that remains: between that last check and `unlinkat`, someone who may write
//! that directory can put another entry under the name, which is then removed instead. Only
//! a name goes (no data is overwritten), in the directory the source was in, and one that
//! whoever put it there could remove (or, in a sticky directory, owns) anyway. A swap
//! detected before the zeros leaves everything as it is; one detected after them leaves the
//! zeroed file and the new entry where they are. Either way vaultctl says so.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Stat};

use super::source::{SourceFile, link_count};

/// Why the source was not (completely) shredded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShredError {
    /// The name no longer leads to the file read; nothing was written.
    #[error(
        "{} was not shredded: it changed between open and shred (the name now leads to \
         another file, or to none); nothing was overwritten or removed",
        .0.display()
    )]
    Changed(PathBuf),
    /// The name changed after the zeros were written.
    #[error(
        "{} changed between open and shred: the file that was imported was overwritten with \
         zeros through vaultctl's own descriptor, but the name now leads elsewhere and was \
         left alone",
        .0.display()
    )]
    ChangedAfterZeros(PathBuf),
    /// The file gained hard links.
    #[error(
        "{} was not shredded: it gained hard links between open and shred ({links} now), \
         which may be someone else's names for it; nothing was overwritten or removed",
        .path.display()
    )]
    Linked { path: PathBuf, links: u64 },
    /// The content changed since it was read.
    #[error(
        "{} was not shredded: it was modified after it was read (is a program still using \
         the session?); nothing was overwritten or removed, and the vault holds the session \
         as it was read",
        .0.display()
    )]
    Modified(PathBuf),
    /// A system call failed.
    #[error("{} could not be shredded: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl SourceFile {
    /// Overwrites the file with zeros, syncs it and removes its name (see the module docs).
    pub(crate) fn shred(self) -> Result<(), ShredError> {
        let io_err = |source: io::Error| ShredError::Io {
            path: self.path.clone(),
            source,
        };
        let now = rfs::fstat(&self.file).map_err(|e| io_err(e.into()))?;
        let links = link_count(&now);
        if links != 1 {
            return Err(ShredError::Linked {
                path: self.path.clone(),
                links,
            });
        }
        if (now.st_size, now.st_mtime, now.st_mtime_nsec)
            != (
                self.stat.st_size,
                self.stat.st_mtime,
                self.stat.st_mtime_nsec,
            )
        {
            return Err(ShredError::Modified(self.path.clone()));
        }
        if !self.still_named(&now) {
            return Err(ShredError::Changed(self.path.clone()));
        }
        let len = u64::try_from(now.st_size)
            .map_err(|_| io_err(io::Error::other("the file reports a negative size")))?;
        overwrite_with_zeros(&self.file, len).map_err(io_err)?;
        if !self.still_named(&now) {
            return Err(ShredError::ChangedAfterZeros(self.path.clone()));
        }
        rfs::unlinkat(&self.dir, &self.name, AtFlags::empty()).map_err(|e| io_err(e.into()))?;
        // Make the removal itself durable; best effort, the name is gone either way.
        if let Ok(dir) = rfs::openat(
            &self.dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            let _ = rfs::fsync(dir);
        }
        Ok(())
    }

    /// Whether the name the file was opened by still leads to it (not following a link).
    fn still_named(&self, file: &Stat) -> bool {
        rfs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| (s.st_dev, s.st_ino) == (file.st_dev, file.st_ino))
    }
}

/// Writes `len` zero bytes over `file` from its start, then syncs it to disk.
fn overwrite_with_zeros(file: &std::fs::File, len: u64) -> io::Result<()> {
    let zeros = [0u8; 64 * 1024];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done).map_or(zeros.len(), |left| left.min(zeros.len()));
        file.write_all_at(&zeros[..n], done)?;
        done += u64::try_from(n).expect("a chunk is at most 64 KiB");
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::source::{Owners, open};
    use super::*;

    fn source(dir: &Path) -> (PathBuf, SourceFile) {
        let p = dir.join("s.session");
        std::fs::write(&p, b"secret session bytes").unwrap();
        let f = open(&p, &Owners::of_this_process(None), true).unwrap();
        (p, f)
    }

    #[test]
    fn a_shred_zeroes_through_the_descriptor_and_removes_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f) = source(dir.path());
        let other_handle = std::fs::File::open(&p).unwrap();
        f.shred().unwrap();
        assert!(!p.exists());
        let left = std::io::read_to_string(&other_handle).unwrap();
        assert_eq!(left, "\0".repeat(20));
    }

    #[test]
    fn a_swapped_name_is_neither_overwritten_nor_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f) = source(dir.path());
        std::fs::rename(&p, dir.path().join("moved")).unwrap();
        std::fs::write(&p, b"someone else's file").unwrap();
        assert!(matches!(f.shred(), Err(ShredError::Changed(_))));
        assert_eq!(std::fs::read(&p).unwrap(), b"someone else's file");
        assert_eq!(
            std::fs::read(dir.path().join("moved")).unwrap(),
            b"secret session bytes"
        );
    }

    #[test]
    fn a_new_hard_link_or_a_write_stops_the_shred() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f) = source(dir.path());
        std::fs::hard_link(&p, dir.path().join("second")).unwrap();
        assert!(matches!(
            f.shred(),
            Err(ShredError::Linked { links: 2, .. })
        ));
        assert_eq!(std::fs::read(&p).unwrap(), b"secret session bytes");

        let dir = tempfile::tempdir().unwrap();
        let (p, f) = source(dir.path());
        std::fs::write(&p, b"a newer session, longer").unwrap();
        assert!(matches!(f.shred(), Err(ShredError::Modified(_))));
        assert_eq!(std::fs::read(&p).unwrap(), b"a newer session, longer");
    }
}
