//! Optional rewrites for Gmail (`[rewrite]`, off by default).
//!
//! Gmail sends every message as the authenticated account: a `From:` that is not the account or
//! one of its verified "Send mail as" aliases is replaced on the way through. These rewrites
//! make that explicit and predictable instead of leaving it to Gmail:
//! - `envelope_from = "account"`: MAIL FROM becomes the account (the null sender stays null,
//!   so bounces keep their meaning);
//! - `header_from = "account"`: the `From:` address becomes the account, keeping the display
//!   name, and the original `From:` moves to `Reply-To:` (unless the message has one), so
//!   replies still reach the original sender.
//!
//! The spool keeps the message as received; the rewrite happens on the copy sent upstream.

use crate::rfc5322;

/// What to rewrite, and the account to rewrite to.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Replace the envelope sender with the account.
    pub envelope_from: bool,
    /// Replace the `From:` address with the account.
    pub header_from: bool,
    /// The authenticated account (`upstream.username`).
    pub account: String,
}

impl Rewrite {
    /// The rewrites `cfg` asks for, to `account`.
    pub fn new(cfg: crate::config::RewriteConfig, account: &str) -> Rewrite {
        Rewrite {
            envelope_from: cfg.envelope_from,
            header_from: cfg.header_from,
            account: account.to_owned(),
        }
    }

    /// The envelope sender to use.
    pub fn sender<'a>(&'a self, sender: &'a str) -> &'a str {
        if self.envelope_from && !sender.is_empty() {
            &self.account
        } else {
            sender
        }
    }

    /// The message to send, if it must change.
    pub fn message(&self, message: &[u8]) -> Option<Vec<u8>> {
        if self.header_from {
            from_to_account(message, &self.account)
        } else {
            None
        }
    }
}

/// Splits a `From:` value into display name and address: `"A B" <a@b>`, `A B <a@b>`, `a@b`,
/// `a@b (A B)`.
fn split_mailbox(value: &str) -> (Option<String>, String) {
    if let (Some(open), Some(close)) = (value.rfind('<'), value.rfind('>'))
        && open < close
    {
        let display = value[..open].trim();
        let display = (!display.is_empty()).then(|| display.to_owned());
        return (display, value[open + 1..close].trim().to_owned());
    }
    match value.split_once('(') {
        Some((addr, comment)) => {
            let name = comment.trim_end_matches(')').trim();
            let name = (!name.is_empty()).then(|| format!("\"{}\"", name.replace('"', "")));
            (name, addr.trim().to_owned())
        }
        None => (None, value.trim().to_owned()),
    }
}

fn from_to_account(message: &[u8], account: &str) -> Option<Vec<u8>> {
    let fields = rfc5322::fields(message);
    let (range, _) = fields
        .iter()
        .find(|(_, name)| name.eq_ignore_ascii_case(b"from"))?
        .clone();
    let has_reply_to = fields
        .iter()
        .any(|(_, name)| name.eq_ignore_ascii_case(b"reply-to"));
    let field = String::from_utf8_lossy(&message[range.clone()]).to_string();
    let value = field
        .split_once(':')
        .map(|(_, v)| v)
        .unwrap_or("")
        .replace("\r\n", "")
        .trim()
        .to_owned();
    let (display, address) = split_mailbox(&value);
    if address.eq_ignore_ascii_case(account) {
        return None;
    }
    let mut replacement = match display {
        Some(name) => format!("From: {name} <{account}>\r\n"),
        None => format!("From: <{account}>\r\n"),
    };
    if !has_reply_to && !address.is_empty() {
        replacement.push_str(&format!("Reply-To: {value}\r\n"));
    }
    let mut out = Vec::with_capacity(message.len() + replacement.len());
    out.extend_from_slice(&message[..range.start]);
    out.extend_from_slice(replacement.as_bytes());
    out.extend_from_slice(&message[range.end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "me@gmail.com";

    fn rewrite(msg: &str) -> Option<String> {
        from_to_account(msg.as_bytes(), ACCOUNT).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn the_address_changes_the_name_stays_and_replies_go_to_the_original() {
        assert_eq!(
            rewrite("Subject: s\r\nFrom: \"Printer 3F\" <scan@lan.example>\r\n\r\nbody\r\n")
                .unwrap(),
            "Subject: s\r\nFrom: \"Printer 3F\" <me@gmail.com>\r\nReply-To: \"Printer 3F\" <scan@lan.example>\r\n\r\nbody\r\n"
        );
        assert_eq!(
            rewrite("From: nas@lan.example\r\n\r\nx").unwrap(),
            "From: <me@gmail.com>\r\nReply-To: nas@lan.example\r\n\r\nx"
        );
        assert_eq!(
            rewrite("From: cam@lan.example (Door Camera)\r\n\r\nx").unwrap(),
            "From: \"Door Camera\" <me@gmail.com>\r\nReply-To: cam@lan.example (Door Camera)\r\n\r\nx"
        );
    }

    #[test]
    fn an_existing_reply_to_folding_and_no_change_needed() {
        let out = rewrite("From: A\r\n <a@x.test>\r\nReply-To: list@x.test\r\n\r\nx").unwrap();
        assert_eq!(
            out,
            "From: A <me@gmail.com>\r\nReply-To: list@x.test\r\n\r\nx"
        );
        assert_eq!(rewrite("From: Me <ME@gmail.com>\r\n\r\nx"), None);
        assert_eq!(rewrite("Subject: no from\r\n\r\nFrom: in body\r\n"), None);
    }

    #[test]
    fn the_envelope_sender() {
        let r = Rewrite {
            envelope_from: true,
            header_from: false,
            account: ACCOUNT.into(),
        };
        assert_eq!(r.sender("app@lan.example"), ACCOUNT);
        assert_eq!(r.sender(""), "", "bounces keep the null sender");
        assert_eq!(r.message(b"From: a@b\r\n\r\n"), None);
    }
}
