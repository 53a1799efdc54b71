//! The audit log, server side: which requests are recorded and how ([`Act::of`],
//! [`record`]), and the `audit` request that reads the log back.
//!
//! Recorded: every admin request (the [`super::role`] table's `Admin` rows, allowed or
//! refused) except the chunks of a backup, restore, streamed import or export (their
//! `*_begin`, `*_commit` and `transfer_end` are), an `audit` read once (its first page), and every `open_session`. Each
//! entry names the peer (uid, gid, pid from the kernel; executable and systemd unit read at
//! connect, [`crate::server::peer_process`]), the act, the session it named, a detail that
//! is never a secret, and the result. It goes to the journal at once (one line, target
//! `audit`) and into the vault ([`crate::vault::engine::audit`]): an admin's act's entry is
//! durable before the act is answered (a non-admin's refused one is cache-class); a session open's is a cache-class write, so the hot
//! path pays no fsync for it. `lock` is recorded just before it runs, while the keys are
//! still there to seal its entry.
//!
//! What a client controls is bounded: a session name is shown only if it is a valid name
//! (else its length), the executable path is cut at 256 bytes, and a non-admin uid's refused
//! requests are recorded once per [`REFUSED_PERIOD`] and its session opens, past a burst of
//! [`OPENS_BURST`], once per [`OPENS_PERIOD`] ([`Sampler`]), the next entry counting those
//! left out, or, once the uid has been quiet for a period, an entry of their own
//! ([`flush_left_out`], action `left_out`); opens of sessions outside its own namespace are
//! sampled per session, so that the first open of each is always recorded by name.

use session_vault_proto::audit::AuditEntry;
use session_vault_proto::message::{Request, Response, VaultState, WireError};

mod sampler;

use sampler::Sender;
pub use sampler::{
    OPENS_BURST, OPENS_PERIOD, REFUSED_PERIOD, Sampler, flush_all_left_out, flush_left_out,
};

use super::role::Role;
use crate::server::Daemon;
use crate::server::context::Conn;

/// What a request's entry says, decided before it runs.
pub struct Act {
    action: &'static str,
    session: Option<String>,
    detail: Option<String>,
    durable: bool,
}

/// A session name as an entry shows it: as sent if it is a valid name (`~/` for the caller's
/// namespace included), else only its length. A request's names are not checked before it
/// is refused, and an entry must not store whatever bytes a client sends.
fn shown(name: &str) -> String {
    let bare = name.strip_prefix("~/").unwrap_or(name);
    match crate::vault::engine::validate_name(bare) {
        Ok(()) => name.to_owned(),
        Err(_) => format!("(an invalid name of {} bytes)", name.len()),
    }
}

/// The longest executable path an entry keeps (its start, cut at a character boundary).
const EXE_MAX: usize = 256;

fn capped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Seconds since the epoch, for an entry's `time`.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Act {
    /// The entry a request gets, if it is recorded at all.
    pub fn of(request: &Request, role: Role) -> Option<Act> {
        use Request as R;
        let act = |action, session: Option<&String>, detail: Option<String>| {
            Some(Act {
                action,
                session: session.map(|n| shown(n)),
                detail,
                durable: true,
            })
        };
        let who = |uid: &Option<u32>, gid: &Option<u32>| match (uid, gid) {
            (Some(u), None) => Some(format!("uid {u}")),
            (None, Some(g)) => Some(format!("gid {g}")),
            (u, g) => Some(format!("uid {u:?} gid {g:?}")),
        };
        let flag = |on: bool, word: &str| on.then(|| word.to_owned());
        match request {
            R::OpenSession {
                name,
                exclusive,
                create_if_missing,
            } => Some(Act {
                action: "open_session",
                session: Some(shown(name)),
                detail: Some(
                    [
                        if *exclusive { "exclusive" } else { "shared" },
                        if *create_if_missing {
                            "create_if_missing"
                        } else {
                            ""
                        },
                    ]
                    .join(" ")
                    .trim()
                    .to_owned(),
                ),
                durable: false,
            }),
            R::BackupChunk { .. } | R::RestoreChunk { .. } => None,
            R::Audit { after_seq, .. } if *after_seq > 0 => None,
            _ if !matches!(role, Role::Admin(_)) => None,
            R::Init { .. } => act("init", None, None),
            R::Unlock { recovery, .. } => act("unlock", None, flag(*recovery, "recovery key")),
            R::Lock => act("lock", None, None),
            R::ChangePassphrase { recovery, .. } => {
                act("change_passphrase", None, flag(*recovery, "recovery key"))
            }
            R::Rekey { .. } => act("rekey", None, None),
            R::AddRecoveryKey => act("add_recovery_key", None, None),
            R::RemoveRecoveryKey => act("remove_recovery_key", None, None),
            R::ListSessions => act("list_sessions", None, None),
            R::RenameSession { old, new } => act(
                "rename_session",
                Some(old),
                Some(format!("to {:?}", shown(new))),
            ),
            R::DeleteSession { name, force } => {
                act("delete_session", Some(name), flag(*force, "force"))
            }
            R::Grant { name, uid, gid } => act("grant", Some(name), who(uid, gid)),
            R::Revoke { name, uid, gid } => act("revoke", Some(name), who(uid, gid)),
            R::ImportSession {
                name,
                replace,
                owner_uid,
                force,
                ..
            } => act(
                "import_session",
                Some(name),
                import_detail(*owner_uid, *replace, *force),
            ),
            // A streamed import is recorded at its begin (what and where; the answer's
            // transfer id is added, see `record`) and at its commit (which stores it), a
            // streamed export at its begin (which reads the session); never per chunk.
            R::ImportBegin {
                name,
                size,
                replace,
                owner_uid,
                force,
                ..
            } => {
                let flags = import_detail(*owner_uid, *replace, *force);
                let detail = match flags {
                    Some(f) => format!("{size} bytes, {f}"),
                    None => format!("{size} bytes"),
                };
                act("import_begin", Some(name), Some(detail))
            }
            R::ImportCommit { id } => act("import_commit", None, Some(format!("transfer {id}"))),
            R::ExportBegin { name } => act("export_begin", Some(name), None),
            R::ImportChunk { .. } | R::ExportChunk { .. } => None,
            R::ExportSession { name } => act("export_session", Some(name), None),
            R::BackupBegin => act("backup_begin", None, None),
            R::RestoreBegin { size, .. } => {
                act("restore_begin", None, Some(format!("{size} bytes")))
            }
            R::RestoreCommit { id, .. } => {
                act("restore_commit", None, Some(format!("transfer {id}")))
            }
            R::TransferEnd { id } => act("transfer_end", None, Some(format!("transfer {id}"))),
            R::Verify => act("verify", None, None),
            // The target as it may be shown: a password in the URL is refused, never recorded.
            R::MigrateStore { url, .. } => act(
                "migrate_store",
                None,
                Some(match crate::vault::postgres::PgTarget::new(url, None) {
                    Ok(t) => t.display().to_owned(),
                    Err(_) => "an invalid connection string".to_owned(),
                }),
            ),
            R::Disconnect { session, pid } => act(
                "disconnect",
                session.as_ref(),
                pid.map(|p| format!("pid {p}")),
            ),
            R::Audit { session, .. } => act("audit", session.as_ref(), None),
            // Every admin request is named above; a new one is recorded by its role's name.
            _ => act("admin", None, None),
        }
    }

    /// Whether the entry is written before the request runs (see the module docs: `lock`).
    pub fn before(&self) -> bool {
        self.action == "lock"
    }
}

/// The detail of an import's entry: its options, when any is set.
fn import_detail(owner_uid: Option<u32>, replace: bool, force: bool) -> Option<String> {
    let mut d = Vec::new();
    if let Some(o) = owner_uid {
        d.push(format!("owner uid {o}"));
    }
    if replace {
        d.push("replace".to_owned());
    }
    if force {
        d.push("force".to_owned());
    }
    (!d.is_empty()).then(|| d.join(", "))
}

/// Records `act` with its result: to the journal at once, then into the vault (durable for
/// admin acts). A failure to store it is logged, never the request's answer.
pub async fn record(conn: &Conn, act: Act, answer: &Result<Response, WireError>) {
    let result = match answer {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code.name().to_owned(),
    };
    let mut act = act;
    // Opens of sessions outside the uid's namespace (granted to it, or an admin's) are
    // sampled per session: its first open of each is always recorded, by name, however many
    // opens of its own sessions it sent before (they once hid it).
    let uid = conn.peer.uid;
    let others = match answer {
        Ok(Response::Opened { name: Some(n), .. })
            if !n.starts_with(&crate::vault::engine::names::namespace(uid)) =>
        {
            Some(n.as_str())
        }
        _ => None,
    };
    let sampled = match answer {
        _ if conn.is_admin() => None,
        Err(_) => Some((&conn.daemon.refusals, "refused requests", None)),
        Ok(_) if act.action == "open_session" => {
            Some((&conn.daemon.opens, "session opens", others))
        }
        Ok(_) => None,
    };
    if let Some((sampler, what, session)) = sampled {
        match sampler.admit(uid, session, || Sender::of(conn)) {
            None => return,
            Some(0) => {}
            Some(n) => {
                let more = format!("{n} more {what} of this uid not recorded before");
                act.detail = Some(match act.detail {
                    Some(d) => format!("{d}; {more}"),
                    None => more,
                });
            }
        }
    }
    // An open reports the full name (`~/` expanded).
    let session = match answer {
        Ok(Response::Opened { name: Some(n), .. }) => Some(n.clone()),
        _ => act.session,
    };
    // A transfer's begin names the transfer, so that its commit's entry can be matched to it.
    let detail = match (answer, act.detail) {
        (Ok(Response::Transfer(t)), Some(d)) => Some(format!("{d}, transfer {}", t.id)),
        (Ok(Response::Transfer(t)), None) => Some(format!("transfer {}", t.id)),
        (_, d) => d,
    };
    let sender = Sender::of(conn);
    let entry = AuditEntry {
        seq: 0,
        time: now_secs(),
        uid,
        gid: sender.gid,
        pid: sender.pid,
        exe: sender.exe,
        unit: sender.unit,
        action: act.action.to_owned(),
        session,
        detail,
        result,
    };
    // A non-admin's refused admin request is not worth an fsync: a bot could otherwise make
    // the daemon sync the disk with every frame it sends.
    store(&conn.daemon, entry, act.durable && conn.is_admin()).await;
}

/// Writes `entry` to the journal at once, then into the vault (durable or cache class). A
/// failure to store it is logged.
async fn store(daemon: &Daemon, entry: AuditEntry, durable: bool) {
    tracing::info!(
        target: "audit",
        uid = entry.uid,
        gid = entry.gid,
        pid = %entry.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        exe = %entry.exe.escape_debug(),
        unit = %entry.unit.as_deref().unwrap_or("-").escape_debug(),
        action = entry.action,
        session = %entry.session.as_deref().unwrap_or("-").escape_debug(),
        detail = %entry.detail.as_deref().unwrap_or("-").escape_debug(),
        result = entry.result,
        "audit"
    );
    let action = entry.action.clone();
    if let Err(e) = daemon.vault.audit(entry, durable).await {
        tracing::error!(error = %e, action, "audit entry could not be stored");
    }
}

/// Records `lock` before it runs, if the vault is unlocked (so its entry can be sealed now);
/// otherwise it is recorded after, like any act. Returns the act if it is still to record.
pub async fn record_before(conn: &Conn, act: Act) -> Option<Act> {
    let unlocked = conn
        .daemon
        .vault
        .status()
        .await
        .is_ok_and(|s| s.state == VaultState::Unlocked);
    if unlocked {
        record(conn, act, &Ok(Response::Ok)).await;
        None
    } else {
        Some(act)
    }
}

/// `audit`: a page of the log, verified as it is read.
pub async fn audit(
    conn: &Conn,
    after_seq: u64,
    limit: u32,
    since: Option<i64>,
    session: Option<String>,
) -> Result<Response, WireError> {
    let page = conn
        .daemon
        .vault
        .audit_page(after_seq, limit, since, session)
        .await?;
    Ok(Response::AuditPage(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_shows_valid_names_only_and_cuts_long_paths() {
        assert_eq!(shown("bots/main"), "bots/main");
        assert_eq!(shown("~/main"), "~/main");
        let long = "x".repeat(300_000);
        assert_eq!(shown(&long), "(an invalid name of 300000 bytes)");
        assert_eq!(shown("a\u{202e}b"), "(an invalid name of 5 bytes)");
        assert_eq!(capped("/usr/bin/bot", EXE_MAX), "/usr/bin/bot");
        let path = format!("/{}", "é".repeat(300));
        let cut = capped(&path, EXE_MAX);
        assert!(
            cut.len() <= EXE_MAX + '…'.len_utf8() && cut.ends_with('…'),
            "{cut}"
        );
    }
}
