//! What an upstream reply or error means: one table of rules, Gmail's replies in mind.
//!
//! Every reply is classified by where it came ([`Stage`]) and what it says (code, enhanced
//! status code, text) into a [`Class`]:
//!
//! | class | examples | what happens |
//! |---|---|---|
//! | `Retry` | 4xx: 451 4.3.0, 450 4.2.1, 452 4.2.2 | the message (or recipient) is tried again later |
//! | `FailRecipient` | 5xx at RCPT: 550 5.1.1, 553 5.1.3 | that recipient fails; the others go on |
//! | `FailMessage` | 5xx at MAIL or DATA: 552 5.3.4, 554 5.6.0, 550 5.7.26 | the message fails |
//! | `PauseUpstream` | 535 5.7.8, 534 5.7.9, 534 5.7.14, 454 4.7.0, 530, any refusal at AUTH, relay denied | all delivery stops; nothing fails; probed later |
//! | `PauseQuota` | 550 5.4.5, 550 5.7.1 "Daily SMTP relay limit", 450 4.2.1 "Peak SMTP relay limit" | all delivery stops until the window allows; nothing fails |
//! | `Reconnect` | 421, 451 4.4.2, a dropped or timed-out connection | the connection is dropped; what it carried is sent again on a new one |
//!
//! Anything not recognised as permanent is temporary. Gmail's sending limits come as 550 but
//! pass with time, so they pause instead of bouncing; refusals of our own credentials pause
//! too, because bouncing the whole queue for a revoked app password would be the worst outcome.

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::response::Response;

/// Where in the SMTP conversation a reply came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The 220 greeting (or the connection itself).
    Greeting,
    /// EHLO.
    Ehlo,
    /// STARTTLS and the handshake.
    StartTls,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA (before the message).
    Data,
    /// The reply after the message's final dot.
    EndOfData,
}

/// What a reply means for the message, the recipient, the connection and the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Accepted; go on.
    Ok,
    /// Temporary: try again later.
    Retry,
    /// This recipient will not be accepted.
    FailRecipient,
    /// This message will not be accepted.
    FailMessage,
    /// Our account or configuration is refused: stop all delivery, keep everything queued.
    PauseUpstream,
    /// The account's sending quota is spent: stop all delivery until it recovers.
    PauseQuota,
    /// The connection is being closed or is unusable: use a new one.
    Reconnect,
}

/// Classifies a reply given as its code and text (the text starts with the enhanced code).
pub fn classify(stage: Stage, code: u16, text: &str) -> Class {
    let has = |needle: &str| text.contains(needle);
    let enhanced = text.split_whitespace().next().unwrap_or("");
    if code < 400 {
        return Class::Ok;
    }
    if (code == 550
        && (enhanced == "5.4.5"
            || has("Daily SMTP relay limit")
            || has("sending limit exceeded")
            || has("sending quota exceeded")))
        || (code == 450 && has("Peak SMTP relay limit"))
    {
        return Class::PauseQuota;
    }
    if code == 421 || (code == 451 && enhanced == "4.4.2") {
        return Class::Reconnect;
    }
    // Our session is out of step with the server (a bug, or a server we confused): start over.
    if code == 503
        || enhanced == "4.5.0"
        || enhanced == "5.5.1" && code == 454
        || has("Too many unauthenticated commands")
    {
        return Class::Reconnect;
    }
    if stage == Stage::Auth
        || matches!(code, 530 | 534 | 535)
        || (code == 454 && enhanced == "4.7.0")
        || has("relay denied")
        || has("Invalid credentials for relay")
        || has("Mail Sending denied")
    {
        return Class::PauseUpstream;
    }
    if code < 500 {
        return Class::Retry;
    }
    match stage {
        // A refusal before any mail is ours to fix (EHLO name, TLS): nothing would get through.
        Stage::Greeting | Stage::Ehlo | Stage::StartTls | Stage::Auth => Class::PauseUpstream,
        Stage::Rcpt => Class::FailRecipient,
        Stage::Mail | Stage::Data | Stage::EndOfData => Class::FailMessage,
    }
}

/// `452 4.5.3` at RCPT: the server takes no more recipients in this transaction; the rest go
/// in the next one.
pub fn too_many_recipients(code: u16, text: &str) -> bool {
    code == 452 && text.starts_with("4.5.3")
}

/// A failed command: its reply (code and text) if the server answered, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server replied with a negative code.
    Reply {
        /// The basic code.
        code: u16,
        /// The text, starting with the enhanced code.
        text: String,
    },
    /// No reply: network or TLS error, timeout, unparsable reply.
    Broken(String),
}

impl Failure {
    /// The class at `stage`; a broken connection is always [`Class::Reconnect`].
    pub fn class(&self, stage: Stage) -> Class {
        match self {
            Failure::Reply { code, text } => classify(stage, *code, text),
            Failure::Broken(_) => Class::Reconnect,
        }
    }

    /// The reply as the server sent it, or the error.
    pub fn describe(&self) -> String {
        match self {
            Failure::Reply { code, text } => format!("{code} {text}"),
            Failure::Broken(e) => e.clone(),
        }
    }

    /// From a lettre error.
    pub fn from_lettre(e: &SmtpError) -> Failure {
        match (e.status(), std::error::Error::source(e)) {
            (Some(code), Some(message)) => Failure::Reply {
                code: code.to_string().parse().unwrap_or(0),
                text: message.to_string(),
            },
            (Some(code), None) => Failure::Reply {
                code: code.to_string().parse().unwrap_or(0),
                text: String::new(),
            },
            _ => Failure::Broken(describe(e)),
        }
    }
}

/// A lettre error as text: the reply, or the network/TLS error with its causes.
pub fn describe(e: &SmtpError) -> String {
    if e.status().is_some() {
        return Failure::from_lettre(e).describe();
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

/// A positive reply as text, e.g. `250 2.0.0 OK 1700000000 x1-2 - gsmtp`.
pub fn response_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    format!("{} {}", r.code(), lines.join(" "))
}

#[cfg(test)]
mod tests;
