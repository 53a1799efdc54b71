//! The data directory and its lock: one daemon per vault.
//!
//! The directory is created mode 0700; an existing one must be vaultd's own and closed to
//! others, and is never reached through a symbolic link (see [`super::dirs`]). `vaultd.lock`
//! inside it is opened relative to the checked directory, never through a link
//! (`O_NOFOLLOW`), held with `flock` for the daemon's lifetime and names the holder's pid, so
//! a second daemon on the same directory is refused at once with "another vaultd is running
//! (pid N)" — before it touches the socket or the vault file — instead of waiting on
//! SQLite's lock. The kernel drops the lock when the process dies, so there is no stale lock
//! to clean.
//!
//! Windows: the directory is created with a DACL for vaultd's user alone, inherited by the
//! files made in it (`win::create_private_dir`, Windows only); an existing one must be owned
//! by vaultd's user (or `SYSTEM`, Administrators) and grant access to nobody else
//! (`win::check_private_dir`); `vaultd.lock` is opened without
//! sharing (share mode 0) and kept open, so a second daemon's open fails with a sharing
//! violation, and the system closes it when the process dies.

#[cfg(unix)]
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
#[cfg(unix)]
use rustix::fs::{FileType, FlockOperation, Mode, OFlags};

#[cfg(unix)]
use super::dirs::TrustedDir;

/// The lock file's name inside the data directory.
const LOCK_FILE: &str = "vaultd.lock";

/// The held lock; released when dropped (or when the process exits).
#[cfg(windows)]
#[derive(Debug)]
pub struct DataDirLock {
    dir: PathBuf,
    _file: std::fs::File,
}

#[cfg(windows)]
impl DataDirLock {
    /// Creates `dir` (private to vaultd's user) if missing and takes its lock.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        use std::io::Write;
        use std::os::windows::fs::OpenOptionsExt;
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot resolve the data directory {}", dir.display()))?;
        super::win::create_private_dir(&dir)
            .with_context(|| format!("cannot use the data directory {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        // ERROR_SHARING_VIOLATION: another process holds it open.
        const SHARING_VIOLATION: i32 = 32;
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .share_mode(0)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(SHARING_VIOLATION) => {
                anyhow::bail!("another vaultd is running on {}", dir.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(DataDirLock { dir, _file: file })
    }

    /// The data directory's absolute path: where the vault file is opened.
    pub fn resolved_path(&self) -> anyhow::Result<PathBuf> {
        Ok(self.dir.clone())
    }

    /// Fails unless `path` is still a directory (Windows does not let a directory with an
    /// open file in it be moved or removed).
    pub fn check_still_at(&self, path: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(
            path.is_dir(),
            "the data directory {} was moved or removed while vaultd started",
            path.display()
        );
        Ok(())
    }
}

/// The held lock; released when dropped (or when the process exits).
#[cfg(unix)]
#[derive(Debug)]
pub struct DataDirLock {
    dir: TrustedDir,
    _file: std::fs::File,
}

#[cfg(unix)]
impl DataDirLock {
    /// Checks `dir` (creating it 0700 if missing) and takes its lock.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        let dir = TrustedDir::open_or_create(dir, 0o700, "data")?;
        let path = dir.path().join(LOCK_FILE);
        let fd = match rustix::fs::openat(
            dir.fd(),
            LOCK_FILE,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP) => anyhow::bail!(
                "{} is a symbolic link; vaultd does not follow it (remove it: vaultd makes its \
                 own lock file)",
                path.display()
            ),
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("cannot open {}", path.display()));
            }
        };
        let st =
            rustix::fs::fstat(&fd).with_context(|| format!("cannot stat {}", path.display()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            anyhow::bail!(
                "{} is not a regular file; vaultd does not use it (remove it)",
                path.display()
            );
        }
        let mut file = std::fs::File::from(fd);
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                anyhow::bail!(
                    "another vaultd is running on {}{}",
                    dir.path().display(),
                    if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    }
                );
            }
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(DataDirLock { dir, _file: file })
    }

    /// The data directory's path without symbolic links, checked to be the locked directory
    /// (see [`TrustedDir::resolved_path`]): where the vault file is opened.
    pub fn resolved_path(&self) -> anyhow::Result<PathBuf> {
        self.dir.resolved_path().with_context(|| {
            format!(
                "cannot resolve the data directory {}",
                self.dir.path().display()
            )
        })
    }

    /// Fails unless `path` still names the locked directory.
    pub fn check_still_at(&self, path: &Path) -> anyhow::Result<()> {
        match self.dir.is_at(path) {
            Ok(true) => Ok(()),
            Ok(false) => anyhow::bail!(
                "the data directory {} was moved or replaced while vaultd started",
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("cannot stat {}", path.display())),
        }
    }
}
