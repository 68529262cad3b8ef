//! The scheduler: decides what is due when, and how many attempts run at once.
//!
//! One task owns the schedule (a set of `(due, id)` ordered by time); nothing else touches it.
//! New messages arrive on the spool's commit channel, outcomes come back from the attempt tasks
//! it spawns, and it sleeps until the next due time. At most `upstream.max_connections`
//! attempts run at once.
//!
//! **Pause.** When an attempt reports a pause, the scheduler stops starting attempts until a
//! backoff time, then runs a single probe attempt; when that gets through, delivery resumes at
//! full width. The backoff depends on the cause:
//! - upstream unreachable (network, TLS, greeting): `queue.retry_min` doubling to
//!   `queue.retry_max`;
//! - credentials or configuration refused (535, 534, 454 4.7.0, ...): `delivery.auth_pause_min`
//!   (1 minute) doubling to `delivery.auth_pause_max` (30 minutes);
//! - sending quota spent (550 5.4.5, ...): a probe every `delivery.quota_pause` (1 hour).
//!
//! Nothing is bounced or failed because of a pause, and a message is never expired while the
//! cause is our credentials or quota (fixing them, or waiting, delivers it). Pausing also keeps
//! the relay from logging in over and over, which Gmail answers with
//! `454 4.7.0 Too many login attempts`.
//!
//! **Hold.** With `delivery.hold` nothing is attempted; messages are queued only.
//!
//! Shutdown: when cancelled, no new attempt starts; attempts in flight are awaited (each is
//! bounded by the upstream timeouts; the daemon's grace period bounds the whole).

mod attempt;
mod budget;
mod commands;
mod retry;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use attempt::{AttemptReport, Next};
pub use commands::{Command, Handle, PauseStatus, Status, cause_name, rfc3339};
pub use retry::RetryPolicy;

use crate::delivery::{Outgoing, PauseKind, Report, Upstream};
use crate::observe::events;
use crate::spool::{QueueId, QueuedMessage, Spool};

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

/// Delivery is paused.
struct Paused {
    until: Instant,
    /// Pauses in a row (sets the backoff).
    failures: u32,
    kind: PauseKind,
    /// The upstream's words.
    reason: String,
}

struct Scheduler<C: Courier> {
    ctx: Arc<attempt::Ctx<C>>,
    settings: Settings,
    due: BTreeSet<(Instant, QueueId)>,
    running: JoinSet<(QueueId, AttemptReport)>,
    pause: Option<Paused>,
    /// Recipients each due message still has (its cost against the budget).
    cost: HashMap<QueueId, usize>,
    budget: budget::Budget,
    /// Dispatch waits for the send budget until then.
    budget_wait: Option<Instant>,
    /// Recipients of attempts in flight, counted against the budget until they report.
    reserved: HashMap<QueueId, u32>,
    /// Messages with an attempt running.
    in_flight: HashSet<QueueId>,
    /// Messages held by the operator.
    held: HashSet<QueueId>,
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
    let budget = budget::Budget::new(
        settings.max_per_minute,
        settings.max_per_day,
        saved.as_deref(),
    );
    let mut s = Scheduler {
        ctx: Arc::new(attempt::Ctx::new(spool, courier, &settings, Clock::start())),
        settings,
        due: BTreeSet::new(),
        running: JoinSet::new(),
        pause: None,
        cost: HashMap::new(),
        budget,
        budget_wait: None,
        reserved: HashMap::new(),
        in_flight: HashSet::new(),
        held: HashSet::new(),
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
            Some(done) = s.running.join_next(), if !s.running.is_empty() => s.handle(done).await,
            _ = sleep_until(wake), if wake.is_some() => {}
        }
    }
    while let Some(done) = s.running.join_next().await {
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
        match &self.pause {
            _ if self.settings.hold => 0,
            Some(p) if now < p.until => 0,
            Some(_) => 1,
            None => self.settings.concurrency,
        }
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
            let cost = self.cost.get(&id).copied().unwrap_or(1) as u32;
            let in_flight: u32 = self.reserved.values().sum();
            match self.budget.wait(self.ctx.clock.now(), in_flight, cost) {
                budget::Wait::Now => self.budget_wait = None,
                // Woken again when an attempt reports.
                budget::Wait::InFlight => break,
                budget::Wait::Until(until) => {
                    if self.budget_wait.is_none() {
                        events::budget_spent(until);
                    }
                    self.budget_wait = Some(self.ctx.clock.instant_of(until));
                    break;
                }
            }
            self.due.pop_first();
            self.cost.remove(&id);
            if self.budget.is_limited() {
                self.reserved.insert(id, cost);
            }
            let failures = self.pause.as_ref().map_or(0, |p| p.failures);
            self.in_flight.insert(id);
            let ctx = self.ctx.clone();
            self.running
                .spawn(async move { (id, attempt::run(ctx, id, failures).await) });
        }
    }

    /// When the loop must wake up to dispatch, if ever.
    fn next_wake(&self) -> Option<Instant> {
        if self.settings.hold {
            return None;
        }
        let now = Instant::now();
        if let Some(p) = &self.pause
            && now < p.until
        {
            return Some(p.until);
        }
        if self.running.len() >= self.capacity(now) {
            return None;
        }
        let due = self.due.first().map(|&(at, _)| at)?;
        Some(self.budget_wait.map_or(due, |b| due.max(b)))
    }

    async fn handle(&mut self, done: Result<(QueueId, AttemptReport), tokio::task::JoinError>) {
        let (id, report) = match done {
            Ok(done) => done,
            Err(e) => {
                // A panic in an attempt is a bug; the message is still on disk and will be
                // found again at the next start.
                tracing::error!(error = %e, "delivery attempt task failed");
                return;
            }
        };
        if report.reached_upstream {
            self.resume();
        }
        self.reserved.remove(&id);
        self.in_flight.remove(&id);
        if report.delivered > 0 && self.budget.is_limited() {
            self.budget
                .record(self.ctx.clock.now(), report.delivered as u32);
            if let Err(e) = self.ctx.spool.save_budget(self.budget.save()).await {
                tracing::warn!(error = %e, "could not record the send budget; a restart may forget recent sends");
            }
        }
        match report.next {
            Next::Done => {}
            Next::At { at, pending } => self.schedule(id, at, pending),
            Next::Pause { at, pending, pause } => {
                self.schedule(id, at, pending);
                let failures = self.pause.as_ref().map_or(0, |p| p.failures) + 1;
                if self.pause.as_ref().is_none_or(|p| p.kind != pause.kind) {
                    events::upstream_paused(&pause.to_string(), at);
                    match pause.kind {
                        PauseKind::Credentials => tracing::error!(
                            reason = %pause.reason,
                            "delivery paused: the upstream refuses the relay's login or account \
                             (the reason says what to fix); mail stays queued and is sent once \
                             the login works"
                        ),
                        PauseKind::Quota => tracing::error!(
                            "the Gmail account's sending limit is reached; mail stays queued \
                             and is sent when the limit allows (probing every \
                             delivery.quota_pause)"
                        ),
                        PauseKind::Unreachable | PauseKind::Tls => {}
                    }
                }
                self.pause = Some(Paused {
                    until: self.ctx.clock.instant_of(at),
                    failures,
                    kind: pause.kind,
                    reason: pause.reason,
                });
            }
        }
    }

    fn resume(&mut self) {
        if self.pause.take().is_some() {
            events::upstream_resumed();
        }
    }
}

#[cfg(test)]
mod tests;
