//! Delivery status notifications: the message that tells a sender their mail failed.
//!
//! An RFC 3464 `multipart/report`: a human-readable explanation, a `message/delivery-status`
//! part with one block per failed recipient (the upstream's reply as `Diagnostic-Code`), and
//! the failed message's header section (`text/rfc822-headers`; the body is not returned).
//!
//! Who gets one is `delivery.bounce`: the envelope sender (default), `delivery.postmaster`, or
//! nobody. A message with the null sender never causes one; DSNs are sent with the null sender,
//! so a DSN that fails is not bounced again and there are no loops. Pure: this module builds
//! bytes; the scheduler queues them like any other message.

use std::time::SystemTime;

pub use crate::config::BounceTo;
use crate::rfc5322;

impl BounceTo {
    /// The recipient of the DSN for a message from `sender`, if one should be sent.
    pub fn recipient(&self, sender: &str) -> Option<String> {
        if sender.is_empty() {
            return None;
        }
        match self {
            BounceTo::Sender => Some(sender.to_owned()),
            BounceTo::Postmaster(addr) => Some(addr.clone()),
            BounceTo::Nobody => None,
        }
    }
}

/// One recipient that failed, and why.
#[derive(Debug, Clone)]
pub struct Failed<'a> {
    /// The address.
    pub address: &'a str,
    /// The upstream's reply, or the relay's reason (e.g. too old).
    pub reason: &'a str,
}

/// What a DSN reports.
pub struct Report<'a> {
    /// The relay's name.
    pub hostname: &'a str,
    /// The failed message's queue id.
    pub queue_id: &'a str,
    /// When the failed message arrived.
    pub arrival: SystemTime,
    /// Its original envelope sender.
    pub sender: &'a str,
    /// Who gets the DSN.
    pub to: &'a str,
    /// The recipients that failed.
    pub failed: &'a [Failed<'a>],
    /// The failed message (only its header section is included).
    pub message: &'a [u8],
    /// When the DSN is made.
    pub now: SystemTime,
}

/// The enhanced status code at the start of a reply text (`550 5.1.1 ...` → `5.1.1`); `5.0.0`
/// if there is none.
fn status(reason: &str) -> String {
    reason
        .split_whitespace()
        .take(2)
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "4" | "5")
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|s| format!("5{}", &s[1..]))
        .unwrap_or_else(|| "5.0.0".to_owned())
}

/// The DSN message bytes (CRLF line endings).
pub fn build(r: &Report<'_>) -> Vec<u8> {
    let date = rfc5322::date(r.now);
    let boundary = format!("{}.{:08x}/{}", r.queue_id, fastrand::u32(..), r.hostname);
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push_str("\r\n");
    };
    line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{}>",
        r.hostname
    ));
    line(&format!("To: <{}>", rfc5322::printable(r.to)));
    line("Subject: Undelivered Mail Returned to Sender");
    line(&format!("Date: {date}"));
    line(&format!(
        "Message-ID: <{}.dsn.{:08x}@{}>",
        r.queue_id,
        fastrand::u32(..),
        r.hostname
    ));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""
    ));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=utf-8");
    line("Content-Transfer-Encoding: 8bit");
    line("");
    line(&format!("This is the mail relay at {}.", r.hostname));
    line("");
    line(&format!(
        "Your message (queue id {}) could not be delivered to the following recipient{}:",
        r.queue_id,
        if r.failed.len() == 1 { "" } else { "s" }
    ));
    line("");
    for f in r.failed {
        line(&format!(
            "<{}>: {}",
            rfc5322::printable(f.address),
            rfc5322::printable(f.reason)
        ));
    }
    line("");
    line("Its headers are attached below.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("");
    line(&format!("Reporting-MTA: dns; {}", r.hostname));
    line(&format!("X-Gmail-Relay-Queue-ID: {}", r.queue_id));
    if !r.sender.is_empty() {
        line(&format!(
            "X-Original-Sender: rfc822; {}",
            rfc5322::printable(r.sender)
        ));
    }
    line(&format!("Arrival-Date: {}", rfc5322::date(r.arrival)));
    for f in r.failed {
        line("");
        line(&format!(
            "Final-Recipient: rfc822; {}",
            rfc5322::printable(f.address)
        ));
        line("Action: failed");
        line(&format!("Status: {}", status(f.reason)));
        line(&format!(
            "Diagnostic-Code: smtp; {}",
            rfc5322::printable(f.reason)
        ));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&r.message[..rfc5322::header_end(r.message)]);
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn report<'a>(failed: &'a [Failed<'a>], message: &'a [u8]) -> Report<'a> {
        Report {
            hostname: "relay.test",
            queue_id: "0006455f3c2a1b2c",
            arrival: UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            sender: "app@example.com",
            to: "app@example.com",
            failed,
            message,
            now: UNIX_EPOCH + Duration::from_secs(1_795_000_100),
        }
    }

    #[test]
    fn a_dsn_has_the_three_parts_and_one_block_per_failure() {
        let failed = [
            Failed {
                address: "gone@example.com",
                reason: "550 5.1.1 The email account that you tried to reach does not exist.",
            },
            Failed {
                address: "big@example.com",
                reason: "552 5.2.3 Your message exceeded Google's message size limits.",
            },
        ];
        let msg = b"Subject: hello\r\nFrom: app@example.com\r\n\r\nsecret body\r\n";
        let dsn = String::from_utf8(build(&report(&failed, msg))).unwrap();
        assert!(dsn.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(dsn.contains("Content-Type: message/delivery-status"));
        assert!(dsn.contains(
            "Final-Recipient: rfc822; gone@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(dsn.contains("Status: 5.2.3"));
        assert!(dsn.contains("Diagnostic-Code: smtp; 550 5.1.1 The email account"));
        assert!(dsn.contains(
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: hello\r\nFrom: app@example.com\r\n"
        ));
        assert!(!dsn.contains("secret body"), "the body is not returned");
        assert!(dsn.contains("Auto-Submitted: auto-replied"));
        assert!(
            !dsn.contains("\n") || dsn.split('\n').all(|l| l.is_empty() || l.ends_with('\r')),
            "CRLF only"
        );
    }

    #[test]
    fn status_codes_from_replies() {
        assert_eq!(status("550 5.1.1 no such user"), "5.1.1");
        assert_eq!(
            status("not delivered within queue.max_age (5days); last error: 451 4.3.0 later"),
            "5.0.0"
        );
        assert_eq!(
            status("421 4.4.2 timeout"),
            "5.4.2",
            "a failure is reported as permanent"
        );
        assert_eq!(status("something else"), "5.0.0");
    }

    #[test]
    fn who_gets_a_dsn() {
        assert_eq!(
            BounceTo::Sender.recipient("a@b.c").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(
            BounceTo::Sender.recipient(""),
            None,
            "never for the null sender"
        );
        assert_eq!(
            BounceTo::Postmaster("pm@x.y".into())
                .recipient("a@b.c")
                .as_deref(),
            Some("pm@x.y")
        );
        assert_eq!(
            BounceTo::Postmaster("pm@x.y".into()).recipient(""),
            None,
            "DSNs are never bounced"
        );
        assert_eq!(BounceTo::Nobody.recipient("a@b.c"), None);
    }
}
