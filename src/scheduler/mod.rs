//! The scheduler: decides what is due when, and how many attempts run at once.
//!
//! One task owns the schedule (a set of `(due, id)` ordered by time); nothing else touches it.
//! New messages arrive on the spool's commit channel, outcomes come back from the attempt tasks
//! it spawns, and it sleeps until the next due time. At most `upstream.max_connections`
//! attempts run at once.
//!
//! **Pause** (`pause`). When an attempt reports a pause, the scheduler stops starting
//! attempts until a backoff time, then runs a single probe attempt; when that gets through,
//! delivery resumes at full width. The backoff depends on the cause:
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
//! **Budget** (`budget`). `delivery.max_per_minute` / `max_per_day`: an attempt starts only if
//! its recipients fit, and they are reserved until it reports.
//!
//! **Hold.** With `delivery.hold` nothing is attempted; messages are queued only.
//!
//! **Attempts.** Each runs in its own task, mapped to its message by task id, so an attempt
//! that panics (a bug) is still accounted for: its message is scheduled again as after a
//! temporary failure and its budget reservation released, and the bug is logged.
//!
//! Shutdown: when cancelled, no new attempt starts; attempts in flight are awaited (each is
//! bounded by the upstream timeouts; the daemon's grace period bounds the whole).

mod attempt;
mod budget;
mod commands;
mod pause;
mod retry;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use attempt::{AttemptReport, Next};
pub use commands::{Command, Handle, PauseStatus, Status, cause_name, rfc3339};
pub use pause::{PauseState, ProbePlan};
pub use retry::RetryPolicy;

use crate::delivery::{Outgoing, Report, Upstream};
use crate::observe::events;
use crate::spool::{QueueId, QueuedMessage, Spool};
use budget::{Admit, SendBudget};

/// Something that can attempt a delivery: the real [`Upstream`], or a script in tests.
pub trait Courier: Clone + Send + Sync + 'static {
    /// Tries to deliver `msg` to `recipients`; outcomes in the order of `recipients`.
    fn deliver(
        &self,
        msg: &Outgoing<'_>,
        recipients: &[String],
    ) -> impl Future<Output = Report> + Send;
}

impl Courier for Upstream {
    fn deliver(
        &self,
        msg: &Outgoing<'_>,
        recipients: &[String],
    ) -> impl Future<Output = Report> + Send {
        Upstream::deliver(self, msg, recipients)
    }
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Retry schedule and maximum age.
    pub policy: RetryPolicy,
    /// Most attempts at once.
    pub concurrency: usize,
    /// Attempt nothing (`delivery.hold`).
    pub hold: bool,
    /// Who is told about failed mail (`delivery.bounce`).
    pub bounce: crate::bounce::BounceTo,
    /// The relay's name (for DSNs).
    pub hostname: String,
    /// Most recipients per rolling minute (`delivery.max_per_minute`).
    pub max_per_minute: Option<u32>,
    /// Most recipients per rolling 24 hours (`delivery.max_per_day`).
    pub max_per_day: Option<u32>,
    /// Sender rewrites for Gmail (`[rewrite]`).
    pub rewrite: crate::delivery::Rewrite,
    /// Where attempts are counted.
    pub metrics: crate::observe::Metrics,
}

/// An attempt in flight.
struct InFlight {
    /// Its recipients (what it costs against the budget).
    cost: usize,
    /// How it schedules the next probe if it pauses delivery.
    plan: ProbePlan,
}

struct Scheduler<C: Courier> {
    ctx: Arc<attempt::Ctx<C>>,
    settings: Settings,
    due: BTreeSet<(Instant, QueueId)>,
    /// Recipients each due message still has (its cost against the budget).
    cost: HashMap<QueueId, usize>,
    running: JoinSet<AttemptReport>,
    /// The message of each attempt task.
    tasks: HashMap<tokio::task::Id, QueueId>,
    /// Messages with an attempt running.
    in_flight: HashMap<QueueId, InFlight>,
    /// Messages held by the operator.
    held: HashSet<QueueId>,
    pause: PauseState,
    budget: SendBudget,
    /// Attempts in a row that panicked, per message (sets their backoff).
    panics: HashMap<QueueId, u32>,
    /// Messages put off by the pause; due at once when it ends.
    put_off: HashSet<QueueId>,
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
    let saved = spool.load_budget().await;
    let budget = SendBudget::new(
        settings.max_per_minute,
        settings.max_per_day,
        saved.as_deref(),
    );
    let mut s = Scheduler {
        ctx: Arc::new(attempt::Ctx::new(spool, courier, &settings, Clock::start())),
        settings,
        due: BTreeSet::new(),
        cost: HashMap::new(),
        running: JoinSet::new(),
        tasks: HashMap::new(),
        in_flight: HashMap::new(),
        held: HashSet::new(),
        pause: PauseState::default(),
        budget,
        panics: HashMap::new(),
        put_off: HashSet::new(),
    };
    for q in recovered {
        if q.held {
            s.held.insert(q.id);
        } else {
            s.schedule(q.id, q.next_attempt, q.pending);
        }
    }
    loop {
        s.dispatch();
        let wake = s.next_wake();
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(q) = committed.recv() => s.schedule(q.id, q.next_attempt, q.pending),
            Some(cmd) = commands.recv() => s.command(cmd),
            Some(done) = s.running.join_next_with_id(), if !s.running.is_empty() => s.handle(done).await,
            _ = sleep_until(wake), if wake.is_some() => {}
        }
    }
    while let Some(done) = s.running.join_next_with_id().await {
        s.handle(done).await;
    }
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
    fn schedule(&mut self, id: QueueId, at: SystemTime, pending: usize) {
        self.due.insert((self.ctx.clock.instant_of(at), id));
        self.cost.insert(id, pending);
    }

    /// How many attempts may run now: none on hold or in a pause, one to probe after a pause.
    fn capacity(&self, now: Instant) -> usize {
        if self.settings.hold {
            return 0;
        }
        self.pause.capacity(now, self.settings.concurrency)
    }

    fn dispatch(&mut self) {
        let now = Instant::now();
        let capacity = self.capacity(now);
        while self.running.len() < capacity {
            let Some(&(at, id)) = self.due.first() else {
                break;
            };
            if at > now {
                break;
            }
            let cost = self.cost.get(&id).copied().unwrap_or(1);
            let was_waiting = self.budget.waiting();
            match self.budget.admit(id, cost as u32, &self.ctx.clock) {
                Admit::Now => {}
                // Woken again when an attempt reports.
                Admit::InFlight => break,
                Admit::Until(until) => {
                    if !was_waiting {
                        events::budget_spent(until);
                    }
                    break;
                }
            }
            self.due.pop_first();
            self.cost.remove(&id);
            let plan = self.pause.plan(&self.ctx.clock);
            let ctx = self.ctx.clone();
            let task = self.running.spawn(attempt::run(ctx, id, plan));
            self.tasks.insert(task.id(), id);
            self.in_flight.insert(id, InFlight { cost, plan });
        }
    }

    /// When the loop must wake up to dispatch, if ever.
    fn next_wake(&self) -> Option<Instant> {
        if self.settings.hold {
            return None;
        }
        let now = Instant::now();
        if let Some(until) = self.pause.wake(now) {
            return Some(until);
        }
        if self.running.len() >= self.capacity(now) {
            return None;
        }
        let due = self.due.first().map(|&(at, _)| at)?;
        Some(self.budget.wake().map_or(due, |b| due.max(b)))
    }

    async fn handle(&mut self, done: Result<(tokio::task::Id, AttemptReport), JoinError>) {
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
        let InFlight { cost, plan } = self.in_flight.remove(&id).unwrap_or(InFlight {
            cost: 1,
            plan: ProbePlan::Backoff(1),
        });
        let report = match result {
            Ok(report) => report,
            Err(e) => return self.attempt_died(id, cost, &e),
        };
        self.panics.remove(&id);
        if report.reached_upstream && self.pause.resume() {
            events::upstream_resumed();
            self.bring_forward(|s| std::mem::take(&mut s.put_off));
        }
        if self
            .budget
            .settle(id, report.delivered as u32, self.ctx.clock.now())
            && let Err(e) = self.ctx.spool.save_budget(self.budget.save()).await
        {
            tracing::warn!(error = %e, "could not record the send budget; a restart may forget recent sends");
        }
        match report.next {
            Next::Done => {}
            Next::At { at, pending } => self.schedule(id, at, pending),
            Next::Pause { at, pending, pause } => {
                self.schedule(id, at, pending);
                self.put_off.insert(id);
                let news = self
                    .pause
                    .pause(pause.clone(), self.ctx.clock.instant_of(at), plan);
                if news {
                    events::upstream_paused(cause_name(pause.kind), &pause.to_string(), at);
                }
            }
        }
    }

    /// Makes the scheduled messages `pick` chooses due now.
    fn bring_forward(&mut self, pick: impl FnOnce(&mut Self) -> HashSet<QueueId>) {
        let chosen = pick(self);
        let now = Instant::now();
        let moved: Vec<(Instant, QueueId)> = self
            .due
            .iter()
            .filter(|(_, id)| chosen.contains(id))
            .copied()
            .collect();
        for entry in moved {
            self.due.remove(&entry);
            self.due.insert((now, entry.1));
        }
    }

    /// Probes a pause now (the operator asked, or the credentials changed): the message due
    /// first is the probe.
    fn probe_now(&mut self) {
        if self.pause.probe_now(Instant::now()) {
            self.bring_forward(|s| s.due.first().map(|&(_, id)| id).into_iter().collect());
        }
    }

    /// An attempt task ended without a report: it panicked (a bug) or was cancelled. The
    /// message is on disk as it was before the attempt (or with the outcomes it recorded);
    /// it is tried again like after a temporary failure.
    fn attempt_died(&mut self, id: QueueId, cost: usize, e: &JoinError) {
        self.budget.release(id);
        let panics = self.panics.entry(id).or_insert(0);
        *panics += 1;
        let at = self.ctx.clock.now() + self.ctx.policy.delay(*panics, fastrand::f64());
        events::attempt_crashed(&id.to_string(), &e.to_string(), at);
        self.schedule(id, at, cost);
    }
}

#[cfg(test)]
mod tests;
