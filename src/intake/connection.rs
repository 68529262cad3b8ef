//! The I/O loop of one client connection: reads lines, drives the [`Session`], reads DATA,
//! commits the message to the spool and only then answers 250.
//!
//! Generic over the stream, so tests run it over an in-memory pipe. Every wait is bounded:
//! `listen.idle_timeout` for each command, `listen.data_timeout` for a whole DATA, and the same
//! idle timeout for each write (a client that stops reading cannot hold the task forever).
//! Memory is bounded too: command lines are cut at [`MAX_LINE`], message data at the size
//! limit (see `data`).
//!
//! Replies are written when the input holds no further complete command, so a pipelining
//! client gets one write for its whole batch (RFC 2920).

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use super::data::{DataReader, Progress};
use super::message::{self, Trace};
use super::reply::{self, Reply};
use super::session::{Action, Session, Settings};
use crate::observe::events;
use crate::spool::{Envelope, QueueId, Spool, SpoolError};

/// Longest command line, CRLF included; longer lines get `500 5.5.6`.
pub const MAX_LINE: usize = 4096;
/// Read size while receiving DATA.
const DATA_CHUNK: usize = 64 * 1024;
/// Buffer kept by an idle connection.
const IDLE_BUFFER: usize = 1024;

/// A client connection the loop can run on: any byte stream, plus the TLS upgrade STARTTLS
/// needs (only the listener's real streams can do it).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Performs the server side of the TLS handshake, in place.
    fn start_tls(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// An in-memory stream (tests, the fuzz target) is taken as secured by STARTTLS: the session
/// goes on as if the handshake had happened.
impl Transport for tokio::io::DuplexStream {
    async fn start_tls(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where an accepted message is committed before the 250: the spool, or for the fuzz target
/// a check of the very bytes the spool would get.
pub trait Queue: Send + Sync + 'static {
    /// A fresh id for the message about to be committed.
    fn new_id(&self) -> QueueId;
    /// Commits the message (see [`Spool::commit`]); `Ok` means it may be acknowledged.
    fn commit(
        &self,
        id: QueueId,
        envelope: Envelope,
        parts: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;
}

impl Queue for Spool {
    fn new_id(&self) -> QueueId {
        Spool::new_id(self)
    }

    fn commit(
        &self,
        id: QueueId,
        envelope: Envelope,
        parts: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send {
        Spool::commit(self, id, envelope, parts)
    }
}

/// What every connection of a listener shares.
pub struct Shared<Q = Spool> {
    /// Hostname and policy for sessions.
    pub settings: Arc<Settings>,
    /// Where messages are committed.
    pub queue: Q,
    /// Longest silence between commands.
    pub idle_timeout: Duration,
    /// Longest DATA.
    pub data_timeout: Duration,
    /// The listener certificate, if configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Chooses each message's account from its sender.
    pub router: Arc<crate::policy::Router>,
    /// Where received messages are counted.
    pub metrics: crate::observe::Metrics,
}

/// The connection ended (client left, timed out, or the session closed it).
struct Closed;

/// Bytes read but not yet used.
pub(super) struct Input {
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    /// Discarding an over-long line until its end.
    skipping: bool,
}

pub(super) enum Line {
    Command(std::ops::Range<usize>),
    TooLong,
}

impl Input {
    pub(super) fn new(buf: Vec<u8>) -> Input {
        Input {
            buf,
            start: 0,
            skipping: false,
        }
    }

    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(super) fn next_line(&mut self) -> Option<Line> {
        let rest = &self.buf[self.start..];
        match memchr::memchr(b'\n', rest) {
            Some(pos) => {
                let range = self.start..self.start + pos + 1;
                self.start = range.end;
                if std::mem::take(&mut self.skipping) || range.len() > MAX_LINE {
                    Some(Line::TooLong)
                } else {
                    Some(Line::Command(range))
                }
            }
            None => {
                if rest.len() > MAX_LINE {
                    self.skipping = true;
                    self.buf.clear();
                    self.start = 0;
                }
                None
            }
        }
    }

    /// Reads more bytes; `Ok(false)` at end of stream.
    async fn fill<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        want: usize,
    ) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < want / 2 {
            self.buf.reserve(want);
        }
        Ok(stream.read_buf(&mut self.buf).await? > 0)
    }
}

/// Serves one admitted client until it quits, times out, or the relay shuts down.
pub async fn serve<S, Q>(
    stream: &mut S,
    mut session: Session,
    shared: &Shared<Q>,
    cancel: &CancellationToken,
) where
    S: Transport,
    Q: Queue,
{
    let mut input = Input::new(Vec::with_capacity(IDLE_BUFFER));
    let mut out = Vec::new();
    session.greeting().write_to(&mut out);
    let _ = run(stream, &mut session, shared, cancel, &mut input, &mut out).await;
    let _ = stream.shutdown().await;
}

async fn run<S, Q>(
    stream: &mut S,
    session: &mut Session,
    shared: &Shared<Q>,
    cancel: &CancellationToken,
    input: &mut Input,
    out: &mut Vec<u8>,
) -> Result<(), Closed>
where
    S: Transport,
    Q: Queue,
{
    loop {
        while let Some(line) = input.next_line() {
            let action = match line {
                Line::Command(range) => session.command(&input.buf[range]),
                Line::TooLong => session.error(reply::line_too_long()),
            };
            let action = match action {
                Action::ReadData(go_ahead) => {
                    go_ahead.write_to(out);
                    send(stream, out, shared.idle_timeout).await?;
                    let reply = read_message(stream, session, shared, input, out).await?;
                    session.message_done(reply)
                }
                Action::Verify { user, password } => {
                    let settings = shared.settings.clone();
                    let name = user.clone();
                    let ok = tokio::task::spawn_blocking(move || {
                        settings.users.verify(&name, password.expose().as_bytes())
                    })
                    .await
                    .unwrap_or(false);
                    session.auth_checked(user, ok)
                }
                other => other,
            };
            match action {
                Action::Reply(r) | Action::ReadData(r) => r.write_to(out),
                Action::Verify { .. } => unreachable!("credentials are checked above"),
                Action::Close(r) => {
                    return say_and_close(stream, out, r, shared.idle_timeout).await;
                }
                Action::StartTls(r) => {
                    r.write_to(out);
                    send(stream, out, shared.idle_timeout).await?;
                    // Whatever the client pipelined in the clear after STARTTLS must not be
                    // taken as if it had come over TLS (the CVE-2011-0411 injection).
                    input.buf.clear();
                    input.start = 0;
                    match timeout(shared.idle_timeout, stream.start_tls()).await {
                        Ok(Ok(())) => session.tls_started(),
                        _ => return Err(Closed),
                    }
                }
            }
        }
        send(stream, out, shared.idle_timeout).await?;
        if input.buf.capacity() > 4 * IDLE_BUFFER && input.pending().is_empty() {
            input.buf = Vec::with_capacity(IDLE_BUFFER);
            input.start = 0;
        }
        let until = Instant::now() + shared.idle_timeout;
        tokio::select! {
            r = read_more(stream, input, IDLE_BUFFER, until, out, shared.idle_timeout) => r?,
            _ = cancel.cancelled() => {
                return say_and_close(stream, out, reply::shutting_down(), shared.idle_timeout).await;
            }
        }
    }
}

/// Reads more input before `until`. The end of the stream closes the connection; running out
/// of time says `421 4.4.2` first.
async fn read_more<S>(
    stream: &mut S,
    input: &mut Input,
    want: usize,
    until: Instant,
    out: &mut Vec<u8>,
    write_limit: Duration,
) -> Result<(), Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match timeout_at(until, input.fill(stream, want)).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) | Ok(Err(_)) => Err(Closed),
        Err(_) => say_and_close(stream, out, reply::timeout(), write_limit).await,
    }
}

/// Sends a last reply; the connection then closes.
async fn say_and_close<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    last: Reply,
    write_limit: Duration,
) -> Result<(), Closed> {
    last.write_to(out);
    send(stream, out, write_limit).await?;
    Err(Closed)
}

/// Reads the DATA of the session's transaction, queues it, and returns the final reply.
/// A client that disconnects or times out mid-DATA leaves nothing behind.
async fn read_message<S, Q>(
    stream: &mut S,
    session: &mut Session,
    shared: &Shared<Q>,
    input: &mut Input,
    out: &mut Vec<u8>,
) -> Result<Reply, Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Q: Queue,
{
    let tx = session
        .take_transaction()
        .expect("ReadData is only returned with a transaction");
    let policy = &shared.settings.policy;
    let mut reader = DataReader::new(policy.max_message_size());
    let deadline = Instant::now() + shared.data_timeout;
    loop {
        if let Progress::Done(n) = reader.feed(input.pending()) {
            input.start += n;
            break;
        }
        input.start = input.buf.len();
        let until = deadline.min(Instant::now() + shared.idle_timeout);
        read_more(stream, input, DATA_CHUNK, until, out, shared.idle_timeout).await?;
    }
    let Some(mut body) = reader.finish() else {
        return Ok(policy.too_big().into());
    };
    let id = shared.queue.new_id();
    let received_at = SystemTime::now();
    let id_text = id.to_string();
    let hostname = &shared.settings.hostname;
    let message_id = format!("{id_text}.{:08x}@{hostname}", fastrand::u32(..));
    let fixed = message::hygiene(&mut body, &message_id, received_at);
    let trace = message::received_header(&Trace {
        helo: session.helo(),
        client: session.client(),
        by: hostname,
        protocol: session.protocol(&tx),
        id: &id_text,
        recipients: &tx.recipients,
        at: received_at,
    });
    let size = trace.len() + fixed.added.len() + body.len();
    let account = shared.router.route(&tx.sender).to_owned();
    let envelope = Envelope {
        account: Some(account),
        sender: tx.sender,
        recipients: tx.recipients,
        notify_never: tx.notify_never,
        received_at,
        client: session.client().to_canonical(),
        helo: session.helo().to_owned(),
        eight_bit_mime: tx.eight_bit_mime,
        smtputf8: tx.smtputf8,
    };
    let (sender, recipients) = (envelope.sender.clone(), envelope.recipients.clone());
    match shared
        .queue
        .commit(id, envelope, vec![trace, fixed.added, body])
        .await
    {
        Ok(()) => {
            events::received(&id_text, session.client(), &sender, &recipients, size);
            shared.metrics.received();
            Ok(reply::queued(&id_text))
        }
        Err(e) => {
            let reply = if e.is_storage_full() {
                reply::storage_full()
            } else {
                reply::not_queued()
            };
            events::not_queued(
                session.client(),
                &sender,
                &e.to_string(),
                &reply.first_line(),
            );
            Ok(reply)
        }
    }
}

/// Writes and empties `out`.
async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), Closed> {
    if out.is_empty() {
        return Ok(());
    }
    let written = timeout(limit, async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await;
    out.clear();
    match written {
        Ok(Ok(())) => Ok(()),
        _ => Err(Closed),
    }
}

#[cfg(test)]
mod tests;
