//! Messages as the queue commands show them (and as `--json` prints them): a stable shape
//! built from the spool's files and the scheduler's status, independent of the file format.

use std::time::SystemTime;

use crate::scheduler::{Status, rfc3339};
use crate::spool::{Area, HistoryEntry, QueueId, RecipientStatus, Summary};

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Never attempted yet.
    Queued,
    /// Attempted, some recipients still pending; waiting for its next attempt.
    Deferred,
    /// Being attempted right now.
    Active,
    /// Held by the operator.
    Held,
    /// In the failed area.
    Failed,
}

impl MessageState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Deferred => "deferred",
            MessageState::Active => "active",
            MessageState::Held => "held",
            MessageState::Failed => "failed",
        }
    }
}

/// One recipient of a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecipientView {
    /// The address.
    pub address: String,
    /// "pending", "delivered" or "failed".
    pub status: RecipientStatus,
    /// The upstream's last reply about it.
    pub reply: Option<String>,
}

/// A message, without its body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageView {
    /// Its queue id.
    pub id: QueueId,
    /// Where it stands.
    pub state: MessageState,
    /// When it was acknowledged.
    #[serde(with = "rfc3339")]
    pub received_at: SystemTime,
    /// Its size in bytes.
    pub size: u64,
    /// The envelope sender; empty for the null sender.
    pub sender: String,
    /// The account it goes through.
    #[serde(default)]
    pub account: String,
    /// Its recipients.
    pub recipients: Vec<RecipientView>,
    /// The client that sent it, and the name it gave.
    pub client: String,
    /// The HELO/EHLO name.
    pub helo: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it is due (queued, deferred and held messages).
    #[serde(default, with = "optional_rfc3339")]
    pub next_attempt: Option<SystemTime>,
    /// Why the last attempt did not finish it.
    pub last_error: Option<String>,
    /// Why it is in the failed area.
    pub failed_reason: Option<String>,
}

mod optional_rfc3339 {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
        text.map(|t| humantime::parse_rfc3339(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl MessageView {
    /// The view of a spool summary; `status` (when the relay runs) tells which are active.
    pub fn new(summary: Summary, status: Option<&Status>) -> MessageView {
        let Summary {
            id,
            area,
            envelope,
            size,
            state,
        } = summary;
        let message_state = match area {
            Area::Failed => MessageState::Failed,
            Area::Queue if state.held => MessageState::Held,
            Area::Queue if status.is_some_and(|s| s.active.contains(&id)) => MessageState::Active,
            Area::Queue if state.attempts == 0 => MessageState::Queued,
            Area::Queue => MessageState::Deferred,
        };
        let account = state.account(&envelope).to_owned();
        MessageView {
            id,
            state: message_state,
            received_at: envelope.received_at,
            size,
            account,
            sender: envelope.sender,
            recipients: state
                .recipients
                .into_iter()
                .map(|r| RecipientView {
                    address: r.address,
                    status: r.status,
                    reply: r.reply,
                })
                .collect(),
            client: envelope.client.to_string(),
            helo: envelope.helo,
            attempts: state.attempts,
            next_attempt: (area == Area::Queue).then_some(state.next_attempt),
            last_error: state.last_error,
            failed_reason: state.failed_reason,
        }
    }
}

/// `queue list`: every message, and the state of delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listing {
    /// The relay is running (otherwise the spool was read directly and `status` is empty).
    pub running: bool,
    /// The scheduler's status, when the relay is running.
    pub status: Option<Status>,
    /// Queued messages, oldest first, then failed ones.
    pub messages: Vec<MessageView>,
}

/// `queue show`: one message in full.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shown {
    /// The message.
    pub message: MessageView,
    /// Its history, oldest first.
    pub history: Vec<HistoryView>,
    /// Its header section as stored (with the relay's `Received:`), lossy UTF-8.
    pub headers: String,
    /// The whole message as stored, when asked for.
    pub body: Option<String>,
}

/// One event of a message's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryView {
    /// When.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// What happened.
    pub event: String,
}

impl From<HistoryEntry> for HistoryView {
    fn from(h: HistoryEntry) -> HistoryView {
        HistoryView {
            at: h.at,
            event: h.event,
        }
    }
}
