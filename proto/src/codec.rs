//! The frame codec: a 4-byte big-endian payload length, then the MessagePack payload.
//!
//! Generic over `AsyncRead`/`AsyncWrite`, so the transport (Unix socket, named pipe) lives
//! elsewhere. The length is checked against the limit before anything is allocated; a clean
//! EOF between frames is `Ok(None)`, an EOF inside a frame is an error. Payload buffers are
//! zeroized when dropped, since frames carry passphrases and auth keys; encoding grows its
//! buffer by hand so that no unzeroized copy is left behind by a reallocation.
//!
//! Decoding is strict and bounded: a payload is exactly one MessagePack value (trailing bytes
//! are an error), nesting deeper than [`MAX_DEPTH`] is refused before it can exhaust a
//! task's stack, and a decode error's text never quotes a value from the payload (a
//! misplaced passphrase must not reach a log line through an error message).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// Default largest payload accepted: 1 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Deepest nesting of arrays and maps [`decode_payload`] accepts. The deepest real message
/// (an import's IPv6 address: frame → request → variant → data → DC list → DC option →
/// address → octets) nests 8 levels.
pub const MAX_DEPTH: usize = 32;

/// Longest decode error text kept, in bytes: room for serde's list of every request name,
/// but not for a megabyte of unknown variant name echoed back and logged.
const MAX_ERROR_TEXT: usize = 1024;

/// Why a frame could not be read, written, encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection inside a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The announced payload is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The limit.
        limit: u32,
    },
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Decode(String),
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Reads one frame's payload; `Ok(None)` on a clean EOF before its first byte.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: u32,
) -> Result<Option<Zeroizing<Vec<u8>>>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let n = reader.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(header);
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    // Only a target whose usize is narrower than 32 bits could refuse; there the frame is
    // too large indeed.
    let size = usize::try_from(len).map_err(|_| FrameError::TooLarge { len, limit })?;
    // The buffer grows with the bytes that arrive, not with the length announced: a peer
    // that announces a large frame and sends nothing more holds [`FIRST_READ`] bytes, not
    // the limit (a client's limit is hundreds of MiB). Each buffer is zero-filled once, when
    // made (not before every read: a frame trickled in small reads would cost quadratic
    // work); reads fill it from `filled` on.
    let mut payload = Zeroizing::new(vec![0u8; size.min(FIRST_READ)]);
    let mut filled = 0;
    while filled < size {
        if filled == payload.len() {
            let mut bigger = Zeroizing::new(vec![0u8; size.min(filled * 2)]);
            bigger[..filled].copy_from_slice(&payload[..filled]);
            // The old buffer is zeroized as it is dropped here.
            payload = bigger;
        }
        match reader.read(&mut payload[filled..]).await {
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FrameError::Truncated);
            }
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(Some(payload))
}

/// What [`read_frame`] allocates for a payload before its bytes arrive (more as they do).
pub const FIRST_READ: usize = 64 << 10;

/// Encodes `message` as one frame (length prefix included).
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut out = ZeroizingWriter(Zeroizing::new(Vec::with_capacity(256)));
    out.0.extend_from_slice(&[0u8; 4]);
    rmp_serde::encode::write_named(&mut out, message)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let mut buf = out.0;
    let len = u32::try_from(buf.len() - 4)
        .map_err(|_| FrameError::Encode("message larger than 4 GiB".into()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// A growable buffer that never leaves an unzeroized copy behind: when it needs room it
/// moves into a larger allocation itself and zeroizes the old one (`Vec`'s own growth would
/// free the old allocation with the bytes still in it). Frames here; the daemon's record
/// plaintexts too.
pub struct ZeroizingWriter(pub Zeroizing<Vec<u8>>);

impl ZeroizingWriter {
    /// Moves into an allocation with room for `needed` bytes (at least twice the old one).
    #[cold]
    fn grow(&mut self, needed: usize) {
        let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(self.0.capacity() * 2)));
        bigger.extend_from_slice(&self.0);
        // The old buffer is zeroized (whole capacity) as it is dropped here.
        self.0 = bigger;
    }
}

impl std::io::Write for ZeroizingWriter {
    // Inlined into MessagePack's encoders, which write a few bytes per call (a 100-peer
    // request is over a thousand calls; out of line this was 12% of a client's CPU).
    #[inline]
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    #[inline]
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        let needed = self.0.len().saturating_add(data.len());
        if needed > self.0.capacity() {
            self.grow(needed);
        }
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes a payload read by [`read_frame`]: exactly one MessagePack value, nested at most
/// [`MAX_DEPTH`] deep.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    de.set_max_depth(MAX_DEPTH + 1);
    let value = T::deserialize(&mut de).map_err(|e| FrameError::Decode(redact(&e.to_string())))?;
    // Whatever follows the value must be nothing: reading another value must fail at its
    // very first byte (its marker) with an end of input.
    match serde::de::IgnoredAny::deserialize(&mut de) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Ok(value)
        }
        _ => Err(FrameError::Decode(
            "trailing bytes after the message".into(),
        )),
    }
}

/// The `id` of a frame whose payload does not decode as a whole (an unknown request or
/// response, a wrong field): its map's `id` entry, when the payload is well-formed
/// MessagePack with a valid u32 there. Other keys are skipped unread.
pub fn decode_frame_id(payload: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: u32,
    }
    decode_payload::<IdOnly>(payload).ok().map(|f| f.id)
}

/// Strips the payload's values out of a decode error text, keeping their kind.
///
/// serde words a type or value mismatch as ``invalid type: string "…", expected …`` or
/// ``invalid value: integer `…`, expected …``: the quoted part is what the peer sent, which
/// may be a secret sent in the wrong place. It becomes `invalid type: string, expected …`.
/// The text is also capped at [`MAX_ERROR_TEXT`] bytes.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR_TEXT));
    let mut rest = text;
    loop {
        let found = ["invalid type: ", "invalid value: "]
            .iter()
            .filter_map(|p| rest.find(p).map(|at| (at, p.len())))
            .min();
        let Some((at, plen)) = found else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..at + plen]);
        let unexpected = &rest[at + plen..];
        // The expected part comes from our own types; the unexpected part may contain
        // anything, ", expected " included, so the last occurrence is the real one.
        let end = unexpected.rfind(", expected ").unwrap_or(unexpected.len());
        let shown = &unexpected[..end];
        let kind = shown
            .find(['`', '"'])
            .map_or(shown, |quote| &shown[..quote])
            .trim_end();
        out.push_str(kind);
        rest = &unexpected[end..];
    }
    if out.len() > MAX_ERROR_TEXT {
        let mut cut = MAX_ERROR_TEXT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Writes `message` as one frame and flushes.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    message: &T,
) -> Result<(), FrameError> {
    let frame = encode_frame(message)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads and decodes one message; `Ok(None)` on a clean EOF.
pub async fn read_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    limit: u32,
) -> Result<Option<T>, FrameError> {
    match read_frame(reader, limit).await? {
        None => Ok(None),
        Some(payload) => decode_payload(&payload).map(Some),
    }
}
