//! `vaultctl audit`: show the vault's audit log and verify its chain.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use session_vault_proto::audit::{AuditEntry, AuditProblem};
use session_vault_proto::message::{Request, Response};

use super::output::{Align, format_utc, sanitize, write_table};
use super::{CtlError, DaemonClient};

/// Show the audit log and verify it
///
/// The daemon records every admin act and every session open (who: uid, gid, pid,
/// executable, systemd unit; what; which session; the result) in a sealed, hash-chained log
/// inside the vault. This reads the whole log, page by page, and checks every entry and
/// every link: an entry deleted, edited, replaced or reordered, or entries cut off the end,
/// is named ("entry 17 missing", "entry 23 altered …") and vaultctl exits 1. The vault must
/// be unlocked.
///
/// --json writes one JSON object per line: each entry (seq, time, uid, gid, pid, exe, unit,
/// action, session, detail, result), then a last line {"verified": true|false,
/// "entries": N, "problems": [...]}.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Only entries since TIME: RFC 3339 (2026-12-06T07:00:00Z) or an age (1h, 30min, 2days)
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<i64>,
    /// Only entries naming session NAME
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// One JSON object per entry, then the verdict
    #[arg(long)]
    pub json: bool,
}

/// `--since`: an RFC 3339 time or an age before now, as Unix seconds.
fn parse_since(text: &str) -> Result<i64, String> {
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(t) => t,
        Err(_) => {
            let age = humantime::parse_duration(text).map_err(|_| {
                format!("{text:?} is neither an RFC 3339 time nor an age such as 1h or 30min")
            })?;
            SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH)
        }
    };
    Ok(match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs().max(1)).unwrap_or(i64::MAX),
    })
}

/// An entry as `--json` writes it: field names are part of the interface.
#[derive(Serialize)]
struct JsonEntry<'a> {
    seq: u64,
    time: String,
    uid: u32,
    gid: u32,
    pid: Option<u32>,
    exe: &'a str,
    unit: Option<&'a str>,
    action: &'a str,
    session: Option<&'a str>,
    detail: Option<&'a str>,
    result: &'a str,
}

/// The verdict line of `--json`.
#[derive(Serialize)]
struct JsonVerdict<'a> {
    verified: bool,
    entries: usize,
    problems: &'a [AuditProblem],
}

/// How long one page may take is the daemon's business; this bounds the pages, so that a
/// log that keeps growing while it is read still ends.
const MAX_PAGES: usize = 1 << 20;

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let conn = daemon.connect()?;
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut problems: Vec<AuditProblem> = Vec::new();
    let mut after_seq = 0;
    for _ in 0..MAX_PAGES {
        let request = Request::Audit {
            after_seq,
            limit: 0,
            since: args.since,
            session: args.session.clone(),
        };
        let page = match conn.call(request)? {
            Response::AuditPage(p) => p,
            _ => return Err(CtlError::unexpected(daemon.socket(), "audit")),
        };
        entries.extend(page.entries);
        problems.extend(page.problems);
        if !page.more || page.scanned_to <= after_seq {
            break;
        }
        after_seq = page.scanned_to;
    }
    if args.json {
        for e in &entries {
            let line = JsonEntry {
                seq: e.seq,
                time: format_utc(e.time),
                uid: e.uid,
                gid: e.gid,
                pid: e.pid,
                exe: &e.exe,
                unit: e.unit.as_deref(),
                action: &e.action,
                session: e.session.as_deref(),
                detail: e.detail.as_deref(),
                result: &e.result,
            };
            serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
        let verdict = JsonVerdict {
            verified: problems.is_empty(),
            entries: entries.len(),
            problems: &problems,
        };
        serde_json::to_writer(&mut *out, &verdict).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        write_human(out, &entries, &problems)?;
    }
    if problems.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = problems.iter().map(|p| sanitize(&p.message)).collect();
    Err(CtlError::Aborted(format!(
        "the audit log does not verify: {}",
        named.join("; ")
    )))
}

fn write_human(
    out: &mut dyn Write,
    entries: &[AuditEntry],
    problems: &[AuditProblem],
) -> std::io::Result<()> {
    let dash = |v: Option<&str>| v.map_or_else(|| "-".to_owned(), sanitize);
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                format_utc(e.time),
                e.uid.to_string(),
                e.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                sanitize(&e.exe),
                dash(e.unit.as_deref()),
                sanitize(&e.action),
                dash(e.session.as_deref()),
                sanitize(&e.result),
                dash(e.detail.as_deref()),
            ]
        })
        .collect();
    use Align::{Left, Right};
    write_table(
        out,
        &[
            ("SEQ", Right),
            ("TIME", Left),
            ("UID", Right),
            ("PID", Right),
            ("EXE", Left),
            ("UNIT", Left),
            ("ACTION", Left),
            ("SESSION", Left),
            ("RESULT", Left),
            ("DETAIL", Left),
        ],
        &rows,
    )?;
    if problems.is_empty() {
        writeln!(
            out,
            "The audit log verifies: no entry missing, altered or out of place."
        )?;
    }
    for p in problems {
        writeln!(out, "BROKEN: {}", sanitize(&p.message))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_rfc3339_and_ages() {
        assert_eq!(parse_since("2026-12-06T07:00:00Z"), Ok(1_796_540_400));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let hour_ago = parse_since("1h").unwrap();
        assert!((now - 3_600 - hour_ago).abs() <= 2, "{hour_ago} vs {now}");
        assert!(parse_since("yesterday-ish").is_err());
    }
}
