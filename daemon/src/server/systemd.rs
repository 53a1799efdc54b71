//! systemd integration: readiness and status notifications, socket activation, and
//! unattended unlock from an encrypted credential.
//!
//! Everything here is a no-op outside systemd: `sd_notify` does nothing without
//! `NOTIFY_SOCKET`, socket activation needs `LISTEN_PID`/`LISTEN_FDS` naming this process,
//! and a credential is read only when `--unlock-credential` names one. On Windows, where
//! there is no systemd, the notifications do nothing (the `sd-notify` crate is Unix-only).

use std::path::PathBuf;

#[cfg(unix)]
use sd_notify::NotifyState;
use zeroize::Zeroizing;

/// Sends `READY=1` and a first `STATUS=`.
pub fn notify_ready(status: &str) {
    #[cfg(unix)]
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
    #[cfg(not(unix))]
    let _ = status;
}

/// Sends `STATUS=`.
pub fn notify_status(status: &str) {
    #[cfg(unix)]
    send(&[NotifyState::Status(status)]);
    #[cfg(not(unix))]
    let _ = status;
}

/// Sends `STOPPING=1`.
pub fn notify_stopping() {
    #[cfg(unix)]
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

#[cfg(unix)]
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// The listening socket systemd passed in (`LISTEN_FDS`), if any.
#[cfg(unix)]
pub fn inherited_listener() -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    let mut fds = sd_notify::listen_fds()?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if fds.len() > 0 {
        tracing::warn!("systemd passed more than one socket; using the first");
    }
    // SAFETY: LISTEN_PID names this process, so fd 3 (SD_LISTEN_FDS_START) was handed to us
    // by the service manager and nothing else in this process owns it.
    Ok(Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
}

/// Why a credential could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// `CREDENTIALS_DIRECTORY` is not set (not started by systemd with `LoadCredential*=`).
    #[error(
        "CREDENTIALS_DIRECTORY is not set: start vaultd from a unit with LoadCredentialEncrypted={0}:…"
    )]
    NoDirectory(String),
    /// The name is not a plain file name.
    #[error("invalid credential name {0:?}")]
    BadName(String),
    /// The file is missing or unreadable.
    #[error("cannot read credential {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no passphrase.
    #[error("credential {0:?} is empty")]
    Empty(String),
}

/// Reads the passphrase in `$CREDENTIALS_DIRECTORY/name`: its first line, without the line
/// ending. The buffer is zeroized when dropped.
pub fn read_credential(name: &str) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(CredentialError::BadName(name.to_owned()));
    }
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| CredentialError::NoDirectory(name.to_owned()))?;
    let path = PathBuf::from(dir).join(name);
    let raw = Zeroizing::new(
        std::fs::read(&path).map_err(|source| CredentialError::Read {
            path: path.clone(),
            source,
        })?,
    );
    let line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(CredentialError::Empty(name.to_owned()));
    }
    Ok(Zeroizing::new(line.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_must_be_plain_file_names() {
        for bad in ["", "a/b", "..", "."] {
            assert!(
                matches!(read_credential(bad), Err(CredentialError::BadName(_))),
                "{bad:?}"
            );
        }
    }
}
