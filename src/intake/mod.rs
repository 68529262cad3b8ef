//! The intake: SMTP listeners that accept mail from local clients and queue it durably.
//!
//! - `listener`: accept loops; refuses clients outside `listen.allowed_networks` with
//!   `554 5.7.1` before they can send anything, and connections over `listen.max_connections`
//!   or `listen.max_connections_per_client` with `421 4.7.0`.
//! - `connection`: the I/O loop of one client (timeouts, line limits, pipelining).
//! - `session`: the RFC 5321 state machine (sans-IO).
//! - `command`: command parsing (smtp-proto plus legacy allowances).
//! - `data`: the DATA reader (dot-unstuffing, bare LF, end only at CRLF.CRLF, size limit).
//! - `message`: the `Received:` header the relay adds.
//! - `reply`: every reply the intake sends.
//! - `tls`: the listener certificate and STARTTLS / implicit-TLS client streams.
//! - `sasl`: the AUTH PLAIN / LOGIN exchange for clients that authenticate.
//!
//! Who may send: clients in `listen.allowed_networks` without more ado. When `listen.users` is
//! set, clients outside those networks are admitted too, but must AUTH (over TLS, or from
//! loopback) before MAIL; without users they are refused at connect.
//!
//! Contract: the reply to the end of DATA is `250 2.0.0 OK queued as <id>` only after the
//! spool's commit has returned (message and directory entry fsynced). A client that disconnects
//! before that, or gets any other reply, has nothing queued. The intake never talks to the
//! upstream.

mod command;
mod connection;
mod data;
#[doc(hidden)]
pub mod fuzz;
mod listener;
mod message;
mod reply;
mod sasl;
mod session;
mod tls;

use std::sync::Arc;

use tokio::net::TcpListener;

pub use tls::ListenTlsError;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Users;
use crate::config::{ListenConfig, ListenerKind};
use crate::observe::Metrics;
use crate::policy::{Policy, Router};
use crate::spool::Spool;

/// Why the intake could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ListenSetupError {
    /// The listener certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] ListenTlsError),
    /// A `listen.users` entry is unusable.
    #[error("{origin}: {reason}")]
    User {
        /// Where the entry is (`listen.users[0]`, `listen.users_file (path line 3)`).
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The `[listen]` section with what is built from it: the users (hashes parsed) and the TLS
/// acceptor (certificate and key loaded). Made once per configuration, by `daemon::prepare`.
#[derive(Clone)]
pub struct Setup {
    /// The settings.
    pub cfg: ListenConfig,
    users: Users,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Arc<Router>,
}

impl Setup {
    /// Parses the users and loads the certificate of `cfg`; `router` chooses each message's
    /// account from its sender.
    pub fn new(cfg: ListenConfig, router: Router) -> Result<Setup, ListenSetupError> {
        let users =
            Users::parse(cfg.users.iter().map(|u| u.line.as_str())).map_err(|(i, why)| {
                ListenSetupError::User {
                    origin: cfg.users[i].origin.clone(),
                    reason: why,
                }
            })?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        Ok(Setup {
            cfg,
            users,
            tls,
            router: Arc::new(router),
        })
    }
}

/// The running intake's settings: each new connection takes the ones in force, and
/// [`Intake::reconfigure`] changes them for the connections that follow (open sessions keep
/// theirs).
#[derive(Clone)]
pub struct Intake {
    current: Arc<std::sync::RwLock<Arc<connection::Shared>>>,
}

impl Intake {
    fn snapshot(&self) -> Arc<connection::Shared> {
        self.current.read().expect("intake settings lock").clone()
    }

    /// Puts the policy, users, host name, timeouts and certificate of `setup` in force for new
    /// connections. Addresses and connection limits keep their values until a restart.
    pub fn reconfigure(&self, setup: &Setup) {
        let old = self.snapshot();
        let shared = shared(setup, old.queue.clone(), old.metrics.clone());
        *self.current.write().expect("intake settings lock") = Arc::new(shared);
    }
}

fn shared(setup: &Setup, spool: Spool, metrics: Metrics) -> connection::Shared {
    let cfg = &setup.cfg;
    connection::Shared {
        settings: Arc::new(session::Settings {
            hostname: cfg.hostname.clone(),
            policy: Policy::new(cfg),
            users: setup.users.clone(),
            plaintext_auth: cfg.danger_allow_plaintext_auth,
        }),
        queue: spool,
        idle_timeout: cfg.idle_timeout,
        data_timeout: cfg.data_timeout,
        tls: setup.tls.clone(),
        router: setup.router.clone(),
        metrics,
    }
}

/// Starts an accept loop for each listener (with its kind, as bound by the daemon from
/// [`ListenConfig::listeners`]) on `tracker`; they stop when `cancel` fires, and open sessions
/// then finish their current command or message and say `421`.
pub fn start(
    listeners: Vec<(TcpListener, ListenerKind)>,
    setup: &Setup,
    spool: Spool,
    metrics: Metrics,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Intake {
    let intake = Intake {
        current: Arc::new(std::sync::RwLock::new(Arc::new(shared(
            setup, spool, metrics,
        )))),
    };
    let limit = Arc::new(Semaphore::new(setup.cfg.max_connections));
    let per_client = listener::PerClient::new(setup.cfg.max_connections_per_client);
    for (socket, kind) in listeners {
        let endpoint = listener::Endpoint {
            listener: socket,
            kind,
        };
        tracker.spawn(listener::accept_loop(
            endpoint,
            intake.clone(),
            limit.clone(),
            per_client.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    intake
}
