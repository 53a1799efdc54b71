//! One connection to the daemon, shared by many tasks.
//!
//! A writer lock serializes whole frames; a reader task routes each response to the task
//! that sent the request with that id, and events (id 0) to subscribers. When the daemon goes
//! away every pending request fails with [`ClientError::Disconnected`].
//!
//! What a daemon of a later minor version may add does not end the connection
//! (`PROTOCOL.md` §6): an unknown error code arrives as [`ErrorCode::Other`] in that
//! request's [`ClientError::Daemon`], an unknown event is dropped, and a frame that does not
//! decode at all (the framing is still intact) fails only the request whose id it carries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::{Stream, prelude::*};
use session_vault_proto::codec::{self, FrameError};
#[cfg(doc)]
use session_vault_proto::message::ErrorCode;
use session_vault_proto::message::{
    ClientFrame, EVENT_ID, Event, PROTOCOL_MAJOR, PROTOCOL_MINOR, Request, Response, ServerFrame,
    VaultState, WireError,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, oneshot};

/// Why a request to the daemon did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the socket path.
    #[error("cannot reach the Session Vault daemon at {}: {source}", path.display())]
    Unreachable {
        /// The socket path tried.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon answered the handshake with an error (e.g. protocol mismatch).
    #[error("the daemon refused the connection: {0}")]
    Handshake(WireError),
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(WireError),
    /// The connection was lost before the answer came.
    #[error("the connection to the daemon was lost")]
    Disconnected,
    /// A frame could not be written or read, or the response to this request could not be
    /// decoded.
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
    /// The daemon answered with a response of the wrong kind.
    #[error("unexpected response from the daemon to {0}")]
    Unexpected(&'static str),
}

impl ClientError {
    /// The daemon's error, if that is what this is.
    pub fn wire(&self) -> Option<&WireError> {
        match self {
            ClientError::Daemon(e) | ClientError::Handshake(e) => Some(e),
            _ => None,
        }
    }
}

/// Largest response accepted from the daemon (an export of a session with a million peers
/// fits). Bounded so that whatever listens at the socket cannot make us allocate gigabytes.
pub const MAX_RESPONSE_FRAME: u32 = 256 << 20;

/// The requests awaiting their response, by id: a response, or why it could not be decoded.
type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<Response, FrameError>>>>>;

struct Inner {
    stream: Arc<Stream>,
    /// Held while one frame is written, so frames never interleave.
    write_lock: tokio::sync::Mutex<()>,
    reader: tokio::task::JoinHandle<()>,
    pending: Pending,
    next_id: AtomicU32,
    closed: Arc<AtomicBool>,
    kicked: Arc<AtomicBool>,
    events: broadcast::Sender<Event>,
    server: String,
    server_minor: u16,
    vault_state: VaultState,
    path: PathBuf,
}

/// A connection to the daemon. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("path", &self.inner.path)
            .field("server", &self.inner.server)
            .finish()
    }
}

impl Connection {
    /// Connects to the daemon at `path` and performs the handshake; `client` names this
    /// program in the daemon's logs.
    pub async fn connect(path: &Path, client: &str) -> Result<Connection, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            path: path.to_owned(),
            source,
        };
        let name = path.to_fs_name::<GenericFilePath>().map_err(unreachable)?;
        let stream = Arc::new(Stream::connect(name).await.map_err(unreachable)?);
        let (mut reader, mut writer) = (&*stream, &*stream);
        let hello = ClientFrame {
            id: 1,
            request: Request::Hello {
                protocol_major: PROTOCOL_MAJOR,
                protocol_minor: PROTOCOL_MINOR,
                client: client.to_owned(),
            },
        };
        codec::write_message(&mut writer, &hello).await?;
        let welcome: ServerFrame = codec::read_message(&mut reader, codec::DEFAULT_MAX_FRAME)
            .await?
            .ok_or(ClientError::Disconnected)?;
        let (server, vault_state, server_minor) = match welcome.response {
            Response::Welcome {
                server,
                vault_state,
                protocol_minor,
                ..
            } => (server, vault_state, protocol_minor),
            Response::Error(e) => return Err(ClientError::Handshake(e)),
            _ => return Err(ClientError::Unexpected("hello")),
        };
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let kicked = Arc::new(AtomicBool::new(false));
        let (events, _) = broadcast::channel(16);
        let reader = tokio::spawn(read_loop(
            Arc::clone(&stream),
            Arc::clone(&pending),
            Arc::clone(&closed),
            Arc::clone(&kicked),
            events.clone(),
        ));
        Ok(Connection {
            inner: Arc::new(Inner {
                stream,
                write_lock: tokio::sync::Mutex::new(()),
                reader,
                pending,
                next_id: AtomicU32::new(2),
                closed,
                kicked,
                events,
                server,
                server_minor,
                vault_state,
                path: path.to_owned(),
            }),
        })
    }

    /// The daemon's name and version, from the handshake.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The daemon's protocol minor version, from the handshake: a request of a later minor
    /// is one the daemon does not know.
    pub fn server_minor(&self) -> u16 {
        self.inner.server_minor
    }

    /// The vault state at handshake time.
    pub fn vault_state_at_connect(&self) -> VaultState {
        self.inner.vault_state
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the daemon closed the connection.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Whether an admin ended this connection (the daemon's `disconnected_by_admin` event,
    /// protocol 1.4): a session does not reconnect after it.
    pub fn disconnected_by_admin(&self) -> bool {
        self.inner.kicked.load(Ordering::Acquire)
    }

    /// Events the daemon pushes (locked, unlocked, shutting down). Events of a later minor
    /// version that this client does not know ([`Event::Other`]) are not passed on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    fn next_id(&self) -> u32 {
        loop {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            if id != EVENT_ID {
                return id;
            }
        }
    }

    /// Sends `request` and waits for its response, whatever it is (errors included).
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        if self.is_closed() {
            return Err(ClientError::Disconnected);
        }
        let id = self.next_id();
        let frame = codec::encode_frame(&ClientFrame { id, request })?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .expect("pending map lock is never poisoned: no code panics while holding it")
            .insert(id, tx);
        let written = {
            let _frame_lock = self.inner.write_lock.lock().await;
            let mut w = &*self.inner.stream;
            match w.write_all(&frame).await {
                Ok(()) => w.flush().await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = written {
            self.inner
                .pending
                .lock()
                .expect("pending map lock is never poisoned")
                .remove(&id);
            return Err(ClientError::Frame(FrameError::Io(e)));
        }
        rx.await
            .map_err(|_| ClientError::Disconnected)?
            .map_err(ClientError::Frame)
    }

    /// Sends `request`; a [`Response::Error`] becomes [`ClientError::Daemon`].
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        match self.request(request).await? {
            Response::Error(e) => Err(ClientError::Daemon(e)),
            other => Ok(other),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader task holds the other reference to the stream: stop it so that the
        // socket closes now and the daemon frees this connection's leases.
        self.reader.abort();
    }
}

async fn read_loop(
    stream: Arc<Stream>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    kicked: Arc<AtomicBool>,
    events: broadcast::Sender<Event>,
) {
    let mut reader = &*stream;
    loop {
        let payload = match codec::read_frame(&mut reader, MAX_RESPONSE_FRAME).await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "connection to the daemon ended");
                break;
            }
        };
        let (id, response) = match codec::decode_payload::<ServerFrame>(&payload) {
            Ok(frame) => (frame.id, Ok(frame.response)),
            // The length prefix kept the stream in step, so one frame this client cannot
            // read (a response of a later version, a daemon bug) fails only its request.
            Err(e) => match codec::decode_frame_id(&payload) {
                Some(id) if id != EVENT_ID => (id, Err(e)),
                _ => {
                    tracing::debug!(error = %e, "ignored a frame from the daemon without a request id");
                    continue;
                }
            },
        };
        if id == EVENT_ID {
            match response {
                Ok(Response::Event(Event::Other(name))) => {
                    tracing::debug!(event = %name, "ignored an event of a later protocol version");
                }
                // Set before the connection reads as closed: whoever sees it closed sees why.
                Ok(Response::Event(Event::DisconnectedByAdmin)) => {
                    kicked.store(true, Ordering::Release);
                    drop(events.send(Event::DisconnectedByAdmin));
                }
                // No subscriber is fine: events are advisory.
                Ok(Response::Event(ev)) => drop(events.send(ev)),
                // An error that answers no request (frame_too_large, an unreadable frame):
                // the daemon closes the connection after it, which ends this loop.
                Ok(other) => {
                    tracing::debug!(response = ?other, "unsolicited frame from the daemon")
                }
                Err(_) => {}
            }
            continue;
        }
        let waiter = pending
            .lock()
            .expect("pending map lock is never poisoned")
            .remove(&id);
        if let Some(tx) = waiter {
            // The requester may have given up (dropped its future); nothing to do then.
            let _ = tx.send(response);
        }
    }
    closed.store(true, Ordering::Release);
    // Dropping the senders wakes every waiter with Disconnected.
    pending
        .lock()
        .expect("pending map lock is never poisoned")
        .clear();
}
