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
//!
//! Placing messages in lanes lives here too: a message waits in its account's lane, or, for an
//! account that logs in as each sender, in the lane of its sender's own mailbox
//! (`ACCOUNT/mailbox`), made on its first message and dropped when it is idle; mail of an
//! account that is not configured waits among the orphans.

use std::collections::{BTreeSet, HashSet};

use std::time::SystemTime;

use tokio::time::Instant;

use super::budget::SendBudget;
use super::pause::PauseState;
use super::{Courier, Meta, Scheduler};
use crate::delivery::{PauseKind, Rewrite};
use crate::spool::{QueueId, QueuedMessage};

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
    /// Each sender logs in as its own mailbox: one lane per sender, `NAME/mailbox`, made when
    /// its first message is scheduled and dropped when it is idle.
    pub per_sender: bool,
}

impl AccountSettings {
    /// The settings of the lane of one sender's own mailbox.
    pub fn for_mailbox(&self, lane: &str, mailbox: &str) -> AccountSettings {
        AccountSettings {
            name: lane.to_owned(),
            label: mailbox.to_owned(),
            per_sender: false,
            ..self.clone()
        }
    }
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

    /// Nothing is waiting, running or reserved, and no pause holds it any more: a sender's
    /// own lane may go. A pause whose probe time has come holds nothing once there is no mail
    /// to probe with; kept, it would show the mailbox paused for good (and `/healthz` red).
    /// Until then it stays, so new mail from that sender waits for the probe time.
    pub fn idle(&self, now: Instant) -> bool {
        self.due.is_empty()
            && self.running == 0
            && self.pause.wake(now).is_none()
            && !self.budget.has_reservations()
    }

    /// Puts new settings in force; its connections keep their number until a restart.
    pub fn reconfigure(&mut self, mut settings: AccountSettings) {
        settings.concurrency = self.settings.concurrency;
        self.budget
            .set_limits(settings.max_per_minute, settings.max_per_day);
        self.settings = settings;
    }
}

impl<C: Courier> Scheduler<C> {
    /// Schedules a message the scheduler did not know (recovered, committed, released).
    pub(super) fn schedule_new(&mut self, q: QueuedMessage) {
        let lane = self.lane_of(&q.account, &q.sender);
        self.schedule(q.id, q.next_attempt, q.pending, (q.account, q.sender), lane);
    }

    /// The lane of mail of `account` from `sender`: the account's, or for an account that
    /// logs in as each sender, the sender's own (made now if it has none).
    pub(super) fn lane_of(&mut self, account: &str, sender: &str) -> String {
        let Some(base) = self.lanes.get(account) else {
            return account.to_owned();
        };
        if !base.settings.per_sender || sender.is_empty() {
            return account.to_owned();
        }
        let mailbox = sender.to_lowercase();
        let name = crate::config::sender_lane(account, &mailbox);
        if !self.lanes.contains_key(&name) {
            let settings = base.settings.for_mailbox(&name, &mailbox);
            let lane = Lane::new(settings, self.records.of(&name).as_deref());
            self.lanes.insert(name.clone(), lane);
        }
        name
    }

    /// Puts a message in its lane, due at `at` (among the orphans if its account is not
    /// configured).
    pub(super) fn schedule(
        &mut self,
        id: QueueId,
        at: SystemTime,
        pending: usize,
        (account, sender): (String, String),
        lane: String,
    ) {
        let due = self.ctx.clock.instant_of(at);
        match self.lanes.get_mut(&lane) {
            Some(l) => {
                l.due.insert((due, id));
            }
            None => {
                self.orphans
                    .entry(lane.clone())
                    .or_default()
                    .insert((due, id));
            }
        }
        self.meta.insert(
            id,
            Meta {
                pending,
                account,
                sender,
                lane,
                due: Some(due),
            },
        );
    }

    /// Schedules a known message again, in the lane it had.
    pub(super) fn reschedule(&mut self, id: QueueId, at: SystemTime, pending: usize) {
        let Some(meta) = self.meta.get(&id) else {
            return;
        };
        let from = (meta.account.clone(), meta.sender.clone());
        let lane = meta.lane.clone();
        self.schedule(id, at, pending, from, lane);
    }

    /// Forgets the senders' own lanes that have nothing left to do (their budget records
    /// stay, so a lane made again later resumes its count).
    pub(super) fn drop_idle_sender_lanes(&mut self) {
        let now = Instant::now();
        self.lanes
            .retain(|name, lane| crate::config::split_lane(name).1.is_none() || !lane.idle(now));
    }

    /// Takes a waiting message out of its lane (it stays known, e.g. while it is attempted).
    pub(super) fn unschedule(&mut self, id: QueueId) {
        let Some(meta) = self.meta.get_mut(&id) else {
            return;
        };
        if let Some(due) = meta.due.take() {
            let entry = (due, id);
            match self.lanes.get_mut(&meta.lane) {
                Some(lane) => {
                    lane.due.remove(&entry);
                }
                None => {
                    if let Some(set) = self.orphans.get_mut(&meta.lane) {
                        set.remove(&entry);
                    }
                }
            }
        }
    }

    /// Makes these waiting messages due now.
    pub(super) fn bring_forward(&mut self, ids: impl IntoIterator<Item = QueueId>) {
        let now = Instant::now();
        for id in ids {
            let Some(meta) = self.meta.get(&id) else {
                continue;
            };
            if meta.due.is_none() {
                continue;
            }
            let pending = meta.pending;
            self.unschedule(id);
            self.reschedule(id, self.ctx.clock.at(now), pending);
        }
    }
}
