//! Reading a request frame in two steps, so that the connection can take the request's
//! weight from the memory budget between them (see [`crate::server::limits`]): the 4-byte
//! header, whose length is checked before anything is allocated, then the payload.
//!
//! The wire format and its limits are the codec's (`session_vault_proto::codec`); what is
//! added here is that reading the header can be cancelled and resumed: the bytes read so
//! far stay in [`Header`], so that the connection can wait for the header and for its idle
//! timer in one `select!`.

use session_vault_proto::codec::FrameError;
use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroizing;

/// A frame header being read; cancel-safe (see the module docs).
#[derive(Debug, Default)]
pub struct Header {
    buf: [u8; 4],
    got: usize,
}

impl Header {
    /// Reads the rest of the header; `Ok(None)` on a clean EOF before its first byte. If the
    /// future is dropped midway, the bytes read so far are kept for the next call.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Option<u32>, FrameError> {
        while self.got < self.buf.len() {
            // A single `read` is cancel-safe: no byte is lost if it is dropped.
            let n = reader.read(&mut self.buf[self.got..]).await?;
            if n == 0 {
                return if self.got == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            self.got += n;
        }
        self.got = 0;
        Ok(Some(u32::from_be_bytes(self.buf)))
    }
}

/// Reads a payload of `len` bytes (already checked against the limit) into a buffer that is
/// zeroized when dropped. Not cancel-safe: a connection that stops reading midway closes.
pub async fn read_payload<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: u32,
) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut payload = Zeroizing::new(vec![0u8; len as usize]);
    reader
        .read_exact(&mut payload[..])
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_header_read_in_pieces_survives_cancellation() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut header = Header::default();
        client.write_all(&[0, 0]).await.unwrap();
        // Cancelled after the first two bytes arrived: they are kept.
        let first = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            header.read(&mut server),
        )
        .await;
        assert!(first.is_err());
        client.write_all(&[1, 2, 9, 9]).await.unwrap();
        assert_eq!(header.read(&mut server).await.unwrap(), Some(0x0102));
        assert_eq!(&read_payload(&mut server, 2).await.unwrap()[..], &[9, 9]);
        client.write_all(&[0]).await.unwrap();
        drop(client);
        assert!(matches!(
            header.read(&mut server).await,
            Err(FrameError::Truncated)
        ));
        assert_eq!(Header::default().read(&mut server).await.unwrap(), None);
    }
}
