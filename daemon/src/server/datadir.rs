//! The data directory and its lock: one daemon per vault.
//!
//! The directory is created mode 0700. `vaultd.lock` inside it is held with `flock` for the
//! daemon's lifetime and names the holder's pid, so a second daemon on the same directory is
//! refused at once with "another vaultd is running (pid N)" — before it touches the socket
//! or the vault file — instead of waiting on SQLite's lock. The kernel drops the lock when
//! the process dies, so there is no stale lock to clean.

use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::Context;

/// The held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Creates `dir` (0700) if missing and takes its lock.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        if !dir.exists() {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(dir)
                .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        }
        let path = dir.join("vaultd.lock");
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::WouldBlock {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    let pid = pid.trim();
                    anyhow::bail!(
                        "another vaultd is running on {}{}",
                        dir.display(),
                        if pid.is_empty() {
                            String::new()
                        } else {
                            format!(" (pid {pid})")
                        }
                    );
                }
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(DataDirLock { _file: file })
    }
}
