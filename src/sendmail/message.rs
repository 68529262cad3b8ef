//! Reading the message on standard input and working out its envelope.

use std::io::{BufRead, Read};

use super::{Invocation, SendmailError};
use crate::rfc5322;

/// What the caller's environment supplies.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The relay's host name, for unqualified senders (`user` → `user@hostname`).
    pub hostname: String,
    /// The login name of the caller, the sender when neither `-f` nor `From:` gives one.
    pub user: String,
    /// Where mail for local users (`root`) goes (`sendmail.admin_address`).
    pub admin_address: Option<String>,
}

impl Defaults {
    /// The caller's login name: `$LOGNAME`, `$USER`, the password file entry of the real
    /// uid, else `root` for uid 0 or `nobody`.
    pub fn login_name() -> String {
        for var in ["LOGNAME", "USER"] {
            if let Ok(name) = std::env::var(var)
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_graphic() && c != '@')
            {
                return name;
            }
        }
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next().map(str::to_owned))
            });
        let Some(uid) = uid else {
            return "nobody".to_owned();
        };
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == uid)
            .map(|f| f[0].to_owned())
            .unwrap_or_else(|| if uid == "0" { "root" } else { "nobody" }.to_owned())
    }
}

/// Reads the message: every line gets a CRLF ending; unless `dot_ends` is false, a line with
/// only `.` ends it (traditional sendmail).
pub fn read_message(input: impl Read, dot_ends: bool) -> Result<Vec<u8>, SendmailError> {
    let mut reader = std::io::BufReader::new(input);
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(SendmailError::Input)?;
        if n == 0 {
            break;
        }
        let mut text: &[u8] = &line;
        text = text.strip_suffix(b"\n").unwrap_or(text);
        text = text.strip_suffix(b"\r").unwrap_or(text);
        if dot_ends && text == b"." {
            break;
        }
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

/// A message ready to hand over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The envelope sender; empty for the null sender.
    pub sender: String,
    /// The envelope recipients, each once.
    pub recipients: Vec<String>,
    /// The message, CRLF lines, `Bcc:` removed, `From:` added if it had none.
    pub message: Vec<u8>,
    /// Ask for no delivery status notification whatever happens (`NOTIFY=NEVER`, RFC 3461;
    /// `sendmail -N never`).
    pub notify_never: bool,
}

/// Works out the envelope of `message` from the command line and (with `-t`) its headers,
/// removes `Bcc:`, and adds a `From:` when there is none (the relay adds `Date:` and
/// `Message-ID:`).
pub fn prepare(
    inv: &Invocation,
    mut message: Vec<u8>,
    defaults: &Defaults,
) -> Result<Submission, SendmailError> {
    let mut from_header = None;
    let mut header_recipients = Vec::new();
    let mut bcc = Vec::new();
    for (range, name) in rfc5322::fields(&message) {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("from") && from_header.is_none() {
            from_header = rfc5322::addresses(&rfc5322::field_value(&message[range.clone()]))
                .into_iter()
                .next();
        } else if is("to") || is("cc") || is("bcc") {
            header_recipients.extend(rfc5322::addresses(&rfc5322::field_value(
                &message[range.clone()],
            )));
        }
        if is("bcc") || is("resent-bcc") {
            bcc.push(range);
        }
    }
    for range in bcc.iter().rev() {
        message.drain(range.clone());
    }

    let mut recipients: Vec<String> = Vec::new();
    let wanted = inv
        .recipients
        .iter()
        .flat_map(|arg| rfc5322::addresses(arg))
        .chain(
            inv.from_headers
                .then_some(header_recipients)
                .into_iter()
                .flatten(),
        );
    for r in wanted {
        let r = qualify_recipient(&r, defaults)?;
        if !recipients.iter().any(|have| have.eq_ignore_ascii_case(&r)) {
            recipients.push(r);
        }
    }
    if recipients.is_empty() {
        return Err(SendmailError::Data(if inv.from_headers {
            "no recipients: the message has no To:, Cc: or Bcc: addresses and none were given \
             as arguments"
                .to_owned()
        } else {
            "no recipients: give them as arguments, or use -t to read them from To:, Cc: and \
             Bcc:"
                .to_owned()
        }));
    }

    let own = || format!("{}@{}", defaults.user, defaults.hostname);
    let sender = match inv.sender.as_deref().map(str::trim) {
        Some("" | "<>") => String::new(),
        Some(s) => qualify(s.trim_start_matches('<').trim_end_matches('>'), defaults),
        None => from_header
            .as_deref()
            .map(|f| qualify(f, defaults))
            .unwrap_or_else(own),
    };
    if from_header.is_none() {
        let address = if sender.is_empty() {
            own()
        } else {
            sender.clone()
        };
        let field = match inv.full_name.as_deref().map(rfc5322::printable) {
            Some(name) if !name.trim().is_empty() => format!(
                "From: \"{}\" <{address}>\r\n",
                name.replace(['"', '\\'], "")
            ),
            _ => format!("From: {address}\r\n"),
        };
        message.splice(0..0, field.into_bytes());
    }
    Ok(Submission {
        sender,
        recipients,
        message,
        notify_never: inv.notify_never,
    })
}

/// `user` → `user@hostname`.
fn qualify(address: &str, defaults: &Defaults) -> String {
    if address.contains('@') {
        address.to_owned()
    } else {
        format!("{address}@{}", defaults.hostname)
    }
}

/// A recipient without a domain is a local user (`root`): it goes to the admin address.
fn qualify_recipient(address: &str, defaults: &Defaults) -> Result<String, SendmailError> {
    if address.contains('@') {
        return Ok(address.to_owned());
    }
    defaults.admin_address.clone().ok_or_else(|| {
        SendmailError::NoUser(format!(
            "recipient {address:?} is a local user, and Gmail cannot deliver to local users; \
             set sendmail.admin_address in relay.toml to where their mail should go"
        ))
    })
}
