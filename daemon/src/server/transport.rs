//! The local-socket transport: the only module with platform-specific code.
//!
//! Unix: a Unix domain socket created mode 0660 (clients are authenticated by the write bit,
//! then by peer credentials) in a directory created 0750. An existing directory must be
//! vaultd's own, writable by nobody else, and not a symbolic link ([`super::dirs`]); a stale
//! socket file left by a dead daemon is replaced, a live one is refused, and every step
//! (stale check, removal, the mode after `bind`) goes through the checked directory's
//! descriptor. A socket passed in by systemd socket activation is used as is: systemd made
//! it and its directory, and vaultd creates and removes nothing there.
//!
//! Peer credentials (uid, gid, pid) come from `SO_PEERCRED`/`getpeereid` through
//! `interprocess`; on Linux the peer's supplementary groups come from `SO_PEERGROUPS`, read
//! with the connection (never from `/proc/PID`, whose pid may be reused), elsewhere only the
//! primary gid is known. A peer the kernel cannot name is refused: no uid at all fails the
//! accept, and a uid or gid equal to the kernel's overflow id (what a user namespace reports
//! for every id it does not map, e.g. under systemd's `PrivateUsers=`) makes it
//! [`Peer::Unmapped`] — all such peers would otherwise look like one user.
//!
//! Windows: a named pipe (`\\.\pipe\session-vault` by default) through `interprocess`,
//! created with a security descriptor admitting only vaultd's user, `SYSTEM`, Administrators
//! and the configured groups, first instance with `FILE_FLAG_FIRST_PIPE_INSTANCE`; each
//! client's user SID and groups are read from its process token and mapped to ids
//! (`server/win.rs`, Windows only). A client whose token cannot be read, or whose SID maps to
//! no id, is [`Peer::Unmapped`] and refused.

use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::{Listener as IpListener, Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};

#[cfg(unix)]
pub use super::dirs::DirError;
#[cfg(unix)]
use super::dirs::TrustedDir;

/// The id Linux reports for an unmapped uid or gid when `/proc/sys/kernel/overflow{u,g}id`
/// cannot be read.
const DEFAULT_OVERFLOW_ID: u32 = 65534;

/// Who is at the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Effective uid.
    pub uid: u32,
    /// Effective (primary) gid.
    pub gid: u32,
    /// Supplementary groups, as the kernel reported them at connect time (Linux; empty
    /// elsewhere). Never holds the overflow gid.
    pub groups: Vec<u32>,
    /// Process id, where the OS tells it.
    pub pid: Option<u32>,
}

impl PeerInfo {
    /// Whether the peer is in group `gid`, as its primary or a supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// A peer whose uid or gid the kernel reported as the overflow id: its real identity is
/// unknown to this daemon, and it is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmapped {
    /// The uid as reported.
    pub uid: u32,
    /// The primary gid as reported.
    pub gid: u32,
    /// Process id, where the OS tells it.
    pub pid: Option<u32>,
}

/// An accepted connection's peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A peer the kernel names.
    Known(PeerInfo),
    /// A peer the kernel reports as the overflow uid or gid; to be refused.
    Unmapped(Unmapped),
}

/// The kernel's overflow uid and gid: what it reports for ids that the reader's user
/// namespace does not map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverflowIds {
    /// `/proc/sys/kernel/overflowuid`.
    pub uid: u32,
    /// `/proc/sys/kernel/overflowgid`.
    pub gid: u32,
}

impl OverflowIds {
    /// Reads them from `/proc/sys/kernel`, or takes Linux's default (65534) where that
    /// cannot be read. Also warns once when vaultd itself runs in a user namespace that
    /// does not map every id: its clients' ids may then be unmapped and refused.
    pub fn from_kernel() -> OverflowIds {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(DEFAULT_OVERFLOW_ID)
        };
        let ids = OverflowIds {
            uid: read("overflowuid"),
            gid: read("overflowgid"),
        };
        if let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") {
            let identity = map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
            if !identity {
                tracing::warn!(
                    uid_map = %map.trim().replace('\n', "; "),
                    "vaultd runs in a user namespace that does not map every uid (e.g. systemd's \
                     PrivateUsers=); clients whose ids it does not map reach it as uid {} / gid \
                     {} and are refused",
                    ids.uid,
                    ids.gid
                );
            }
        }
        ids
    }

    #[cfg(unix)]
    fn names(&self, uid: u32, gid: u32) -> bool {
        uid == self.uid || gid == self.gid
    }
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
    /// The socket's directory is not safe to use.
    #[cfg(unix)]
    #[error(transparent)]
    Dir(#[from] DirError),
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
    #[cfg_attr(not(unix), allow(dead_code))]
    overflow: OverflowIds,
}

/// Binds the named pipe `path` (`\\.\pipe\…`; see the module docs for the rules).
#[cfg(windows)]
pub fn bind(path: &Path) -> Result<Listener, BindError> {
    use interprocess::os::windows::local_socket::ListenerOptionsExt;
    use interprocess::os::windows::security_descriptor::SecurityDescriptor;
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    let me = super::win::own_identity().map_err(io_err)?;
    let sddl = super::win::pipe_sddl(&me.user_sid).map_err(io_err)?;
    let wide = widestring::U16CString::from_str(&sddl)
        .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())))?;
    let sd = SecurityDescriptor::deserialize(&wide).map_err(io_err)?;
    let fs_name = path.to_fs_name::<GenericFilePath>().map_err(io_err)?;
    let inner = ListenerOptions::new()
        .name(fs_name)
        .security_descriptor(sd)
        .create_tokio()
        .map_err(|e| match e.raw_os_error() {
            // ERROR_ACCESS_DENIED, ERROR_PIPE_BUSY: FILE_FLAG_FIRST_PIPE_INSTANCE found the
            // name taken, by another vaultd or by someone squatting it.
            Some(5 | 231) => BindError::InUse(path.to_owned()),
            _ if e.kind() == io::ErrorKind::AddrInUse => BindError::InUse(path.to_owned()),
            _ => io_err(e),
        })?;
    Ok(Listener {
        inner,
        overflow: OverflowIds {
            uid: u32::MAX,
            gid: u32::MAX,
        },
    })
}

/// Binds the socket at `path` (see the module docs for the rules).
#[cfg(unix)]
pub fn bind(path: &Path) -> Result<Listener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path has no file name",
        ))
    })?;
    let dir = TrustedDir::open_or_create(dir, 0o750, "socket")?;
    remove_stale(&dir, name, path)?;
    let fs_name = path.to_fs_name::<GenericFilePath>().map_err(io_err)?;
    let opts = ListenerOptions::new().name(fs_name).reclaim_name(true);
    let opts = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        opts.mode(0o660)
    };
    let inner = opts.create_tokio().map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => BindError::InUse(path.to_owned()),
        _ => io_err(e),
    })?;
    // bind(2) works by path: make sure the socket landed in the directory checked above,
    // then set its mode there. Linux applies the umask at bind(2), after interprocess's
    // fchmod, so the mode is set on the file; until then it is at most 0660 anyway. The
    // directory is vaultd's alone, so the name cannot have been swapped for a link.
    let st = rustix::fs::statat(dir.fd(), name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_err(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
        return Err(io_err(io::Error::other(
            "the socket is not where it was bound: its directory changed meanwhile",
        )));
    }
    rustix::fs::chmodat(
        dir.fd(),
        name,
        rustix::fs::Mode::from_raw_mode(0o660),
        rustix::fs::AtFlags::empty(),
    )
    .map_err(|e| io_err(e.into()))?;
    Ok(Listener {
        inner,
        overflow: OverflowIds::from_kernel(),
    })
}

/// Removes a socket file nobody listens on; refuses a live socket or a non-socket file.
#[cfg(unix)]
fn remove_stale(dir: &TrustedDir, name: &std::ffi::OsStr, path: &Path) -> Result<(), BindError> {
    use rustix::fs::{AtFlags, FileType};
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    let st = match rustix::fs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(io_err(e.into())),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Err(BindError::NotASocket(path.to_owned()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BindError::InUse(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale socket of a dead daemon");
            rustix::fs::unlinkat(dir.fd(), name, AtFlags::empty()).map_err(|e| io_err(e.into()))
        }
        Err(source) => Err(io_err(source)),
    }
}

/// The path a listening socket is bound to (`getsockname`): what systemd passed in, for the
/// log. `None` for an abstract or unnamed socket, or one that is not a Unix socket.
#[cfg(unix)]
pub fn bound_path(fd: std::os::fd::BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let addr = rustix::net::getsockname(fd).ok()?;
    let unix = rustix::net::SocketAddrUnix::try_from(addr).ok()?;
    let bytes = unix.path_bytes()?;
    Some(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

/// Wraps a listening socket inherited from systemd (`LISTEN_FDS`), used as is.
#[cfg(unix)]
pub fn from_inherited_fd(fd: std::os::fd::OwnedFd) -> io::Result<Listener> {
    use interprocess::os::unix::uds_local_socket::tokio::Listener as UdsListener;
    let uds = UdsListener::try_from(fd)?;
    Ok(Listener {
        inner: IpListener::from(uds),
        overflow: OverflowIds::from_kernel(),
    })
}

impl Listener {
    /// Accepts one connection and reads its peer's credentials. A peer without a uid fails
    /// the accept; one reported as the overflow uid or gid is [`Peer::Unmapped`].
    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        let stream = self.inner.accept().await?;
        let creds = stream.peer_creds()?;
        #[cfg(unix)]
        {
            let uid = creds
                .euid()
                .ok_or_else(|| io::Error::other("peer uid unknown"))?;
            let gid = creds
                .egid()
                .ok_or_else(|| io::Error::other("peer gid unknown"))?;
            let pid = creds.pid().and_then(|p| u32::try_from(p).ok());
            if self.overflow.names(uid, gid) {
                return Ok((stream, Peer::Unmapped(Unmapped { uid, gid, pid })));
            }
            let mut groups = peer_groups(&stream);
            groups.retain(|&g| g != self.overflow.gid);
            Ok((
                stream,
                Peer::Known(PeerInfo {
                    uid,
                    gid,
                    groups,
                    pid,
                }),
            ))
        }
        #[cfg(windows)]
        {
            // The client's process id comes from the kernel (GetNamedPipeClientProcessId);
            // its token tells its user and groups. Without them the client is refused.
            let pid = creds.pid();
            let unknown = Peer::Unmapped(Unmapped {
                uid: u32::MAX,
                gid: u32::MAX,
                pid,
            });
            let identity = match pid.map(super::win::identity_of_pid) {
                Some(Ok(id)) => id,
                Some(Err(e)) => {
                    tracing::warn!(pid = ?pid, error = %e, "cannot read a pipe client's token");
                    return Ok((stream, unknown));
                }
                None => return Ok((stream, unknown)),
            };
            let Some(uid) = identity.uid else {
                tracing::warn!(pid = ?pid, sid = %identity.user_sid, "a pipe client's user SID maps to no id");
                return Ok((stream, unknown));
            };
            tracing::debug!(pid = ?pid, sid = %identity.user_sid, uid, "pipe client");
            // The pid may have changed hands since the client connected: `confirm_pipe_client`
            // checks this identity against the pipe's own after the first frame.
            Ok((
                stream,
                Peer::Known(PeerInfo {
                    uid,
                    gid: identity.gid.unwrap_or(uid),
                    groups: identity.groups,
                    pid,
                }),
            ))
        }
    }

    /// Leaves the socket file in place on drop (socket activation: systemd owns it).
    #[cfg(unix)]
    pub fn keep_socket_file(&mut self) {
        self.inner.do_not_reclaim_name_on_drop();
    }
}

/// Windows: checks the identity [`Listener::accept`] read through the client's process id
/// against the one the pipe itself gives for its client ([`super::win::pipe_client_identity`]),
/// once the client has written a frame. An error (the token unreadable, an anonymous client,
/// or another user or other groups than the process id named) means the connection must not
/// be served: the process id had been reused by another process.
#[cfg(windows)]
pub fn confirm_pipe_client(stream: &Stream, peer: &PeerInfo) -> io::Result<()> {
    use std::os::windows::io::AsHandle;
    let Stream::NamedPipe(pipe) = stream;
    let id = super::win::pipe_client_identity(pipe.inner().as_handle())?;
    let mut token_groups = id.groups.clone();
    token_groups.sort_unstable();
    let mut pid_groups = peer.groups.clone();
    pid_groups.sort_unstable();
    let agree = id.uid == Some(peer.uid)
        && id.gid.or(id.uid) == Some(peer.gid)
        && token_groups == pid_groups;
    if agree {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the pipe's client token ({}) is not the token of process {:?} (uid {})",
            id.user_sid, peer.pid, peer.uid
        )))
    }
}

/// The peer's supplementary groups (`SO_PEERGROUPS`, Linux 4.13+), as they were when it
/// connected. Where the kernel cannot say, none: the primary gid alone then counts, which
/// only ever grants less.
#[cfg(target_os = "linux")]
fn peer_groups(stream: &Stream) -> Vec<u32> {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = match stream {
        Stream::UdSocket(s) => s.as_fd().as_raw_fd(),
    };
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    // NGROUPS_MAX is 65536; most users have a handful. Grow once if the kernel says so.
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * GID) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `groups`, which holds that
        // many, and sets `len` to what it wrote (or, with ERANGE, to what it needs).
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / GID;
        if rc == 0 {
            groups.truncate(needed);
            return groups;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() {
            groups.resize(needed, 0);
            continue;
        }
        tracing::debug!(error = %err, "SO_PEERGROUPS failed; only the primary gid counts");
        return Vec::new();
    }
}

/// Other systems: the primary gid alone counts (see `vaultctl grant --help`).
#[cfg(all(unix, not(target_os = "linux")))]
fn peer_groups(_stream: &Stream) -> Vec<u32> {
    Vec::new()
}
