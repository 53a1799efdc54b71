//! The peer-table loop the SQLite formats share: Telethon's `entities`, Pyrogram's `peers` and
//! grammers' `peer_info` all key a row by its marked ("Bot API") id with the access hash
//! beside it; what the other columns mean is each format's own.

use rusqlite::Row;
use session_vault_proto::model::{Peer, PeerKind};

use super::sqlite_io::SqliteSource;
use super::{Format, FormatError, Progress, unmark};

/// Progress is reported every this many rows (and once at the end).
const PROGRESS_EVERY: u64 = 4096;

/// A query over a peer table: column 0 is the marked id, column 1 the access hash; the rest
/// are the format's, read by `fill`.
pub(crate) struct PeerQuery<'a> {
    /// The format, for error messages.
    pub format: Format,
    /// The table, whose row count is the progress total.
    pub table: &'a str,
    /// The `SELECT`.
    pub sql: &'a str,
    /// What a row is called in the note on skipped rows ("entities", "peers").
    pub noun: &'a str,
}

impl PeerQuery<'_> {
    /// Reads every row: a [`Peer`] with its kind, bare id and access hash (none for a chat,
    /// which has none) set, then completed by `fill` from the row. Rows whose id names no
    /// user, chat or channel are skipped, and counted in a note.
    pub(crate) fn read(
        &self,
        db: &SqliteSource,
        notes: &mut Vec<String>,
        progress: Progress<'_>,
        mut fill: impl FnMut(&Row<'_>, &mut Peer) -> Result<(), FormatError>,
    ) -> Result<Vec<Peer>, FormatError> {
        let sql_err = |e| unreadable(self.format, e);
        let total = db.count(self.table).map_err(sql_err)?;
        let mut stmt = db.conn().prepare(self.sql).map_err(sql_err)?;
        let mut rows = stmt.query([]).map_err(sql_err)?;
        let (mut peers, mut bad, mut done) = (Vec::new(), 0u64, 0u64);
        while let Some(r) = rows.next().map_err(sql_err)? {
            done += 1;
            if done % PROGRESS_EVERY == 0 {
                progress(done, total);
            }
            let marked: i64 = r.get(0).map_err(sql_err)?;
            let hash: Option<i64> = r.get(1).map_err(sql_err)?;
            let Some((kind, id)) = unmark(marked) else {
                bad += 1;
                continue;
            };
            let mut peer = Peer::new(kind, id);
            peer.access_hash = match kind {
                PeerKind::Chat => None,
                _ => hash,
            };
            fill(r, &mut peer)?;
            peers.push(peer);
        }
        progress(done, total);
        if bad > 0 {
            notes.push(format!(
                "{bad} {} with ids that name no user, chat or channel were skipped",
                self.noun
            ));
        }
        Ok(peers)
    }
}

/// The error of a SQLite database that cannot be read in `format`.
pub(crate) fn unreadable(format: Format, e: rusqlite::Error) -> FormatError {
    FormatError::malformed(
        format,
        format!("the database cannot be read (truncated or corrupt?): {e}"),
    )
}
