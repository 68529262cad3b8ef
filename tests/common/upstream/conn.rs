//! The fake Gmail's side of one connection: the plain or TLS stream (`Io`, upgraded in place
//! by STARTTLS) and the buffered reader/writer that holds replies back until the client must
//! wait for them, counting each such wait as a round trip.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Gone,
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Io::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}

pub(super) struct Conn {
    pub(super) io: Io,
    pub(super) buf: Vec<u8>,
    /// Replies not sent yet.
    pub(super) out: Vec<u8>,
    /// `Script::reply_delay`.
    pub(super) delay: Option<Duration>,
    /// Times pending replies were sent before waiting for the client.
    pub(super) flushes: usize,
}

/// How long input may lag the previous input and still count as the same pipelined batch.
const SAME_BATCH: Duration = Duration::from_millis(3);

impl Conn {
    /// Reads more input into `buf`; false at the end of the stream. Pending replies are sent
    /// first, unless (with a delay) more input is already arriving.
    pub(super) async fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = vec![0u8; 65536];
        if !self.out.is_empty()
            && self.delay.is_some()
            && let Ok(read) = tokio::time::timeout(SAME_BATCH, self.io.read(&mut chunk)).await
        {
            let n = read?;
            self.buf.extend_from_slice(&chunk[..n]);
            return Ok(n > 0);
        }
        self.flush().await?;
        let n = self.io.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Sends the pending replies (after the scripted delay).
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        self.flushes += 1;
        let out = std::mem::take(&mut self.out);
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    pub(super) async fn line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                ));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Exactly `n` bytes (a BDAT chunk); `None` if the stream ends first.
    pub(super) async fn exact(&mut self, n: usize) -> io::Result<Option<Vec<u8>>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Ok(None);
            }
        }
        Ok(Some(self.buf.drain(..n).collect()))
    }

    pub(super) async fn reply(&mut self, text: &str) -> io::Result<()> {
        self.out.extend_from_slice(format!("{text}\r\n").as_bytes());
        Ok(())
    }

    /// Reads DATA up to the terminating dot, undoing dot-stuffing.
    pub(super) async fn data(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        loop {
            let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                if !self.fill().await? {
                    return Ok(None);
                }
                continue;
            };
            let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
            if line == b".\r\n" {
                return Ok(Some(out));
            }
            let line = if line.starts_with(b".") {
                &line[1..]
            } else {
                &line[..]
            };
            out.extend_from_slice(line);
        }
    }
}
