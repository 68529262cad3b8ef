//! The bytes uploaded to the Gmail API: the queued message, its recipients made to agree with
//! the envelope.
//!
//! The API has no envelope: it delivers to the addresses in `To:`, `Cc:` and `Bcc:`. The
//! relay's contract is the envelope: every pending envelope recipient gets the message, and
//! nobody else. So:
//!
//! - a pending recipient that no header names is added to a `Bcc:` field the relay prepends
//!   (Gmail removes `Bcc:` from what recipients see);
//! - a `To:` or `Cc:` field that names anyone who is not a pending recipient (a retry after
//!   some recipients already got the message, `sendmail` with explicit recipients, a list
//!   address) is renamed `X-Gmail-Relay-Original-To:` / `-Cc:`, so recipients still see who
//!   the message was for but the API does not send to them; the pending recipients it named
//!   go to the `Bcc:`. A `Bcc:` already in the message (the intake removes them, so only an
//!   old spool has one) is dropped the same way.
//!
//! Addresses are compared without regard to case.

use std::collections::HashSet;

use crate::rfc5322;

/// The message as uploaded, and what was changed to make its headers agree with the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The bytes to upload.
    pub bytes: Vec<u8>,
    /// Pending recipients put in the added `Bcc:`.
    pub bcc: Vec<String>,
    /// Addresses the headers named that are not pending recipients: their fields were
    /// renamed so the API does not send to them.
    pub withheld: Vec<String>,
}

/// The upload of `message` to exactly `recipients`.
pub fn prepare(message: &[u8], recipients: &[String]) -> Upload {
    let pending: HashSet<String> = recipients.iter().map(|r| r.to_lowercase()).collect();
    let end = rfc5322::header_end(message);
    let mut header = Vec::with_capacity(end + 64);
    let mut covered: HashSet<String> = HashSet::new();
    let mut withheld: Vec<String> = Vec::new();
    let mut at = 0;
    for (range, name) in rfc5322::fields(message) {
        let field = &message[range.clone()];
        header.extend_from_slice(&message[at..range.start]);
        at = range.end;
        let kind = ["To", "Cc", "Bcc"]
            .into_iter()
            .find(|k| name.eq_ignore_ascii_case(k.as_bytes()));
        let Some(kind) = kind else {
            header.extend_from_slice(field);
            continue;
        };
        let named: Vec<String> = rfc5322::addresses(&rfc5322::field_value(field))
            .into_iter()
            .map(|a| a.to_lowercase())
            .collect();
        let strangers: Vec<&String> = named.iter().filter(|a| !pending.contains(*a)).collect();
        for s in &strangers {
            if !withheld.contains(s) {
                withheld.push((*s).clone());
            }
        }
        if kind == "Bcc" {
            continue; // the relay writes its own
        }
        if strangers.is_empty() {
            covered.extend(named);
            header.extend_from_slice(field);
        } else {
            header.extend_from_slice(format!("X-Gmail-Relay-Original-{kind}").as_bytes());
            header.extend_from_slice(&field[name.len()..]);
        }
    }
    header.extend_from_slice(&message[at..end]);

    let mut seen = HashSet::new();
    let bcc: Vec<String> = recipients
        .iter()
        .filter(|r| {
            let r = r.to_lowercase();
            !covered.contains(&r) && seen.insert(r)
        })
        .cloned()
        .collect();
    let mut bytes =
        Vec::with_capacity(message.len() + 16 + bcc.iter().map(|b| b.len() + 4).sum::<usize>());
    if !bcc.is_empty() {
        // One address per line: a long list stays within the 998-octet line limit.
        bytes.extend_from_slice(b"Bcc: ");
        bytes.extend_from_slice(bcc.join(",\r\n ").as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&message[end..]);
    Upload {
        bytes,
        bcc,
        withheld,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(message: &str, recipients: &[&str]) -> Upload {
        let rcpts: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
        prepare(message.as_bytes(), &rcpts)
    }

    fn text(u: &Upload) -> String {
        String::from_utf8(u.bytes.clone()).unwrap()
    }

    #[test]
    fn headers_that_name_exactly_the_envelope_are_left_alone() {
        let m = "From: app@x\r\nTo: A <a@x>, b@x\r\nCc: C@X\r\nSubject: s\r\n\r\nbody\r\n";
        let u = up(m, &["a@x", "B@x", "c@x"]);
        assert_eq!(text(&u), m, "byte-identical");
        assert!(u.bcc.is_empty() && u.withheld.is_empty());
    }

    #[test]
    fn envelope_only_recipients_are_added_as_bcc() {
        let m = "To: a@x\r\nSubject: s\r\n\r\nbody\r\n";
        let u = up(m, &["a@x", "hidden@y", "other@z"]);
        assert_eq!(
            text(&u),
            "Bcc: hidden@y,\r\n other@z\r\nTo: a@x\r\nSubject: s\r\n\r\nbody\r\n"
        );
        assert_eq!(u.bcc, ["hidden@y", "other@z"]);
    }

    #[test]
    fn fields_naming_anyone_else_are_renamed_and_their_pending_recipients_bcc_d() {
        // A retry: a@x got it already; b@x is still pending; the list never was a recipient.
        let m = "To: a@x,\r\n b@x\r\nCc: list@lists.x\r\nReply-To: a@x\r\n\r\nbody\r\n";
        let u = up(m, &["b@x"]);
        assert_eq!(
            text(&u),
            "Bcc: b@x\r\nX-Gmail-Relay-Original-To: a@x,\r\n b@x\r\nX-Gmail-Relay-Original-Cc: \
             list@lists.x\r\nReply-To: a@x\r\n\r\nbody\r\n"
        );
        assert_eq!(u.withheld, ["a@x", "list@lists.x"]);
        // A Bcc: from an old spool is never passed on; its addresses are withheld.
        let u = up("Bcc: x@y, z@y\r\nTo: z@y\r\n\r\n", &["z@y"]);
        assert_eq!(text(&u), "To: z@y\r\n\r\n");
        assert_eq!(u.withheld, ["x@y"]);
        // A local user name is nobody the API can deliver to: withheld too.
        let u = up("To: root\r\n\r\nx", &["admin@x"]);
        assert_eq!(
            text(&u),
            "Bcc: admin@x\r\nX-Gmail-Relay-Original-To: root\r\n\r\nx"
        );
    }

    #[test]
    fn many_recipients_fold_and_duplicates_go_once() {
        let rcpts: Vec<String> = (0..100).map(|i| format!("user{i}@example.com")).collect();
        let mut all: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        all.push("USER1@example.com");
        let u = up("Subject: s\r\n\r\n", &all);
        assert_eq!(u.bcc.len(), 100);
        assert!(text(&u).lines().all(|l| l.len() < 998));
    }
}
