//! What the relay adds to a message before it is queued: the `Received:` trace header.
//!
//! The header names the client by the name it gave and its IP literal. There is no reverse DNS
//! lookup: one per session would slow every client, tell the resolver who is mailing, and fail
//! offline; the only name the relay resolves is the upstream's.

use std::net::IpAddr;
use std::time::SystemTime;

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
        printable(t.helo),
        t.by,
        t.protocol,
        t.id
    );
    if let [only] = t.recipients {
        h.push_str(&format!("\r\n\tfor <{}>", printable(only)));
    }
    h.push_str(&format!("; {}\r\n", rfc5322_date(t.at)));
    h.into_bytes()
}

/// A date in RFC 5322 form, e.g. `Mon, 23 Nov 2026 13:35:50 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let http = httpdate::fmt_http_date(t);
    // IMF-fixdate is RFC 5322 syntax with the obsolete zone "GMT"; write the numeric zone.
    match http.strip_suffix(" GMT") {
        Some(rest) => format!("{rest} +0000"),
        None => http,
    }
}

/// Client-supplied text made safe for a header: no control characters, no line breaks.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
