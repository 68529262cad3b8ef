//! Requests to the scheduler from the queue commands (through the control socket): attempt
//! now, stop or start scheduling a message, and report the state of delivery.
//!
//! The scheduler task owns the schedule, so changes arrive as messages on a channel and are
//! applied between two dispatches; [`Handle`] is the sending side.

use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use super::{Courier, Scheduler};
use crate::config::{lane_of_account, split_lane};
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
    /// Put new settings in force (SIGHUP): accounts added, changed or removed. An existing
    /// account keeps its number of connections. The accounts in `probe` (their upstream
    /// settings or credentials changed) have a pause probed at once.
    Reload {
        /// The new settings.
        settings: Box<super::Settings>,
        /// Accounts to probe now.
        probe: Vec<String>,
    },
}

/// A pause as the queue commands show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PauseStatus {
    /// The paused account.
    #[serde(default)]
    pub account: String,
    /// Why: "unreachable", "tls", "credentials" or "quota".
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
    /// The first paused account's pause, if any is paused (each account's is in `accounts`).
    pub pause: Option<PauseStatus>,
    /// Each account, the default first.
    pub accounts: Vec<AccountStatus>,
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
    /// Messages waiting for accounts that are not configured: (account, messages).
    pub missing: Vec<(String, usize)>,
}

/// One account's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountStatus {
    /// Its name.
    pub name: String,
    /// Who it logs in as.
    pub label: String,
    /// The accounts that carry its mail while it is paused for quota or credentials.
    #[serde(default)]
    pub failover: Vec<String>,
    /// Its pause, if paused.
    pub pause: Option<PauseStatus>,
    /// Its messages waiting for their time.
    pub scheduled: usize,
    /// Attempts sending through it now.
    pub active: usize,
    /// Recipients left in its budget this minute (when limited).
    pub budget_minute: Option<u32>,
    /// Recipients left in its budget today (when limited).
    pub budget_day: Option<u32>,
}

/// The name of a pause cause, for people and metrics.
pub fn cause_name(kind: PauseKind) -> &'static str {
    match kind {
        PauseKind::Unreachable => "unreachable",
        PauseKind::Tls => "tls",
        PauseKind::Credentials => "credentials",
        PauseKind::Quota => "quota",
        PauseKind::RateLimited => "rate",
        PauseKind::Budget => "budget",
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
    pub fn reload(&self, settings: super::Settings, probe: Vec<String>) {
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
                let chosen: Vec<QueueId> = self
                    .meta
                    .iter()
                    .filter(|(m_id, m)| m.due.is_some() && id.is_none_or(|w| w == **m_id))
                    .map(|(m_id, _)| *m_id)
                    .collect();
                // The lane the message waits in: for an account that logs in as each sender,
                // the sender's own (its pause and budget are there, not on the account's).
                let lanes: Vec<String> = match id {
                    Some(id) => self
                        .meta
                        .get(&id)
                        .map(|m| m.lane.clone())
                        .into_iter()
                        .collect(),
                    None => self.lanes.keys().cloned().collect(),
                };
                self.bring_forward(chosen.iter().copied());
                for name in &lanes {
                    self.probe_now(name);
                    if let Some(lane) = self.lanes.get_mut(name) {
                        lane.budget.wake_now();
                    }
                }
                let _ = reply.send(chosen.len());
            }
            Command::Withdraw { id, hold, reply } => {
                if self.in_flight.contains_key(&id) {
                    let _ = reply.send(false);
                    return;
                }
                self.unschedule(id);
                self.meta.remove(&id);
                if hold {
                    self.held.insert(id);
                } else {
                    self.held.remove(&id);
                }
                let _ = reply.send(true);
            }
            Command::Add(q) => {
                self.held.remove(&q.id);
                self.unschedule(q.id);
                self.schedule_new(q);
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Reload { settings, probe } => self.reload(*settings, &probe),
            Command::Probe(reply) => {
                let accounts: Vec<String> = self.lanes.keys().cloned().collect();
                for account in &accounts {
                    self.probe_now(account);
                }
                let _ = reply.send(());
            }
        }
    }

    fn status(&self) -> Status {
        let clock = self.ctx.clock;
        let now = clock.now();
        let oldest = self.meta.keys().chain(&self.held).min().copied();
        // Each configured account, followed by its senders' own lanes.
        let accounts: Vec<AccountStatus> = self
            .settings
            .accounts
            .iter()
            .flat_map(|a| {
                self.lanes
                    .iter()
                    .filter(move |(name, _)| lane_of_account(name, &a.name))
            })
            .map(|(name, lane)| {
                let (budget_minute, budget_day) = lane.budget.remaining(now);
                AccountStatus {
                    name: name.clone(),
                    label: lane.settings.label.clone(),
                    failover: if lane.wants_failover() {
                        lane.settings.failover.clone()
                    } else {
                        Vec::new()
                    },
                    pause: lane.pause.status(&clock).map(|mut p| {
                        p.account = name.clone();
                        p
                    }),
                    scheduled: lane.due.len(),
                    active: lane.running,
                    budget_minute,
                    budget_day,
                }
            })
            .collect();
        Status {
            pause: accounts.iter().find_map(|a| a.pause.clone()),
            scheduled: self.meta.values().filter(|m| m.due.is_some()).count(),
            active: self.in_flight.keys().copied().collect(),
            held: self.held.len(),
            on_hold: self.settings.hold,
            oldest,
            missing: self
                .orphans
                .iter()
                .filter(|(_, set)| !set.is_empty())
                .map(|(a, set)| (a.clone(), set.len()))
                .collect(),
            accounts,
        }
    }

    /// Mail that waited for `account` (in its lane or a sender's, when it went away) goes
    /// through it again, each message in the lane it takes now: the sender's own if the
    /// account logs in as each sender, else the account's.
    fn adopt_orphans(&mut self, account: &str) {
        let keys: Vec<String> = self
            .orphans
            .keys()
            .filter(|k| lane_of_account(k, account))
            .cloned()
            .collect();
        for key in keys {
            for (due, id) in self.orphans.remove(&key).unwrap_or_default() {
                let Some(sender) = self.meta.get(&id).map(|m| m.sender.clone()) else {
                    continue;
                };
                let lane = self.lane_of(account, &sender);
                if let Some(l) = self.lanes.get_mut(&lane) {
                    l.due.insert((due, id));
                }
                if let Some(m) = self.meta.get_mut(&id) {
                    m.lane = lane;
                }
            }
        }
    }

    fn reload(&mut self, settings: super::Settings, probe: &[String]) {
        let wanted: std::collections::BTreeSet<String> =
            settings.accounts.iter().map(|a| a.name.clone()).collect();
        // Accounts that went away: their mail waits among the orphans. Senders' own lanes
        // follow their account.
        let gone: Vec<String> = self
            .lanes
            .keys()
            .filter(|n| !wanted.contains(split_lane(n).0))
            .cloned()
            .collect();
        for name in gone {
            if let Some(lane) = self.lanes.remove(&name) {
                self.orphans.entry(name).or_default().extend(lane.due);
            }
        }
        for account in &settings.accounts {
            for (name, lane) in self.lanes.iter_mut() {
                if let (base, Some(mailbox)) = split_lane(name)
                    && base == account.name
                {
                    lane.reconfigure(account.for_mailbox(name, mailbox));
                }
            }
            match self.lanes.get_mut(&account.name) {
                Some(lane) => lane.reconfigure(account.clone()),
                None => {
                    let lane = super::lanes::Lane::new(
                        account.clone(),
                        self.records.of(&account.name).as_deref(),
                    );
                    self.lanes.insert(account.name.clone(), lane);
                    self.adopt_orphans(&account.name);
                }
            }
        }
        for name in probe {
            let senders: Vec<String> = self
                .lanes
                .keys()
                .filter(|n| *n != name && lane_of_account(n, name))
                .cloned()
                .collect();
            self.probe_now(name);
            for lane in senders {
                self.probe_now(&lane);
            }
        }
        self.ctx = std::sync::Arc::new(super::attempt::Ctx::new(
            self.ctx.spool.clone(),
            self.ctx.courier.clone(),
            &settings,
            self.ctx.clock,
        ));
        self.settings = settings;
        self.report_orphans();
    }
}
