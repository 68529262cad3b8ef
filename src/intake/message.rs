//! What the relay changes in a message before it is queued, and nothing else.
//!
//! - A `Received:` trace header on top. It names the client by the name it gave and its IP
//!   literal. There is no reverse DNS lookup: one per session would slow every client, tell the
//!   resolver who is mailing, and fail offline; the only name the relay resolves is the
//!   upstream's.
//! - `Date:` and `Message-ID:` when the message has none (legacy devices often send neither;
//!   Gmail files undated mail badly and its MX refuses mail without a Message-ID).
//! - `Bcc:` (and `Resent-Bcc:`) removed: Gmail does not strip them, so every recipient would see
//!   the blind copies.
//!
//! Everything after the header section is stored byte for byte.
//!
//! What is added is bounded by [`crate::config::defaults::ADDED_HEADERS_MAX`] (the HELO name
//! in `Received:` is cut at [`HELO_SHOWN`] bytes, an over-long recipient is not named), so the
//! default size limit, Gmail's less that bound, never lets through a message Gmail refuses.

use std::net::IpAddr;
use std::time::SystemTime;

use crate::rfc5322;

/// Most bytes of the client's HELO name shown in `Received:` (a DNS name is at most 253).
pub const HELO_SHOWN: usize = 255;
/// The longest recipient named in `Received:` (RFC 5321's limit on a path is 256).
const RECIPIENT_SHOWN: usize = 254;

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What the `Received:` header records.
pub struct Trace<'a> {
    /// The name from HELO/EHLO.
    pub helo: &'a str,
    /// The client's address.
    pub client: IpAddr,
    /// The relay's host name.
    pub by: &'a str,
    /// `ESMTP`, `SMTP` or `UTF8SMTP` (RFC 3848, 6531).
    pub protocol: &'static str,
    /// The queue id.
    pub id: &'a str,
    /// Recipients; named in the header only when there is exactly one, as Postfix does, so a
    /// multi-recipient message does not disclose its Bcc recipients.
    pub recipients: &'a [String],
    /// When it was received.
    pub at: SystemTime,
}

/// The `Received:` header, folded, ending in CRLF.
pub fn received_header(t: &Trace<'_>) -> Vec<u8> {
    let client = match t.client.to_canonical() {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    let mut h = format!(
        "Received: from {} ({client})\r\n\tby {} (gmail-relay) with {} id {}",
        rfc5322::printable(cut(t.helo, HELO_SHOWN)),
        t.by,
        t.protocol,
        t.id
    );
    if let [only] = t.recipients
        && only.len() <= RECIPIENT_SHOWN
    {
        h.push_str(&format!("\r\n\tfor <{}>", rfc5322::printable(only)));
    }
    h.push_str(&format!("; {}\r\n", rfc5322::date(t.at)));
    h.into_bytes()
}

/// What [`hygiene`] did to the header section.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hygiene {
    /// Header fields to put above the message's own (`Date:`, `Message-ID:`), CRLF-terminated.
    pub added: Vec<u8>,
    /// How many `Bcc:`/`Resent-Bcc:` fields were removed.
    pub bcc_removed: usize,
}

/// Fixes the header section of `message` in place (removes Bcc) and returns the fields to add.
/// `message_id` is used if the message has no `Message-ID:`.
pub fn hygiene(message: &mut Vec<u8>, message_id: &str, now: SystemTime) -> Hygiene {
    let mut has_date = false;
    let mut has_message_id = false;
    let mut bcc = Vec::new(); // byte ranges of Bcc fields, folded lines included
    for (range, name) in rfc5322::fields(message) {
        if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        } else if name.eq_ignore_ascii_case(b"message-id") {
            has_message_id = true;
        } else if name.eq_ignore_ascii_case(b"bcc") || name.eq_ignore_ascii_case(b"resent-bcc") {
            bcc.push(range);
        }
    }
    for range in bcc.iter().rev() {
        message.drain(range.clone());
    }
    let mut added = Vec::new();
    if !has_date {
        added.extend_from_slice(format!("Date: {}\r\n", rfc5322::date(now)).as_bytes());
    }
    if !has_message_id {
        added.extend_from_slice(format!("Message-ID: <{message_id}>\r\n").as_bytes());
    }
    Hygiene {
        added,
        bcc_removed: bcc.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The worst case: the longest HELO a command line allows, the longest host name, an
    /// IPv6 client, one long recipient, no Date and no Message-ID.
    #[test]
    fn what_the_relay_adds_stays_within_its_bound() {
        let by = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(by.len(), 253);
        let helo = "h".repeat(4090);
        let rcpt = vec![format!("{}@example.com", "r".repeat(240))];
        let trace = received_header(&Trace {
            helo: &helo,
            client: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap(),
            by: &by,
            protocol: "UTF8SMTPSA",
            id: "0123456789abcdef",
            recipients: &rcpt,
            at: SystemTime::now(),
        });
        let mut body = b"Subject: x\r\n\r\nx\r\n".to_vec();
        let message_id = format!("0123456789abcdef.ffffffff@{by}");
        let fixed = hygiene(&mut body, &message_id, SystemTime::now());
        let added = trace.len() + fixed.added.len();
        assert!(
            added as u64 <= crate::config::defaults::ADDED_HEADERS_MAX,
            "{added} bytes"
        );
        let shown = String::from_utf8(trace).unwrap();
        assert!(shown.contains(&"h".repeat(HELO_SHOWN)) && !shown.contains(&"h".repeat(256)));
        assert_eq!(cut("ééé", 3), "é", "cut at a character boundary");
    }

    #[test]
    fn received_header_shape() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let one = vec!["a@example.com".to_string()];
        let h = received_header(&Trace {
            helo: "printer\r\nX-Evil: 1",
            client: "::ffff:192.0.2.7".parse().unwrap(),
            by: "relay.local",
            protocol: "ESMTP",
            id: "0006455f3c2a1b2c",
            recipients: &one,
            at,
        });
        let h = String::from_utf8(h).unwrap();
        assert_eq!(
            h,
            "Received: from printer??X-Evil: 1 ([192.0.2.7])\r\n\tby relay.local (gmail-relay) \
             with ESMTP id 0006455f3c2a1b2c\r\n\tfor <a@example.com>; Wed, 18 Nov 2026 11:06:40 +0000\r\n"
        );
    }

    fn fix(msg: &str) -> (String, String, usize) {
        let mut m = msg.as_bytes().to_vec();
        let h = hygiene(
            &mut m,
            "id.1@relay.test",
            UNIX_EPOCH + Duration::from_secs(1_795_000_000),
        );
        (
            String::from_utf8(h.added).unwrap(),
            String::from_utf8(m).unwrap(),
            h.bcc_removed,
        )
    }

    #[test]
    fn missing_date_and_message_id_are_added() {
        let (added, rest, _) = fix("Subject: x\r\n\r\nbody\r\n");
        assert_eq!(
            added,
            "Date: Wed, 18 Nov 2026 11:06:40 +0000\r\nMessage-ID: <id.1@relay.test>\r\n"
        );
        assert_eq!(rest, "Subject: x\r\n\r\nbody\r\n");
    }

    #[test]
    fn present_fields_are_kept_in_any_case() {
        let msg =
            "DATE: Mon, 1 Jan 2024 00:00:00 +0000\r\nmessage-id:<a@b>\r\n\r\nDate: in the body\r\n";
        let (added, rest, _) = fix(msg);
        assert_eq!(added, "");
        assert_eq!(rest, msg);
    }

    #[test]
    fn fields_in_the_body_do_not_count() {
        let (added, rest, n) =
            fix("Subject: x\r\n\r\nDate: 1\r\nMessage-ID: <x>\r\nBcc: keep@x\r\n");
        assert!(added.contains("Date:") && added.contains("Message-ID:"));
        assert_eq!(n, 0);
        assert!(rest.contains("Bcc: keep@x"), "the body is untouched");
    }

    #[test]
    fn bcc_is_removed_with_its_folded_lines() {
        let msg = "To: a@x\r\nBcc: secret1@x,\r\n secret2@x\r\nSubject: s\r\nresent-bcc: r@x\r\nDate: d\r\nMessage-ID: <m>\r\n\r\nbody\r\n";
        let (_, rest, n) = fix(msg);
        assert_eq!(n, 2);
        assert_eq!(
            rest,
            "To: a@x\r\nSubject: s\r\nDate: d\r\nMessage-ID: <m>\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn a_message_without_a_body_or_headers() {
        let (added, rest, _) = fix("Bcc: x@y\r\n");
        assert!(added.starts_with("Date:"));
        assert_eq!(rest, "");
        let (_, rest, _) = fix("\r\njust a body\r\n");
        assert_eq!(rest, "\r\njust a body\r\n");
        let (added, rest, _) = fix("");
        assert!(added.contains("Message-ID"));
        assert_eq!(rest, "");
    }

    #[test]
    fn several_recipients_are_not_listed() {
        let two = vec!["a@x".to_string(), "b@x".to_string()];
        let h = received_header(&Trace {
            helo: "h",
            client: "::1".parse().unwrap(),
            by: "r",
            protocol: "SMTP",
            id: "1",
            recipients: &two,
            at: SystemTime::now(),
        });
        let h = String::from_utf8(h).unwrap();
        assert!(h.contains("([IPv6:::1])") && !h.contains("for <"), "{h}");
    }
}
