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
//!
//! Contract: the reply to the end of DATA is `250 2.0.0 OK queued as <id>` only after the
//! spool's commit has returned (message and directory entry fsynced). A client that disconnects
//! before that, or gets any other reply, has nothing queued. The intake never talks to the
//! upstream.

mod command;
mod connection;
mod data;
mod listener;
mod message;
mod reply;
mod session;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenConfig;
use crate::policy::Policy;
use crate::spool::Spool;

/// Starts an accept loop for each listener on `tracker`; they stop when `cancel` fires, and
/// open sessions then finish their current command or message and say `421`.
pub fn start(
    listeners: Vec<TcpListener>,
    cfg: &ListenConfig,
    spool: Spool,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) {
    let shared = Arc::new(connection::Shared {
        settings: Arc::new(session::Settings {
            hostname: cfg.hostname.clone(),
            policy: Policy::new(cfg),
        }),
        spool,
        idle_timeout: cfg.idle_timeout,
        data_timeout: cfg.data_timeout,
    });
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let per_client = listener::PerClient::new(cfg.max_connections_per_client);
    for listener in listeners {
        tracker.spawn(listener::accept_loop(
            listener,
            shared.clone(),
            limit.clone(),
            per_client.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
}
