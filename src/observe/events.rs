//! The mail event log: one line per event in a message's life, target `gmail_relay::mail`.
//!
//! Field names are a stable interface (`id`, `client`, `from`, `to`, `size`, `reply`,
//! `reason`, `next_attempt`, `attempts`); change them only with a note in the README. An empty
//! sender (the null sender `<>`) is logged as `<>`.

use std::net::IpAddr;
use std::time::SystemTime;

use tracing::{error, info, warn};

const TARGET: &str = "gmail_relay::mail";

fn sender(from: &str) -> &str {
    if from.is_empty() { "<>" } else { from }
}

fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A message was committed to the spool and acknowledged with 250.
pub fn received(id: &str, client: IpAddr, from: &str, to: &[String], size: usize) {
    info!(target: TARGET, id, %client, from = sender(from), to = %to.join(","), size, "received");
}

/// The upstream accepted the message for one recipient.
pub fn delivered(id: &str, to: &str, reply: &str) {
    info!(target: TARGET, id, to, reply, "delivered");
}

/// An attempt failed temporarily; the message (or these recipients) will be tried again.
pub fn deferred(id: &str, to: &[String], reason: &str, next_attempt: SystemTime, attempts: u32) {
    info!(
        target: TARGET, id, to = %to.join(","), reason,
        next_attempt = %when(next_attempt), attempts, "deferred"
    );
}

/// The upstream refused one recipient permanently; the others are unaffected.
pub fn recipient_failed(id: &str, to: &str, reply: &str) {
    warn!(target: TARGET, id, to, reply, "recipient failed");
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
/// "credentials", "quota"). Causes only the operator can fix get an error line saying so.
pub fn upstream_paused(cause: &str, reason: &str, until: SystemTime) {
    warn!(target: TARGET, cause, reason, until = %when(until), "upstream paused");
    match cause {
        "credentials" => error!(
            reason,
            "delivery paused: the upstream refuses the relay's login or account (the reason says \
             what to fix); mail stays queued and is sent once the login works"
        ),
        "quota" => error!(
            "the Gmail account's sending limit is reached; mail stays queued and is sent when the \
             limit allows (probing every delivery.quota_pause)"
        ),
        "tls" => error!(
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

/// The send budget (`delivery.max_per_minute` / `max_per_day`) is spent until `until`.
pub fn budget_spent(until: SystemTime) {
    info!(target: TARGET, until = %when(until), "send budget spent; waiting");
}

/// Delivery resumed after a pause.
pub fn upstream_resumed() {
    info!(target: TARGET, "upstream resumed");
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
