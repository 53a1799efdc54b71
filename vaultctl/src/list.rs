//! `vaultctl list`: the sessions in the vault.
//!
//! Names are shown so that one cannot pass for another: a name of plain printable ASCII
//! without a backslash is shown as it is; any other is shown escaped (`my\u{443}bot`, `a\\b`)
//! and marked, so that a Cyrillic `у` cannot pass for a Latin `y` and invisible or reordering
//! characters (which older daemons let in) show. A cell holding a backslash is therefore
//! always an escaped name.

use std::io::Write;

use serde::Serialize;
use session_vault_proto::message::{Request, Response, SessionListing};

use super::output::{Align, format_utc, write_json, write_table};
use super::{CtlError, DaemonClient};

/// List the sessions in the vault
///
/// For each session: its name, when it was created and last written (UTC), its home data
/// center, whether that DC holds an auth key (i.e. whether it can be logged in), the
/// logged-in user's id if known, the number of cached peers, the owner uid, and the pid of
/// the process holding it open, if any. Sorted by name. Needs an unlocked vault.
///
/// A name with anything but printable ASCII (or with a backslash) is shown escaped and
/// marked with "*": `my\u{443}bot *` holds U+0443, a Cyrillic letter that looks like "y".
/// In bash, $'my\u0443bot' types such a name (to rename or remove it).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Print a JSON array instead of a table
    ///
    /// One object per session, sorted by name, with the fields name, created_at, updated_at
    /// (unix seconds), home_dc, has_auth_key, user_id, peer_count, owner_uid,
    /// lease_holder_pid (null when unknown or not open) and name_escaped (the name as the
    /// table shows it when that is escaped, else null). name is always the name itself.
    #[arg(long)]
    pub json: bool,
}

/// The JSON form of one session; field names are a stable interface.
#[derive(Debug, Serialize)]
struct ListingJson<'a> {
    name: &'a str,
    created_at: i64,
    updated_at: i64,
    home_dc: i32,
    has_auth_key: bool,
    user_id: Option<i64>,
    peer_count: u64,
    owner_uid: Option<u32>,
    lease_holder_pid: Option<u32>,
    name_escaped: Option<String>,
}

/// The escaped form of `name` when it is not plain (printable ASCII without a backslash):
/// a backslash as `\\`, any other character outside printable ASCII as `\u{…}` (hex code
/// point). `None` for a plain name, shown as it is.
pub(crate) fn escaped_name(name: &str) -> Option<String> {
    let plain = |c: char| matches!(c, ' '..='~') && c != '\\';
    if name.chars().all(plain) {
        return None;
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if plain(c) => out.push(c),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Some(out)
}

/// A name for a terminal: as it is when plain, else escaped (see [`escaped_name`]).
pub(crate) fn shown_name(name: &str) -> String {
    escaped_name(name).unwrap_or_else(|| name.to_owned())
}

/// The marker after an escaped name in the table.
const ESCAPED_MARK: &str = " *";
/// The note under a table that holds an escaped name.
const ESCAPED_NOTE: &str = "* name shown escaped: it holds characters other than printable \
                            ASCII (\\u{...}) or a backslash (\\\\), and may imitate another \
                            name; in bash, $'my\\u0443bot' types \"my\\u{443}bot\"";

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let mut sessions = match daemon.connect()?.call(Request::ListSessions)? {
        Response::Sessions(list) => list,
        _ => return Err(CtlError::unexpected(daemon.socket(), "list")),
    };
    sessions.sort_by(|a, b| a.summary.name.cmp(&b.summary.name));
    if args.json {
        write_json(out, &json(&sessions))?;
    } else {
        write_human(&sessions, out)?;
    }
    Ok(())
}

fn json(sessions: &[SessionListing]) -> Vec<ListingJson<'_>> {
    sessions
        .iter()
        .map(|s| ListingJson {
            name: &s.summary.name,
            created_at: s.summary.created_at,
            updated_at: s.summary.updated_at,
            home_dc: s.summary.home_dc,
            has_auth_key: s.summary.has_auth_key,
            user_id: s.summary.user_id,
            peer_count: s.summary.peer_count,
            owner_uid: s.summary.owner_uid,
            lease_holder_pid: s.lease_holder_pid,
            name_escaped: escaped_name(&s.summary.name),
        })
        .collect()
}

fn write_human(sessions: &[SessionListing], out: &mut dyn Write) -> std::io::Result<()> {
    if sessions.is_empty() {
        return writeln!(out, "No sessions.");
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let mut escaped_any = false;
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let m = &s.summary;
            let name = match escaped_name(&m.name) {
                Some(e) => {
                    escaped_any = true;
                    format!("{e}{ESCAPED_MARK}")
                }
                None => m.name.clone(),
            };
            vec![
                name,
                format_utc(m.created_at),
                format_utc(m.updated_at),
                m.home_dc.to_string(),
                if m.has_auth_key { "yes" } else { "no" }.to_owned(),
                or_dash(m.user_id.map(|u| u.to_string())),
                m.peer_count.to_string(),
                or_dash(m.owner_uid.map(|u| u.to_string())),
                or_dash(s.lease_holder_pid.map(|p| format!("pid {p}"))),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            ("NAME", Align::Left),
            ("CREATED", Align::Left),
            ("LAST USED", Align::Left),
            ("DC", Align::Right),
            ("AUTH", Align::Left),
            ("USER", Align::Right),
            ("PEERS", Align::Right),
            ("OWNER", Align::Right),
            ("OPEN BY", Align::Left),
        ],
        &rows,
    )?;
    if escaped_any {
        writeln!(out, "{ESCAPED_NOTE}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use session_vault_proto::model::SessionSummary;

    use super::*;

    fn listing(name: &str, user_id: Option<i64>, pid: Option<u32>) -> SessionListing {
        SessionListing {
            summary: SessionSummary {
                name: name.into(),
                created_at: 1_700_000_000,
                updated_at: 1_709_251_200,
                home_dc: 2,
                has_auth_key: user_id.is_some(),
                user_id,
                peer_count: 1_234,
                owner_uid: Some(1_000),
            },
            lease_holder_pid: pid,
        }
    }

    #[test]
    fn human_table() {
        let mut out = Vec::new();
        write_human(
            &[
                listing("bot", Some(777_000), Some(4_242)),
                listing("new-worker", None, None),
            ],
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME        CREATED               LAST USED             DC  AUTH    USER  PEERS  OWNER  OPEN BY\n\
             bot         2023-11-14T22:13:20Z  2024-03-01T00:00:00Z   2  yes   777000   1234   1000  pid 4242\n\
             new-worker  2023-11-14T22:13:20Z  2024-03-01T00:00:00Z   2  no         -   1234   1000  -\n"
        );
    }

    #[test]
    fn empty() {
        let mut out = Vec::new();
        write_human(&[], &mut out).unwrap();
        assert_eq!(out, b"No sessions.\n");
        let mut out = Vec::new();
        write_json(&mut out, &json(&[])).unwrap();
        assert_eq!(out, b"[]\n");
    }

    #[test]
    fn json_fields() {
        let list = [listing("bot", Some(777_000), Some(4_242))];
        let value = serde_json::to_value(json(&list)).unwrap();
        assert_eq!(
            value,
            serde_json::json!([{
                "name": "bot",
                "created_at": 1_700_000_000,
                "updated_at": 1_709_251_200,
                "home_dc": 2,
                "has_auth_key": true,
                "user_id": 777_000,
                "peer_count": 1_234,
                "owner_uid": 1_000,
                "lease_holder_pid": 4_242,
                "name_escaped": null,
            }])
        );
    }

    #[test]
    fn names_outside_printable_ascii_are_escaped_and_marked() {
        assert_eq!(escaped_name("my bot-1.2"), None);
        assert_eq!(
            escaped_name("my\u{443}bot").as_deref(),
            Some(r"my\u{443}bot")
        );
        assert_eq!(
            escaped_name("admin\u{202e}tob\u{200b}").as_deref(),
            Some(r"admin\u{202e}tob\u{200b}")
        );
        // A backslash is escaped too, so that a plain name can never read as an escape.
        assert_eq!(
            escaped_name(r"my\u{443}bot").as_deref(),
            Some(r"my\\u{443}bot")
        );
        assert_eq!(escaped_name("a\nb").as_deref(), Some(r"a\u{a}b"));

        let mut out = Vec::new();
        write_human(
            &[
                listing("mybot", None, None),
                listing("my\u{443}bot", None, None),
            ],
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.is_ascii(), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("mybot  "), "{text}");
        assert!(lines[2].starts_with(r"my\u{443}bot *  "), "{text}");
        assert!(lines[3].starts_with("* name shown escaped"), "{text}");

        let list = [listing("my\u{443}bot", None, None)];
        let value = serde_json::to_value(json(&list)).unwrap();
        assert_eq!(
            value[0]["name"], "my\u{443}bot",
            "name stays the name itself"
        );
        assert_eq!(value[0]["name_escaped"], r"my\u{443}bot");
    }
}
