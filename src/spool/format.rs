//! The bytes of the two queue files: the message file and the delivery state file.
//!
//! Message file `<id>.msg`, written once at commit, never modified:
//!
//! ```text
//! {"v":1,"size":10345,"envelope":{...}}\n      one line of JSON: format version, body size, envelope
//! Received: from ...\r\n                       the body: exactly the bytes sent after DATA,
//! ...                                          `size` bytes, CRLF line endings, not dot-stuffed
//! ```
//!
//! The header carries the body size, so a file cut short (disk fault, a copy gone wrong) is
//! detected on load instead of being sent truncated: the equivalent of Postfix's END record.
//!
//! State file `<id>.state`: JSON [`DeliveryState`], replaced atomically after each attempt.
//! Absent until the first attempt: a new message is "every recipient pending, due now".

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Current format version of the message file header.
const VERSION: u32 = 1;

/// Everything about a message except its bytes: who sent it, to whom, from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope sender (`MAIL FROM`); empty for the null sender `<>`.
    pub sender: String,
    /// Envelope recipients (`RCPT TO`), in the order given.
    pub recipients: Vec<String>,
    /// When the message was acknowledged.
    #[serde(with = "unix_ms")]
    pub received_at: SystemTime,
    /// The client's address.
    pub client: IpAddr,
    /// The name the client gave in HELO/EHLO.
    pub helo: String,
    /// The client declared `BODY=8BITMIME`.
    #[serde(default)]
    pub eight_bit_mime: bool,
    /// The client declared `SMTPUTF8` (UTF-8 addresses or headers).
    #[serde(default)]
    pub smtputf8: bool,
    /// Recipients given with `NOTIFY=NEVER`: their failure is not reported to anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify_never: Vec<String>,
    /// The account chosen for it when it was queued (by its sender); none in a spool written
    /// before there were accounts, which means the default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not yet accepted by the upstream.
    Pending,
    /// The upstream accepted the message for this recipient.
    Delivered,
    /// Given up on (permanent rejection or too old).
    Failed,
}

/// One recipient's outcome so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientState {
    /// The address.
    pub address: String,
    /// Where it stands.
    pub status: RecipientStatus,
    /// The upstream's last reply about it (or why it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

/// The mutable part of a queued message: attempts and per-recipient outcomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due.
    #[serde(with = "unix_ms")]
    pub next_attempt: SystemTime,
    /// Why the last attempt did not finish the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Why the message was moved to the failed area (only there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_reason: Option<String>,
    /// Held by the operator (`gmail-relay queue hold`): not attempted until released.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// The account the operator moved it to (`queue requeue --account`), in place of the one
    /// its envelope names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// One entry per envelope recipient, same order.
    pub recipients: Vec<RecipientState>,
    /// What happened to the message, oldest first: attempts and operator actions (the last
    /// [`HISTORY_LEN`] of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// How many history entries a state file keeps: enough to see a pattern, bounded so a message
/// retried for days keeps a small state file.
pub const HISTORY_LEN: usize = 20;

/// One event in a message's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When.
    #[serde(with = "unix_ms")]
    pub at: SystemTime,
    /// What happened, in words (the upstream's reply included).
    pub event: String,
}

impl DeliveryState {
    /// The state of a message that has not been tried yet: all pending, due at once.
    pub fn new(envelope: &Envelope) -> Self {
        DeliveryState {
            attempts: 0,
            next_attempt: envelope.received_at,
            last_error: None,
            failed_reason: None,
            held: false,
            account: None,
            history: Vec::new(),
            recipients: envelope
                .recipients
                .iter()
                .map(|a| RecipientState {
                    address: a.clone(),
                    status: RecipientStatus::Pending,
                    reply: None,
                })
                .collect(),
        }
    }

    /// The account the message goes through: the operator's choice, else its envelope's, else
    /// the default account.
    pub fn account<'a>(&'a self, envelope: &'a Envelope) -> &'a str {
        self.account
            .as_deref()
            .or(envelope.account.as_deref())
            .unwrap_or(crate::config::DEFAULT_ACCOUNT)
    }

    /// Recipients the upstream has not accepted yet.
    pub fn pending(&self) -> impl Iterator<Item = &RecipientState> {
        self.recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Pending)
    }

    /// Adds an event to the history, dropping the oldest beyond [`HISTORY_LEN`].
    pub fn record(&mut self, at: SystemTime, event: impl Into<String>) {
        if self.history.len() >= HISTORY_LEN {
            self.history.remove(0);
        }
        self.history.push(HistoryEntry {
            at,
            event: event.into(),
        });
    }

    /// True when no recipient is pending any more.
    pub fn is_settled(&self) -> bool {
        self.pending().next().is_none()
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    v: u32,
    size: u64,
    envelope: Envelope,
}

/// Why a queue file could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// The first line is missing or not the expected JSON.
    #[error("bad header: {0}")]
    Header(String),
    /// A header from a newer (or unknown) version of the relay.
    #[error("unknown format version {0}")]
    Version(u32),
    /// The body is shorter or longer than the header says.
    #[error("body is {actual} bytes but the header says {expected} (file cut short or altered)")]
    Size {
        /// Size in the header.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("bad state file: {0}")]
    State(String),
}

/// The header line (with its `\n`) for a message of `size` body bytes.
pub fn encode_header(envelope: &Envelope, size: u64) -> Vec<u8> {
    let header = Header {
        v: VERSION,
        size,
        envelope: envelope.clone(),
    };
    let mut line = serde_json::to_vec(&header).expect("envelope serialises");
    line.push(b'\n');
    line
}

/// Decodes the header from the start of a message file: the envelope, the body size, and the
/// offset where the body starts.
pub fn decode_header(bytes: &[u8]) -> Result<(Envelope, u64, usize), FormatError> {
    let end = memchr::memchr(b'\n', bytes)
        .ok_or_else(|| FormatError::Header("no end of header line".into()))?;
    let header: Header =
        serde_json::from_slice(&bytes[..end]).map_err(|e| FormatError::Header(e.to_string()))?;
    if header.v != VERSION {
        return Err(FormatError::Version(header.v));
    }
    Ok((header.envelope, header.size, end + 1))
}

/// Decodes a whole message file into its envelope and body.
pub fn decode_message(mut bytes: Vec<u8>) -> Result<(Envelope, Vec<u8>), FormatError> {
    let (envelope, size, start) = decode_header(&bytes)?;
    check_size(size, (bytes.len() - start) as u64)?;
    bytes.drain(..start);
    Ok((envelope, bytes))
}

/// Checks a body length against the header's.
pub fn check_size(expected: u64, actual: u64) -> Result<(), FormatError> {
    if expected == actual {
        Ok(())
    } else {
        Err(FormatError::Size { expected, actual })
    }
}

/// Encodes a state file.
pub fn encode_state(state: &DeliveryState) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(state).expect("state serialises");
    bytes.push(b'\n');
    bytes
}

/// Decodes a state file.
pub fn decode_state(bytes: &[u8]) -> Result<DeliveryState, FormatError> {
    serde_json::from_slice(bytes).map_err(|e| FormatError::State(e.to_string()))
}

/// Serde for `SystemTime` as integer milliseconds since the Unix epoch.
mod unix_ms {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        s.serialize_u64(ms)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(d)?;
        Ok(UNIX_EPOCH + Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            sender: String::new(),
            recipients: vec!["a@example.com".into(), "b@example.com".into()],
            received_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            client: "127.0.0.1".parse().unwrap(),
            helo: "printer".into(),
            eight_bit_mime: true,
            smtputf8: false,
            notify_never: vec![],
            account: None,
        }
    }

    #[test]
    fn message_round_trips() {
        let body = b"Subject: hi\r\n\r\nbody\r\n".to_vec();
        let mut file = encode_header(&envelope(), body.len() as u64);
        assert_eq!(
            file.iter().filter(|&&b| b == b'\n').count(),
            1,
            "header is one line"
        );
        file.extend_from_slice(&body);
        let (env, got) = decode_message(file).unwrap();
        assert_eq!(env, envelope());
        assert_eq!(got, body);
    }

    #[test]
    fn truncated_body_is_detected() {
        let mut file = encode_header(&envelope(), 100);
        file.extend_from_slice(&[b'x'; 60]);
        assert_eq!(
            decode_message(file).unwrap_err(),
            FormatError::Size {
                expected: 100,
                actual: 60
            }
        );
    }

    #[test]
    fn garbage_and_future_versions_are_errors() {
        assert!(matches!(
            decode_message(b"garbage".to_vec()),
            Err(FormatError::Header(_))
        ));
        let line = b"{\"v\":9,\"size\":0,\"envelope\":{}}\n".to_vec();
        assert!(decode_message(line).is_err());
    }

    #[test]
    fn state_round_trips_and_tracks_pending() {
        let mut st = DeliveryState::new(&envelope());
        assert_eq!(st.pending().count(), 2);
        st.recipients[0].status = RecipientStatus::Delivered;
        st.recipients[0].reply = Some("250 2.1.5 OK".into());
        let back = decode_state(&encode_state(&st)).unwrap();
        assert_eq!(back, st);
        assert_eq!(back.pending().count(), 1);
        assert!(!back.is_settled());
    }
}
