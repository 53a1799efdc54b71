//! `vaultctl status`: the daemon's and the vault's state.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use session_vault_proto::message::{Request, Response, StatusInfo, VaultState};

use super::output::{format_uptime, sanitize, write_json};
use super::{CtlError, DaemonClient};

/// Show the daemon's and the vault's state
///
/// Prints the vault's state (uninitialized, locked or unlocked), the vault file, the number
/// of sessions (when unlocked), whether a recovery key exists, and the daemon's uptime,
/// version, pid and open connections.
/// Exits 0 whenever the daemon answered, whatever the vault's state; 3 when it is not
/// reachable.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Print one JSON object instead of text
    ///
    /// Fields: state (uninitialized, locked, unlocked), vault_path, sessions (null unless
    /// unlocked), uptime_secs, version, pid, connections, socket (the path vaultctl used),
    /// recovery_key (whether a recovery key exists; null while uninitialized or from a daemon
    /// before protocol 1.3).
    #[arg(long)]
    pub json: bool,
}

/// The JSON form; field names are a stable interface.
#[derive(Debug, Serialize)]
struct StatusJson<'a> {
    state: &'static str,
    vault_path: &'a str,
    sessions: Option<u64>,
    uptime_secs: u64,
    version: &'a str,
    pid: u32,
    connections: u64,
    socket: String,
    recovery_key: Option<bool>,
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let info = match daemon.connect()?.call(Request::Status)? {
        Response::Status(info) => info,
        _ => return Err(CtlError::unexpected(daemon.socket(), "status")),
    };
    if args.json {
        write_json(out, &json(&info, daemon.socket()))?;
    } else {
        write_human(&info, daemon.socket(), out)?;
    }
    Ok(())
}

fn json<'a>(info: &'a StatusInfo, socket: &Path) -> StatusJson<'a> {
    StatusJson {
        state: info.state.as_str(),
        vault_path: &info.vault_path,
        sessions: info.sessions,
        uptime_secs: info.uptime_secs,
        version: &info.version,
        pid: info.pid,
        connections: info.connections,
        socket: socket.display().to_string(),
        recovery_key: info.recovery_key,
    }
}

fn write_human(info: &StatusInfo, socket: &Path, out: &mut dyn Write) -> std::io::Result<()> {
    let state = match info.state {
        VaultState::Uninitialized => "uninitialized (run `vaultctl init`)",
        VaultState::Locked => "locked (run `vaultctl unlock`)",
        VaultState::Unlocked => "unlocked",
    };
    let sessions = match info.sessions {
        Some(n) => n.to_string(),
        None => "-".to_owned(),
    };
    let rows = [
        ("state", state.to_owned()),
        ("vault", sanitize(&info.vault_path)),
        ("sessions", sessions),
        (
            "recovery",
            match info.recovery_key {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
            .to_owned(),
        ),
        ("uptime", format_uptime(info.uptime_secs)),
        ("version", sanitize(&info.version)),
        ("pid", info.pid.to_string()),
        ("connections", info.connections.to_string()),
        ("socket", sanitize(&socket.display().to_string())),
    ];
    for (key, value) in rows {
        writeln!(out, "{:<13}{value}", format!("{key}:"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: VaultState, sessions: Option<u64>) -> StatusInfo {
        StatusInfo {
            state,
            vault_path: "/var/lib/session-vault/vault.db".into(),
            sessions,
            uptime_secs: 3_723,
            version: "0.1.0".into(),
            pid: 4242,
            connections: 2,
            recovery_key: Some(false),
        }
    }

    #[test]
    fn human() {
        let mut out = Vec::new();
        write_human(
            &info(VaultState::Unlocked, Some(3)),
            Path::new("/run/session-vault/vault.sock"),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "state:       unlocked\n\
             vault:       /var/lib/session-vault/vault.db\n\
             sessions:    3\n\
             recovery:    no\n\
             uptime:      1h 2m 3s\n\
             version:     0.1.0\n\
             pid:         4242\n\
             connections: 2\n\
             socket:      /run/session-vault/vault.sock\n"
        );
    }

    #[test]
    fn json_fields() {
        let info = info(VaultState::Locked, None);
        let value = serde_json::to_value(json(&info, Path::new("/s.sock"))).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "state": "locked",
                "vault_path": "/var/lib/session-vault/vault.db",
                "sessions": null,
                "uptime_secs": 3723,
                "version": "0.1.0",
                "pid": 4242,
                "connections": 2,
                "socket": "/s.sock",
                "recovery_key": false,
            })
        );
    }
}
