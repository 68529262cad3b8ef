//! The pool of authenticated upstream connections: at most `upstream.max_connections` exist at
//! once (one slot each), and those not carrying a message wait here for the next one.
//!
//! Logging in is what Gmail throttles (`454 4.7.0 Too many login attempts`), so a connection is
//! kept for many messages: taken for an attempt, put back after it. Whether a waiting
//! connection may still be used (not idle too long, its OAuth2 token not about to expire, made
//! with the settings in force) is the caller's rule, passed in; the pool only keeps them, and
//! says QUIT to the ones that fail the rule.

use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::connection::Conn;

/// A connection waiting for the next message, and since when.
pub(super) struct Idle {
    pub conn: Conn,
    pub since: Instant,
}

/// Slots and idle connections.
pub(super) struct Pool {
    slots: Semaphore,
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    /// A pool of at most `max` connections.
    pub fn new(max: usize) -> Pool {
        Pool {
            slots: Semaphore::new(max),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Waits for a slot: the right to hold one connection for one attempt.
    pub async fn slot(&self) -> SemaphorePermit<'_> {
        self.slots
            .acquire()
            .await
            .expect("the pool's semaphore is never closed")
    }

    /// The most recently used idle connection that passes `usable`; the others that fail it
    /// are closed.
    pub fn take(&self, usable: impl Fn(&Idle) -> bool) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(entry) = idle.pop() {
            if usable(&entry) {
                return Some(entry.conn);
            }
            tokio::spawn(entry.conn.client.quit());
        }
        None
    }

    /// Keeps `conn` for the next message.
    pub fn put(&self, conn: Conn) {
        self.idle.lock().expect("pool lock").push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// No connection exists: none in use, none idle.
    pub fn is_empty(&self, max: usize) -> bool {
        self.slots.available_permits() == max && self.idle.lock().expect("pool lock").is_empty()
    }

    /// Closes every idle connection (the settings changed).
    pub fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().expect("pool lock"));
        for e in idle {
            tokio::spawn(e.conn.client.quit());
        }
    }

    /// Closes the idle connections that fail `usable` (before the server times them out).
    pub async fn close_stale(&self, usable: impl Fn(&Idle) -> bool) {
        let stale: Vec<Idle> = {
            let mut idle = self.idle.lock().expect("pool lock");
            let (fresh, stale) = std::mem::take(&mut *idle).into_iter().partition(&usable);
            *idle = fresh;
            stale
        };
        for e in stale {
            e.conn.client.quit().await;
        }
    }

    /// Says QUIT on every idle connection (shutdown).
    pub async fn close_all(&self) {
        let all = std::mem::take(&mut *self.idle.lock().expect("pool lock"));
        for e in all {
            e.conn.client.quit().await;
        }
    }
}
