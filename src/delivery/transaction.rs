//! One mail transaction on an open connection: MAIL, one RCPT per recipient, the message.
//!
//! Every recipient gets its own outcome: a 550 for one does not stop the others, and only the
//! accepted ones get the message. Each reply is classified (see `classify`): a pause class ends
//! the transaction with the recipients it concerns deferred and the pause reported; a `452`
//! saying the transaction has no room for more recipients leaves the rest for another
//! transaction.
//!
//! When the server offers PIPELINING (RFC 2920; Gmail does) and `upstream.pipelining` is on,
//! MAIL, every RCPT and the message go out before any reply is read: with CHUNKING (RFC 3030)
//! the message is `BDAT <n> LAST` and its exact bytes (in [`CHUNK`]-sized pieces, only the
//! last `LAST`, for a large one), so the whole transaction is one round trip; without it,
//! `DATA` ends the batch and the dot-stuffed message follows the 354 (two round trips). The
//! replies are then read in order, one per command, and settle the recipients as in the
//! step-by-step transaction, with one difference: a reply that pauses the account at one RCPT
//! (Gmail's daily limit) defers that recipient and pauses, but the recipients accepted in the
//! batch keep their delivery, since the message already went with them (step by step, the
//! transaction stops there and all wait). Whatever the server answers to the message after
//! refusing MAIL or every RCPT settles nothing new (the server must still read BDAT chunks,
//! RFC 3030 §2). Otherwise one command at a time: MAIL, each RCPT, DATA, the message.

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

/// A recipient that must not go on the wire (see [`safe`]) fails here, alone.
fn unsafe_recipient(rcpt: &str) -> Option<RecipientOutcome> {
    (!safe(rcpt))
        .then(|| RecipientOutcome::Failed("invalid recipient address in the queue file".into()))
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

/// Message bytes per BDAT command: a large message goes in several, from the queued bytes
/// (never copied whole).
pub const CHUNK: usize = 1 << 20;

/// A message up to this size is written together with the commands, in one write.
const INLINE: usize = 64 * 1024;

/// Sends `msg` to `recipients` on `conn`, pipelined when the server offers it and `pipelining`
/// allows.
pub async fn send(
    conn: &mut Conn,
    msg: &Outgoing<'_>,
    recipients: &[String],
    timeout: Duration,
    pipelining: bool,
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
    let data_limit = super::upload_limit(timeout, msg.body.len());
    if pipelining && caps.has("PIPELINING") {
        let chunking = caps.has("CHUNKING");
        let body = msg.body;
        return pipelined(
            &mut conn.client,
            &mail,
            body,
            recipients,
            data_limit,
            chunking,
        )
        .await;
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
        if let Some(refused) = unsafe_recipient(rcpt) {
            outcomes.push(Some(refused));
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
                    pause: Some(Pause::new(kind, reason)),
                }
            }
        },
    }
}

/// The pipelined transaction (see the module header).
async fn pipelined(
    conn: &mut Client,
    mail: &str,
    body: &[u8],
    recipients: &[String],
    data_limit: Duration,
    chunking: bool,
) -> TxResult {
    let mut outcomes: Vec<Option<RecipientOutcome>> = vec![None; recipients.len()];
    let mut sent = Vec::with_capacity(recipients.len());
    for (i, rcpt) in recipients.iter().enumerate() {
        match unsafe_recipient(rcpt) {
            Some(refused) => outcomes[i] = Some(refused),
            None => sent.push(i),
        }
    }
    if sent.is_empty() {
        return TxResult::Done {
            outcomes,
            reusable: true,
            pause: None,
        };
    }

    // The batch: MAIL, the RCPTs, then BDAT and the message, or DATA.
    let mut batch = Vec::with_capacity(256 + 64 * sent.len() + body.len().min(INLINE));
    let line = |batch: &mut Vec<u8>, text: &str| {
        batch.extend_from_slice(text.as_bytes());
        batch.extend_from_slice(b"\r\n");
    };
    line(&mut batch, mail);
    for &i in &sent {
        line(&mut batch, &format!("RCPT TO:<{}>", recipients[i]));
    }
    let chunks: Vec<&[u8]> = if !chunking {
        line(&mut batch, "DATA");
        Vec::new()
    } else if body.is_empty() {
        vec![body]
    } else {
        body.chunks(CHUNK).collect()
    };
    let written = async {
        for (n, chunk) in chunks.iter().enumerate() {
            let last = if n + 1 == chunks.len() { " LAST" } else { "" };
            line(&mut batch, &format!("BDAT {}{last}", chunk.len()));
            if chunk.len() <= INLINE {
                batch.extend_from_slice(chunk);
            } else {
                conn.write(&batch).await?;
                batch.clear();
                conn.write(chunk).await?;
            }
        }
        if batch.is_empty() {
            Ok(())
        } else {
            conn.write(&batch).await
        }
    };
    if let Err(failure) = written.await {
        return TxResult::Lost(failure.describe());
    }

    // The replies, in order: MAIL, each RCPT, then DATA or each BDAT.
    let lost = |f: Failure| {
        TxResult::Lost(format!(
            "connection lost in a pipelined transaction: {}",
            f.describe()
        ))
    };
    let mail_reply = match conn.read_reply().await {
        Ok(r) => r,
        Err(f) => return lost(f),
    };
    let mut rcpt_replies = Vec::with_capacity(sent.len());
    for _ in &sent {
        match conn.read_reply().await {
            Ok(r) => rcpt_replies.push(r),
            Err(f) => return lost(f),
        }
    }
    let mut accepted = Vec::new();
    let mut pause = None;
    if mail_reply.code < 400 {
        for (&i, reply) in sent.iter().zip(&rcpt_replies) {
            if reply.code < 400 {
                accepted.push(i);
                continue;
            }
            if too_many_recipients(reply.code, &reply.text(), accepted.len()) {
                continue; // left for the next transaction
            }
            let failure = reply.failure();
            match verdict(&failure, Stage::Rcpt) {
                Verdict::Settle(outcome) => outcomes[i] = Some(outcome(failure.describe())),
                Verdict::Pause(kind) => {
                    let reason = failure.describe();
                    outcomes[i] = Some(RecipientOutcome::Deferred(reason.clone()));
                    pause.get_or_insert(Pause::new(kind, reason));
                }
                Verdict::Lost => return lost(failure),
            }
        }
    }

    // The reply that decides for the accepted recipients, and where it came.
    let (message_reply, stage) = if chunking {
        // One reply per chunk; the first refusal (or the last reply) decides.
        let mut deciding = None;
        for n in 0..chunks.len() {
            let last = n + 1 == chunks.len();
            let read = if last {
                conn.read_reply_within(data_limit).await
            } else {
                conn.read_reply().await
            };
            // Once the message is sent whole, whether the server took it is unknown: sending
            // again is the safe side (at-least-once).
            let reply = match read {
                Ok(r) => r,
                Err(f) => return lost(f),
            };
            if deciding.is_none() && (reply.code >= 400 || last) {
                deciding = Some(reply);
            }
        }
        (deciding.expect("at least one chunk"), Stage::EndOfData)
    } else {
        let data_reply = match conn.read_reply().await {
            Ok(r) => r,
            Err(f) => return lost(f),
        };
        if data_reply.code != 354 {
            (data_reply, Stage::Data)
        } else {
            // Invited with no recipient accepted (a lenient server): end the message empty.
            let sent_body = if accepted.is_empty() {
                conn.write(b".\r\n").await
            } else {
                conn.write_dot_stuffed(body).await
            };
            if let Err(f) = sent_body {
                return lost(f);
            }
            match conn.read_reply_within(data_limit).await {
                Ok(r) => (r, Stage::EndOfData),
                Err(f) => return lost(f),
            }
        }
    };

    if mail_reply.code >= 400 {
        // What followed a refused MAIL is its consequence; the MAIL reply decides.
        return refused(conn, outcomes, &mail_reply.failure(), Stage::Mail).await;
    }
    if accepted.is_empty() {
        // Every recipient was refused or left for later: the reply to the message settles
        // nothing.
        return abort(conn, outcomes, pause).await;
    }
    if message_reply.code < 400 {
        let text = message_reply.describe();
        for &i in &accepted {
            outcomes[i] = Some(RecipientOutcome::Delivered(text.clone()));
        }
        return TxResult::Done {
            outcomes,
            reusable: true,
            pause,
        };
    }
    let failure = message_reply.failure();
    let reason = failure.describe();
    let outcome = match verdict(&failure, stage) {
        Verdict::Lost => return lost(failure),
        Verdict::Settle(outcome) => outcome,
        Verdict::Pause(kind) => {
            pause = Some(Pause::new(kind, reason.clone()));
            RecipientOutcome::Deferred
        }
    };
    for &i in &accepted {
        outcomes[i] = Some(outcome(reason.clone()));
    }
    // A refused DATA leaves the transaction open on the server: reset it.
    if stage == Stage::Data {
        return abort(conn, outcomes, pause).await;
    }
    TxResult::Done {
        outcomes,
        reusable: true,
        pause,
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
            abort(conn, outcomes, Some(Pause::new(kind, reason))).await
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
