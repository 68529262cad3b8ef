//! One delivery attempt for one queued message: load, deliver to the pending recipients,
//! record every outcome in the spool, and say when (if ever) to try again.

use std::sync::Arc;
use std::time::SystemTime;

use super::Courier;
use super::retry::RetryPolicy;
use crate::delivery::{Outgoing, RecipientOutcome, SessionError};
use crate::observe::events;
use crate::spool::{DeliveryState, QueueId, RecipientStatus, Spool, SpoolError};

/// The result of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What to do with the message next.
    pub next: Next,
    /// The attempt had an upstream session (so the upstream is usable).
    pub reached_upstream: bool,
}

/// What the scheduler should do with the message next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing: it left the queue (delivered, failed, or gone).
    Done,
    /// Try again at this time.
    At(SystemTime),
    /// No upstream session could be had; try again at this time, and hold other deliveries
    /// until then too.
    Pause { at: SystemTime, error: SessionError },
}

/// What attempts share.
pub struct Ctx<C> {
    pub spool: Spool,
    pub courier: C,
    pub policy: RetryPolicy,
}

/// Runs one attempt. `upstream_failures` is how many attempts in a row could not get a
/// session, which sets the backoff if this one cannot either.
pub async fn run<C: Courier>(ctx: Arc<Ctx<C>>, id: QueueId, upstream_failures: u32) -> Report {
    let mut reached_upstream = false;
    let next = attempt(&ctx, id, upstream_failures, &mut reached_upstream).await;
    Report {
        next,
        reached_upstream,
    }
}

async fn attempt<C: Courier>(
    ctx: &Ctx<C>,
    id: QueueId,
    upstream_failures: u32,
    reached_upstream: &mut bool,
) -> Next {
    let id_text = id.to_string();
    let msg = match ctx.spool.load(id).await {
        Ok(msg) => msg,
        Err(SpoolError::NotFound(_)) => return Next::Done,
        Err(e @ SpoolError::Corrupt { .. }) => {
            let reason = e.to_string();
            return match ctx.spool.quarantine(id, &reason).await {
                Ok(()) => Next::Done,
                Err(e) => retry_later_after_disk_error(&ctx.policy, &id_text, &e),
            };
        }
        Err(e) => return retry_later_after_disk_error(&ctx.policy, &id_text, &e),
    };
    let mut state = msg.state;
    let pending: Vec<String> = state.pending().map(|r| r.address.clone()).collect();
    if pending.is_empty() {
        // Settled before a crash cut the bookkeeping short; finish it.
        return finish(&ctx.spool, id, &id_text, state).await;
    }
    let outgoing = Outgoing {
        sender: &msg.envelope.sender,
        body: &msg.body,
        eight_bit_mime: msg.envelope.eight_bit_mime,
        smtputf8: msg.envelope.smtputf8,
    };
    state.attempts += 1;
    let now = SystemTime::now();
    let expires = ctx.policy.expires(msg.envelope.received_at);

    let outcomes = match ctx.courier.deliver(&outgoing, &pending).await {
        Ok(outcomes) => outcomes,
        Err(error) => {
            let reason = error.to_string();
            // A message is not expired for our own credentials: fixing them delivers it.
            if matches!(error, SessionError::Unavailable(_)) && now >= expires {
                return expire(ctx, id, &id_text, state, &reason).await;
            }
            let at = now + ctx.policy.delay(upstream_failures + 1, fastrand::f64());
            state.last_error = Some(reason.clone());
            state.next_attempt = at;
            save(&ctx.spool, id, &state).await;
            events::deferred(&id_text, &pending, &reason, at, state.attempts);
            return Next::Pause { at, error };
        }
    };

    *reached_upstream = true;
    let mut deferred = Vec::new();
    let mut last_reason = None;
    for (address, outcome) in pending.iter().zip(outcomes) {
        let Some(r) = state
            .recipients
            .iter_mut()
            .find(|r| r.status == RecipientStatus::Pending && &r.address == address)
        else {
            continue;
        };
        match &outcome {
            RecipientOutcome::Delivered(reply) => {
                events::delivered(&id_text, address, reply);
                r.status = RecipientStatus::Delivered;
            }
            RecipientOutcome::Failed(reply) => {
                events::recipient_failed(&id_text, address, reply);
                r.status = RecipientStatus::Failed;
            }
            RecipientOutcome::Deferred(reason) => {
                deferred.push(address.clone());
                last_reason = Some(reason.clone());
            }
        }
        r.reply = Some(outcome.text().to_owned());
    }
    if state.is_settled() {
        return finish(&ctx.spool, id, &id_text, state).await;
    }
    let reason = last_reason.unwrap_or_default();
    if now >= expires {
        return expire(ctx, id, &id_text, state, &reason).await;
    }
    let at = (now + ctx.policy.delay(state.attempts, fastrand::f64())).min(expires);
    state.last_error = Some(reason.clone());
    state.next_attempt = at;
    save(&ctx.spool, id, &state).await;
    events::deferred(&id_text, &deferred, &reason, at, state.attempts);
    Next::At(at)
}

/// Every recipient is settled: remove the message, or move it to the failed area if some
/// recipient failed.
async fn finish(spool: &Spool, id: QueueId, id_text: &str, mut state: DeliveryState) -> Next {
    let failed: Vec<&str> = state
        .recipients
        .iter()
        .filter(|r| r.status == RecipientStatus::Failed)
        .map(|r| r.address.as_str())
        .collect();
    let result = if failed.is_empty() {
        spool.remove(id).await.map(|()| events::removed(id_text))
    } else {
        let reason = format!(
            "{} of {} recipients failed permanently: {}",
            failed.len(),
            state.recipients.len(),
            failed.join(", ")
        );
        state.failed_reason = Some(reason.clone());
        spool
            .fail(id, &state)
            .await
            .map(|()| events::failed(id_text, &reason))
    };
    if let Err(e) = result {
        tracing::error!(id = id_text, error = %e, "could not update the spool after delivery; the message may be sent again");
    }
    Next::Done
}

/// Too old: every pending recipient fails with the last reason.
async fn expire(
    ctx: &Ctx<impl Courier>,
    id: QueueId,
    id_text: &str,
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
    finish(&ctx.spool, id, id_text, state).await
}

async fn save(spool: &Spool, id: QueueId, state: &DeliveryState) {
    if let Err(e) = spool.save_state(id, state).await {
        tracing::error!(id = %id, error = %e, "could not record the delivery state; recipients already delivered may get the message again");
    }
}

fn retry_later_after_disk_error(policy: &RetryPolicy, id: &str, e: &SpoolError) -> Next {
    tracing::error!(id, error = %e, "cannot read the queued message; will try again later");
    Next::At(SystemTime::now() + policy.max)
}
