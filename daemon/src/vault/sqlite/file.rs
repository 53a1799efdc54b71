//! Opening the vault file: created mode 0600, never through a symbolic link, and refused
//! when its length shows it was cut.

use std::path::Path;

use crate::vault::error::{EngineError, Result, StorageErrorKind};

/// Refuses a SQLite file whose length is not a whole number of its pages: it was cut (a
/// copy interrupted, a disk that lost the file's tail). SQLite itself would read the missing
/// bytes as zeros and serve what the other pages hold, and its next checkpoint would write the
/// zeroed page back for good. Files that are not SQLite are left to the checks after open.
pub(super) fn check_whole_pages(file: &mut std::fs::File) -> std::result::Result<(), String> {
    use std::io::{Read, Seek};
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut header = [0u8; 18];
    let read = file.rewind().and_then(|()| file.read_exact(&mut header));
    if read.is_err() || &header[..16] != b"SQLite format 3\0" {
        return Ok(());
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    if page_size < 512 || !page_size.is_power_of_two() {
        return Err(format!("invalid page size {page_size} in its header"));
    }
    if len % page_size != 0 {
        return Err(format!(
            "its length ({len} bytes) is not a whole number of {page_size}-byte pages: \
             the file was truncated"
        ));
    }
    Ok(())
}

/// Opens `path` for reading, creating it with mode 0600 if it does not exist; never
/// truncates an existing file, and never follows a symbolic link (`O_NOFOLLOW`; every file
/// std opens is `O_CLOEXEC`): a link planted where the vault belongs could otherwise make a
/// root daemon write its database into the file the link points at.
/// Another connection of this process to the vault file the storage connection opened (the
/// background checkpointer's, the peer map thread's): read-write (WAL readers write the
/// shared-memory index), one thread only, never through a symbolic link.
pub(super) fn second_connection(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
}

pub(super) fn open_private(path: &Path) -> Result<std::fs::File> {
    let storage = |e: std::io::Error, what: &str| EngineError::Storage {
        kind: match e.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                StorageErrorKind::ReadOnly
            }
            _ => StorageErrorKind::Io,
        },
        message: format!("cannot {what} {}: {e}", path.display()),
    };
    let symlink = || EngineError::Storage {
        kind: StorageErrorKind::Io,
        message: format!(
            "{} is a symbolic link; vaultd does not follow it (move the real file there)",
            path.display()
        ),
    };
    let is_loop = |e: &std::io::Error| e.raw_os_error() == Some(nofollow::ELOOP);
    let mut create = std::fs::OpenOptions::new();
    create.read(true).write(true).create_new(true);
    nofollow::set(&mut create, 0o600);
    match create.open(path) {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if is_loop(&e) => return Err(symlink()),
        Err(e) => return Err(storage(e, "create")),
    }
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    nofollow::set(&mut open, 0o600);
    open.open(path).map_err(|e| {
        if is_loop(&e) {
            symlink()
        } else {
            storage(e, "open")
        }
    })
}

/// `O_NOFOLLOW` where the platform has it.
pub(super) mod nofollow {
    #[cfg(unix)]
    pub const ELOOP: i32 = libc::ELOOP;
    #[cfg(not(unix))]
    pub const ELOOP: i32 = -1;

    /// Adds `O_NOFOLLOW` and, for a file created, `mode`.
    pub fn set(opts: &mut std::fs::OpenOptions, mode: u32) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.custom_flags(libc::O_NOFOLLOW).mode(mode);
        }
        #[cfg(not(unix))]
        let _ = (opts, mode);
    }
}
