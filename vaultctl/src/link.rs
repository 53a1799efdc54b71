//! The link to the daemon the subcommands share: a [`DaemonClient`] names the socket, a
//! [`BlockingConnection`] is one connection driven by its own current-thread runtime, with
//! the time limits of the handshake and of a request, and the short wait sat out when the
//! daemon's throttle refused a passphrase without checking it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use session_vault_client::{ClientError, Connection};
use session_vault_proto::message::{
    ErrorCode, PROTOCOL_MAJOR, Request, Response, VaultState, WireError,
};

use super::{CtlError, output};

/// How vaultctl names itself to the daemon (in the daemon's logs).
const CLIENT_NAME: &str = concat!("vaultctl ", env!("CARGO_PKG_VERSION"));

/// How long the daemon may take to answer the handshake: it answers at once unless wedged
/// (or what listens is not a vaultd).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one request may take: long enough for Argon2 at a high cost or a large import,
/// short enough that a wedged daemon does not hang scripts.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A daemon that did not answer in time is as good as unreachable (exit 3).
fn timed_out(socket: &Path, what: &str) -> ClientError {
    ClientError::Unreachable {
        path: socket.to_owned(),
        source: io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer to {what} in time; is a vaultd (and not something else) listening?"),
        ),
    }
}

/// The longest wait vaultctl sits out by itself when the daemon's throttle refused an attempt
/// without checking its passphrase (someone's wrong passphrase a moment before, or another
/// attempt being checked); a longer one is reported with the time to wait.
const THROTTLE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// The wait before sending again a passphrase the daemon refused without checking it; `None`
/// for any other outcome, a wrong passphrase among them.
pub(crate) fn unchecked_wait(e: &CtlError) -> Option<std::time::Duration> {
    match e.wire()? {
        WireError {
            code:
                ErrorCode::BadPassphrase {
                    retry_after_ms,
                    unchecked: true,
                },
            ..
        } => Some(std::time::Duration::from_millis(*retry_after_ms)),
        _ => None,
    }
}

/// The daemon at one socket path, not connected yet.
pub(crate) struct DaemonClient {
    pub(crate) socket: PathBuf,
}

impl DaemonClient {
    /// The socket path.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts a current-thread runtime and connects (handshake included).
    pub(crate) fn connect(&self) -> Result<BlockingConnection, CtlError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CtlError::Runtime)?;
        let conn = runtime
            .block_on(async {
                tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    Connection::connect(&self.socket, CLIENT_NAME),
                )
                .await
                .unwrap_or_else(|_| Err(timed_out(&self.socket, "the handshake")))
            })
            .map_err(|e| CtlError::client(&self.socket, e))?;
        Ok(BlockingConnection {
            conn,
            runtime,
            socket: self.socket.clone(),
        })
    }

    /// Connects, sends `request` and expects [`Response::Ok`]; `what` names it in errors.
    pub(crate) fn call_ok(&self, request: Request, what: &'static str) -> Result<(), CtlError> {
        self.connect()?.call_ok(request, what)
    }
}

/// A connection to the daemon and the runtime that drives it.
pub(crate) struct BlockingConnection {
    // Declared before the runtime: dropped first, while the runtime still exists.
    conn: Connection,
    runtime: tokio::runtime::Runtime,
    pub(crate) socket: PathBuf,
}

impl BlockingConnection {
    /// The vault's state at the handshake.
    pub(crate) fn vault_state(&self) -> VaultState {
        self.conn.vault_state_at_connect()
    }

    /// The daemon's protocol minor version, from the handshake.
    pub(crate) fn daemon_minor(&self) -> u16 {
        self.conn.server_minor()
    }

    /// The socket path.
    pub(crate) fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Sends `request` and waits for its response; a daemon error is an `Err`.
    pub(crate) fn call(&self, request: Request) -> Result<Response, CtlError> {
        let needed = request.minor_needed();
        if self.daemon_minor() < needed {
            // Said before sending: an older daemon would answer a decode error, or (a field
            // it does not know) ignore the field.
            return Err(self.state_error(
                ErrorCode::Unsupported,
                &format!(
                    "vaultd speaks protocol {PROTOCOL_MAJOR}.{}; `{}` needs \
                     {PROTOCOL_MAJOR}.{needed} — upgrade vaultd",
                    self.daemon_minor(),
                    request.wire_name()
                ),
            ));
        }
        self.runtime
            .block_on(async {
                tokio::time::timeout(REQUEST_TIMEOUT, self.conn.call(request))
                    .await
                    .unwrap_or_else(|_| Err(timed_out(&self.socket, "a request")))
            })
            .map_err(|e| CtlError::client(&self.socket, e))
    }

    /// Sends `request` and expects [`Response::Ok`]; `what` names it in errors.
    pub(crate) fn call_ok(&self, request: Request, what: &'static str) -> Result<(), CtlError> {
        match self.call(request)? {
            Response::Ok => Ok(()),
            _ => Err(CtlError::unexpected(&self.socket, what)),
        }
    }

    /// Sends a passphrase request made by `request` and expects [`Response::Ok`]. If the
    /// daemon's throttle refuses it without checking the passphrase and asks for a short wait
    /// (at most [`THROTTLE_WAIT_MAX`] in all), says so on stderr, waits and sends it again.
    pub(crate) fn call_passphrase_ok(
        &self,
        request: impl Fn() -> Request,
        what: &'static str,
    ) -> Result<(), CtlError> {
        let mut waited = std::time::Duration::ZERO;
        loop {
            let err = match self.call_ok(request(), what) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match unchecked_wait(&err) {
                Some(wait) if waited + wait <= THROTTLE_WAIT_MAX => {
                    // A progress note: if stderr is gone, the wait goes on regardless.
                    let _ = writeln!(
                        io::stderr(),
                        "vaultctl: the daemon holds passphrase attempts back after a wrong one; \
                         trying again in {}",
                        output::format_delay_ms(wait.as_millis() as u64)
                    );
                    // The timer is made inside the runtime: it needs its context.
                    self.runtime
                        .block_on(async { tokio::time::sleep(wait).await });
                    waited += wait;
                }
                _ => return Err(err),
            }
        }
    }

    /// An error as the daemon would report it, for a state the handshake already showed
    /// (so that no passphrase is asked for a request bound to fail).
    pub(crate) fn state_error(&self, code: ErrorCode, message: &str) -> CtlError {
        CtlError::client(
            &self.socket,
            ClientError::Daemon(WireError {
                code,
                message: message.into(),
            }),
        )
    }
}
