//! The mail event log: one line per event in a message's life, target `gmail_relay::mail`.
//!
//! Every acceptance and refusal at the intake (clients turned away, AUTH results, refused
//! senders and recipients, messages that could not be queued) and everything that happens to a
//! queued message is one call here, so one grep of the log finds them all.
//!
//! Field names are a stable interface (`id`, `client`, `user`, `from`, `to`, `size`, `reply`,
//! `reason`, `error`, `cause`, `next_attempt`, `attempts`); change them only with a note in the
//! README. An empty sender (the null sender `<>`) is logged as `<>`.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use tracing::{error, info, warn};

const TARGET: &str = "gmail_relay::mail";

fn sender(from: &str) -> &str {
    if from.is_empty() { "<>" } else { from }
}

fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A client was turned away at connect, with why (`reason` names the setting).
pub fn client_refused(client: SocketAddr, reason: &str) {
    warn!(target: TARGET, %client, reason, "client refused");
}

/// A client authenticated to the listener (or failed to).
pub fn client_auth(client: IpAddr, user: &str, ok: bool) {
    if ok {
        info!(target: TARGET, %client, user, "client authenticated");
    } else {
        warn!(target: TARGET, %client, user, "client authentication failed");
    }
}

/// A sender (MAIL FROM) was refused with `reply`.
pub fn sender_refused(client: IpAddr, from: &str, reply: &str) {
    warn!(target: TARGET, %client, from = sender(from), reply, "sender refused");
}

/// A recipient (RCPT TO) was refused with `reply`.
pub fn recipient_refused(client: IpAddr, to: &str, reply: &str) {
    warn!(target: TARGET, %client, to, reply, "recipient refused");
}

/// A message was received but could not be queued (`error`); the client got `reply` and
/// keeps the message.
pub fn not_queued(client: IpAddr, from: &str, error: &str, reply: &str) {
    error!(target: TARGET, %client, from = sender(from), error, reply, "not queued");
}

/// A message was committed to the spool and acknowledged with 250.
pub fn received(id: &str, client: IpAddr, from: &str, to: &[String], size: usize) {
    info!(target: TARGET, id, %client, from = sender(from), to = %to.join(","), size, "received");
}

/// The upstream accepted the message for one recipient, through `account` (or, `via`, the
/// failover account carrying its mail).
pub fn delivered(id: &str, account: &str, via: Option<&str>, to: &str, reply: &str) {
    match via {
        Some(via) => info!(target: TARGET, id, account, via, to, reply, "delivered"),
        None => info!(target: TARGET, id, account, to, reply, "delivered"),
    }
}

/// An attempt failed temporarily; the message (or these recipients) will be tried again.
pub fn deferred(
    id: &str,
    account: &str,
    via: Option<&str>,
    to: &[String],
    reason: &str,
    next_attempt: SystemTime,
    attempts: u32,
) {
    let next_attempt = when(next_attempt);
    let to = to.join(",");
    match via {
        Some(via) => info!(
            target: TARGET, id, account, via, to, reason, next_attempt, attempts, "deferred"
        ),
        None => info!(target: TARGET, id, account, to, reason, next_attempt, attempts, "deferred"),
    }
}

/// The upstream refused one recipient permanently; the others are unaffected.
pub fn recipient_failed(id: &str, account: &str, via: Option<&str>, to: &str, reply: &str) {
    match via {
        Some(via) => warn!(target: TARGET, id, account, via, to, reply, "recipient failed"),
        None => warn!(target: TARGET, id, account, to, reply, "recipient failed"),
    }
}

/// The message was given up on and moved to the failed area.
pub fn failed(id: &str, reason: &str) {
    warn!(target: TARGET, id, reason, "failed");
}

/// A delivery status notification about message `id` was queued as `dsn` for `to`.
pub fn bounced(id: &str, dsn: &str, to: &str) {
    info!(target: TARGET, id, dsn, to, "bounce queued");
}

/// Every recipient is settled (delivered or failed) and the message left the queue.
pub fn removed(id: &str) {
    info!(target: TARGET, id, "removed");
}

/// Delivery as a whole stopped until `until`, for `cause` ("unreachable", "tls",
/// "credentials", "quota", "rate"). Causes only the operator can fix get an error line saying so.
pub fn upstream_paused(account: &str, cause: &str, reason: &str, until: SystemTime) {
    warn!(target: TARGET, account, cause, reason, until = %when(until), "upstream paused");
    match cause {
        "credentials" => error!(
            account,
            reason,
            "delivery paused: the upstream refuses the relay's login or account (the reason says \
             what to fix); mail stays queued and is sent once the login works"
        ),
        "quota" => error!(
            account,
            "the Gmail account's sending limit is reached; its mail stays queued (or goes through \
             its failover accounts) and is sent when the limit allows (probing every \
             delivery.quota_pause)"
        ),
        "tls" => error!(
            account,
            reason,
            "delivery paused: no secure connection to the upstream (the reason says what to \
             fix); nothing is sent in clear, mail stays queued"
        ),
        _ => {}
    }
}

/// An attempt for message `id` died (a bug: it panicked); the message is tried again at
/// `next_attempt`.
pub fn attempt_crashed(id: &str, error: &str, next_attempt: SystemTime) {
    error!(
        target: TARGET, id, error, next_attempt = %when(next_attempt),
        "BUG: the delivery attempt crashed; the message stays queued and is tried again \
         (please report this with the log lines around it)"
    );
}

/// The send budget of `account` (`max_per_minute` / `max_per_day`) is spent until `until`.
pub fn budget_spent(account: &str, until: SystemTime) {
    info!(target: TARGET, account, until = %when(until), "send budget spent; waiting");
}

/// Delivery through `account` resumed after a pause.
pub fn upstream_resumed(account: &str) {
    info!(target: TARGET, account, "upstream resumed");
}

/// `count` messages wait for `account`, which is not configured (a reload removed it). They
/// stay queued: nothing is re-routed silently.
pub fn account_missing(account: &str, count: usize) {
    warn!(
        target: TARGET, account, count,
        "messages wait for an account that is not configured; add it back, or move them with \
         `gmail-relay queue requeue --account NAME ID`"
    );
}

/// The operator deleted a message (`gmail-relay queue delete`) from `area` ("queue" or
/// "failed").
pub fn deleted(id: &str, area: &str) {
    warn!(target: TARGET, id, area, "deleted by the operator");
}

/// The operator moved a message from the failed area back into the queue.
pub fn requeued(id: &str) {
    info!(target: TARGET, id, "requeued by the operator");
}
