//! One mail transaction on an open connection: MAIL, one RCPT per recipient, DATA.
//!
//! Commands are sent by the relay itself (not lettre's `send`), because lettre's `send` gives
//! up on the whole message at the first refused recipient. Here every recipient gets its own
//! outcome: a 550 for one does not stop the others, and only the accepted ones get the DATA.

use std::fmt;
use std::time::Duration;

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::Extension;
use lettre::transport::smtp::response::Response;

use super::classify::{Failure, classify, response_text};
use super::{Outgoing, RecipientOutcome};

/// How a transaction ended.
pub enum TxResult {
    /// The transaction ran to an end; `reusable` says whether the connection can carry another.
    Done {
        outcomes: Vec<RecipientOutcome>,
        reusable: bool,
    },
    /// The connection broke before any recipient was accepted: nothing was sent, and the same
    /// transaction may be tried on a new connection at once.
    Lost(String),
}

/// One command line; `Display` is how lettre's `command` takes it.
struct Line(String);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

async fn command(
    conn: &mut AsyncSmtpConnection,
    line: String,
    limit: Duration,
) -> Result<Response, Failure> {
    bounded(limit, conn.command(Line(line))).await
}

async fn bounded(
    limit: Duration,
    fut: impl Future<Output = Result<Response, SmtpError>>,
) -> Result<Response, Failure> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(Failure::Broken(format!(
            "no reply within {}",
            humantime::format_duration(limit)
        ))),
    }
}

/// An address is put on the wire between angle brackets; refuse anything that could break
/// out of them (the intake never produces such addresses, but the spool is a file).
fn safe(address: &str) -> bool {
    !address
        .chars()
        .any(|c| c.is_control() || c == '<' || c == '>')
}

/// Sends `msg` to `recipients` on `conn`.
pub async fn send(
    conn: &mut AsyncSmtpConnection,
    msg: &Outgoing<'_>,
    recipients: &[String],
    timeout: Duration,
) -> TxResult {
    let all = |f: fn(String) -> RecipientOutcome, text: &str| {
        recipients
            .iter()
            .map(|_| f(text.to_owned()))
            .collect::<Vec<_>>()
    };
    if !safe(msg.sender) {
        return TxResult::Done {
            outcomes: all(
                RecipientOutcome::Failed,
                "invalid sender address in the queue file",
            ),
            reusable: true,
        };
    }
    let info = conn.server_info();
    if msg.smtputf8 && !info.supports_feature(Extension::SmtpUtfEight) {
        return TxResult::Done {
            outcomes: all(
                RecipientOutcome::Failed,
                "the message needs SMTPUTF8, which the upstream does not offer",
            ),
            reusable: true,
        };
    }
    let mut mail = format!("MAIL FROM:<{}>", msg.sender);
    if (msg.eight_bit_mime || !msg.body.is_ascii())
        && info.supports_feature(Extension::EightBitMime)
    {
        mail.push_str(" BODY=8BITMIME");
    }
    if msg.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }

    match command(conn, mail, timeout).await {
        Ok(_) => {}
        Err(Failure::Broken(reason)) => return TxResult::Lost(reason),
        Err(Failure::Temporary(t)) => {
            return abort(conn, all(RecipientOutcome::Deferred, &t), timeout).await;
        }
        Err(Failure::Permanent(t)) => {
            return abort(conn, all(RecipientOutcome::Failed, &t), timeout).await;
        }
    }

    // `None` marks a recipient the upstream accepted, whose outcome depends on DATA.
    let mut pending: Vec<Option<RecipientOutcome>> = Vec::with_capacity(recipients.len());
    for rcpt in recipients {
        if !safe(rcpt) {
            pending.push(Some(RecipientOutcome::Failed(
                "invalid recipient address in the queue file".into(),
            )));
            continue;
        }
        match command(conn, format!("RCPT TO:<{rcpt}>"), timeout).await {
            Ok(_) => pending.push(None),
            Err(Failure::Temporary(t)) => pending.push(Some(RecipientOutcome::Deferred(t))),
            Err(Failure::Permanent(t)) => pending.push(Some(RecipientOutcome::Failed(t))),
            Err(Failure::Broken(reason)) => {
                if pending.iter().all(Option::is_some) {
                    return TxResult::Lost(reason);
                }
                // Those accepted and those never asked are all tried again later.
                pending.resize(recipients.len(), None);
                let outcomes = settle(pending, RecipientOutcome::Deferred, &reason);
                return TxResult::Done {
                    outcomes,
                    reusable: false,
                };
            }
        }
    }
    if pending.iter().all(Option::is_some) {
        return abort(conn, pending.into_iter().flatten().collect(), timeout).await;
    }

    if let Err(failure) = command(conn, "DATA".to_owned(), timeout).await {
        let outcome = match failure {
            Failure::Permanent(_) => RecipientOutcome::Failed,
            _ => RecipientOutcome::Deferred,
        };
        let outcomes = settle(pending, outcome, failure.text());
        if let Failure::Broken(_) = failure {
            return TxResult::Done {
                outcomes,
                reusable: false,
            };
        }
        return abort(conn, outcomes, timeout).await;
    }

    // lettre appends CRLF . CRLF; the stored body already ends its last line with CRLF.
    let body = msg.body.strip_suffix(b"\r\n").unwrap_or(msg.body);
    let data_limit = timeout + Duration::from_secs(body.len() as u64 / (32 * 1024));
    let (outcomes, reusable) = match bounded(data_limit, conn.message(body)).await {
        Ok(reply) => (
            settle(pending, RecipientOutcome::Delivered, &response_text(&reply)),
            true,
        ),
        Err(Failure::Permanent(t)) => (settle(pending, RecipientOutcome::Failed, &t), true),
        Err(Failure::Temporary(t)) => (settle(pending, RecipientOutcome::Deferred, &t), true),
        // The upstream may or may not have taken it; sending again is the safe side
        // (at-least-once).
        Err(Failure::Broken(t)) => (
            settle(
                pending,
                RecipientOutcome::Deferred,
                &format!("connection lost after the message data: {t}"),
            ),
            false,
        ),
    };
    TxResult::Done { outcomes, reusable }
}

/// Gives every recipient still waiting on DATA the same outcome.
fn settle(
    pending: Vec<Option<RecipientOutcome>>,
    outcome: fn(String) -> RecipientOutcome,
    text: &str,
) -> Vec<RecipientOutcome> {
    pending
        .into_iter()
        .map(|o| o.unwrap_or_else(|| outcome(text.to_owned())))
        .collect()
}

/// Ends a transaction that will not reach DATA with RSET, so the connection can be reused.
async fn abort(
    conn: &mut AsyncSmtpConnection,
    outcomes: Vec<RecipientOutcome>,
    timeout: Duration,
) -> TxResult {
    let reusable = command(conn, "RSET".to_owned(), timeout).await.is_ok();
    TxResult::Done { outcomes, reusable }
}
