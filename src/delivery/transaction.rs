//! One mail transaction on an open connection: MAIL, one RCPT per recipient, DATA.
//!
//! Every recipient gets its own outcome: a 550 for one does not stop the others, and only the
//! accepted ones get the DATA. Each reply is classified (see `classify`): a pause class ends
//! the transaction with every recipient deferred and the pause reported; a `452` saying the
//! transaction has no room for more recipients leaves the rest for another transaction.

use std::time::Duration;

use super::classify::{Class, Failure, Stage, too_many_recipients};
use super::client::Client;
use super::connection::Conn;
use super::{Outgoing, Pause, PauseKind, RecipientOutcome};

/// How a transaction ended.
pub enum TxResult {
    /// The transaction ran to an end.
    Done {
        /// One per recipient given; `None` for a recipient the server had no room for in this
        /// transaction (`452 4.5.3`), to be sent in the next one.
        outcomes: Vec<Option<RecipientOutcome>>,
        /// The connection can carry another transaction.
        reusable: bool,
        /// All delivery should stop for this reason.
        pause: Option<Pause>,
    },
    /// The connection broke or is closing before the message was accepted: nothing is
    /// settled, and the same transaction may be tried on a new connection at once.
    Lost(String),
}

/// An address is put on the wire between angle brackets; refuse anything that could break
/// out of them (the intake never produces such addresses, but the spool is a file).
fn safe(address: &str) -> bool {
    !address
        .chars()
        .any(|c| c.is_control() || c == '<' || c == '>')
}

/// What a refused command does to the transaction.
enum Verdict {
    /// Settle the recipients concerned with this outcome.
    Settle(fn(String) -> RecipientOutcome),
    /// Stop all delivery; the recipients concerned are deferred.
    Pause(PauseKind),
    /// The connection is going: start over elsewhere.
    Lost,
}

fn verdict(failure: &Failure, stage: Stage) -> Verdict {
    match failure.class(stage) {
        Class::Ok | Class::Retry => Verdict::Settle(RecipientOutcome::Deferred),
        Class::FailRecipient | Class::FailMessage => Verdict::Settle(RecipientOutcome::Failed),
        Class::PauseUpstream => Verdict::Pause(PauseKind::Credentials),
        Class::PauseQuota => Verdict::Pause(PauseKind::Quota),
        Class::PauseTls => Verdict::Pause(PauseKind::Tls),
        Class::Reconnect => Verdict::Lost,
    }
}

/// Gives every recipient still open (`None`) the same outcome.
fn settle(
    pending: Vec<Option<RecipientOutcome>>,
    outcome: fn(String) -> RecipientOutcome,
    text: &str,
) -> Vec<Option<RecipientOutcome>> {
    pending
        .into_iter()
        .map(|o| Some(o.unwrap_or_else(|| outcome(text.to_owned()))))
        .collect()
}

/// Sends `msg` to `recipients` on `conn`.
pub async fn send(
    conn: &mut Conn,
    msg: &Outgoing<'_>,
    recipients: &[String],
    timeout: Duration,
) -> TxResult {
    let none = || vec![None; recipients.len()];
    if !safe(msg.sender) {
        let outcomes = settle(
            none(),
            RecipientOutcome::Failed,
            "invalid sender address in the queue file",
        );
        return TxResult::Done {
            outcomes,
            reusable: true,
            pause: None,
        };
    }
    let caps = &conn.caps;
    if msg.smtputf8 && !caps.has("SMTPUTF8") {
        let why = "the message needs SMTPUTF8, which the upstream does not offer";
        return TxResult::Done {
            outcomes: settle(none(), RecipientOutcome::Failed, why),
            reusable: true,
            pause: None,
        };
    }
    let mut mail = format!("MAIL FROM:<{}>", msg.sender);
    if (msg.eight_bit_mime || !msg.body.is_ascii()) && caps.has("8BITMIME") {
        mail.push_str(" BODY=8BITMIME");
    }
    if msg.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    if msg.declare_size {
        mail.push_str(&format!(" SIZE={}", msg.body.len()));
    }

    let conn = &mut conn.client;
    if let Err(failure) = conn.command(&mail).await {
        return refused(conn, none(), &failure, Stage::Mail).await;
    }

    // `Some` once settled; `None` while accepted and waiting for DATA (or left for later).
    let mut outcomes: Vec<Option<RecipientOutcome>> = Vec::with_capacity(recipients.len());
    let mut accepted = Vec::new();
    let mut no_room_from = None;
    for (i, rcpt) in recipients.iter().enumerate() {
        if !safe(rcpt) {
            outcomes.push(Some(RecipientOutcome::Failed(
                "invalid recipient address in the queue file".into(),
            )));
            continue;
        }
        match conn.command(&format!("RCPT TO:<{rcpt}>")).await {
            Ok(_) => {
                accepted.push(i);
                outcomes.push(None);
            }
            Err(Failure::Reply { code, text })
                if too_many_recipients(code, &text, accepted.len()) =>
            {
                no_room_from = Some(i);
                break;
            }
            Err(failure) => match verdict(&failure, Stage::Rcpt) {
                Verdict::Settle(outcome) => outcomes.push(Some(outcome(failure.describe()))),
                Verdict::Pause(_) | Verdict::Lost => {
                    outcomes.resize(recipients.len(), None);
                    return refused(conn, outcomes, &failure, Stage::Rcpt).await;
                }
            },
        }
    }
    // Recipients left for the next transaction stay `None` and are not part of this one.
    let later = no_room_from.map_or(0, |from| recipients.len() - from);
    if accepted.is_empty() {
        outcomes.resize(recipients.len(), None);
        return abort(conn, outcomes, None).await;
    }

    if let Err(failure) = conn.command("DATA").await {
        return refused(conn, with_later(outcomes, later), &failure, Stage::Data).await;
    }
    // The upload of a large message may take longer than one reply's timeout.
    let data_limit = timeout + Duration::from_secs(msg.body.len() as u64 / (32 * 1024));
    match conn.data(msg.body, data_limit).await {
        Ok(reply) => {
            let text = reply.describe();
            let mut outcomes = settle(outcomes, RecipientOutcome::Delivered, &text);
            outcomes.resize(recipients.len(), None);
            TxResult::Done {
                outcomes,
                reusable: true,
                pause: None,
            }
        }
        Err(failure) => match verdict(&failure, Stage::EndOfData) {
            // Whether the upstream took it is unknown; sending again is the safe side
            // (at-least-once).
            Verdict::Lost => TxResult::Lost(format!(
                "connection lost after the message data: {}",
                failure.describe()
            )),
            Verdict::Settle(outcome) => {
                let mut outcomes = settle(outcomes, outcome, &failure.describe());
                outcomes.resize(recipients.len(), None);
                TxResult::Done {
                    outcomes,
                    reusable: true,
                    pause: None,
                }
            }
            Verdict::Pause(kind) => {
                let reason = failure.describe();
                let mut outcomes = settle(outcomes, RecipientOutcome::Deferred, &reason);
                outcomes.resize(recipients.len(), None);
                TxResult::Done {
                    outcomes,
                    reusable: true,
                    pause: Some(Pause { kind, reason }),
                }
            }
        },
    }
}

/// `outcomes` extended with `None` for the recipients left for the next transaction.
fn with_later(
    mut outcomes: Vec<Option<RecipientOutcome>>,
    later: usize,
) -> Vec<Option<RecipientOutcome>> {
    outcomes.extend((0..later).map(|_| None));
    outcomes
}

/// A command before the end of DATA was refused: settle or pause what is open, or give up the
/// connection. Recipients the refusal concerns are those still `None`.
async fn refused(
    conn: &mut Client,
    outcomes: Vec<Option<RecipientOutcome>>,
    failure: &Failure,
    stage: Stage,
) -> TxResult {
    let reason = failure.describe();
    match verdict(failure, stage) {
        Verdict::Lost => TxResult::Lost(reason),
        Verdict::Settle(outcome) => abort(conn, settle(outcomes, outcome, &reason), None).await,
        Verdict::Pause(kind) => {
            let outcomes = settle(outcomes, RecipientOutcome::Deferred, &reason);
            abort(conn, outcomes, Some(Pause { kind, reason })).await
        }
    }
}

/// Ends a transaction that will not reach the end of DATA with RSET, so the connection can be
/// reused.
async fn abort(
    conn: &mut Client,
    outcomes: Vec<Option<RecipientOutcome>>,
    pause: Option<Pause>,
) -> TxResult {
    let reusable = conn.command("RSET").await.is_ok();
    TxResult::Done {
        outcomes,
        reusable,
        pause,
    }
}
