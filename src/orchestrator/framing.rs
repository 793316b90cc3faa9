//! Async, bounded newline-delimited framing for agent connections: never buffers more than one
//! maximum-size frame, so a peer that never sends `\n` cannot make us allocate without bound.

use crate::protocol::{self, MAX_FRAME, Message, ProtocolError};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_message<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Option<Message>, ProtocolError> {
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(ProtocolError::Truncated(line.len()));
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            if line.len() + i > MAX_FRAME {
                return Err(ProtocolError::FrameTooLarge { max: MAX_FRAME });
            }
            line.extend_from_slice(&buf[..i]);
            r.consume(i + 1);
            return protocol::decode(&line).map(Some);
        }
        let n = buf.len();
        if line.len() + n > MAX_FRAME {
            return Err(ProtocolError::FrameTooLarge { max: MAX_FRAME });
        }
        line.extend_from_slice(buf);
        r.consume(n);
    }
}

pub async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, msg: &Message) -> std::io::Result<()> {
    w.write_all(&protocol::encode(msg)).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn reads_frames_and_rejects_oversized_ones() {
        let data = b"{\"type\":\"next\"}\n{\"type\":\"idle\"}\n".to_vec();
        let mut r = BufReader::new(&data[..]);
        assert_eq!(
            read_message(&mut r).await.ok().flatten(),
            Some(Message::Next)
        );
        assert_eq!(
            read_message(&mut r).await.ok().flatten(),
            Some(Message::Idle)
        );
        assert!(matches!(read_message(&mut r).await, Ok(None)));

        let big = vec![b'x'; MAX_FRAME + 10];
        let mut r = BufReader::new(&big[..]);
        assert!(matches!(
            read_message(&mut r).await,
            Err(ProtocolError::FrameTooLarge { .. })
        ));

        let mut r = BufReader::new(&b"{\"type\":\"ne"[..]);
        assert!(matches!(
            read_message(&mut r).await,
            Err(ProtocolError::Truncated(_))
        ));
    }
}
