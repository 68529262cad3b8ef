//! Delivery: one attempt to hand a message to the upstream, with an outcome per recipient.
//!
//! [`Upstream`] owns the TLS settings and a small pool of authenticated connections
//! (`upstream.max_connections`). An attempt takes an idle connection (or opens one: TCP, TLS,
//! EHLO, AUTH: one login per connection lifetime), runs one transaction per batch of at most
//! `upstream.max_recipients_per_message` recipients (and another for recipients a server had
//! no room for), and puts the connection back for the next message. A connection idle longer
//! than `upstream.idle_timeout` is closed with QUIT, before Gmail times it out. A connection
//! that breaks or is closed by the server (421, 451 4.4.2) before the message was accepted is
//! replaced at once and the transaction sent again on the new one.
//!
//! The result is a [`Report`]: each recipient [`RecipientOutcome::Delivered`], `Failed` or
//! `Deferred`, and possibly a [`Pause`] (unreachable upstream, refused credentials, spent
//! quota) that tells the scheduler to stop all delivery for a while. A message larger than the
//! upstream's advertised SIZE fails without being sent. Delivery never touches the spool and
//! decides no timing: the scheduler does both.
//!
//! - `tls`: trust anchors and TLS setup; `connection`: opening an authenticated connection;
//!   `transaction`: MAIL/RCPT/DATA; `classify`: what a reply means; `rewrite`: the optional
//!   sender rewrites for Gmail.

mod classify;
mod connection;
mod rewrite;
mod tls;
mod transaction;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use classify::{Class, Stage, classify};
pub use rewrite::Rewrite;
pub use tls::TlsSetupError;

use crate::config::UpstreamConfig;
use crate::observe::Metrics;
use connection::Conn;
use transaction::TxResult;

/// A pooled connection is retired this long before its OAuth2 token expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

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
    /// Send `SIZE=` with MAIL (the server advertised SIZE).
    pub(crate) declare_size: bool,
}

impl<'a> Outgoing<'a> {
    /// A message from `sender` with these bytes and body flags.
    pub fn new(sender: &'a str, body: &'a [u8], eight_bit_mime: bool, smtputf8: bool) -> Self {
        Outgoing {
            sender,
            body,
            eight_bit_mime,
            smtputf8,
            declare_size: false,
        }
    }
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    /// The upstream accepted the message for this recipient (its reply).
    Delivered(String),
    /// The upstream refused it permanently (its reply, or why it was not sent).
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

/// Why all delivery should stop for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseKind {
    /// The upstream cannot be reached, or offers no secure session.
    Unreachable,
    /// The upstream refuses our credentials or configuration (535, 534, 454 4.7.0, ...).
    Credentials,
    /// The account's sending quota is spent (550 5.4.5, ...).
    Quota,
}

/// A reason to stop all delivery, with the upstream's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// Which kind of pause.
    pub kind: PauseKind,
    /// The reply or error behind it.
    pub reason: String,
}

impl std::fmt::Display for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            PauseKind::Unreachable => "upstream unavailable",
            PauseKind::Credentials => "upstream refused the login",
            PauseKind::Quota => "sending quota spent",
        };
        write!(f, "{what}: {}", self.reason)
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One per recipient given, in order.
    pub outcomes: Vec<RecipientOutcome>,
    /// Stop all delivery for this reason.
    pub pause: Option<Pause>,
}

impl Report {
    /// Every recipient deferred because of `pause`.
    pub fn paused(recipients: usize, pause: Pause) -> Report {
        Report {
            outcomes: vec![RecipientOutcome::Deferred(pause.to_string()); recipients],
            pause: Some(pause),
        }
    }

    /// True if the attempt got an upstream session (something was settled, or refused by the
    /// server rather than by the network).
    pub fn reached_upstream(&self) -> bool {
        !matches!(
            self.pause,
            Some(Pause {
                kind: PauseKind::Unreachable | PauseKind::Credentials,
                ..
            })
        )
    }
}

/// The upstream server: settings, TLS, and the pool of authenticated connections.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    /// The settings in force; replaced by [`Upstream::reconfigure`].
    current: std::sync::RwLock<Arc<Current>>,
    /// One permit per connection that may exist.
    slots: Semaphore,
    idle: Mutex<Vec<Idle>>,
    metrics: Metrics,
}

/// Settings and the TLS set-up made from them.
struct Current {
    cfg: UpstreamConfig,
    tls: tls::UpstreamTls,
    /// Bumped by every reconfiguration; a connection from an older one is not reused.
    generation: u64,
}

struct Idle {
    conn: Conn,
    since: Instant,
    generation: u64,
}

impl Upstream {
    /// Prepares delivery to the upstream in `cfg` (nothing is connected yet).
    pub fn new(cfg: UpstreamConfig) -> Result<Self, TlsSetupError> {
        Self::with_metrics(cfg, Metrics::new())
    }

    /// Like [`Upstream::new`], counting logins and transactions in `metrics`.
    pub fn with_metrics(cfg: UpstreamConfig, metrics: Metrics) -> Result<Self, TlsSetupError> {
        let tls = tls::UpstreamTls::new(&cfg.host, cfg.ca_file.as_deref())?;
        Ok(Upstream {
            inner: Arc::new(Inner {
                slots: Semaphore::new(cfg.max_connections),
                idle: Mutex::new(Vec::new()),
                current: std::sync::RwLock::new(Arc::new(Current {
                    cfg,
                    tls,
                    generation: 0,
                })),
                metrics,
            }),
        })
    }

    fn current(&self) -> Arc<Current> {
        self.inner.current.read().expect("settings lock").clone()
    }

    /// Puts new settings (credentials, timeouts, CA file, ...) in force: idle connections are
    /// closed, and the next attempt connects and logs in with them. `max_connections` keeps
    /// its old value until a restart.
    pub fn reconfigure(&self, cfg: UpstreamConfig) -> Result<(), TlsSetupError> {
        let tls = tls::UpstreamTls::new(&cfg.host, cfg.ca_file.as_deref())?;
        {
            let mut current = self.inner.current.write().expect("settings lock");
            let generation = current.generation + 1;
            *current = Arc::new(Current {
                cfg,
                tls,
                generation,
            });
        }
        let idle = std::mem::take(&mut *self.inner.idle.lock().expect("pool lock"));
        for e in idle {
            tokio::spawn(quit(e.conn));
        }
        Ok(())
    }

    /// Most attempts that can run at once.
    pub fn max_connections(&self) -> usize {
        self.current().cfg.max_connections
    }

    /// Tries to deliver `msg` to `recipients`.
    pub async fn deliver(&self, msg: &Outgoing<'_>, recipients: &[String]) -> Report {
        let _slot = self.inner.slots.acquire().await.expect("never closed");
        let per_tx = self.current().cfg.max_recipients_per_message;
        let mut outcomes: Vec<Option<RecipientOutcome>> = vec![None; recipients.len()];
        let mut pause = None;
        // Each round settles at least one recipient or stops, so this bounds the rounds.
        for _ in 0..=recipients.len() {
            let open: Vec<usize> = (0..recipients.len())
                .filter(|&i| outcomes[i].is_none())
                .take(per_tx)
                .collect();
            if open.is_empty() || pause.is_some() {
                break;
            }
            let batch: Vec<String> = open.iter().map(|&i| recipients[i].clone()).collect();
            let (batch_outcomes, batch_pause) = match self.transaction(msg, &batch).await {
                Ok(result) => result,
                Err(p) => (vec![None; batch.len()], Some(p)),
            };
            let progress = batch_outcomes.iter().any(Option::is_some);
            for (&i, outcome) in open.iter().zip(batch_outcomes) {
                outcomes[i] = outcome;
            }
            pause = batch_pause;
            if !progress && pause.is_none() {
                // The server took none of them (no room for even one): try them later.
                for &i in &open {
                    outcomes[i] = Some(RecipientOutcome::Deferred(
                        "the upstream accepted no recipient in this transaction".into(),
                    ));
                }
            }
        }
        let why = pause.as_ref().map(ToString::to_string).unwrap_or_default();
        Report {
            outcomes: outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| RecipientOutcome::Deferred(why.clone())))
                .collect(),
            pause,
        }
    }

    /// One transaction for `batch`; `None` outcomes are left for another transaction.
    async fn transaction(
        &self,
        msg: &Outgoing<'_>,
        batch: &[String],
    ) -> Result<(Vec<Option<RecipientOutcome>>, Option<Pause>), Pause> {
        let timeout = self.current().cfg.timeout;
        let mut conn = match self.take_idle() {
            Some(conn) => {
                self.inner.metrics.transaction(true);
                conn
            }
            None => {
                let conn = self.open().await?;
                self.inner.metrics.transaction(false);
                conn
            }
        };
        for fresh in [false, true] {
            if let Some(max) = conn.max_size
                && msg.body.len() > max
            {
                let why = format!(
                    "the message is {} bytes and the upstream accepts at most {max} (its EHLO SIZE); not sent",
                    msg.body.len()
                );
                self.put_idle(conn);
                return Ok((vec![Some(RecipientOutcome::Failed(why)); batch.len()], None));
            }
            let outgoing = Outgoing {
                declare_size: conn.max_size.is_some(),
                ..*msg
            };
            match transaction::send(&mut conn.smtp, &outgoing, batch, timeout).await {
                TxResult::Done {
                    outcomes,
                    reusable,
                    pause,
                } => {
                    if reusable {
                        self.put_idle(conn);
                    }
                    return Ok((outcomes, pause));
                }
                TxResult::Lost(reason) if !fresh => {
                    tracing::debug!(%reason, "upstream connection lost; sending again on a new one");
                    conn = self.open().await?;
                    self.inner.metrics.transaction(false);
                }
                TxResult::Lost(reason) => {
                    let outcome = RecipientOutcome::Deferred(reason);
                    return Ok((vec![Some(outcome); batch.len()], None));
                }
            }
        }
        unreachable!("the loop returns on its second round")
    }

    /// Connects, secures and logs in once, then says goodbye, without sending mail: for
    /// `gmail-relay check --upstream` and `gmail-relay oauth test`. Returns what was done.
    pub async fn check_login(&self) -> Result<String, Pause> {
        let current = self.current();
        let cfg = &current.cfg;
        let conn = self.open().await?;
        let method = match cfg.credentials.token_source() {
            Some(_) => "XOAUTH2",
            None => "PLAIN/LOGIN",
        };
        let what = format!(
            "logged in to {}:{} ({}) as {} with {method}; the server accepts messages up to {}; \
             it offers: {}",
            cfg.host,
            cfg.port,
            cfg.tls,
            cfg.credentials.username(),
            conn.max_size
                .map_or_else(|| "an unstated size".to_owned(), |n| format!("{n} bytes")),
            conn.capabilities.join(", "),
        );
        quit(conn).await;
        Ok(what)
    }

    async fn open(&self) -> Result<Conn, Pause> {
        let current = self.current();
        let opened = connection::open(&current.cfg, &current.tls).await;
        match &opened {
            Ok(_) => self.inner.metrics.login(true),
            Err(Pause {
                kind: PauseKind::Credentials,
                ..
            }) => self.inner.metrics.login(false),
            Err(_) => {}
        }
        let mut conn = opened?;
        conn.generation = current.generation;
        tracing::debug!(
            upstream = %format!("{}:{}", current.cfg.host, current.cfg.port),
            max_size = ?conn.max_size,
            "upstream connection open and authenticated"
        );
        Ok(conn)
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.inner.idle.lock().expect("pool lock");
        while let Some(entry) = idle.pop() {
            if self.usable(&entry) {
                return Some(entry.conn);
            }
            tokio::spawn(quit(entry.conn));
        }
        None
    }

    /// An idle connection may carry another message: not idle too long, and its OAuth2 token
    /// (which bounds the session) not about to expire.
    fn usable(&self, entry: &Idle) -> bool {
        let current = self.current();
        entry.generation == current.generation
            && entry.since.elapsed() < current.cfg.idle_timeout
            && entry
                .conn
                .expires
                .is_none_or(|e| e > Instant::now() + TOKEN_MARGIN)
    }

    fn put_idle(&self, conn: Conn) {
        self.inner.idle.lock().expect("pool lock").push(Idle {
            generation: conn.generation,
            conn,
            since: Instant::now(),
        });
    }

    /// Closes idle connections when they pass `upstream.idle_timeout` (before Gmail times them
    /// out itself), and all of them when `cancel` fires. Run it as a background task.
    pub async fn maintain(&self, cancel: CancellationToken) {
        let period = (self.current().cfg.idle_timeout / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = cancel.cancelled() => break,
            }
            let stale: Vec<Idle> = {
                let mut idle = self.inner.idle.lock().expect("pool lock");
                let (fresh, stale) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|e| self.usable(e));
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
async fn quit(mut conn: Conn) {
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.smtp.quit()).await;
}
