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
//! | `PauseTls` | any refusal of STARTTLS (454 4.7.0 TLS not available) | all delivery stops: without TLS nothing is sent; a connection problem, never the credentials |
//! | `Reconnect` | 421, 451 4.4.2, a dropped or timed-out connection | the connection is dropped; what it carried is sent again on a new one |
//!
//! Anything not recognised as permanent is temporary. Gmail's sending limits come as 550 but
//! pass with time, so they pause instead of bouncing; refusals of our own credentials pause
//! too, because bouncing the whole queue for a revoked app password would be the worst outcome.

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
    /// The server will not secure the connection: stop all delivery (nothing goes in clear).
    PauseTls,
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
    // A refused STARTTLS says nothing about our account ("454 4.7.0 TLS not available due to
    // temporary reason" shares its code with Gmail's login throttling).
    if stage == Stage::StartTls && code != 503 && enhanced != "5.5.1" {
        return Class::PauseTls;
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

/// A `452` at RCPT that means "no more recipients in this transaction": `452 4.5.3`, or any
/// `452` once the server has accepted at least one recipient (Exim says a bare
/// `452 too many recipients`; RFC 5321 §4.5.3.1.10). The rest go in the next transaction; a
/// `452` that was about the recipient itself (`4.2.2` mailbox full) then comes again as the
/// first of that transaction and is deferred on its own.
pub fn too_many_recipients(code: u16, text: &str, accepted: usize) -> bool {
    (code == 452 && (text.starts_with("4.5.3") || accepted > 0))
        // Google's SMTP relay service takes one recipient domain per transaction.
        || (code == 451
            && accepted > 0
            && text.contains("Multiple destination domains per transaction"))
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
}

#[cfg(test)]
mod tests;
