//! One lane per account: its due messages, its pause, its send budget and its attempts
//! running, so that what happens to one account (a refused login, a spent quota, a budget)
//! never holds up another.
//!
//! Dispatch runs in two passes. First every lane starts its own due mail, up to its
//! connections (one probe while paused) and within its budget. Then the mail of each lane
//! paused for quota or credentials is offered to the accounts in its `failover` list, in
//! order: the first one that is running (not paused itself) with a free connection and room
//! in its budget carries it. Failover is one hop (a failover account's own list is not
//! followed) and per recipient (only recipients still pending are sent), so it never loops and
//! never sends a recipient twice. A message keeps its own account: after a failover attempt it
//! goes back to its own lane, and when that account resumes its mail goes through it again.

use std::collections::{BTreeSet, HashSet};

use tokio::time::Instant;

use super::budget::SendBudget;
use super::pause::PauseState;
use crate::delivery::{PauseKind, Rewrite};
use crate::spool::QueueId;

/// One account's settings, as the scheduler uses them.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// The account's name.
    pub name: String,
    /// Who it logs in as (its username, or its name and host), for people.
    pub label: String,
    /// Most attempts at once (its `max_connections`; kept until a restart).
    pub concurrency: usize,
    /// Most recipients per rolling minute.
    pub max_per_minute: Option<u32>,
    /// Most recipients per rolling 24 hours.
    pub max_per_day: Option<u32>,
    /// Accounts that carry its mail while it is paused for quota or credentials.
    pub failover: Vec<String>,
    /// Sender rewrites to this account.
    pub rewrite: Rewrite,
}

/// One account's share of the scheduler.
pub struct Lane {
    pub settings: AccountSettings,
    /// Its messages waiting for their time, by time.
    pub due: BTreeSet<(Instant, QueueId)>,
    /// Attempts sending through this account now (its own mail, and mail it carries).
    pub running: usize,
    pub pause: PauseState,
    pub budget: SendBudget,
    /// Messages put off by this account's pause; due at once when it ends.
    pub put_off: HashSet<QueueId>,
}

impl Lane {
    /// A lane for `settings`, its budget resuming from `saved`.
    pub fn new(settings: AccountSettings, saved: Option<&[u8]>) -> Lane {
        Lane {
            budget: SendBudget::new(settings.max_per_minute, settings.max_per_day, saved),
            settings,
            due: BTreeSet::new(),
            running: 0,
            pause: PauseState::default(),
            put_off: HashSet::new(),
        }
    }

    /// How many attempts may send through it at `now`: none on hold or while paused, one to
    /// probe once the pause is over, its connections when running.
    pub fn capacity(&self, now: Instant, hold: bool) -> usize {
        if hold {
            return 0;
        }
        self.pause.capacity(now, self.settings.concurrency)
    }

    /// It can start another attempt now.
    pub fn free(&self, now: Instant, hold: bool) -> bool {
        self.running < self.capacity(now, hold)
    }

    /// Its mail should go through its failover accounts: it is paused for a cause that is the
    /// account's own (quota, credentials), not the network's.
    pub fn wants_failover(&self) -> bool {
        !self.settings.failover.is_empty()
            && matches!(
                self.pause.kind(),
                Some(PauseKind::Quota | PauseKind::Credentials)
            )
    }

    /// It may carry another account's mail: it is not paused at all.
    pub fn can_carry(&self) -> bool {
        self.pause.kind().is_none()
    }

    /// Puts new settings in force; its connections keep their number until a restart.
    pub fn reconfigure(&mut self, mut settings: AccountSettings) {
        settings.concurrency = self.settings.concurrency;
        self.budget
            .set_limits(settings.max_per_minute, settings.max_per_day);
        self.settings = settings;
    }
}
