//! The scheduler: decides what is due when, through which account, and how many attempts run
//! at once.
//!
//! One task owns the schedule; nothing else touches it. New messages arrive on the spool's
//! commit channel, outcomes come back from the attempt tasks it spawns, and it sleeps until the
//! next due time. Each message belongs to an account (chosen when it was queued); each account
//! has its own lane (`lanes`): its due messages, its pause, its send budget, and at most its
//! `max_connections` attempts at once. A message of an account paused for quota or
//! credentials goes through the account's `failover` accounts meanwhile.
//!
//! **Pause** (`pause`, per account). When an attempt reports a pause, the scheduler stops
//! starting attempts through that account until a backoff time, then runs a single probe
//! attempt; when that gets through, the account resumes at full width. The backoff depends on
//! the cause:
//! - upstream unreachable or TLS failing: `queue.retry_min` doubling to `queue.retry_max`;
//! - credentials or configuration refused (535, 534, 454 4.7.0, ...): `delivery.auth_pause_min`
//!   (1 minute) doubling to `delivery.auth_pause_max` (30 minutes);
//! - sending quota spent (550 5.4.5, ...): a probe every `delivery.quota_pause` (1 hour).
//!
//! Nothing is bounced or failed because of a pause, and a message is never expired while the
//! cause is our credentials or quota (fixing them, or waiting, delivers it). Pausing also keeps
//! the relay from logging in over and over, which Gmail answers with
//! `454 4.7.0 Too many login attempts`. A `queue retry` or a reload with new credentials probes
//! at once without pushing the automatic schedule out.
//!
//! **Budget** (`budget`, per account). Its `max_per_minute` / `max_per_day`: an attempt starts
//! only if its recipients fit, and they are reserved until it reports.
//!
//! **Hold.** With `delivery.hold` nothing is attempted; messages are queued only.
//!
//! **Attempts.** Each runs in its own task, mapped to its message by task id, so an attempt
//! that panics (a bug) is still accounted for: its message is scheduled again as after a
//! temporary failure and its budget reservation released, and the bug is logged.
//!
//! **Accounts that go away.** Mail queued for an account a reload removed stays queued (it is
//! never re-routed silently) until the account returns or the operator requeues it to
//! another; `queue status` says so.
//!
//! Shutdown: when cancelled, no new attempt starts; attempts in flight are awaited (each is
//! bounded by the upstream timeouts; the daemon's grace period bounds the whole).

mod attempt;
pub(crate) mod budget;
mod commands;
mod lanes;
mod pause;
mod retry;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use attempt::{AttemptReport, Next, Route};
pub use commands::{AccountStatus, Command, Handle, PauseStatus, Status, cause_name, rfc3339};
pub use lanes::AccountSettings;
pub use pause::{PauseState, ProbePlan};
pub use retry::RetryPolicy;

use crate::delivery::{Outgoing, Report, Upstreams};
use crate::observe::events;
use crate::spool::{QueueId, QueuedMessage, Spool};
use budget::{Admit, Records};
use lanes::Lane;

/// Something that can attempt a delivery through an account: the real [`Upstreams`], or a
/// script in tests.
pub trait Courier: Clone + Send + Sync + 'static {
    /// Tries to deliver `msg` to `recipients` through `account`; outcomes in the order of
    /// `recipients`.
    fn deliver(
        &self,
        account: &str,
        msg: &Outgoing<'_>,
        recipients: &[String],
    ) -> impl Future<Output = Report> + Send;
}

impl Courier for Upstreams {
    fn deliver(
        &self,
        account: &str,
        msg: &Outgoing<'_>,
        recipients: &[String],
    ) -> impl Future<Output = Report> + Send {
        Upstreams::deliver(self, account, msg, recipients)
    }
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Retry schedule and maximum age.
    pub policy: RetryPolicy,
    /// Attempt nothing (`delivery.hold`).
    pub hold: bool,
    /// Who is told about failed mail (`delivery.bounce`).
    pub bounce: crate::bounce::BounceTo,
    /// The relay's name (for DSNs).
    pub hostname: String,
    /// The accounts, the default first.
    pub accounts: Vec<AccountSettings>,
    /// Where attempts are counted.
    pub metrics: crate::observe::Metrics,
}

/// What the scheduler keeps about a queued message.
struct Meta {
    /// Recipients still to deliver (what an attempt costs against the budget).
    pending: usize,
    /// Its account.
    account: String,
    /// Its envelope sender (which lane it takes when its account logs in as each sender).
    sender: String,
    /// Its lane: the account, or `ACCOUNT/mailbox` for an account that logs in as each sender.
    lane: String,
    /// When it is due, while it waits in a lane (or among the orphans).
    due: Option<Instant>,
}

/// An attempt in flight.
struct InFlight {
    /// Its recipients (what it costs against the budget).
    cost: usize,
    /// How it schedules the next probe if it pauses delivery.
    plan: ProbePlan,
    /// The account it is sent through.
    via: String,
}

struct Scheduler<C: Courier> {
    ctx: Arc<attempt::Ctx<C>>,
    settings: Settings,
    lanes: BTreeMap<String, Lane>,
    /// Messages of accounts that are not configured (removed by a reload), by account.
    orphans: BTreeMap<String, BTreeSet<(Instant, QueueId)>>,
    meta: HashMap<QueueId, Meta>,
    running: JoinSet<AttemptReport>,
    /// The message of each attempt task.
    tasks: HashMap<tokio::task::Id, QueueId>,
    /// Messages with an attempt running.
    in_flight: HashMap<QueueId, InFlight>,
    /// Messages held by the operator.
    held: HashSet<QueueId>,
    /// Attempts in a row that panicked, per message (sets their backoff).
    panics: HashMap<QueueId, u32>,
    /// Every account's budget record, as `rate.json` keeps it.
    records: Records,
    /// Writes `records` to `rate.json`.
    record_writer: budget::RecordWriter,
}

/// Runs the scheduler until `cancel` fires and the attempts in flight have finished.
pub async fn run<C: Courier>(
    spool: Spool,
    courier: C,
    settings: Settings,
    recovered: Vec<QueuedMessage>,
    mut committed: mpsc::UnboundedReceiver<QueuedMessage>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    cancel: CancellationToken,
) {
    let records = Records::parse(spool.load_budget().await.as_deref());
    let lanes = settings
        .accounts
        .iter()
        .map(|a| {
            let lane = Lane::new(a.clone(), records.of(&a.name).as_deref());
            (a.name.clone(), lane)
        })
        .collect();
    let record_writer = budget::RecordWriter::start(spool.clone());
    let mut s = Scheduler {
        ctx: Arc::new(attempt::Ctx::new(spool, courier, &settings, Clock::start())),
        settings,
        lanes,
        orphans: BTreeMap::new(),
        meta: HashMap::new(),
        running: JoinSet::new(),
        tasks: HashMap::new(),
        in_flight: HashMap::new(),
        held: HashSet::new(),
        panics: HashMap::new(),
        record_writer,
        records,
    };
    for q in recovered {
        if q.held {
            s.held.insert(q.id);
        } else {
            s.schedule_new(q);
        }
    }
    s.report_orphans();
    loop {
        s.dispatch();
        let wake = s.next_wake();
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(q) = committed.recv() => s.schedule_new(q),
            Some(cmd) = commands.recv() => s.command(cmd),
            Some(done) = s.running.join_next_with_id(), if !s.running.is_empty() => s.handle(done),
            _ = sleep_until(wake), if wake.is_some() => {}
        }
    }
    while let Some(done) = s.running.join_next_with_id().await {
        s.handle(done);
    }
    s.record_writer.finish().await;
}

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t).await;
    }
}

/// The scheduler's clock: wall-clock times (which the spool records) read off tokio's
/// monotonic clock from one anchor, so that the two never disagree within a run, and tests in
/// paused tokio time see wall-clock time move with it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    /// Anchored now.
    pub fn start() -> Clock {
        Clock {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }

    /// The wall-clock time of a monotonic instant (now, if it is in the past).
    pub fn at(&self, t: Instant) -> SystemTime {
        self.now() + t.saturating_duration_since(Instant::now())
    }

    /// The monotonic instant for a wall-clock time (now, if it is in the past).
    pub fn instant_of(&self, t: SystemTime) -> Instant {
        let now = Instant::now();
        match t.duration_since(self.now()) {
            Ok(ahead) => now + ahead,
            Err(_) => now,
        }
    }
}

impl<C: Courier> Scheduler<C> {
    /// Probes the pause of `account` now (the operator asked, or its credentials changed):
    /// its message due first is the probe.
    fn probe_now(&mut self, account: &str) {
        let Some(lane) = self.lanes.get_mut(account) else {
            return;
        };
        if lane.pause.probe_now(Instant::now()) {
            let first = lane.due.first().map(|&(_, id)| id);
            self.bring_forward(first);
        }
    }

    fn dispatch(&mut self) {
        // (Here rather than only after a delivery: a withdrawn message, or a pause whose probe
        // time came with no mail left, also leaves a sender's lane with nothing to do.)
        self.drop_idle_sender_lanes();
        let now = Instant::now();
        let hold = self.settings.hold;
        let names: Vec<String> = self.lanes.keys().cloned().collect();
        // Each account's own mail.
        for name in &names {
            while let Some(lane) = self.lanes.get_mut(name) {
                if !lane.free(now, hold) {
                    break;
                }
                let Some(&(at, id)) = lane.due.first() else {
                    break;
                };
                if at > now || !self.admit(name, id) {
                    break;
                }
                self.start(id, name);
            }
        }
        // The mail of accounts paused for quota or credentials, through their failover.
        for name in &names {
            while let Some(lane) = self.lanes.get(name) {
                if hold || !lane.wants_failover() {
                    break;
                }
                let Some(&(at, id)) = lane.due.first() else {
                    break;
                };
                if at > now {
                    break;
                }
                let carrier = lane.settings.failover.clone().into_iter().find(|f| {
                    self.lanes
                        .get(f)
                        .is_some_and(|l| l.can_carry() && l.free(now, hold))
                        && self.admit(f, id)
                });
                let Some(carrier) = carrier else {
                    break;
                };
                self.start(id, &carrier);
            }
        }
    }

    /// Reserves message `id`'s recipients in the budget of `account`, if they fit now.
    fn admit(&mut self, account: &str, id: QueueId) -> bool {
        let cost = self.meta.get(&id).map_or(1, |m| m.pending) as u32;
        let Some(lane) = self.lanes.get_mut(account) else {
            return false;
        };
        let was_waiting = lane.budget.waiting();
        match lane.budget.admit(id, cost, &self.ctx.clock) {
            Admit::Now => true,
            // Woken again when an attempt reports.
            Admit::InFlight => false,
            Admit::Until(until) => {
                if !was_waiting {
                    events::budget_spent(account, until);
                }
                false
            }
        }
    }

    /// Starts the attempt for message `id` through the account `via`.
    fn start(&mut self, id: QueueId, via: &str) {
        self.unschedule(id);
        let Some(meta) = self.meta.get(&id) else {
            return;
        };
        let (cost, own) = (meta.pending, meta.lane.clone());
        let Some(lane) = self.lanes.get_mut(via) else {
            return;
        };
        lane.running += 1;
        let plan = lane.pause.plan(&self.ctx.clock);
        let route = Route {
            via: (via != own).then(|| via.to_owned()),
            account: own,
        };
        let ctx = self.ctx.clone();
        let task = self.running.spawn(attempt::run(ctx, id, route, plan));
        self.tasks.insert(task.id(), id);
        self.in_flight.insert(
            id,
            InFlight {
                cost,
                plan,
                via: via.to_owned(),
            },
        );
    }

    /// When the loop must wake up to dispatch, if ever.
    fn next_wake(&self) -> Option<Instant> {
        if self.settings.hold {
            return None;
        }
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        for lane in self.lanes.values() {
            if let Some(until) = lane.pause.wake(now) {
                at(until);
            }
            if let Some(b) = lane.budget.wake() {
                at(b);
            }
            let Some(&(due, _)) = lane.due.first() else {
                continue;
            };
            // Wake for due mail only when something can take it, so a lane stuck behind a
            // pause or a budget does not spin the loop.
            let own = lane.free(now, false) && !lane.budget.blocked();
            if own || (lane.wants_failover() && self.carrier_free(lane, now)) {
                at(due);
            }
        }
        wake
    }

    /// One of `lane`'s failover accounts could carry a message now.
    fn carrier_free(&self, lane: &Lane, now: Instant) -> bool {
        lane.settings.failover.iter().any(|f| {
            self.lanes.get(f).is_some_and(|c| {
                c.can_carry() && c.free(now, self.settings.hold) && !c.budget.blocked()
            })
        })
    }

    fn handle(&mut self, done: Result<(tokio::task::Id, AttemptReport), JoinError>) {
        let (task, result) = match done {
            Ok((task, report)) => (task, Ok(report)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(id) = self.tasks.remove(&task) else {
            tracing::error!(
                ?task,
                "an attempt task ended that the scheduler did not start"
            );
            return;
        };
        let Some(InFlight { cost, plan, via }) = self.in_flight.remove(&id) else {
            return;
        };
        if let Some(lane) = self.lanes.get_mut(&via) {
            lane.running = lane.running.saturating_sub(1);
        }
        let report = match result {
            Ok(report) => report,
            Err(e) => return self.attempt_died(id, cost, &via, &e),
        };
        self.panics.remove(&id);
        let own = self
            .meta
            .get(&id)
            .map_or_else(|| via.clone(), |m| m.lane.clone());
        if let Some(lane) = self.lanes.get_mut(&via)
            && report.reached_upstream
            && lane.pause.resume()
        {
            events::upstream_resumed(&via);
            let put_off: Vec<QueueId> = lane.put_off.drain().collect();
            self.bring_forward(put_off);
        }
        self.settle_budget(&via, id, report.delivered as u32);
        match report.next {
            Next::Done => {
                self.meta.remove(&id);
            }
            Next::At { at, pending } => self.reschedule(id, at, pending),
            Next::Pause { at, pending, pause } => {
                if let Some(lane) = self.lanes.get_mut(&via) {
                    lane.put_off.insert(id);
                    let until = self.ctx.clock.instant_of(at);
                    if lane.pause.pause(pause.clone(), until, plan) {
                        events::upstream_paused(
                            &via,
                            cause_name(pause.kind),
                            &pause.to_string(),
                            at,
                        );
                    }
                }
                // An account whose mail has a failover account does not make it wait for the
                // pause: it is due now, for the failover account (or the probe).
                let due = match self.lanes.get(&own) {
                    Some(owner) if owner.wants_failover() => self.ctx.clock.now(),
                    _ => at,
                };
                self.reschedule(id, due, pending);
            }
        }
    }

    /// Records `delivered` recipients of message `id` against the budget of `via`, and saves
    /// the budgets when that changed them.
    fn settle_budget(&mut self, via: &str, id: QueueId, delivered: u32) {
        let now = self.ctx.clock.now();
        let Some(lane) = self.lanes.get_mut(via) else {
            return;
        };
        if !lane.budget.settle(id, delivered, now) {
            return;
        }
        self.records.set(via, &lane.budget.save());
        self.record_writer.write(&self.records);
    }

    /// An attempt task ended without a report: it panicked (a bug) or was cancelled. The
    /// message is on disk as it was before the attempt (or with the outcomes it recorded);
    /// it is tried again like after a temporary failure.
    fn attempt_died(&mut self, id: QueueId, cost: usize, via: &str, e: &JoinError) {
        if let Some(lane) = self.lanes.get_mut(via) {
            lane.budget.release(id);
        }
        let panics = self.panics.entry(id).or_insert(0);
        *panics += 1;
        let at = self.ctx.clock.now() + self.ctx.policy.delay(*panics, fastrand::f64());
        events::attempt_crashed(&id.to_string(), &e.to_string(), at);
        self.reschedule(id, at, cost);
    }

    /// Says, once per account, that mail waits for an account that is not configured.
    fn report_orphans(&self) {
        for (account, waiting) in &self.orphans {
            if !waiting.is_empty() {
                events::account_missing(account, waiting.len());
            }
        }
    }
}

#[cfg(test)]
mod tests;
