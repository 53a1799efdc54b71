//! Default locations of the daemon's socket, shared by the daemon and its clients.
//!
//! `$SESSION_VAULT_SOCKET` if set; else a user daemon's `$XDG_RUNTIME_DIR/session-vault/vault.sock`
//! if it exists; else the system daemon's `/run/session-vault/vault.sock` if it exists; else
//! the user path when `XDG_RUNTIME_DIR` is set, the system path otherwise.
//!
//! On Windows the daemon listens on a named pipe, `\\.\pipe\session-vault`
//! ([`WINDOWS_PIPE`]) unless `$SESSION_VAULT_SOCKET` (or `--socket`) names another
//! `\\.\pipe\…`: there is one default for a user's and the system's daemon.

use std::path::PathBuf;

/// Environment variable that names the socket.
pub const SOCKET_ENV: &str = "SESSION_VAULT_SOCKET";

/// The system daemon's socket.
pub const SYSTEM_SOCKET: &str = "/run/session-vault/vault.sock";

/// The named pipe of a daemon on Windows, when none is configured.
pub const WINDOWS_PIPE: &str = r"\\.\pipe\session-vault";

/// The socket path (on Windows the pipe's name) a client should use when none is given.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if cfg!(windows) {
        return PathBuf::from(WINDOWS_PIPE);
    }
    let user = user_socket_path();
    match user {
        Some(u) if u.exists() => u,
        _ if std::path::Path::new(SYSTEM_SOCKET).exists() => PathBuf::from(SYSTEM_SOCKET),
        Some(u) => u,
        None => PathBuf::from(SYSTEM_SOCKET),
    }
}

/// `$XDG_RUNTIME_DIR/session-vault/vault.sock`, if `XDG_RUNTIME_DIR` is set.
pub fn user_socket_path() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|p| !p.is_empty())
        .map(|d| PathBuf::from(d).join("session-vault").join("vault.sock"))
}
