//! One delivery attempt for one queued message: load, deliver to the pending recipients
//! through its account (or the failover account carrying it), record every outcome in the
//! spool, and say when (if ever) to try again.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use super::retry::RetryPolicy;
use super::{Courier, ProbePlan};
use crate::bounce::{self, BounceTo, Failed};
use crate::delivery::{Outgoing, Pause, PauseKind, RecipientOutcome};
use crate::observe::events;
use crate::spool::{DeliveryState, Envelope, Message, QueueId, RecipientStatus, Spool, SpoolError};

/// The result of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    /// What to do with the message next.
    pub next: Next,
    /// The attempt had an upstream session (so the upstream is usable).
    pub reached_upstream: bool,
    /// Recipients the upstream accepted in this attempt (for the rate budget).
    pub delivered: usize,
}

/// What the scheduler should do with the message next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing: it left the queue (delivered, failed, or gone).
    Done,
    /// Try again at this time; `pending` recipients are left.
    At { at: SystemTime, pending: usize },
    /// Hold all deliveries until this time, this message included.
    Pause {
        at: SystemTime,
        pending: usize,
        pause: Pause,
    },
}

/// Which account a message belongs to, and which one sends it this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The message's account.
    pub account: String,
    /// The failover account carrying it while its own is paused.
    pub via: Option<String>,
}

impl Route {
    /// The account that logs in and sends.
    pub fn sender(&self) -> &str {
        self.via.as_deref().unwrap_or(&self.account)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.via {
            Some(via) => write!(f, "{} via {via}", self.account),
            None => f.write_str(&self.account),
        }
    }
}

/// What attempts share.
pub struct Ctx<C> {
    pub spool: Spool,
    pub courier: C,
    pub policy: RetryPolicy,
    /// Who is told about failed mail.
    pub bounce: BounceTo,
    /// The relay's name, for DSNs.
    pub hostname: String,
    /// Wall-clock time, consistent with the scheduler's timers.
    pub clock: super::Clock,
    /// Sender rewrites applied to the copy sent upstream, per sending account.
    pub rewrites: HashMap<String, crate::delivery::Rewrite>,
    /// Where outcomes are counted.
    pub metrics: crate::observe::Metrics,
}

impl<C> Ctx<C> {
    /// What attempts made under `settings` share.
    pub fn new(spool: Spool, courier: C, settings: &super::Settings, clock: super::Clock) -> Self {
        Ctx {
            spool,
            courier,
            policy: settings.policy,
            bounce: settings.bounce.clone(),
            hostname: settings.hostname.clone(),
            clock,
            rewrites: settings
                .accounts
                .iter()
                .map(|a| (a.name.clone(), a.rewrite.clone()))
                .collect(),
            metrics: settings.metrics.clone(),
        }
    }
}

/// Runs one attempt along `route`. `plan` says when to probe next if this attempt pauses
/// delivery.
pub async fn run<C: Courier>(
    ctx: Arc<Ctx<C>>,
    id: QueueId,
    route: Route,
    plan: ProbePlan,
) -> AttemptReport {
    let mut report = AttemptReport {
        next: Next::Done,
        reached_upstream: false,
        delivered: 0,
    };
    report.next = attempt(&ctx, id, &route, plan, &mut report).await;
    report
}

async fn attempt<C: Courier>(
    ctx: &Ctx<C>,
    id: QueueId,
    route: &Route,
    plan: ProbePlan,
    report: &mut AttemptReport,
) -> Next {
    let id_text = id.to_string();
    let msg = match ctx.spool.load(id).await {
        Ok(msg) => msg,
        Err(SpoolError::NotFound(_)) => return Next::Done,
        Err(e @ SpoolError::Corrupt { .. }) => {
            let reason = e.to_string();
            return match ctx.spool.quarantine(id, &reason).await {
                Ok(()) => Next::Done,
                Err(e) => retry_later_after_disk_error(ctx, &id_text, &e),
            };
        }
        Err(e) => return retry_later_after_disk_error(ctx, &id_text, &e),
    };
    let mut state = msg.state.clone();
    let pending: Vec<String> = state.pending().map(|r| r.address.clone()).collect();
    if pending.is_empty() {
        // Settled before a crash cut the bookkeeping short; finish it.
        return finish(ctx, &msg, state).await;
    }
    // Gmail sends as the account that logs in: the rewrites are the sending account's.
    let no_rewrite = crate::delivery::Rewrite::default();
    let rewrite = ctx.rewrites.get(route.sender()).unwrap_or(&no_rewrite);
    let rewritten = rewrite.message(&msg.body);
    let outgoing = Outgoing::new(
        rewrite.sender(&msg.envelope.sender),
        rewritten.as_deref().unwrap_or(&msg.body),
        msg.envelope.eight_bit_mime,
        msg.envelope.smtputf8,
    );
    state.attempts += 1;
    let result = ctx
        .courier
        .deliver(route.sender(), &outgoing, &pending)
        .await;
    let now = ctx.clock.now();
    let expires = ctx.policy.expires(msg.envelope.received_at);
    report.reached_upstream = result.reached_upstream();

    let mut deferred = Vec::new();
    let mut last_reason = None;
    let (mut n_delivered, mut n_failed) = (0u64, 0u64);
    for (address, outcome) in pending.iter().zip(result.outcomes) {
        let Some(r) = state
            .recipients
            .iter_mut()
            .find(|r| r.status == RecipientStatus::Pending && &r.address == address)
        else {
            continue;
        };
        match &outcome {
            RecipientOutcome::Delivered(reply) => {
                events::delivered(
                    &id_text,
                    &route.account,
                    route.via.as_deref(),
                    address,
                    reply,
                );
                r.status = RecipientStatus::Delivered;
                report.delivered += 1;
                n_delivered += 1;
            }
            RecipientOutcome::Failed(reply) => {
                events::recipient_failed(
                    &id_text,
                    &route.account,
                    route.via.as_deref(),
                    address,
                    reply,
                );
                r.status = RecipientStatus::Failed;
                n_failed += 1;
            }
            RecipientOutcome::Deferred(reason) => {
                deferred.push(address.clone());
                last_reason = Some(reason.clone());
            }
        }
        r.reply = Some(outcome.text().to_owned());
    }
    ctx.metrics
        .recipients(route.sender(), n_delivered, deferred.len() as u64, n_failed);
    if n_delivered > 0 {
        ctx.metrics.latency(
            now.duration_since(msg.envelope.received_at)
                .unwrap_or_default(),
        );
    }
    let via = route
        .via
        .as_ref()
        .map(|v| format!(" via {v}"))
        .unwrap_or_default();
    let summary = format!(
        "attempt {}{via}: {n_delivered} delivered, {n_failed} failed, {} deferred",
        state.attempts,
        deferred.len()
    );
    match (&result.pause, &last_reason) {
        (Some(p), _) => state.record(
            now,
            format!(
                "{summary}; delivery paused ({}): {}",
                super::cause_name(p.kind),
                p.reason
            ),
        ),
        (None, Some(reason)) => state.record(now, format!("{summary}: {reason}")),
        (None, None) => state.record(now, summary),
    }
    if state.is_settled() {
        return finish(ctx, &msg, state).await;
    }
    let reason = last_reason.unwrap_or_default();
    // A message is not expired while the cause is our own credentials or quota: fixing those
    // (or waiting) delivers it.
    let expirable = !matches!(
        result.pause,
        Some(Pause {
            kind: PauseKind::Credentials | PauseKind::Quota,
            ..
        })
    );
    if expirable && now >= expires {
        return expire(ctx, &msg, state, &reason).await;
    }
    let pending_left = deferred.len();
    let next = match result.pause {
        Some(pause) => {
            // The upstream's own "retry after" wins over the policy.
            let at = match pause.until {
                Some(until) if until > now => until,
                _ => plan.next(&ctx.policy, pause.kind, now, fastrand::f64()),
            };
            Next::Pause {
                at,
                pending: pending_left,
                pause,
            }
        }
        None => {
            let at = (now + ctx.policy.delay(state.attempts, fastrand::f64())).min(expires);
            Next::At {
                at,
                pending: pending_left,
            }
        }
    };
    let at = match &next {
        Next::At { at, .. } | Next::Pause { at, .. } => *at,
        Next::Done => unreachable!("built just above"),
    };
    state.last_error = Some(reason.clone());
    state.next_attempt = at;
    save(&ctx.spool, id, &state).await;
    events::deferred(
        &id_text,
        &route.account,
        route.via.as_deref(),
        &deferred,
        &reason,
        at,
        state.attempts,
    );
    ctx.metrics.deferred(msg.account());
    next
}

/// Every recipient is settled: remove the message, or move it to the failed area (and tell
/// whoever `delivery.bounce` says) if some recipient failed.
async fn finish<C: Courier>(ctx: &Ctx<C>, msg: &Message, mut state: DeliveryState) -> Next {
    let id_text = msg.id.to_string();
    let failed: Vec<Failed<'_>> = state
        .recipients
        .iter()
        .filter(|r| r.status == RecipientStatus::Failed)
        .map(|r| Failed {
            address: &r.address,
            reason: r.reply.as_deref().unwrap_or("failed"),
        })
        .collect();
    if failed.is_empty() {
        match ctx.spool.remove(msg.id).await {
            Ok(()) => {
                events::removed(&id_text);
                ctx.metrics.delivered(msg.account());
            }
            Err(e) => {
                tracing::error!(id = %id_text, error = %e, "could not remove a delivered message; it may be sent again")
            }
        }
        return Next::Done;
    }
    let reason = format!(
        "{} of {} recipients failed permanently: {}",
        failed.len(),
        state.recipients.len(),
        failed
            .iter()
            .map(|f| f.address)
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Recipients given with NOTIFY=NEVER (RFC 3461; `send-test` asks for it) are reported to
    // nobody.
    let reported: Vec<Failed<'_>> = failed
        .iter()
        .filter(|f| !msg.envelope.notify_never.iter().any(|n| n == f.address))
        .cloned()
        .collect();
    if let Some(to) = ctx.bounce.recipient(&msg.envelope.sender)
        && !reported.is_empty()
    {
        bounce(ctx, msg, &reported, &to).await;
    }
    state.failed_reason = Some(reason.clone());
    state.record(
        ctx.clock.now(),
        format!("moved to the failed area: {reason}"),
    );
    match ctx.spool.fail(msg.id, &state).await {
        Ok(()) => {
            events::failed(&id_text, &reason);
            ctx.metrics.failed(msg.account());
        }
        Err(e) => {
            tracing::error!(id = %id_text, error = %e, "could not move a failed message to the failed area")
        }
    }
    Next::Done
}

/// Queues a DSN about `msg` to `to`, with the null sender (so it is never bounced itself).
async fn bounce<C: Courier>(ctx: &Ctx<C>, msg: &Message, failed: &[Failed<'_>], to: &str) {
    let now = ctx.clock.now();
    let id_text = msg.id.to_string();
    let dsn = bounce::build(&bounce::Report {
        hostname: &ctx.hostname,
        queue_id: &id_text,
        arrival: msg.envelope.received_at,
        sender: &msg.envelope.sender,
        to,
        failed,
        message: &msg.body,
        now,
    });
    let dsn_id = ctx.spool.new_id();
    let envelope = Envelope {
        sender: String::new(),
        recipients: vec![to.to_owned()],
        received_at: now,
        client: std::net::Ipv4Addr::LOCALHOST.into(),
        helo: ctx.hostname.clone(),
        eight_bit_mime: !dsn.is_ascii(),
        smtputf8: !to.is_ascii(),
        notify_never: Vec::new(),
        account: None,
    };
    match ctx.spool.commit(dsn_id, envelope, vec![dsn]).await {
        Ok(()) => events::bounced(&id_text, &dsn_id.to_string(), to),
        Err(e) => {
            tracing::error!(id = %id_text, error = %e, "could not queue the delivery status notification")
        }
    }
}

/// Too old: every pending recipient fails with the last reason.
async fn expire<C: Courier>(
    ctx: &Ctx<C>,
    msg: &Message,
    mut state: DeliveryState,
    reason: &str,
) -> Next {
    let why = format!(
        "not delivered within queue.max_age ({}); last error: {reason}",
        humantime::format_duration(ctx.policy.max_age)
    );
    for r in state
        .recipients
        .iter_mut()
        .filter(|r| r.status == RecipientStatus::Pending)
    {
        r.status = RecipientStatus::Failed;
        r.reply = Some(why.clone());
    }
    state.last_error = Some(reason.to_owned());
    finish(ctx, msg, state).await
}

async fn save(spool: &Spool, id: QueueId, state: &DeliveryState) {
    if let Err(e) = spool.save_state(id, state).await {
        tracing::error!(id = %id, error = %e, "could not record the delivery state; recipients already delivered may get the message again");
    }
}

fn retry_later_after_disk_error<C: Courier>(ctx: &Ctx<C>, id: &str, e: &SpoolError) -> Next {
    tracing::error!(id, error = %e, "cannot read the queued message; will try again later");
    Next::At {
        at: ctx.clock.now() + ctx.policy.max,
        pending: 1,
    }
}
