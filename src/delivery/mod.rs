//! Delivery: one attempt to hand a message to the upstream, with per-recipient outcomes.
//!
//! [`Upstream`] owns the TLS settings and a small pool of authenticated connections
//! (`upstream.max_connections`). An attempt takes an idle connection (or opens one: TCP, TLS,
//! EHLO, AUTH), runs one transaction per batch of at most [`MAX_RCPT_PER_TRANSACTION`]
//! recipients, and puts the connection back for the next message: no TLS handshake and no
//! login per message. A connection idle longer than `upstream.idle_timeout` is closed with
//! QUIT. If a reused connection turns out to be dead (the server timed it out), the attempt
//! reconnects and runs again at once.
//!
//! Outcomes: each recipient is [`RecipientOutcome::Delivered`], `Failed` (permanent) or
//! `Deferred` (temporary); a [`SessionError`] means no session could be had and nothing was
//! sent. Delivery never touches the spool and decides no timing: the scheduler does both.
//!
//! - `tls`: trust anchors and TLS setup; `connection`: opening an authenticated connection;
//!   `transaction`: MAIL/RCPT/DATA; `classify`: what a reply or error means.

mod classify;
mod connection;
mod tls;
mod transaction;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::transport::smtp::client::AsyncSmtpConnection;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use connection::SessionError;
pub use tls::TlsSetupError;

use crate::config::UpstreamConfig;
use transaction::TxResult;

/// Gmail accepts at most 100 recipients per SMTP transaction.
pub const MAX_RCPT_PER_TRANSACTION: usize = 100;

/// The message to send, as the spool holds it.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Envelope sender; empty for `<>`.
    pub sender: &'a str,
    /// The message bytes (CRLF lines, not dot-stuffed).
    pub body: &'a [u8],
    /// The client declared `BODY=8BITMIME`.
    pub eight_bit_mime: bool,
    /// The client declared `SMTPUTF8`.
    pub smtputf8: bool,
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    /// The upstream accepted the message for this recipient (its reply).
    Delivered(String),
    /// The upstream refused it permanently (its reply).
    Failed(String),
    /// Not delivered this time; try again later (reply or error).
    Deferred(String),
}

impl RecipientOutcome {
    /// The reply or reason.
    pub fn text(&self) -> &str {
        match self {
            RecipientOutcome::Delivered(t)
            | RecipientOutcome::Failed(t)
            | RecipientOutcome::Deferred(t) => t,
        }
    }
}

/// The upstream server: settings, TLS, and the pool of authenticated connections.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: UpstreamConfig,
    tls: tls::UpstreamTls,
    /// One permit per connection that may exist.
    slots: Semaphore,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

impl Upstream {
    /// Prepares delivery to the upstream in `cfg` (nothing is connected yet).
    pub fn new(cfg: UpstreamConfig) -> Result<Self, TlsSetupError> {
        let tls = tls::UpstreamTls::new(&cfg.host, cfg.ca_file.as_deref())?;
        Ok(Upstream {
            inner: Arc::new(Inner {
                slots: Semaphore::new(cfg.max_connections),
                idle: Mutex::new(Vec::new()),
                cfg,
                tls,
            }),
        })
    }

    /// Most attempts that can run at once.
    pub fn max_connections(&self) -> usize {
        self.inner.cfg.max_connections
    }

    /// Tries to deliver `msg` to `recipients`. The outcomes are in the order of `recipients`.
    /// `Err` means no session could be had at all and nothing was sent.
    pub async fn deliver(
        &self,
        msg: &Outgoing<'_>,
        recipients: &[String],
    ) -> Result<Vec<RecipientOutcome>, SessionError> {
        let _slot = self.inner.slots.acquire().await.expect("never closed");
        let mut outcomes = Vec::with_capacity(recipients.len());
        for batch in recipients.chunks(MAX_RCPT_PER_TRANSACTION) {
            match self.deliver_batch(msg, batch).await {
                Ok(batch_outcomes) => outcomes.extend(batch_outcomes),
                Err(e) if outcomes.is_empty() => return Err(e),
                Err(e) => {
                    // Earlier batches went through; the rest wait for the next attempt.
                    let reason = e.to_string();
                    let rest = recipients.len() - outcomes.len();
                    outcomes.extend((0..rest).map(|_| RecipientOutcome::Deferred(reason.clone())));
                    break;
                }
            }
        }
        Ok(outcomes)
    }

    async fn deliver_batch(
        &self,
        msg: &Outgoing<'_>,
        batch: &[String],
    ) -> Result<Vec<RecipientOutcome>, SessionError> {
        let timeout = self.inner.cfg.timeout;
        let (mut conn, reused) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => (self.open().await?, false),
        };
        let mut result = transaction::send(&mut conn, msg, batch, timeout).await;
        if let (TxResult::Lost(reason), true) = (&result, reused) {
            tracing::debug!(%reason, "reused upstream connection was dead; reconnecting");
            conn = self.open().await?;
            result = transaction::send(&mut conn, msg, batch, timeout).await;
        }
        match result {
            TxResult::Done { outcomes, reusable } => {
                if reusable {
                    self.put_idle(conn);
                }
                Ok(outcomes)
            }
            TxResult::Lost(reason) => Ok(batch
                .iter()
                .map(|_| RecipientOutcome::Deferred(reason.clone()))
                .collect()),
        }
    }

    async fn open(&self) -> Result<AsyncSmtpConnection, SessionError> {
        let conn = connection::open(&self.inner.cfg, &self.inner.tls).await?;
        tracing::debug!(
            upstream = %format!("{}:{}", self.inner.cfg.host, self.inner.cfg.port),
            "upstream connection open and authenticated"
        );
        Ok(conn)
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let limit = self.inner.cfg.idle_timeout;
        let mut idle = self.inner.idle.lock().expect("pool lock");
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < limit {
                return Some(entry.conn);
            }
            tokio::spawn(quit(entry.conn));
        }
        None
    }

    fn put_idle(&self, conn: AsyncSmtpConnection) {
        self.inner.idle.lock().expect("pool lock").push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes idle connections when they pass `upstream.idle_timeout` (before Gmail times them
    /// out itself), and all of them when `cancel` fires. Run it as a background task.
    pub async fn maintain(&self, cancel: CancellationToken) {
        let period = (self.inner.cfg.idle_timeout / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = cancel.cancelled() => break,
            }
            let stale: Vec<Idle> = {
                let mut idle = self.inner.idle.lock().expect("pool lock");
                let limit = self.inner.cfg.idle_timeout;
                let (stale, fresh) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|e| e.since.elapsed() >= limit);
                *idle = fresh;
                stale
            };
            for e in stale {
                quit(e.conn).await;
            }
        }
        let all = std::mem::take(&mut *self.inner.idle.lock().expect("pool lock"));
        for e in all {
            quit(e.conn).await;
        }
    }
}

/// Says goodbye politely, but does not wait long for it.
async fn quit(mut conn: AsyncSmtpConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.quit()).await;
}
