//! The queue commands' text output, for people (scripts use `--json`).
//!
//! `queue list` reads like Postfix's `mailq`: one block per message (id, size, age, state,
//! sender, then one line per recipient with its state and the upstream's last reply) and a
//! closing summary line; the first line says whether delivery runs or is paused, and why.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::Done;
use super::view::{Listing, MessageState, MessageView, Shown};
use crate::scheduler::Status;
use crate::spool::RecipientStatus;

/// `3m`, `2h 5m`, `4d 1h`: a duration to the minute (seconds under a minute).
pub fn short(d: Duration) -> String {
    let secs = d.as_secs();
    let rounded = if secs < 60 { secs } else { secs - secs % 60 };
    let rounded = if secs >= 86_400 {
        rounded - rounded % 3600
    } else {
        rounded
    };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

fn age(now: SystemTime, then: SystemTime) -> String {
    short(now.duration_since(then).unwrap_or_default())
}

/// `in 4m`, or `now` for a time not ahead of `now`.
pub fn until(now: SystemTime, then: SystemTime) -> String {
    match then.duration_since(now) {
        Ok(d) if d.as_secs() > 0 => format!("in {}", short(d)),
        _ => "now".to_owned(),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

fn sender(s: &str) -> &str {
    if s.is_empty() { "<>" } else { s }
}

/// The state of delivery: one line, or with several accounts one line per account (and one
/// per account that mail waits for but is not configured).
pub fn render_status(status: Option<&Status>, running: bool, now: SystemTime) -> String {
    let mut text = one_line(status, running, now);
    let Some(s) = status.filter(|_| running) else {
        return text;
    };
    if s.accounts.len() > 1 && !s.on_hold {
        text = s
            .accounts
            .iter()
            .map(|a| account_line(a, now))
            .collect::<Vec<_>>()
            .join("\n");
    }
    for (account, n) in &s.missing {
        text.push_str(&format!(
            "\nWARNING: {n} message(s) wait for the account {account:?}, which is not \
             configured: add it back and reload, or move them with `gmail-relay queue requeue \
             --account NAME ID`"
        ));
    }
    text
}

fn pause_text(p: &crate::scheduler::PauseStatus, now: SystemTime) -> String {
    format!(
        "PAUSED ({}): {}; next probe {} ({})",
        p.cause,
        p.reason,
        humantime::format_rfc3339_seconds(p.next_probe),
        until(now, p.next_probe)
    )
}

fn account_line(a: &crate::scheduler::AccountStatus, now: SystemTime) -> String {
    let state = match &a.pause {
        Some(p) => pause_text(p, now),
        None if a.active > 0 => format!("running, {} attempt(s) in progress", a.active),
        None => "running".to_owned(),
    };
    let mut line = format!("account {} ({}): {state}", a.name, a.label);
    if a.pause.is_some() && !a.failover.is_empty() {
        line.push_str(&format!(
            "; its mail goes through {}",
            a.failover.join(", then ")
        ));
    }
    if let Some(left) = a.budget_day {
        line.push_str(&format!("; {left} recipient(s) left today"));
    }
    line
}

fn one_line(status: Option<&Status>, running: bool, now: SystemTime) -> String {
    match status {
        _ if !running => "relay not running: the spool was read directly; changes take effect \
                          when it starts"
            .to_owned(),
        None => "relay running".to_owned(),
        Some(s) if s.on_hold => format!(
            "delivery on hold (delivery.hold = true): {} message(s) wait; set it to false and \
             reload to deliver",
            s.scheduled + s.held
        ),
        Some(s) => match &s.pause {
            Some(p) => format!("delivery {}", pause_text(p, now)),
            None if s.active.is_empty() => "delivery running".to_owned(),
            None => format!(
                "delivery running, {} attempt(s) in progress",
                s.active.len()
            ),
        },
    }
}

/// Why queued messages are not going out, if they are not: a pause or `delivery.hold`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stopped {
    No,
    Paused,
    OnHold,
}

fn message_block(out: &mut String, m: &MessageView, now: SystemTime, stopped: Stopped) {
    let _ = write!(
        out,
        "{}  {:>9}  {:>8} old  {}",
        m.id,
        size(m.size),
        age(now, m.received_at),
        m.state.as_str()
    );
    if m.attempts > 0 {
        let _ = write!(out, ", {} attempt(s)", m.attempts);
    }
    if let (Some(next), MessageState::Queued | MessageState::Deferred) = (m.next_attempt, m.state) {
        match until(now, next) {
            _ if stopped == Stopped::OnHold => {
                let _ = write!(out, ", on hold (delivery.hold)");
            }
            when if when == "now" && stopped == Stopped::Paused => {
                let _ = write!(out, ", waiting for the pause to end");
            }
            when => {
                let _ = write!(out, ", next {when}");
            }
        }
    }
    let _ = writeln!(out);
    if m.account.is_empty() || m.account == crate::config::DEFAULT_ACCOUNT {
        let _ = writeln!(out, "    from {}", sender(&m.sender));
    } else {
        let _ = writeln!(
            out,
            "    from {} (account {})",
            sender(&m.sender),
            m.account
        );
    }
    let width = m
        .recipients
        .iter()
        .map(|r| r.address.len())
        .max()
        .unwrap_or(0);
    for r in &m.recipients {
        let status = match r.status {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Failed => "failed",
        };
        let line = format!(
            "    to   {:width$}  {status:9}  {}",
            r.address,
            r.reply.as_deref().unwrap_or_default()
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if let Some(e) = &m.failed_reason {
        let _ = writeln!(out, "    failed: {e}");
    } else if let Some(e) = &m.last_error {
        let _ = writeln!(out, "    last error: {e}");
    }
}

/// `queue list`.
pub fn render_list(listing: &Listing, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        render_status(listing.status.as_ref(), listing.running, now)
    );
    let count = |state| listing.messages.iter().filter(|m| m.state == state).count();
    let failed = count(MessageState::Failed);
    let queued = listing.messages.len() - failed;
    if listing.messages.is_empty() {
        let _ = writeln!(out, "queue is empty");
        return out;
    }
    let stopped = match &listing.status {
        Some(s) if s.on_hold => Stopped::OnHold,
        Some(s) if s.pause.is_some() => Stopped::Paused,
        _ => Stopped::No,
    };
    for m in &listing.messages {
        let _ = writeln!(out);
        message_block(&mut out, m, now, stopped);
    }
    let bytes: u64 = listing.messages.iter().map(|m| m.size).sum();
    let _ = writeln!(
        out,
        "\n-- {queued} queued ({} held, {} active, {} deferred), {failed} failed, {} in total",
        count(MessageState::Held),
        count(MessageState::Active),
        count(MessageState::Deferred),
        size(bytes)
    );
    out
}

/// `queue show`.
pub fn render_show(shown: &Shown, now: SystemTime) -> String {
    let mut out = String::new();
    let m = &shown.message;
    message_block(&mut out, m, now, Stopped::No);
    let _ = writeln!(
        out,
        "    received {} from {} (helo {})",
        humantime::format_rfc3339_seconds(m.received_at),
        m.client,
        m.helo
    );
    if !shown.history.is_empty() {
        let _ = writeln!(out, "\nhistory:");
        for h in &shown.history {
            let _ = writeln!(
                out,
                "    {}  {}",
                humantime::format_rfc3339_seconds(h.at),
                h.event
            );
        }
    }
    match &shown.body {
        Some(body) => {
            let _ = write!(out, "\n{}", body.replace("\r\n", "\n"));
        }
        None => {
            let _ = write!(out, "\n{}", shown.headers.replace("\r\n", "\n"));
        }
    }
    out
}

/// The result of a change.
pub fn render_done(done: &Done, running: bool) -> String {
    if running || done.message.contains("relay is stopped") {
        done.message.clone()
    } else {
        format!(
            "{} (relay not running: the spool was changed directly)",
            done.message
        )
    }
}
