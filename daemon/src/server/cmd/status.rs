//! `status`: daemon and vault state, for anyone who can reach the socket.

use session_vault_proto::message::{Response, StatusInfo, WireError};

use crate::server::context::Conn;

/// Answers `status`.
pub async fn status(conn: &Conn) -> Result<Response, WireError> {
    let d = &conn.daemon;
    let s = d.vault.status().await?;
    Ok(Response::Status(StatusInfo {
        state: s.state,
        vault_path: d.vault.path().display().to_string(),
        sessions: s.sessions.map(|n| n as u64),
        uptime_secs: d.started.elapsed().as_secs(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        connections: d.connections.load(std::sync::atomic::Ordering::Relaxed),
        recovery_key: s.recovery_key,
    }))
}
