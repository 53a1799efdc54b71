//! What a request handler knows of its connection: its id, its peer, the daemon.
//!
//! Its own module so that dependencies point one way: [`super::cmd`] depends on this, and
//! [`super::conn`] on both; nothing here depends on either.

use std::sync::Arc;

use super::Daemon;
use super::peer_process::ProcessIdent;
use super::transport::PeerInfo;

/// What request handlers know of their connection.
pub struct Conn {
    /// Connection id (for leases, handles and logs).
    pub id: u64,
    /// The peer's credentials, as the kernel reported them at connect time.
    pub peer: PeerInfo,
    /// The peer's executable and systemd unit, read at connect time (for the audit log).
    pub process: ProcessIdent,
    /// The daemon. Its session handles live in the daemon-wide [`super::handles`] table.
    pub daemon: Arc<Daemon>,
}

impl Conn {
    /// Whether any session is open on this connection (a bot's connection: never idle).
    pub fn has_handles(&self) -> bool {
        self.daemon.handles.has_open(self.id)
    }

    /// Whether the peer is an admin.
    pub fn is_admin(&self) -> bool {
        self.daemon.config.admin_uids.contains(&self.peer.uid)
    }
}
