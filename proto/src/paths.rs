//! Default locations of the daemon's socket, shared by the daemon and its clients.
//!
//! `$SESSION_VAULT_SOCKET` if set; else a user daemon's `$XDG_RUNTIME_DIR/session-vault/vault.sock`
//! if it exists; else the system daemon's `/run/session-vault/vault.sock` if it exists; else
//! the user path when `XDG_RUNTIME_DIR` is set, the system path otherwise.

use std::path::PathBuf;

/// Environment variable that names the socket.
pub const SOCKET_ENV: &str = "SESSION_VAULT_SOCKET";

/// The system daemon's socket.
pub const SYSTEM_SOCKET: &str = "/run/session-vault/vault.sock";

/// The socket path a client should use when none is given.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
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
