//! The relay's SMTP client: one connection to the upstream, plain or TLS, sending command lines
//! and reading replies (parsed by smtp-proto's reply parser, bounded to 4 KiB per reply).
//!
//! It is small on purpose: the connection set-up (`connection`) and the transaction
//! (`transaction`) decide what to send; this module only moves bytes and turns what comes back
//! into a [`Reply`] or a [`Failure`]. Every read and write is bounded by a timeout. Reading a
//! reply is cancel-safe (the parser's state lives in the client), so a caller may race it
//! against something else and read on afterwards.
//!
//! Why not lettre, as before: lettre's client keeps only the EHLO keywords it knows (so the
//! relay sent a second EHLO after TLS to learn SIZE), cannot pipeline or send BDAT, drops the
//! connection on Google's XOAUTH2 334 challenge, and nests its error texts so that an operator
//! read `Connection error: Connection error: invalid peer certificate: UnknownIssuer: invalid
//! peer certificate: UnknownIssuer`. The client the relay needs is a few hundred lines on
//! tokio-rustls.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::classify::Failure;
use super::tls::UpstreamTls;

/// Longest reply line accepted (smtp-proto's bound for a whole reply is 4 KiB).
const READ_CHUNK: usize = 8 * 1024;
/// Body bytes gathered (dot-stuffed) before each write.
const WRITE_CHUNK: usize = 64 * 1024;

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code (`5.7.8`), if the server gave one.
    pub enhanced: Option<String>,
    /// The text of each line, without code and enhanced code.
    pub lines: Vec<String>,
}

impl Reply {
    /// The text after the code: the enhanced code (if any) and the lines, joined by spaces.
    pub fn text(&self) -> String {
        let body = self.lines.join(" ");
        match &self.enhanced {
            Some(e) if body.is_empty() => e.clone(),
            Some(e) => format!("{e} {body}"),
            None => body,
        }
    }

    /// The whole reply on one line, e.g. `535 5.7.8 Username and Password not accepted.`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.code, self.text())
            .trim_end()
            .to_owned()
    }

    /// As a [`Failure`] (for a negative reply).
    pub fn failure(&self) -> Failure {
        Failure::Reply {
            code: self.code,
            text: self.text(),
        }
    }
}

/// The connection's byte stream.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One SMTP connection.
pub struct Client {
    stream: Option<Stream>,
    /// Bytes read and not yet parsed: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    receiver: ResponseReceiver,
    /// The first byte the server ever sent (to recognise a TLS record).
    first: Option<u8>,
    /// `host:port`, for messages.
    server: String,
    /// Bound on each read and write.
    timeout: Duration,
}

impl Client {
    /// A client over a connected TCP stream (plain until [`Client::starttls`]).
    pub fn plain(tcp: TcpStream, server: String, timeout: Duration) -> Client {
        Client::over(Stream::Plain(tcp), server, timeout)
    }

    /// A client over an established TLS stream (implicit TLS).
    pub fn tls(tls: TlsStream<TcpStream>, server: String, timeout: Duration) -> Client {
        Client::over(Stream::Tls(Box::new(tls)), server, timeout)
    }

    fn over(stream: Stream, server: String, timeout: Duration) -> Client {
        Client {
            stream: Some(stream),
            buf: Vec::with_capacity(1024),
            start: 0,
            receiver: ResponseReceiver::default(),
            first: None,
            server,
            timeout,
        }
    }

    /// `host:port` of the server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// True once the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Some(Stream::Tls(_)))
    }

    /// The server's first byte was a TLS record header (handshake or alert): it expected a
    /// TLS handshake, not plain SMTP.
    pub fn saw_tls_record(&self) -> bool {
        matches!(self.first, Some(0x14..=0x17))
    }

    fn stream(&mut self) -> io::Result<&mut Stream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection closed"))
    }

    fn broken(&self, what: &str, e: &io::Error) -> Failure {
        Failure::Broken(match e.kind() {
            io::ErrorKind::UnexpectedEof => format!("{} closed the connection", self.server),
            _ => format!("{what} {}: {e}", self.server),
        })
    }

    /// Reads the next reply, waiting at most `limit`. Cancel-safe.
    pub async fn read_reply_within(&mut self, limit: Duration) -> Result<Reply, Failure> {
        match tokio::time::timeout(limit, self.next_reply()).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Broken(format!(
                "no reply from {} within {}",
                self.server,
                humantime::format_duration(limit)
            ))),
        }
    }

    /// Reads the next reply within the client's timeout.
    pub async fn read_reply(&mut self) -> Result<Reply, Failure> {
        self.read_reply_within(self.timeout).await
    }

    async fn next_reply(&mut self) -> Result<Reply, Failure> {
        loop {
            let before = self.start;
            let pending = &self.buf[self.start..];
            let mut bytes = pending.iter();
            let parsed = self.receiver.parse(&mut bytes);
            let used = pending.len() - bytes.len();
            self.start += used;
            match parsed {
                Ok(r) => {
                    self.receiver.reset();
                    let enhanced = (r.esc != [0, 0, 0])
                        .then(|| format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2]));
                    let lines = r.message.split('\n').map(str::to_owned).collect();
                    return Ok(Reply {
                        code: r.code,
                        enhanced,
                        lines,
                    });
                }
                Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                Err(e) => {
                    let end = self.buf.len().min(before + 48);
                    let shown = String::from_utf8_lossy(&self.buf[before..end])
                        .escape_debug()
                        .to_string();
                    return Err(Failure::Broken(format!(
                        "{} sent something that is not an SMTP reply ({e:?}): \"{shown}\"",
                        self.server
                    )));
                }
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(READ_CHUNK);
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| Failure::Broken("connection closed".into()))?;
            match stream.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return Err(Failure::Broken(format!(
                        "{} closed the connection",
                        self.server
                    )));
                }
                Ok(_) => {
                    self.first = self.first.or(self.buf.first().copied());
                }
                Err(e) => return Err(self.broken("reading from", &e)),
            }
        }
    }

    /// Writes `bytes` and flushes, within the client's timeout.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let limit = self.timeout;
        let written = tokio::time::timeout(limit, async {
            let stream = self.stream()?;
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.broken("writing to", &e)),
            Err(_) => Err(Failure::Broken(format!(
                "{} took more than {} to take our data",
                self.server,
                humantime::format_duration(limit)
            ))),
        }
    }

    /// Sends one command line (without CRLF) and reads its reply: `Ok` for 2xx and 3xx, the
    /// reply as a [`Failure`] for 4xx and 5xx.
    pub async fn command(&mut self, line: &str) -> Result<Reply, Failure> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        positive(self.read_reply().await?)
    }

    /// Sends the message after a 354: dot-stuffed, ending with `CRLF.CRLF`, and reads the
    /// reply within `limit` (a large message may take longer than one timeout).
    pub async fn data(&mut self, body: &[u8], limit: Duration) -> Result<Reply, Failure> {
        self.write_dot_stuffed(body).await?;
        positive(self.read_reply_within(limit).await?)
    }

    /// Writes the message as DATA carries it: dot-stuffed, ending with `CRLF.CRLF`, in pieces
    /// of [`WRITE_CHUNK`] (the whole message is never copied).
    pub async fn write_dot_stuffed(&mut self, body: &[u8]) -> Result<(), Failure> {
        let mut chunk = Vec::with_capacity(WRITE_CHUNK.min(body.len() + 64) + 16);
        let mut at_line_start = true;
        for piece in body.split_inclusive(|&b| b == b'\n') {
            if at_line_start && piece.first() == Some(&b'.') {
                chunk.push(b'.');
            }
            chunk.extend_from_slice(piece);
            at_line_start = piece.ends_with(b"\n");
            if chunk.len() >= WRITE_CHUNK {
                self.write(&chunk).await?;
                chunk.clear();
            }
        }
        if !at_line_start {
            chunk.extend_from_slice(b"\r\n");
        }
        chunk.extend_from_slice(b".\r\n");
        self.write(&chunk).await
    }

    /// Upgrades the connection with a TLS handshake (after the server's 220 to STARTTLS).
    /// Anything the server sent before the handshake is discarded, so it cannot pass for
    /// something said over TLS.
    pub async fn starttls(&mut self, tls: &UpstreamTls) -> io::Result<()> {
        self.buf.clear();
        self.start = 0;
        self.receiver.reset();
        let Some(Stream::Plain(tcp)) = self.stream.take() else {
            return Err(io::Error::other(
                "STARTTLS on a connection that is not plain",
            ));
        };
        let secured = tls.handshake(tcp).await?;
        self.stream = Some(Stream::Tls(Box::new(secured)));
        Ok(())
    }

    /// Says QUIT (waiting a little for the answer) and closes.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.write(b"QUIT\r\n").await;
            let _ = self.read_reply().await;
            if let Ok(stream) = self.stream() {
                let _ = stream.shutdown().await;
            }
        })
        .await;
    }
}

/// `Ok` for a positive or intermediate reply, the reply as a failure otherwise.
fn positive(reply: Reply) -> Result<Reply, Failure> {
    if reply.code < 400 {
        Ok(reply)
    } else {
        Err(reply.failure())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (Client, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client = Client::plain(connected.unwrap(), "test:25".into(), Duration::from_secs(5));
        (client, accepted.unwrap().0)
    }

    #[tokio::test]
    async fn multiline_replies_keep_their_lines_and_enhanced_code() {
        let (mut c, mut server) = pair().await;
        server
            .write_all(b"250-fake.gmail at your service\r\n250-SIZE 35882577\r\n250 PIPELINING\r\n535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 https://support.google.com/mail/?p=BadCredentials - gsmtp\r\n452 too many recipients\r\n")
            .await
            .unwrap();
        let ehlo = c.read_reply().await.unwrap();
        assert_eq!(ehlo.code, 250);
        assert_eq!(
            ehlo.lines,
            ["fake.gmail at your service", "SIZE 35882577", "PIPELINING"]
        );
        let refused = c.read_reply().await.unwrap();
        assert_eq!(refused.enhanced.as_deref(), Some("5.7.8"));
        assert_eq!(
            refused.describe(),
            "535 5.7.8 Username and Password not accepted. https://support.google.com/mail/?p=BadCredentials - gsmtp"
        );
        let bare = c.read_reply().await.unwrap();
        assert_eq!((bare.code, bare.enhanced.as_deref()), (452, None));
        assert_eq!(bare.text(), "too many recipients");
    }

    #[tokio::test]
    async fn data_is_dot_stuffed_and_terminated_once() {
        let (mut c, mut server) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 1024];
            while !got.ends_with(b"\r\n.\r\n") {
                let n = server.read(&mut chunk).await.unwrap();
                got.extend_from_slice(&chunk[..n]);
            }
            server.write_all(b"250 2.0.0 OK\r\n").await.unwrap();
            got
        });
        let reply = c
            .data(b".first\r\nmiddle\r\n..two\r\nlast", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(
            reader.await.unwrap(),
            b"..first\r\nmiddle\r\n...two\r\nlast\r\n.\r\n"
        );
    }

    #[tokio::test]
    async fn garbage_and_silence_are_broken_connections_not_replies() {
        let (mut c, mut server) = pair().await;
        server
            .write_all(b"\x16\x03\x01\x00\x05hello\r\n")
            .await
            .unwrap();
        let Err(Failure::Broken(why)) = c.read_reply().await else {
            panic!("a TLS record is not a reply")
        };
        assert!(why.contains("not an SMTP reply"), "{why}");

        let (mut c, _server) = pair().await;
        let Err(Failure::Broken(why)) = c.read_reply_within(Duration::from_millis(50)).await else {
            panic!()
        };
        assert!(why.contains("no reply from test:25 within 50ms"), "{why}");
    }
}
