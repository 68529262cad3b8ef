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
//! - `setup`: the TLS context and credentials built from the config; `tls`: trust anchors
//!   and what a failed handshake means; `client`: the SMTP client (bytes, replies, timeouts);
//!   `connection`: opening an authenticated connection; `pool`: the connections kept between
//!   messages; `transaction`: MAIL/RCPT/DATA; `classify`: what a reply means; `rewrite`: the
//!   optional sender rewrites for Gmail; `api`: the Gmail API transport (`transport = "api"`),
//!   which replaces the SMTP client, connection, pool and transaction for its account.

pub mod api;
mod classify;
pub mod client;
mod connection;
mod pool;
mod rewrite;
mod setup;
mod tls;
mod transaction;
mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use classify::{Class, Failure, Stage, classify};
pub use connection::PROBE_AFTER;
pub use rewrite::Rewrite;
pub use setup::{Setup, SetupError};
pub use tls::TlsSetupError;
pub use upstreams::Upstreams;

use crate::observe::Metrics;
use connection::{Conn, OpenError};
use pool::{Idle, Pool};
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
    /// The upstream cannot be reached (network, timeout, no greeting).
    Unreachable,
    /// No secure session: STARTTLS missing or refused, a failed handshake or certificate
    /// check, or a port that speaks the other TLS mode.
    Tls,
    /// The upstream refuses our credentials or configuration (535, 534, 454 4.7.0, ...).
    Credentials,
    /// The account's sending quota is spent (550 5.4.5, ...).
    Quota,
    /// The upstream asks for less for a while (the Gmail API's 429, `rateLimitExceeded`),
    /// usually saying until when.
    RateLimited,
    /// The account's send budget shared with other replicas (`[cluster]`) is spent until the
    /// pause's `until`.
    Budget,
}

/// How long the upload of a `bytes`-long message may take: one `timeout`, and a second more
/// for every 32 KiB (a large message takes longer than one reply's wait), for SMTP and the API
/// alike.
pub(crate) fn upload_limit(timeout: Duration, bytes: usize) -> Duration {
    timeout + Duration::from_secs(bytes as u64 / (32 * 1024))
}

/// A reason to stop all delivery, with the upstream's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// Which kind of pause.
    pub kind: PauseKind,
    /// The reply or error behind it.
    pub reason: String,
    /// When the upstream said to come back (`Retry-After`), if it did; otherwise the
    /// scheduler's policy for `kind` decides.
    pub until: Option<std::time::SystemTime>,
}

impl Pause {
    /// A pause for `reason`, timed by the scheduler's policy.
    pub fn new(kind: PauseKind, reason: impl Into<String>) -> Pause {
        Pause {
            kind,
            reason: reason.into(),
            until: None,
        }
    }
}

impl std::fmt::Display for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            PauseKind::Unreachable => "upstream unavailable",
            PauseKind::Tls => "TLS with the upstream failed",
            PauseKind::Credentials => "upstream refused the login",
            PauseKind::Quota => "sending quota spent",
            PauseKind::RateLimited => "upstream rate limit",
            PauseKind::Budget => "send budget",
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
                kind: PauseKind::Unreachable | PauseKind::Tls | PauseKind::Credentials,
                ..
            })
        )
    }
}

/// The upstream server: settings, TLS, credentials, and the pool of authenticated connections.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    /// The account's name (fixed: another name is another upstream).
    name: String,
    /// Connections this upstream may have (its pool's size, fixed).
    max_connections: usize,
    /// When it last delivered (to drop a sender's own upstream once idle).
    last_used: std::sync::Mutex<Instant>,
    /// The settings in force; replaced by [`Upstream::reconfigure`].
    current: std::sync::RwLock<Arc<Current>>,
    pool: Pool,
    metrics: Metrics,
}

/// The set-up in force.
struct Current {
    setup: Setup,
    /// Bumped by every reconfiguration; a connection from an older one is not reused.
    generation: u64,
}

impl Upstream {
    /// Delivery to the upstream `setup` describes (nothing is connected yet), counting logins
    /// and transactions in `metrics`.
    pub fn new(setup: Setup, metrics: Metrics) -> Self {
        Upstream {
            inner: Arc::new(Inner {
                name: setup.cfg.name.clone(),
                max_connections: setup.cfg.max_connections,
                last_used: std::sync::Mutex::new(Instant::now()),
                pool: Pool::new(setup.cfg.max_connections),
                current: std::sync::RwLock::new(Arc::new(Current {
                    setup,
                    generation: 0,
                })),
                metrics,
            }),
        }
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn current(&self) -> Arc<Current> {
        self.inner.current.read().expect("settings lock").clone()
    }

    /// The settings in force.
    pub fn setup(&self) -> Setup {
        self.current().setup.clone()
    }

    /// Puts new settings (credentials, timeouts, CA file, ...) in force: idle connections are
    /// closed, and the next attempt connects and logs in with them. `max_connections` keeps
    /// its old value until a restart.
    pub fn reconfigure(&self, setup: Setup) {
        {
            let mut current = self.inner.current.write().expect("settings lock");
            let generation = current.generation + 1;
            let setup = setup.keeping_token_of(&current.setup);
            *current = Arc::new(Current { setup, generation });
        }
        self.inner.pool.close_idle();
    }

    /// Most attempts that can run at once.
    pub fn max_connections(&self) -> usize {
        self.current().setup.cfg.max_connections
    }

    /// No connection of it exists and it has not delivered for `idle`.
    pub fn unused_for(&self, idle: Duration) -> bool {
        self.inner.pool.is_empty(self.inner.max_connections)
            && self.inner.last_used.lock().expect("last use").elapsed() >= idle
    }

    /// Tries to deliver `msg` to `recipients`.
    pub async fn deliver(&self, msg: &Outgoing<'_>, recipients: &[String]) -> Report {
        let _slot = self.inner.pool.slot().await;
        *self.inner.last_used.lock().expect("last use") = Instant::now();
        let current = self.current();
        if let Some(api) = &current.setup.api {
            return api
                .send(&current.setup, msg, recipients, &self.inner.metrics)
                .await;
        }
        let per_tx = self.current().setup.cfg.max_recipients_per_message;
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
        let (timeout, pipelining) = {
            let cfg = &self.current().setup.cfg;
            (cfg.timeout, cfg.pipelining)
        };
        let mut conn = match self.inner.pool.take(|e| self.usable(e)) {
            Some(conn) => {
                self.inner.metrics.transaction(self.name(), true);
                conn
            }
            None => match self.open().await {
                Ok(conn) => {
                    self.inner.metrics.transaction(self.name(), false);
                    conn
                }
                Err(OpenError::Pause(p)) => return Err(p),
                Err(OpenError::NoMailbox(why)) => {
                    let outcome = RecipientOutcome::Failed(why);
                    return Ok((vec![Some(outcome); batch.len()], None));
                }
            },
        };
        for fresh in [false, true] {
            if let Some(max) = conn.caps.size()
                && msg.body.len() > max
            {
                let why = format!(
                    "the message is {} bytes and the upstream accepts at most {max} (its EHLO SIZE); not sent",
                    msg.body.len()
                );
                self.inner.pool.put(conn);
                return Ok((vec![Some(RecipientOutcome::Failed(why)); batch.len()], None));
            }
            let outgoing = Outgoing {
                declare_size: conn.caps.size().is_some(),
                ..*msg
            };
            match transaction::send(&mut conn, &outgoing, batch, timeout, pipelining).await {
                TxResult::Done {
                    outcomes,
                    reusable,
                    pause,
                } => {
                    if reusable {
                        self.inner.pool.put(conn);
                    }
                    return Ok((outcomes, pause));
                }
                TxResult::Lost(reason) if !fresh => {
                    tracing::debug!(%reason, "upstream connection lost; sending again on a new one");
                    conn = match self.open().await {
                        Ok(conn) => conn,
                        Err(OpenError::Pause(p)) => return Err(p),
                        Err(OpenError::NoMailbox(why)) => {
                            let outcome = RecipientOutcome::Failed(why);
                            return Ok((vec![Some(outcome); batch.len()], None));
                        }
                    };
                    self.inner.metrics.transaction(self.name(), false);
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
        if let Some(api) = &current.setup.api {
            let done = api.check(&current.setup).await;
            self.inner.metrics.login(self.name(), done.is_ok());
            return done;
        }
        let cfg = &current.setup.cfg;
        let conn = self.open().await.map_err(|e| match e {
            OpenError::Pause(p) => p,
            OpenError::NoMailbox(why) => Pause::new(PauseKind::Credentials, why),
        })?;
        let what = format!(
            "logged in to {}:{} ({}) as {} with {}; the server accepts messages up to {}; \
             it offers: {}",
            cfg.host,
            cfg.port,
            cfg.tls,
            cfg.label(),
            match cfg.auth {
                crate::config::AuthConfig::XOAuth2(_) => "XOAUTH2",
                crate::config::AuthConfig::Password(_) if conn.caps.auth("PLAIN") => "PLAIN",
                crate::config::AuthConfig::Password(_) => "LOGIN",
                crate::config::AuthConfig::None => "no AUTH (the relay service)",
                crate::config::AuthConfig::ServiceAccount(_) =>
                    "XOAUTH2 (service account, domain-wide delegation)",
            },
            conn.caps
                .size()
                .map_or_else(|| "an unstated size".to_owned(), |n| format!("{n} bytes")),
            conn.caps.keywords.join(", "),
        );
        conn.client.quit().await;
        Ok(what)
    }

    async fn open(&self) -> Result<Conn, OpenError> {
        let current = self.current();
        let opened = connection::open(&current.setup).await;
        match &opened {
            Ok(_) => self.inner.metrics.login(self.name(), true),
            Err(OpenError::Pause(Pause {
                kind: PauseKind::Credentials,
                ..
            })) => self.inner.metrics.login(self.name(), false),
            Err(_) => {}
        }
        let mut conn = opened?;
        conn.generation = current.generation;
        tracing::debug!(
            upstream = %format!("{}:{}", current.setup.cfg.host, current.setup.cfg.port),
            max_size = ?conn.caps.size(),
            "upstream connection open and authenticated"
        );
        Ok(conn)
    }

    /// An idle connection may carry another message: made with the settings in force, not
    /// idle too long, and its OAuth2 token (which bounds the session) not about to expire.
    fn usable(&self, entry: &Idle) -> bool {
        let current = self.current();
        entry.conn.generation == current.generation
            && entry.since.elapsed() < current.setup.cfg.idle_timeout
            && entry
                .conn
                .expires
                .is_none_or(|e| e > Instant::now() + TOKEN_MARGIN)
    }

    /// How often idle connections should be checked: a quarter of `idle_timeout`, at least
    /// every 100 ms.
    pub fn maintenance_period(&self) -> Duration {
        (self.current().setup.cfg.idle_timeout / 4).max(Duration::from_millis(100))
    }

    /// Closes idle connections that passed `upstream.idle_timeout` (before Gmail times them
    /// out itself) or whose token is about to expire.
    pub async fn close_stale(&self) {
        self.inner.pool.close_stale(|e| self.usable(e)).await;
    }

    /// Says QUIT on every idle connection (shutdown, or the account was removed).
    pub async fn close_all(&self) {
        self.inner.pool.close_all().await;
    }
}
