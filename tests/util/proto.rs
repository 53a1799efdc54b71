//! Protocol-level shortcuts: init, unlock and open over the protocol, typed error codes, and
//! the home-DC call-and-assert pairs.

use std::path::Path;
use std::time::Duration;

use session_vault_client::{ClientError, Connection};
use session_vault_proto::message::{ErrorCode, Passphrase, Request, Response, StatusInfo};

use super::*;

impl Env {
    /// `init` over the protocol (cheap KDF, [`PASS`]); asserts success. Protocol-level tests
    /// use this rather than `vaultctl`, so that they test the daemon alone.
    pub async fn init_proto(&self, c: &Connection) {
        let r = c
            .call(Request::Init {
                passphrase: passphrase(PASS),
                kdf: Some(CHEAP_KDF_SPEC),
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "init: {r:?}");
    }

    /// Connects and unlocks the (initialized, locked) vault with [`PASS`]; asserts success.
    /// The usual first step after a restart.
    pub async fn connect_unlocked(&self) -> Connection {
        let c = self.connect().await;
        unlock_proto(&c).await;
        c
    }

    /// Starts `vaultd` (with `extra` flags) on the env's existing vault, connects and
    /// unlocks it with [`PASS`].
    pub async fn start_unlocked(&self, extra: &[&str]) -> (Daemon, Connection) {
        let d = self.start_with(extra);
        let c = self.connect_unlocked().await;
        (d, c)
    }

    /// Starts `vaultd` (with `extra` flags), connects and initializes the vault over the
    /// protocol: the usual start of a protocol-level test.
    pub async fn start_initialized(&self, extra: &[&str]) -> (Daemon, Connection) {
        let d = self.start_with(extra);
        let c = self.connect().await;
        self.init_proto(&c).await;
        (d, c)
    }

    /// Lets every uid reach the socket (dir 0755, socket 0666), so that a test for another
    /// uid exercises the daemon's own authorization rather than the file modes.
    pub fn open_socket_to_everyone(&self) {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()))
        };
        set(self.path(), 0o755);
        set(&self.socket(), 0o666);
    }

    /// Asserts that a fresh client gets a `status` answer, and returns it with the time the
    /// connect, handshake and request took.
    pub async fn assert_serving(&self) -> (StatusInfo, Duration) {
        let t = std::time::Instant::now();
        let c = tokio::time::timeout(Duration::from_secs(10), self.connect())
            .await
            .expect("a new client connects within 10 s");
        let r = tokio::time::timeout(Duration::from_secs(10), c.call(Request::Status))
            .await
            .expect("status answers within 10 s");
        let elapsed = t.elapsed();
        match r {
            Ok(Response::Status(s)) => (s, elapsed),
            other => panic!("status: {other:?}"),
        }
    }
}

/// The `unlock` request with `pass`.
pub fn unlock_request(pass: &str) -> Request {
    Request::Unlock {
        recovery: false,
        passphrase: passphrase(pass),
    }
}

/// Sends `unlock` with `pass` on `c`: the daemon's answer, for tests of what it refuses.
pub async fn unlock_with(c: &Connection, pass: &str) -> Result<Response, ClientError> {
    c.call(unlock_request(pass)).await
}

/// Unlocks with [`PASS`] on `c`; asserts success.
pub async fn unlock_proto(c: &Connection) {
    let r = unlock_with(c, PASS).await;
    assert!(matches!(r, Ok(Response::Ok)), "unlock: {r:?}");
}

/// A passphrase for a request.
pub fn passphrase(text: &str) -> Passphrase {
    Passphrase::new(text.as_bytes().to_vec())
}

/// The error code of a request that must have failed with a daemon error.
#[track_caller]
pub fn err_code(r: Result<Response, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Daemon(e)) => {
            assert!(!e.message.is_empty(), "error {:?} has no message", e.code);
            e.code
        }
        other => panic!("expected a daemon error, got {other:?}"),
    }
}

/// The handle of an `Opened` response.
#[track_caller]
pub fn opened(r: Result<Response, ClientError>) -> u32 {
    match r {
        Ok(Response::Opened { handle, .. }) => handle,
        other => panic!("expected opened, got {other:?}"),
    }
}

/// Opens (creating) session `name` on `c`; returns the handle.
pub async fn open_session(c: &Connection, name: &str, exclusive: bool) -> u32 {
    opened(
        c.call(Request::OpenSession {
            name: name.into(),
            exclusive,
            create_if_missing: true,
        })
        .await,
    )
}

/// Opens the existing session `name` exclusively on `c` as soon as its lease is free,
/// retrying on `session_busy` every 10 ms for up to `within` (then panics); returns the
/// handle and how long it took.
pub async fn open_when_free(c: &Connection, name: &str, within: Duration) -> (u32, Duration) {
    let t = std::time::Instant::now();
    loop {
        let r = c
            .call(Request::OpenSession {
                name: name.into(),
                exclusive: true,
                create_if_missing: false,
            })
            .await;
        match r {
            Ok(Response::Opened { handle, .. }) => return (handle, t.elapsed()),
            Err(e)
                if matches!(
                    e.wire().map(|w| &w.code),
                    Some(ErrorCode::SessionBusy { .. })
                ) =>
            {
                assert!(
                    t.elapsed() < within,
                    "lease of {name} still held after {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("exclusive open of {name}: {other:?}"),
        }
    }
}

/// Sets the home DC of `handle` on `c` to `dc_id`; asserts the daemon answered `ok`.
pub async fn set_home_dc(c: &Connection, handle: u32, dc_id: i32) {
    let r = c.call(Request::SetHomeDc { handle, dc_id }).await;
    assert!(matches!(r, Ok(Response::Ok)), "set home dc {dc_id}: {r:?}");
}

/// Asserts that `handle` on `c` reads home DC `want`; `what` says when or where, for the
/// failure message.
pub async fn assert_home_dc(c: &Connection, handle: u32, want: i32, what: &str) {
    let r = c.call(Request::GetHomeDc { handle }).await;
    assert!(
        matches!(r, Ok(Response::HomeDc(dc)) if dc == want),
        "home dc {what}: {r:?}, want {want}"
    );
}
