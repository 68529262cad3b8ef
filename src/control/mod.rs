//! The queue commands (`gmail-relay queue ...`): what they can ask, the control socket that
//! carries the asking to a running relay, and the same operations run directly on the spool
//! when the relay is stopped.
//!
//! # One writer
//!
//! The spool has one writer at a time. While the daemon runs it holds the spool lock and serves
//! `queue.dir/control.sock` (mode 0600, in the 0700 spool directory: only the relay's user and
//! root can connect); a queue command sends its [`Request`] there and the daemon carries it out
//! with the scheduler's cooperation (a message being attempted right now is never deleted or
//! held under it). When no daemon answers, the command takes the spool lock itself and works
//! on the files; a daemon started meanwhile waits for nothing but finds the lock taken and
//! says so.
//!
//! # Protocol
//!
//! One JSON object per line each way: a [`Request`], then `{"ok": Reply}` or
//! `{"error": {"kind": ..., "message": ...}}`. The socket is local and owner-only; the protocol
//! is internal to one version of the binary and not a published interface (`--json` output of
//! the commands is).

mod client;
mod ops;
mod render;
mod server;
mod view;

use std::path::{Path, PathBuf};

pub use client::{Answer, request, request_running};
pub use ops::Operator;
pub use render::{render_done, render_list, render_show, render_status, short, until};
pub use server::{BindError, bind, serve};
pub use view::{Listing, MessageState, MessageView, RecipientView, Shown};

use crate::scheduler::Status;
use crate::spool::QueueId;

/// The control socket of the spool in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// What a queue command asks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Every message in the queue and the failed area, with the state of delivery.
    List,
    /// One message in full: envelope, per-recipient state, history, headers (and body).
    Show {
        /// The message.
        id: QueueId,
        /// Include the body.
        body: bool,
    },
    /// Attempt one queued message now, or (without an id) every one not held; a delivery
    /// pause is probed now.
    Retry {
        /// The message, or all.
        id: Option<QueueId>,
    },
    /// Delete one message, from the queue or the failed area.
    Delete {
        /// The message.
        id: QueueId,
    },
    /// Delete every message in the failed area.
    DeleteFailed,
    /// Keep a queued message from being attempted until released.
    Hold {
        /// The message.
        id: QueueId,
    },
    /// Let a held message be attempted again.
    Release {
        /// The message.
        id: QueueId,
    },
    /// Move a message (or, without an id, every message) from the failed area back into the
    /// queue, due now; with `account`, through that account from now on (a queued message is
    /// moved to it too).
    Requeue {
        /// The message, or all.
        id: Option<QueueId>,
        /// The account to send it through.
        #[serde(default)]
        account: Option<String>,
    },
    /// The state of delivery (pause, counts).
    Status,
    /// The credentials changed (`oauth authorize` wrote a new refresh token): probe a pause
    /// now rather than at the end of its backoff. Nothing else is made due.
    Probe,
}

/// What a queue command gets back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// For [`Request::List`].
    List(Listing),
    /// For [`Request::Show`].
    Show(Box<Shown>),
    /// For the requests that change something: how many messages they changed, in words.
    Done(Done),
    /// For [`Request::Status`]: `None` when the relay is not running.
    Status(Option<Status>),
}

/// The result of a change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Done {
    /// Messages changed.
    pub count: usize,
    /// What was done, for people.
    pub message: String,
}

impl Done {
    fn new(count: usize, message: impl Into<String>) -> Done {
        Done {
            count,
            message: message.into(),
        }
    }
}

/// What kind of failure a queue command met; each has its own exit code for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No such message (exit 3).
    NotFound,
    /// The message is being attempted right now; try again in a moment (exit 4).
    Busy,
    /// The request does not apply to the message as it is, e.g. holding a failed message
    /// (exit 1).
    Invalid,
    /// The spool or the control socket failed (exit 1).
    Failed,
}

/// A queue command's failure: its kind and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct ControlError {
    /// What kind.
    pub kind: ErrorKind,
    /// For people.
    pub message: String,
}

impl ControlError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> ControlError {
        ControlError {
            kind,
            message: message.into(),
        }
    }

    fn not_found(id: QueueId) -> ControlError {
        ControlError::new(
            ErrorKind::NotFound,
            format!("no message {id} in the queue or the failed area"),
        )
    }

    fn failed(e: impl std::fmt::Display) -> ControlError {
        ControlError::new(ErrorKind::Failed, e.to_string())
    }

    /// The process exit code for this error: 3 not found, 4 busy, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::NotFound => 3,
            ErrorKind::Busy => 4,
            ErrorKind::Invalid | ErrorKind::Failed => 1,
        }
    }
}

impl From<crate::spool::SpoolError> for ControlError {
    fn from(e: crate::spool::SpoolError) -> ControlError {
        match e {
            crate::spool::SpoolError::NotFound(id) => ControlError::not_found(id),
            e => ControlError::failed(e),
        }
    }
}

/// The line a reply travels in.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Envelope {
    Ok(Reply),
    Error(ControlError),
}

/// Longest request or reply line accepted: a `show --body` of the largest message Gmail takes,
/// JSON-escaped, fits.
const MAX_LINE: usize = 256 << 20;

/// Longest request line the daemon reads: requests are small.
const MAX_REQUEST: usize = 64 << 10;

#[cfg(test)]
mod tests;
