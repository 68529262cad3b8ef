//! SMTP replies: the one type the intake sends, and the fixed replies it uses.
//!
//! Every reply in class 2, 4 or 5 carries an enhanced status code (RFC 3463, 2034), except
//! those RFC 2034 leaves out: the greeting and the reply to HELO/EHLO (and 354, which is not in
//! a class that has one). Multi-line replies use `code-` continuation lines.

use std::borrow::Cow;

use crate::policy::Rejection;

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Basic code.
    pub code: u16,
    /// Enhanced status code, when the reply has one.
    pub status: Option<&'static str>,
    /// Text lines (at least one).
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: &'static str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status code (greeting, HELO/EHLO, 354).
    pub fn bare(code: u16, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            status: None,
            lines,
        }
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form (CRLF line endings) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(sep as u8);
            if let Some(status) = self.status {
                out.extend_from_slice(status.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The first line as it appears on the wire, without CRLF (for the log and tests).
    pub fn first_line(&self) -> String {
        let mut out = Vec::new();
        Reply {
            lines: self.lines.iter().take(1).cloned().collect(),
            ..self.clone()
        }
        .write_to(&mut out);
        String::from_utf8_lossy(&out).trim_end().to_owned()
    }
}

impl From<Rejection> for Reply {
    fn from(r: Rejection) -> Reply {
        Reply {
            code: r.code,
            status: Some(r.status),
            lines: vec![r.text.into()],
        }
    }
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "OK")
}
pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "Sender OK")
}
pub fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5", "Recipient OK")
}
pub fn start_data() -> Reply {
    Reply::bare(354, vec!["End data with <CR><LF>.<CR><LF>".into()])
}
pub fn bye() -> Reply {
    Reply::new(221, "2.0.0", "Bye")
}
pub fn help() -> Reply {
    Reply::new(
        214,
        "2.0.0",
        "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
    )
}
pub fn cannot_vrfy() -> Reply {
    Reply::new(
        252,
        "2.5.0",
        "Cannot VRFY user, but will accept the message and attempt delivery",
    )
}
pub fn need_helo() -> Reply {
    Reply::new(503, "5.5.1", "Send HELO or EHLO first")
}
pub fn nested_mail() -> Reply {
    Reply::new(
        503,
        "5.5.1",
        "Sender already given; send RSET to start over",
    )
}
pub fn need_mail() -> Reply {
    Reply::new(503, "5.5.1", "Send MAIL FROM first")
}
pub fn need_rcpt() -> Reply {
    Reply::new(503, "5.5.1", "Send RCPT TO first")
}
pub fn unknown_command() -> Reply {
    Reply::new(500, "5.5.2", "Command not recognized")
}
pub fn not_implemented(command: &str) -> Reply {
    Reply::new(502, "5.5.1", format!("{command} is not implemented here"))
}
pub fn syntax(usage: &'static str) -> Reply {
    Reply::new(501, "5.5.4", format!("Syntax: {usage}"))
}
pub fn bad_sender() -> Reply {
    Reply::new(501, "5.1.7", "Bad sender address syntax")
}
pub fn bad_recipient() -> Reply {
    Reply::new(501, "5.1.3", "Bad recipient address syntax")
}
pub fn bad_parameter(param: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Invalid value for parameter {param}"))
}
pub fn unsupported_parameter(param: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
}
pub fn needs_smtputf8() -> Reply {
    Reply::new(
        553,
        "5.6.7",
        "Non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM",
    )
}
pub fn ready_for_tls() -> Reply {
    Reply::new(220, "2.0.0", "Ready to start TLS")
}
pub fn already_tls() -> Reply {
    Reply::new(503, "5.5.1", "TLS already active")
}
pub fn auth_ok() -> Reply {
    Reply::new(235, "2.7.0", "Authentication successful")
}
pub fn auth_failed() -> Reply {
    Reply::new(535, "5.7.8", "Authentication credentials invalid")
}
pub fn auth_cancelled() -> Reply {
    Reply::new(501, "5.7.0", "Authentication cancelled")
}
pub fn auth_undecodable() -> Reply {
    Reply::new(501, "5.5.2", "Cannot decode the authentication response")
}
pub fn auth_unknown_mechanism() -> Reply {
    Reply::new(
        504,
        "5.5.4",
        "Unrecognized authentication type; use PLAIN or LOGIN",
    )
}
pub fn auth_needs_tls() -> Reply {
    Reply::new(538, "5.7.11", "Encryption required: send STARTTLS first")
}
pub fn auth_required() -> Reply {
    Reply::new(530, "5.7.0", "Authentication required")
}
pub fn already_authenticated() -> Reply {
    Reply::new(503, "5.5.1", "Already authenticated")
}
pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.6", "Line too long")
}
pub fn too_many_errors() -> Reply {
    Reply::new(421, "4.7.0", "Too many errors; closing connection")
}
pub fn timeout() -> Reply {
    Reply::new(421, "4.4.2", "Timeout; closing connection")
}
pub fn shutting_down() -> Reply {
    Reply::new(421, "4.3.2", "Service shutting down; try again later")
}
pub fn too_many_connections() -> Reply {
    Reply::new(421, "4.7.0", "Too many connections; try again later")
}
/// The spool's disk is full: nothing was queued, the client should try later (RFC 3463
/// 4.3.1, "mail system full").
pub fn storage_full() -> Reply {
    Reply::new(
        452,
        "4.3.1",
        "Insufficient system storage: message not queued; try again later",
    )
}

pub fn not_queued() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "Local error: message not queued; try again later",
    )
}
pub fn queued(id: &str) -> Reply {
    Reply::new(250, "2.0.0", format!("OK queued as {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        let mut out = Vec::new();
        Reply::bare(
            250,
            vec!["host".into(), "PIPELINING".into(), "SIZE 10".into()],
        )
        .write_to(&mut out);
        assert_eq!(out, b"250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
        assert_eq!(queued("abc").first_line(), "250 2.0.0 OK queued as abc");
        assert_eq!(
            start_data().first_line(),
            "354 End data with <CR><LF>.<CR><LF>"
        );
    }
}
