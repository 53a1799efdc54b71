//! The local-socket transport: the only module with platform-specific code.
//!
//! Unix: a Unix domain socket created mode 0660 (clients are authenticated by the write bit,
//! then by peer credentials) in a directory created 0750; a stale socket file left by a dead
//! daemon is replaced, a live one is refused. Peer credentials (uid, gid, pid) come from
//! `SO_PEERCRED`/`getpeereid` through `interprocess`. A socket passed in by systemd socket
//! activation is used as is.
//!
//! Windows (named pipes through `interprocess`) is not implemented yet: [`bind`] refuses.

use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::{Listener as IpListener, Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};

/// Who is at the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Effective uid.
    pub uid: u32,
    /// Effective (primary) gid.
    pub gid: u32,
    /// Process id, where the OS tells it.
    pub pid: Option<u32>,
}

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A daemon answers on the socket already.
    #[error("another vaultd is running on {}", .0.display())]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// Any other failure.
    #[error("cannot listen on {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A bound listener.
pub struct Listener {
    inner: IpListener,
}

/// Binds the socket at `path` (see the module docs for the rules).
pub fn bind(path: &Path) -> Result<Listener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    if cfg!(not(unix)) {
        // Without uids every peer would look like root: refuse rather than serve unauthenticated.
        return Err(io_err(io::Error::new(
            io::ErrorKind::Unsupported,
            "named pipes are not supported yet on this platform",
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o750);
            b.create(dir).map_err(io_err)?;
            // The umask may have cleared bits of 0750: set the mode we mean.
            #[cfg(unix)]
            set_mode(dir, 0o750).map_err(io_err)?;
        }
    }
    remove_stale(path)?;
    let name = path.to_fs_name::<GenericFilePath>().map_err(io_err)?;
    let opts = ListenerOptions::new().name(name).reclaim_name(true);
    #[cfg(unix)]
    let opts = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        opts.mode(0o660)
    };
    let inner = opts.create_tokio().map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => BindError::InUse(path.to_owned()),
        _ => io_err(e),
    })?;
    // Linux applies the umask at bind(2), after interprocess's fchmod: set 0660 on the path.
    // Until then the socket is at most 0660 anyway, so no wider window opens.
    #[cfg(unix)]
    set_mode(path, 0o660).map_err(io_err)?;
    Ok(Listener { inner })
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Removes a socket file nobody listens on; refuses a live socket or a non-socket file.
fn remove_stale(path: &Path) -> Result<(), BindError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(path.to_owned()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(BindError::InUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing stale socket of a dead daemon");
                std::fs::remove_file(path).map_err(|source| BindError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
            Err(source) => Err(BindError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Wraps a listening socket inherited from systemd (`LISTEN_FDS`), used as is.
#[cfg(unix)]
pub fn from_inherited_fd(fd: std::os::fd::OwnedFd) -> io::Result<Listener> {
    use interprocess::os::unix::uds_local_socket::tokio::Listener as UdsListener;
    let uds = UdsListener::try_from(fd)?;
    Ok(Listener {
        inner: IpListener::from(uds),
    })
}

impl Listener {
    /// Accepts one connection and reads its peer's credentials.
    pub async fn accept(&self) -> io::Result<(Stream, PeerInfo)> {
        let stream = self.inner.accept().await?;
        let creds = stream.peer_creds()?;
        #[cfg(unix)]
        let peer = PeerInfo {
            uid: creds
                .euid()
                .ok_or_else(|| io::Error::other("peer uid unknown"))?,
            gid: creds
                .egid()
                .ok_or_else(|| io::Error::other("peer gid unknown"))?,
            pid: creds.pid().and_then(|p| u32::try_from(p).ok()),
        };
        #[cfg(not(unix))]
        let peer = PeerInfo {
            uid: 0,
            gid: 0,
            pid: creds.pid().map(|p| p as u32),
        };
        Ok((stream, peer))
    }

    /// Leaves the socket file in place on drop (socket activation: systemd owns it).
    pub fn keep_socket_file(&mut self) {
        self.inner.do_not_reclaim_name_on_drop();
    }
}
