//! `vaultctl import`: bring a Telethon, Pyrogram or grammers session into the vault.
//!
//! The source is read and parsed completely before anything is sent (a bad source is a
//! usage error, exit 2, and the vault is untouched); the whole session then goes to the
//! daemon, which stores it in one durable transaction (all or nothing). A session larger
//! than one chunk ([`CHUNK_MAX`], 256 KiB encoded) goes in chunks (`import_begin`,
//! `import_chunk`, `import_commit`, protocol 1.4), so that a session of any size passes the
//! daemon's default frame limit; the daemon holds the chunks in memory and stores nothing
//! before the commit, so an import interrupted at any point leaves nothing (a progress bar
//! shows the bytes sent, on a terminal). A smaller one, or any session sent to a daemon older
//! than 1.4, goes in one `ImportSession` request; to an older daemon, a request above its
//! frame limit is refused before it is read, and vaultctl says so with the size and the
//! `--max-frame-bytes` setting that would admit it. `--shred` overwrites and removes the
//! source file only after the
//! daemon confirmed the import.
//!
//! A source file is opened once, without following links, and checked (regular file, one
//! link, an accepted owner) before a byte of it is read; the importer reads from that
//! descriptor and the shred writes through it ([`source`], [`shred`]): the file's author,
//! who controls its path, cannot point vaultctl at another file.

mod shred;
mod source;

use std::io::{self, IsTerminal, Write};
use std::path::Path;

use session_vault_client::ClientError;
use session_vault_proto::backup::{Blob, CHUNK_MAX, encode_session};
use session_vault_proto::codec::{self, DEFAULT_MAX_FRAME};
use session_vault_proto::message::{ClientFrame, ErrorCode, Request, Response};
use session_vault_proto::model::{SelfUser, SessionData};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::format_arg::{self, FormatOrAuto};
use super::output::sanitize;
use super::{CtlError, DaemonClient, transfer};
use session_vault_formats::{self as formats, Format, Imported, Input};
use source::{Owners, SourceFile};

/// Rows above which a progress bar is shown (on a terminal only).
const PROGRESS_THRESHOLD: u64 = 20_000;

/// `import --long-help` after the options: the formats read (from [`Format`] itself), then
/// which files are read and how.
fn after_help() -> String {
    format!(
        "Formats (--format; default auto: detected from the content, never from the file \
         name):\n{}{AFTER_FORMATS}",
        format_arg::import_table()
    )
}

const AFTER_FORMATS: &str = "
A source file is opened once and read into memory; the source is never modified, and no
journal, WAL or temporary file is created (except that --shred removes the file afterwards).
--shred overwrites the file with zeros, syncs and removes it once the import committed;
on SSDs, copy-on-write filesystems (btrfs, ZFS) and with snapshots or backups this is best
effort: old copies of the bytes may survive elsewhere on the device.

Which files are read (vaultctl often runs as root, and a file's owner controls its path):
  - not a symbolic link (links in the directories above it are followed): pass the real path;
  - a regular file (not a directory, FIFO, socket or device) with one link (no hard links);
  - owned by you, by root, by the user who ran sudo (SUDO_UID), or by the uid given with
    --source-owner: `sudo vaultctl import /home/bot/bot.session --source-owner 1001` reads
    bot's own file, and still no file of any third user that bot could link to.
--shred writes zeros through the descriptor the session was read from, and removes the name
only if it still leads to that file; if the file changed in between (moved, replaced, linked,
or written to), nothing is overwritten or removed, and vaultctl says so.

A session string given as an argument stays in the shell history and shows in `ps`: pass -
and paste it on standard input instead, e.g. `vaultctl import - --name bot`.

Examples:
  vaultctl import ~/bot/bot.session --name bot --shred
  vaultctl import - --name worker < pyrogram-string.txt
  vaultctl import old.session --name bot --format grammers-tl --replace";

/// Import a Telethon, Pyrogram or grammers session (file or string) into the vault
///
/// Reads SOURCE, a session file, a session string or - (standard input), in the format its
/// content shows (or --format), and stores it as session NAME in one durable transaction.
/// Prints what was imported and what could not be mapped. Refuses to overwrite an existing
/// session unless --replace. Needs an unlocked vault and an admin uid.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment, after_long_help = after_help())]
pub struct Args {
    /// A session file, a session string, or - to read either from standard input
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// The name to store the session under
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The source's format
    #[arg(long, value_parser = format_arg::import_parser(), default_value = "auto")]
    pub format: FormatOrAuto,
    /// After the import committed, overwrite the source file with zeros and remove it
    /// (best effort on SSDs and copy-on-write filesystems)
    #[arg(long)]
    pub shred: bool,
    /// Also read (and with --shred, destroy) a source file owned by UID; by default only
    /// your own, root's and the sudo user's files are accepted (see below)
    #[arg(long, value_name = "UID")]
    pub source_owner: Option<u32>,
    /// The logged-in user's id, for formats that do not record it (Telethon strings)
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    pub self_id: Option<i64>,
    /// Replace an existing session of that name
    #[arg(long)]
    pub replace: bool,
    /// With --replace: end the handle and lease a process holds on that session instead of
    /// refusing (the process's next request on it fails)
    #[arg(long, requires = "replace")]
    pub force: bool,
}

/// Where the session comes from.
enum Source {
    File(SourceFile),
    Stdin(Zeroizing<Vec<u8>>),
    Argument(Zeroizing<String>),
}

pub(super) fn run(args: Args, daemon: &DaemonClient, out: &mut dyn Write) -> Result<(), CtlError> {
    let source = source(&args)?;
    let mut imported = parse(&source, args.format)?;
    if let Some(id) = args.self_id {
        apply_self_id(&mut imported, id);
    }
    let name = args.name.clone();
    let data = std::mem::take(&mut imported.data);
    let summary = Summary::of(&data);
    let link = daemon.connect()?;
    let encoded = encode_session(&data)
        .map_err(|e| CtlError::usage(format!("the session cannot be encoded: {e}")))?;
    let result = if link.daemon_minor() >= STREAM_MINOR && encoded.len() > CHUNK_MAX {
        drop(data);
        send_in_chunks(&link, &args, &encoded)
    } else {
        drop(encoded);
        send_whole(&link, &args, data)
    };
    if let Err(e) = result {
        if let Some(wire) = e.wire().filter(|w| w.code == ErrorCode::NameTaken) {
            // The generic hint (another name, or `vaultctl rm`) misses the import's own way.
            return Err(link.state_error(
                ErrorCode::NameTaken,
                &format!(
                    "{}; nothing was imported. To overwrite that session with this file's \
                     contents, run the import again with --replace",
                    wire.message
                ),
            ));
        }
        return Err(e);
    }
    let shown = sanitize(&name);
    writeln!(
        out,
        "Imported session \"{shown}\" from a {} ({}{}).",
        imported.format.describe(),
        imported.format.name(),
        imported
            .version
            .map(|v| format!(", {v}"))
            .unwrap_or_default()
    )?;
    summary.write(out)?;
    if !imported.notes.is_empty() {
        writeln!(out, "  not mapped:")?;
        for note in &imported.notes {
            writeln!(out, "    - {}", sanitize(note))?;
        }
    }
    if let (true, Source::File(file)) = (args.shred, source) {
        let path = file.path.clone();
        file.shred()
            .map_err(|e| CtlError::Aborted(format!("the session was imported, but {e}")))?;
        writeln!(
            out,
            "Shredded {} (overwritten with zeros, synced and removed; best effort on SSDs \
             and copy-on-write filesystems).",
            path.display()
        )?;
    }
    Ok(())
}

/// The protocol minor from which the daemon takes an import in chunks (`import_begin`).
const STREAM_MINOR: u16 = 4;

/// The import in chunks: `import_begin`, `import_chunk`s, `import_commit`, which stores it in
/// one transaction; a failure midway ends the transfer, and the daemon has stored nothing.
fn send_in_chunks(
    link: &super::BlockingConnection,
    args: &Args,
    encoded: &[u8],
) -> Result<(), CtlError> {
    let size = encoded.len() as u64;
    let begin = Request::ImportBegin {
        name: args.name.clone(),
        size,
        sha256: Blob(Sha256::digest(encoded).to_vec()),
        replace: args.replace,
        owner_uid: None,
        force: args.force,
    };
    let id = match link.call(begin)? {
        Response::Transfer(t) => t.id,
        _ => return Err(CtlError::unexpected(link.socket(), "import")),
    };
    let sent = transfer::send(
        link,
        id,
        size,
        &mut &encoded[..],
        |id, offset, data| Request::ImportChunk { id, offset, data },
        |e| CtlError::Aborted(format!("cannot read the encoded session: {e}")),
        "import",
    )
    .and_then(|()| link.call_ok(Request::ImportCommit { id }, "import"));
    if sent.is_err() {
        // The daemon ends a committed or refused import by itself; this covers the rest.
        let _ = link.call(Request::TransferEnd { id });
    }
    sent
}

/// The import in one `import_session` request (a daemon before protocol 1.4, or a session
/// small enough for one frame). A request above the daemon's frame limit is dropped by it:
/// said plainly, with the setting that would admit it.
fn send_whole(
    link: &super::BlockingConnection,
    args: &Args,
    data: SessionData,
) -> Result<(), CtlError> {
    let frame = ClientFrame {
        id: 0,
        request: Request::ImportSession {
            name: args.name.clone(),
            data,
            replace: args.replace,
            owner_uid: None,
            force: args.force,
        },
    };
    // The exact size of the frame the client will write (the id's encoding aside).
    let payload = codec::encode_frame(&frame)
        .map(|f| f.len().saturating_sub(4))
        .map_err(|e| CtlError::usage(format!("the session cannot be encoded: {e}")))?;
    if payload > default_max_frame() {
        eprintln!(
            "vaultctl: note: the import request is {} ({payload} bytes), above vaultd's default \
             frame limit of 1 MiB, and this vaultd (protocol 1.{}) cannot take it in chunks; it \
             goes through only if vaultd runs with --max-frame-bytes {} or more (or upgrade \
             vaultd)",
            human_size(payload),
            link.daemon_minor(),
            suggested_limit(payload)
        );
    }
    link.call_ok(frame.request, "import")
        .map_err(|e| too_large(e, payload, link))
}

/// Reads SOURCE: stdin, a file, or the argument itself (with a warning).
fn source(args: &Args) -> Result<Source, CtlError> {
    if args.source == "-" {
        if args.shred {
            return Err(CtlError::usage(
                "--shred removes a source file; standard input is not one",
            ));
        }
        let buf =
            formats::read_limited(io::stdin().lock(), 0).map_err(|source| CtlError::Input {
                what: "session",
                from: "standard input".into(),
                source,
            })?;
        return Ok(Source::Stdin(buf));
    }
    let path = Path::new(&args.source);
    // Anything by that name, a dangling link included, is a file to open (and check), not a
    // string; the link is not followed to decide.
    if std::fs::symlink_metadata(path).is_ok() {
        let owners = Owners::of_this_process(args.source_owner);
        return source::open(path, &owners, args.shred)
            .map(Source::File)
            .map_err(|e| {
                let hint = e.hint().map(|h| format!("{h}; ")).unwrap_or_default();
                CtlError::usage_with_hint(
                    e.to_string(),
                    format!("{hint}nothing was sent to the vault"),
                )
            });
    }
    let looks_like_path = args.source.contains('/')
        || args.source.ends_with(".session")
        || args.source.ends_with(".sqlite");
    if looks_like_path {
        return Err(CtlError::usage(format!("no such file: {}", args.source)));
    }
    if args.shred {
        return Err(CtlError::usage(
            "--shred removes a source file; a string is not one",
        ));
    }
    eprintln!(
        "vaultctl: warning: a session string given as an argument stays in the shell history \
         and shows in `ps`; next time pass - and give it on standard input"
    );
    Ok(Source::Argument(Zeroizing::new(args.source.clone())))
}

fn parse(source: &Source, format: Option<Format>) -> Result<Imported, CtlError> {
    // A progress bar for large files, on a terminal only.
    let tty = io::stderr().is_terminal();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let input = match source {
        Source::File(f) => Input::File {
            file: &f.file,
            path: &f.path,
        },
        Source::Stdin(b) => Input::Bytes(b),
        Source::Argument(s) => Input::Bytes(s.as_bytes()),
    };
    let result = {
        let mut progress = |done: u64, total: u64| {
            if tty && total >= PROGRESS_THRESHOLD {
                bar.get_or_insert_with(|| new_bar(total)).set_position(done);
            }
        };
        formats::import(input, format, &mut progress)
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result.map_err(|e| {
        let tried = e.format.map_or_else(
            || "auto-detection".to_owned(),
            |f| format!("--format {}", f.name()),
        );
        CtlError::usage_with_hint(
            format!("cannot import the session: {e}"),
            format!(
                "tried {tried}; nothing was sent to the vault. `vaultctl import --help` lists \
                 the formats"
            ),
        )
    })
}

fn apply_self_id(imported: &mut Imported, id: i64) {
    let data = &mut imported.data;
    match data.self_user {
        Some(u) if u.id != id => {
            imported.notes.push(format!(
                "the session names user {} as its own; --self-id {id} replaced it",
                u.id
            ));
            data.self_user = Some(SelfUser { id, bot: u.bot });
        }
        Some(_) => {}
        None => data.self_user = Some(SelfUser { id, bot: false }),
    }
    imported
        .notes
        .retain(|n| !n.contains("(pass --self-id to record it)"));
}

/// Turns the daemon dropping an over-limit request into a message that says why.
fn too_large(e: CtlError, payload: usize, link: &super::BlockingConnection) -> CtlError {
    let dropped = match &e {
        CtlError::Client { source, .. } => {
            matches!(source, ClientError::Disconnected | ClientError::Frame(_))
        }
        _ => false,
    };
    if !dropped || payload <= default_max_frame() {
        return e;
    }
    link.state_error(
        ErrorCode::FrameTooLarge {
            limit: DEFAULT_MAX_FRAME,
        },
        &format!(
            "the daemon closed the connection on the import request of {} ({payload} bytes): \
             it exceeds the daemon's frame limit. Nothing was imported. Restart vaultd with \
             --max-frame-bytes {} (or more), then import again",
            human_size(payload),
            suggested_limit(payload)
        ),
    )
}

/// A frame limit with room to spare: the next MiB above `payload` plus 1 MiB.
fn suggested_limit(payload: usize) -> usize {
    (payload / (1 << 20) + 2) << 20
}

fn human_size(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// vaultd's default frame limit, in bytes (a u32 that any usize of 32 bits or more holds).
fn default_max_frame() -> usize {
    usize::try_from(DEFAULT_MAX_FRAME).unwrap_or(usize::MAX)
}

/// What the summary shows, taken before the data moves into the request.
struct Summary {
    home_dc: i32,
    home_address: Option<String>,
    user: Option<SelfUser>,
    peers: usize,
    state: String,
}

impl Summary {
    fn of(data: &SessionData) -> Summary {
        let home = data.dc_options.iter().find(|d| d.id == data.home_dc);
        let u = &data.updates_state;
        Summary {
            home_dc: data.home_dc,
            home_address: home.and_then(|d| {
                d.ipv4
                    .map(|a| a.to_string())
                    .or_else(|| d.ipv6.map(|a| a.to_string()))
            }),
            user: data.self_user,
            peers: data.peers.len(),
            state: format!(
                "pts {}, qts {}, seq {}, {} channel(s)",
                u.pts,
                u.qts,
                u.seq,
                u.channels.len()
            ),
        }
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        match &self.home_address {
            Some(a) => writeln!(out, "  home DC:      {} ({a})", self.home_dc)?,
            None => writeln!(out, "  home DC:      {}", self.home_dc)?,
        }
        match self.user {
            Some(u) => writeln!(
                out,
                "  user id:      {}{}",
                u.id,
                if u.bot { " (bot)" } else { "" }
            )?,
            None => writeln!(out, "  user id:      unknown")?,
        }
        writeln!(out, "  peers:        {}", self.peers)?;
        writeln!(out, "  update state: {}", self.state)
    }
}

/// An `indicatif` bar on stderr for `total` rows.
fn new_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("reading {bar:40} {pos}/{len} rows ({eta})")
    {
        bar.set_style(style);
    }
    bar
}
