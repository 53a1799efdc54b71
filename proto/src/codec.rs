//! The frame codec: a 4-byte big-endian payload length, then the MessagePack payload.
//!
//! Generic over `AsyncRead`/`AsyncWrite`, so the transport (Unix socket, named pipe) lives
//! elsewhere. The length is checked against the limit before anything is allocated; a clean
//! EOF between frames is `Ok(None)`, an EOF inside a frame is an error. Payload buffers are
//! zeroized when dropped, since frames carry passphrases and auth keys.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// Default largest payload accepted: 1 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

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
    let mut payload = Zeroizing::new(vec![0u8; len as usize]);
    reader
        .read_exact(&mut payload[..])
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })?;
    Ok(Some(payload))
}

/// Encodes `message` as one frame (length prefix included).
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut buf = Zeroizing::new(vec![0u8; 4]);
    rmp_serde::encode::write_named(&mut *buf, message)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = u32::try_from(buf.len() - 4)
        .map_err(|_| FrameError::Encode("message larger than 4 GiB".into()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Decodes a payload read by [`read_frame`].
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(payload).map_err(|e| FrameError::Decode(e.to_string()))
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
