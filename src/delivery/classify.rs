//! What an upstream reply or error means for the message and the connection.
//!
//! Three classes: a temporary refusal (4xx: try again later), a permanent refusal (5xx: give
//! up on what was refused), and a broken connection (network or TLS error, timeout, unparsable
//! reply, or a reply that announces the server is closing: `421`, `451 4.4.2`). A broken
//! connection says nothing about the message; it is never reused and what it was carrying is
//! tried again. Anything not recognised as permanent is temporary, and so are Gmail's daily
//! sending-limit replies although they come as 550: the limit passes, the mail must not bounce.

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::response::Response;

/// The class of a failed upstream command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 4xx: try again later.
    Temporary(String),
    /// 5xx: the upstream will not take it.
    Permanent(String),
    /// The connection is unusable; nothing is known about the message.
    Broken(String),
}

impl Failure {
    /// The reply or error text.
    pub fn text(&self) -> &str {
        match self {
            Failure::Temporary(t) | Failure::Permanent(t) | Failure::Broken(t) => t,
        }
    }
}

/// Classifies a lettre error from one command.
pub fn classify(e: &SmtpError) -> Failure {
    let Some(code) = e.status() else {
        return Failure::Broken(describe(e));
    };
    let text = reply_text(e);
    let code = code.to_string();
    if code == "421" || (code == "451" && text.contains("4.4.2")) {
        Failure::Broken(text)
    } else if is_quota(&text) {
        // Gmail's daily limits come as 550 but pass with time: defer, never bounce.
        Failure::Temporary(text)
    } else if e.is_permanent() {
        Failure::Permanent(text)
    } else {
        Failure::Temporary(text)
    }
}

/// Gmail's sending-limit replies (`550 5.4.5 Daily user sending limit exceeded`,
/// `550 5.7.1 Daily SMTP relay limit exceeded`, `450 4.2.1 Peak SMTP relay limit`).
fn is_quota(text: &str) -> bool {
    text.contains(" 5.4.5")
        || text.contains("Daily SMTP relay limit")
        || text.contains("sending limit exceeded")
}

/// `550 5.1.1 The email account that you tried to reach does not exist ...` for a reply error,
/// or a description of a network/TLS error.
pub fn describe(e: &SmtpError) -> String {
    if e.status().is_some() {
        return reply_text(e);
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e).and_then(std::error::Error::source);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        text.push_str(" (timed out)");
    }
    text
}

/// The reply as the upstream sent it: code, then the text lines joined.
fn reply_text(e: &SmtpError) -> String {
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    match std::error::Error::source(e) {
        Some(message) => format!("{code} {message}"),
        None => code,
    }
}

/// A positive reply as text, e.g. `250 2.0.0 OK 1700000000 x1-2 - gsmtp`.
pub fn response_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    format!("{} {}", r.code(), lines.join(" "))
}
