//! Transfers in chunks, shared by `restore` and `import` (sending) and `backup` and `export`
//! (receiving): the daemon announced or was told a size and a SHA-256 (a [`TransferInfo`]),
//! and the bytes travel [`CHUNK_MAX`] at a time, each chunk a request of its own, so that no
//! frame comes near the daemon's frame limit. A progress bar (`indicatif`, on stderr) shows
//! the bytes moved when stderr is a terminal and the transfer is more than a few chunks; it
//! shows counts only, nothing of the contents.

use std::io::{IsTerminal, Read};

use session_vault_proto::backup::{Blob, CHUNK_MAX, TransferInfo};
use session_vault_proto::message::{Request, Response};
use sha2::{Digest, Sha256};

use super::{BlockingConnection, CtlError};

/// Transfers of at most this many bytes show no progress bar.
const BAR_FROM: u64 = 4 * CHUNK_MAX as u64;

/// A bar for `size` bytes labelled `what` (`sending`, `receiving`), hidden unless stderr is a
/// terminal and the transfer is large enough to be worth one.
pub(crate) fn bar(size: u64, what: &str) -> indicatif::ProgressBar {
    if size <= BAR_FROM || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(size);
    let template = format!("{what} {{bar:40}} {{bytes}}/{{total_bytes}} ({{eta}})");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// Sends `size` bytes read from `source` as the chunks of transfer `id`, each the request
/// `chunk(id, offset, bytes)` makes; `unreadable` turns a read error into the caller's.
pub(crate) fn send(
    link: &BlockingConnection,
    id: u64,
    size: u64,
    source: &mut dyn Read,
    chunk: impl Fn(u64, u64, Blob) -> Request,
    unreadable: impl Fn(std::io::Error) -> CtlError,
    what: &'static str,
) -> Result<(), CtlError> {
    let bar = bar(size, "sending");
    let mut offset = 0u64;
    let mut buf = zeroize::Zeroizing::new(vec![0u8; CHUNK_MAX]);
    let result = loop {
        let mut n = 0;
        while n < buf.len() {
            match source.read(&mut buf[n..]).map_err(&unreadable)? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break Ok(());
        }
        if let Err(e) = link.call_ok(chunk(id, offset, Blob(buf[..n].to_vec())), what) {
            break Err(e);
        }
        offset += n as u64;
        bar.set_position(offset);
    };
    bar.finish_and_clear();
    result
}

/// Receives transfer `info` as the chunks `chunk(id, offset)` asks for, passing each to
/// `sink`, and checks the whole against the announced SHA-256.
pub(crate) fn receive(
    link: &BlockingConnection,
    info: &TransferInfo,
    chunk: impl Fn(u64, u64) -> Request,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), CtlError>,
    what: &'static str,
) -> Result<(), CtlError> {
    let bar = bar(info.size, "receiving");
    let result = (|| {
        let mut hash = Sha256::new();
        let mut offset = 0u64;
        while offset < info.size {
            let bytes = match link.call(chunk(info.id, offset))? {
                Response::Chunk(c) => c.0,
                _ => return Err(CtlError::unexpected(link.socket(), what)),
            };
            if bytes.is_empty() {
                return Err(CtlError::Aborted(format!(
                    "the daemon's {what} ended at {offset} of {} bytes",
                    info.size
                )));
            }
            hash.update(&bytes);
            sink(&bytes)?;
            offset += bytes.len() as u64;
            bar.set_position(offset);
        }
        if hash.finalize().as_slice() != info.sha256.0.as_slice() {
            return Err(CtlError::Aborted(format!(
                "the {what} read from the daemon does not match its SHA-256; nothing was written"
            )));
        }
        Ok(())
    })();
    bar.finish_and_clear();
    result
}
