//! Requests to the scheduler from the queue commands (through the control socket): attempt
//! now, stop or start scheduling a message, and report the state of delivery.
//!
//! The scheduler task owns the schedule, so changes arrive as messages on a channel and are
//! applied between two dispatches; [`Handle`] is the sending side.

use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use super::{Courier, Scheduler};
use crate::delivery::PauseKind;
use crate::spool::{QueueId, QueuedMessage};

/// A request to the scheduler.
pub enum Command {
    /// Attempt one message now, or (with `None`) every scheduled one; a pause is probed now.
    /// Answers how many were made due.
    RetryNow(Option<QueueId>, oneshot::Sender<usize>),
    /// Stop scheduling a message (before it is deleted, or held). Answers `false` if an
    /// attempt is running for it right now.
    Withdraw {
        /// The message.
        id: QueueId,
        /// It is being held (counted as held until released).
        hold: bool,
        /// The answer.
        reply: oneshot::Sender<bool>,
    },
    /// Schedule a message (released or requeued).
    Add(QueuedMessage),
    /// Report the state of delivery.
    Status(oneshot::Sender<Status>),
    /// Probe a pause now (the credentials changed); nothing else is made due.
    Probe(oneshot::Sender<()>),
    /// Put new settings in force (SIGHUP). The concurrency keeps its value. With `probe`
    /// (the upstream credentials changed) a pause is probed at once.
    Reload {
        /// The new settings.
        settings: Box<super::Settings>,
        /// Probe a pause now.
        probe: bool,
    },
}

/// A pause as the queue commands show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PauseStatus {
    /// Why: "unreachable", "credentials" or "quota".
    pub cause: String,
    /// The upstream's words.
    pub reason: String,
    /// When the next probe is due.
    #[serde(with = "rfc3339")]
    pub next_probe: SystemTime,
}

/// Times as RFC 3339 text (UTC, seconds) in the control protocol and `--json` output.
pub mod rfc3339 {
    use std::time::SystemTime;

    /// Writes `t` as e.g. `2026-11-23T15:04:05Z`.
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// The scheduler's view of delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// Delivery is paused, and why.
    pub pause: Option<PauseStatus>,
    /// Messages waiting for their time.
    pub scheduled: usize,
    /// Messages with an attempt running now.
    pub active: Vec<QueueId>,
    /// Messages held by the operator.
    pub held: usize,
    /// `delivery.hold` is on.
    pub on_hold: bool,
    /// The oldest message in the queue (scheduled, active or held).
    pub oldest: Option<QueueId>,
    /// Recipients left in the send budget this minute (when limited).
    pub budget_minute: Option<u32>,
    /// Recipients left in the send budget today (when limited).
    pub budget_day: Option<u32>,
}

/// The name of a pause cause, for people and metrics.
pub fn cause_name(kind: PauseKind) -> &'static str {
    match kind {
        PauseKind::Unreachable => "unreachable",
        PauseKind::Tls => "tls",
        PauseKind::Credentials => "credentials",
        PauseKind::Quota => "quota",
    }
}

/// Sends requests to a running scheduler.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Command>,
}

impl Handle {
    /// A handle and the receiver [`super::run`] takes.
    pub fn new() -> (Handle, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Handle { tx }, rx)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).ok()?;
        answer.await.ok()
    }

    /// See [`Command::RetryNow`]; `None` if the scheduler has stopped.
    pub async fn retry_now(&self, id: Option<QueueId>) -> Option<usize> {
        self.ask(|reply| Command::RetryNow(id, reply)).await
    }

    /// See [`Command::Withdraw`]; `None` if the scheduler has stopped.
    pub async fn withdraw(&self, id: QueueId, hold: bool) -> Option<bool> {
        self.ask(|reply| Command::Withdraw { id, hold, reply })
            .await
    }

    /// See [`Command::Add`].
    pub fn add(&self, q: QueuedMessage) {
        let _ = self.tx.send(Command::Add(q));
    }

    /// See [`Command::Reload`].
    pub fn reload(&self, settings: super::Settings, probe: bool) {
        let _ = self.tx.send(Command::Reload {
            settings: Box::new(settings),
            probe,
        });
    }

    /// See [`Command::Probe`]; `None` if the scheduler has stopped.
    pub async fn probe_now(&self) -> Option<()> {
        self.ask(Command::Probe).await
    }

    /// See [`Command::Status`]; `None` if the scheduler has stopped.
    pub async fn status(&self) -> Option<Status> {
        self.ask(Command::Status).await
    }
}

impl<C: Courier> Scheduler<C> {
    /// Applies one request.
    pub(super) fn command(&mut self, cmd: Command) {
        match cmd {
            Command::RetryNow(id, reply) => {
                let now = tokio::time::Instant::now();
                let chosen: Vec<(tokio::time::Instant, QueueId)> = self
                    .due
                    .iter()
                    .filter(|(_, due_id)| id.is_none_or(|wanted| wanted == *due_id))
                    .copied()
                    .collect();
                for entry in &chosen {
                    self.due.remove(entry);
                    self.due.insert((now, entry.1));
                }
                self.probe_now();
                self.budget.wake_now();
                let _ = reply.send(chosen.len());
            }
            Command::Withdraw { id, hold, reply } => {
                if self.in_flight.contains_key(&id) {
                    let _ = reply.send(false);
                    return;
                }
                self.due.retain(|(_, due_id)| *due_id != id);
                self.cost.remove(&id);
                if hold {
                    self.held.insert(id);
                } else {
                    self.held.remove(&id);
                }
                let _ = reply.send(true);
            }
            Command::Add(q) => {
                self.held.remove(&q.id);
                self.schedule(q.id, q.next_attempt, q.pending);
            }
            Command::Status(reply) => {
                let clock = self.ctx.clock;
                let oldest = self
                    .due
                    .iter()
                    .map(|(_, id)| id)
                    .chain(&self.held)
                    .chain(self.in_flight.keys())
                    .min()
                    .copied();
                let (budget_minute, budget_day) = self.budget.remaining(clock.now());
                let _ = reply.send(Status {
                    pause: self.pause.status(&clock),
                    scheduled: self.due.len(),
                    active: self.in_flight.keys().copied().collect(),
                    held: self.held.len(),
                    on_hold: self.settings.hold,
                    oldest,
                    budget_minute,
                    budget_day,
                });
            }
            Command::Reload { settings, probe } => self.reload(*settings, probe),
            Command::Probe(reply) => {
                self.probe_now();
                let _ = reply.send(());
            }
        }
    }

    fn reload(&mut self, mut settings: super::Settings, probe: bool) {
        settings.concurrency = self.settings.concurrency;
        self.budget
            .set_limits(settings.max_per_minute, settings.max_per_day);
        if probe {
            self.probe_now();
        }
        self.ctx = std::sync::Arc::new(super::attempt::Ctx::new(
            self.ctx.spool.clone(),
            self.ctx.courier.clone(),
            &settings,
            self.ctx.clock,
        ));
        self.settings = settings;
    }
}
