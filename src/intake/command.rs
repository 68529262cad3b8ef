//! One command line → [`Command`], using smtp-proto's parser with a few legacy allowances.
//!
//! smtp-proto does the RFC 5321 grammar (paths, ESMTP parameters, case-insensitive verbs,
//! `MAIL FROM: <a@b>` with a space). On top of it this module:
//! - accepts `MAIL FROM:a@b` / `RCPT TO:a@b` without angle brackets, as old clients send them;
//! - keeps quoted local parts quoted (`"john doe"@example.com`), which the parser unquotes;
//! - reduces the request to what the session needs, so the session never sees parser types.

use std::borrow::Cow;

use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, RCPT_NOTIFY_NEVER, Request,
};

use super::sasl::Mechanism;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO name`.
    Ehlo(String),
    /// `HELO name`.
    Helo(String),
    /// `MAIL FROM:<sender>` with the parameters the relay understands.
    Mail {
        /// Empty for the null sender `<>`.
        sender: String,
        /// `SIZE=n`, if given.
        size: Option<u64>,
        /// `BODY=8BITMIME`.
        eight_bit_mime: bool,
        /// `SMTPUTF8`.
        smtputf8: bool,
    },
    /// `RCPT TO:<recipient>`.
    Rcpt {
        /// The address.
        address: String,
        /// `NOTIFY=NEVER` (RFC 3461): no delivery status notification about this recipient.
        notify_never: bool,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY`.
    Vrfy,
    /// `HELP`.
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]`; `None` for a mechanism the relay does not offer.
    Auth {
        /// PLAIN or LOGIN.
        mechanism: Option<Mechanism>,
        /// The initial response ("" if none).
        initial: String,
    },
    /// A known command this relay does not offer (BDAT, EXPN, ...).
    NotImplemented(&'static str),
}

/// Why a line is not a usable command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Not an SMTP command.
    Unknown,
    /// A known command with bad arguments; the usage to show.
    Syntax(&'static str),
    /// `MAIL FROM` with an address that does not parse.
    BadSender,
    /// `RCPT TO` with an address that does not parse (or is empty).
    BadRecipient,
    /// A parameter with a bad value.
    BadParameter(String),
    /// A parameter the relay does not support.
    UnsupportedParameter(String),
}

/// Parses one line (including its line ending).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    match Request::parse(&mut line.iter()) {
        Ok(req) => Ok(convert(req, line)),
        Err(smtp_proto::Error::SyntaxError { syntax }) => {
            if let Some(bracketed) = add_brackets(line)
                && let Ok(req) = Request::parse(&mut bracketed.iter())
            {
                return Ok(convert(req, &bracketed));
            }
            Err(CommandError::Syntax(syntax))
        }
        Err(e) => Err(match e {
            smtp_proto::Error::InvalidSenderAddress => CommandError::BadSender,
            smtp_proto::Error::InvalidRecipientAddress => CommandError::BadRecipient,
            smtp_proto::Error::InvalidParameter { param } => {
                CommandError::BadParameter(param.to_owned())
            }
            smtp_proto::Error::UnsupportedParameter { param } => {
                CommandError::UnsupportedParameter(param)
            }
            _ => CommandError::Unknown,
        }),
    }
}

fn convert(req: Request<Cow<'_, str>>, line: &[u8]) -> Command {
    match req {
        Request::Ehlo { host } => Command::Ehlo(host.into_owned()),
        Request::Helo { host } => Command::Helo(host.into_owned()),
        Request::Mail { from } => Command::Mail {
            sender: requote(&from.address, line),
            size: (from.size > 0).then_some(from.size as u64),
            eight_bit_mime: from.flags & MAIL_BODY_8BITMIME != 0,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
        },
        Request::Rcpt { to } => Command::Rcpt {
            address: requote(&to.address, line),
            notify_never: to.flags & RCPT_NOTIFY_NEVER != 0,
        },
        Request::Data => Command::Data,
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::Vrfy { .. } => Command::Vrfy,
        Request::Help { .. } => Command::Help,
        Request::StartTls => Command::StartTls,
        Request::Auth {
            mechanism,
            initial_response,
        } => Command::Auth {
            mechanism: match mechanism {
                AUTH_PLAIN => Some(Mechanism::Plain),
                AUTH_LOGIN => Some(Mechanism::Login),
                _ => None,
            },
            initial: initial_response.into_owned(),
        },
        other => Command::NotImplemented(other.name()),
    }
}

/// `MAIL FROM:a@b` → `MAIL FROM:<a@b>` (and the same for RCPT TO), or `None` if the line is not
/// such a command or already has brackets.
fn add_brackets(line: &[u8]) -> Option<Vec<u8>> {
    let colon = line.iter().position(|&b| b == b':')?;
    let verb: String = String::from_utf8_lossy(&line[..colon])
        .to_ascii_uppercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if verb != "MAIL FROM" && verb != "RCPT TO" {
        return None;
    }
    let rest = &line[colon + 1..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[start] == b'<' {
        return None;
    }
    let end = rest[start..]
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .map_or(rest.len(), |p| start + p);
    let mut out = line[..=colon].to_vec();
    out.push(b'<');
    out.extend_from_slice(&rest[start..end]);
    out.push(b'>');
    out.extend_from_slice(&rest[end..]);
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    Some(out)
}

/// The parser returns a quoted local part without its quotes; put them back when the line had
/// them, so the address forwarded is the address the client gave.
fn requote(address: &str, line: &[u8]) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) if memchr::memmem::find(line, b"<\"").is_some() => {
            let escaped = local.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\"@{domain}")
        }
        _ => address.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(sender: &str) -> Command {
        Command::Mail {
            sender: sender.into(),
            size: None,
            eight_bit_mime: false,
            smtputf8: false,
        }
    }

    fn rcpt(address: &str) -> Command {
        Command::Rcpt {
            address: address.into(),
            notify_never: false,
        }
    }

    #[test]
    fn command_table() {
        let cases: &[(&str, Result<Command, CommandError>)] = &[
            (
                "EHLO client.example\r\n",
                Ok(Command::Ehlo("client.example".into())),
            ),
            (
                "ehlo [127.0.0.1]\n",
                Ok(Command::Ehlo("[127.0.0.1]".into())),
            ),
            ("HELO x\r\n", Ok(Command::Helo("x".into()))),
            ("EHLO\r\n", Err(CommandError::Syntax("EHLO domain"))),
            ("HELO \r\n", Err(CommandError::Syntax("HELO domain"))),
            ("MAIL FROM:<>\r\n", Ok(mail(""))),
            ("MAIL FROM: <a@b.c>\r\n", Ok(mail("a@b.c"))),
            ("mail from:<a@b.c>\n", Ok(mail("a@b.c"))),
            ("MAIL FROM:a@b.c\r\n", Ok(mail("a@b.c"))),
            ("MAIL FROM: a@b.c\r\n", Ok(mail("a@b.c"))),
            (
                "MAIL FROM:<\"john doe\"@b.c>\r\n",
                Ok(mail("\"john doe\"@b.c")),
            ),
            (
                "MAIL FROM:<a@b.c> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n",
                Ok(Command::Mail {
                    sender: "a@b.c".into(),
                    size: Some(100),
                    eight_bit_mime: true,
                    smtputf8: true,
                }),
            ),
            ("MAIL FROM:<a@b.c> BODY=7BIT\r\n", Ok(mail("a@b.c"))),
            (
                "MAIL FROM:<a@b.c> SIZE=abc\r\n",
                Err(CommandError::BadParameter("SIZE".into())),
            ),
            (
                "MAIL FROM:<a@b.c> FOO=bar\r\n",
                Err(CommandError::UnsupportedParameter("FOO=BAR".into())),
            ),
            ("MAIL FROM:<a b@c>\r\n", Err(CommandError::BadSender)),
            (
                "RCPT TO:<d@e.f> NOTIFY=NEVER\r\n",
                Ok(Command::Rcpt {
                    address: "d@e.f".into(),
                    notify_never: true,
                }),
            ),
            (
                "RCPT TO:<d@e.f> NOTIFY=FAILURE,DELAY\r\n",
                Ok(rcpt("d@e.f")),
            ),
            ("RCPT TO: <d@e.f>\r\n", Ok(rcpt("d@e.f"))),
            ("RCPT TO:d@e.f\r\n", Ok(rcpt("d@e.f"))),
            ("RCPT TO:<@relay.example:d@e.f>\r\n", Ok(rcpt("d@e.f"))),
            ("RCPT TO:<üser@例え.jp>\r\n", Ok(rcpt("üser@例え.jp"))),
            ("DATA\r\n", Ok(Command::Data)),
            ("rset\r\n", Ok(Command::Rset)),
            ("NOOP\r\n", Ok(Command::Noop)),
            ("QUIT\r\n", Ok(Command::Quit)),
            ("VRFY bob\r\n", Ok(Command::Vrfy)),
            ("HELP\r\n", Ok(Command::Help)),
            ("STARTTLS\r\n", Ok(Command::StartTls)),
            (
                "AUTH PLAIN AGJvYgBwdw==\r\n",
                Ok(Command::Auth {
                    mechanism: Some(Mechanism::Plain),
                    initial: "AGJvYgBwdw==".into(),
                }),
            ),
            (
                "auth login\r\n",
                Ok(Command::Auth {
                    mechanism: Some(Mechanism::Login),
                    initial: String::new(),
                }),
            ),
            (
                "AUTH CRAM-MD5\r\n",
                Ok(Command::Auth {
                    mechanism: None,
                    initial: String::new(),
                }),
            ),
            ("BDAT 10 LAST\r\n", Ok(Command::NotImplemented("BDAT"))),
            ("FOO\r\n", Err(CommandError::Unknown)),
            ("\r\n", Err(CommandError::Unknown)),
        ];
        for (line, want) in cases {
            assert_eq!(&parse(line.as_bytes()), want, "{line:?}");
        }
    }
}
