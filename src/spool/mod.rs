//! The spool: the durable queue on disk, and the only code that writes it.
//!
//! # Layout (`queue.dir`)
//!
//! ```text
//! lock             flock held by the running daemon; contains its pid
//! tmp/             files being written; anything here at start-up is debris and is deleted
//! queue/<id>.msg   a committed message: envelope header line + body (see `format`)
//! queue/<id>.state its delivery state, once it has been tried (replaced atomically)
//! failed/<id>.*    messages given up on, or found unreadable, with the reason in the state
//! rate.json        recent sends, when delivery.max_per_minute / max_per_day are set
//! ```
//!
//! Directories are 0700 and files 0600.
//!
//! # Commit protocol
//!
//! [`Spool::commit`] writes `tmp/<id>.msg`, fsyncs it, renames it to `queue/<id>.msg` and
//! fsyncs `queue/` (the last two shared by concurrent commits, see `commit`). Only when that
//! has returned may the intake answer 250: the rename of the message file is the commit record,
//! so a crash at any instant leaves either nothing (client not yet acknowledged) or a complete
//! message.
//!
//! # Recovery
//!
//! [`Spool::open`] locks the spool (a second daemon gets [`SpoolError::Locked`]), deletes
//! `tmp/`, and lists every committed message with its next attempt time. A message file whose
//! header or size does not check out, or whose state file is unreadable, is moved to `failed/`
//! with the reason (never sent half, never sent twice by guessing). A state file without its
//! message is the trace of a removal or a move to `failed/` cut short by a crash, and is
//! finished.
//!
//! The spool decides nothing about timing: the scheduler says when, the spool records it.

mod admin;
mod commit;
mod format;
mod fsio;
mod id;
mod recover;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

pub use admin::Summary;
pub use format::{
    DeliveryState, Envelope, FormatError, HISTORY_LEN, HistoryEntry, RecipientState,
    RecipientStatus,
};
pub use id::QueueId;

use crate::observe::events;
use commit::Committer;
use id::IdGen;

/// The two places a message can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    /// Waiting for delivery (or held).
    Queue,
    /// Given up on; kept for inspection and requeue.
    Failed,
}

/// A message waiting in the queue, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Its id.
    pub id: QueueId,
    /// When it was acknowledged (for the maximum age).
    pub received_at: SystemTime,
    /// When it is due.
    pub next_attempt: SystemTime,
    /// Recipients still to deliver (what the next attempt costs against the send budget).
    pub pending: usize,
    /// Held by the operator: not attempted until released.
    pub held: bool,
    /// The account it goes through.
    pub account: String,
    /// Its envelope sender (an account that logs in as each sender needs it); empty for `<>`.
    pub sender: String,
}

impl Message {
    /// The account the message goes through (see [`DeliveryState::account`]).
    pub fn account(&self) -> &str {
        self.state.account(&self.envelope)
    }
}

/// A queued message read back for an attempt.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its id.
    pub id: QueueId,
    /// Sender, recipients, origin.
    pub envelope: Envelope,
    /// Attempts and per-recipient outcomes so far.
    pub state: DeliveryState,
    /// The bytes to send after DATA (CRLF lines, not dot-stuffed).
    pub body: Vec<u8>,
}

/// What went wrong with the spool. Every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Another process holds the spool lock.
    #[error(
        "spool {dir} is in use by another gmail-relay{}; stop it, or give this one its own queue.dir",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The spool directory.
        dir: PathBuf,
        /// The holder's pid, if known.
        pid: Option<u32>,
    },
    /// A file operation failed.
    #[error("spool: cannot {op} {}: {source}{}", path.display(), io_hint(source))]
    Io {
        /// What was being done (`create`, `write`, `read`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A queue file could not be decoded.
    #[error("spool: {} is unreadable: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: FormatError,
    },
    /// No such message in the queue.
    #[error("message {0} is not in the queue")]
    NotFound(QueueId),
}

/// The result of opening a spool.
pub struct Opened {
    /// The spool, locked for this process.
    pub spool: Spool,
    /// Every committed message found on disk, oldest id first.
    pub recovered: Vec<QueuedMessage>,
    /// Receives each message as it is committed from now on.
    pub committed: mpsc::UnboundedReceiver<QueuedMessage>,
}

/// Handle to an open, locked spool. Cheap to clone; every clone is the same spool.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    tmp: PathBuf,
    queue: PathBuf,
    failed: PathBuf,
    ids: IdGen,
    committer: Committer,
    notify: mpsc::UnboundedSender<QueuedMessage>,
    _lock: File,
}

/// What to do about the I/O errors an operator can fix.
fn io_hint(e: &io::Error) -> &'static str {
    if is_storage_full(e) {
        return "; the file system holding queue.dir is full: free space (mail keeps being \
                refused with 452 4.3.1 until then; nothing queued is lost)";
    }
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "; the relay's user must own queue.dir (with the systemd unit it is \
             /var/lib/gmail-relay, its StateDirectory)"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            "; queue.dir is on a read-only file system (under systemd's ProtectSystem=strict \
             only /var/lib/gmail-relay is writable)"
        }
        io::ErrorKind::NotADirectory => "; a file is in the way of queue.dir or one of its parents",
        _ => "",
    }
}

/// The disk (or the user's quota) is full.
fn is_storage_full(e: &io::Error) -> bool {
    // By kind as well as by number: the committer re-wraps a failed directory fsync with its
    // own text, which keeps the kind but not the OS error number (an EDQUOT there was a 451).
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28 | 122)) // ENOSPC, EDQUOT on Linux
}

impl SpoolError {
    /// The spool's file system (or quota) is full: a condition that passes when space is
    /// freed, as opposed to a fault.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. } if is_storage_full(source))
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError + use<> {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { op, path, source }
}

impl Spool {
    /// Creates (if needed) and locks the spool at `dir`, clears `tmp/` and recovers the queue.
    /// Blocking: call it from start-up code or a blocking task.
    pub fn open(dir: &Path) -> Result<Opened, SpoolError> {
        let root = dir.to_path_buf();
        let (tmp, queue, failed) = (root.join("tmp"), root.join("queue"), root.join("failed"));
        if !root.exists() {
            fsio::private_dir(&root).map_err(io_err("create", &root))?;
        }
        let lock_path = root.join("lock");
        let lock = fsio::lock(&lock_path).map_err(|e| match e {
            fsio::LockError::Held(pid) => SpoolError::Locked {
                dir: root.clone(),
                pid,
            },
            fsio::LockError::Io(source) => SpoolError::Io {
                op: "lock",
                path: lock_path.clone(),
                source,
            },
        })?;
        for d in [&tmp, &queue, &failed] {
            fsio::private_dir(d).map_err(io_err("create", d))?;
        }
        let committer =
            Committer::start(queue.clone()).map_err(io_err("start committer for", &queue))?;
        let (notify, committed) = mpsc::unbounded_channel();
        let spool = Spool {
            inner: Arc::new(Inner {
                root,
                tmp,
                queue,
                failed,
                ids: IdGen::default(),
                committer,
                notify,
                _lock: lock,
            }),
        };
        let recovered = recover::recover(&spool)?;
        Ok(Opened {
            spool,
            recovered,
            committed,
        })
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// A fresh id for a message about to be committed.
    pub fn new_id(&self) -> QueueId {
        self.inner.ids.next()
    }

    fn msg_path(&self, dir: &Path, id: QueueId) -> PathBuf {
        dir.join(format!("{id}.msg"))
    }

    fn state_path(&self, dir: &Path, id: QueueId) -> PathBuf {
        dir.join(format!("{id}.state"))
    }

    /// Writes a message durably into the queue (see the commit protocol above). `body` is the
    /// message in pieces (e.g. the added trace header, then the client's data), written in order.
    /// When this returns `Ok`, and only then, the message may be acknowledged.
    pub async fn commit(
        &self,
        id: QueueId,
        envelope: Envelope,
        body: Vec<Vec<u8>>,
    ) -> Result<(), SpoolError> {
        let size: usize = body.iter().map(Vec::len).sum();
        let tmp = self.msg_path(&self.inner.tmp, id);
        let dest = self.msg_path(&self.inner.queue, id);
        let header = format::encode_header(&envelope, size as u64);
        let path = tmp.clone();
        blocking(move || {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(body.len() + 1);
            parts.push(&header);
            parts.extend(body.iter().map(Vec::as_slice));
            fsio::write_new(&path, &parts).map_err(io_err("write", &path))
        })
        .await?;
        self.inner
            .committer
            .commit(tmp, dest.clone())
            .await
            .map_err(io_err("commit", &dest))?;
        let _ = self.inner.notify.send(QueuedMessage {
            id,
            received_at: envelope.received_at,
            next_attempt: envelope.received_at,
            pending: envelope.recipients.len(),
            held: false,
            account: envelope
                .account
                .clone()
                .unwrap_or_else(|| crate::config::DEFAULT_ACCOUNT.to_owned()),
            sender: envelope.sender.clone(),
        });
        Ok(())
    }

    /// The directory of an area.
    fn area_dir(&self, area: Area) -> &Path {
        match area {
            Area::Queue => &self.inner.queue,
            Area::Failed => &self.inner.failed,
        }
    }

    /// Reads a queued message and its delivery state (a fresh state if it was never tried).
    pub async fn load(&self, id: QueueId) -> Result<Message, SpoolError> {
        self.load_from(Area::Queue, id).await
    }

    /// Reads a message from `area` with its state.
    pub async fn load_from(&self, area: Area, id: QueueId) -> Result<Message, SpoolError> {
        let dir = self.area_dir(area);
        let msg = self.msg_path(dir, id);
        let state = self.state_path(dir, id);
        blocking(move || {
            let bytes = std::fs::read(&msg).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => SpoolError::NotFound(id),
                _ => io_err("read", &msg)(e),
            })?;
            let (envelope, body) =
                format::decode_message(bytes).map_err(|source| SpoolError::Corrupt {
                    path: msg.clone(),
                    source,
                })?;
            let state = read_state(&state)?.unwrap_or_else(|| DeliveryState::new(&envelope));
            Ok(Message {
                id,
                envelope,
                state,
                body,
            })
        })
        .await
    }

    /// Records a message's delivery state (after an attempt), atomically.
    pub async fn save_state(&self, id: QueueId, state: &DeliveryState) -> Result<(), SpoolError> {
        let bytes = format::encode_state(state);
        let tmp = self.state_path(&self.inner.tmp, id);
        let dest = self.state_path(&self.inner.queue, id);
        blocking(move || fsio::replace(&tmp, &dest, &bytes).map_err(io_err("write", &dest))).await
    }

    /// Removes a message whose every recipient is settled.
    pub async fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        self.remove_from(Area::Queue, id).await
    }

    /// Removes a message (its files) from `area`.
    pub async fn remove_from(&self, area: Area, id: QueueId) -> Result<(), SpoolError> {
        let dir = self.area_dir(area);
        let msg = self.msg_path(dir, id);
        let state = self.state_path(dir, id);
        let queue = dir.to_path_buf();
        blocking(move || {
            // Message first: a state file left alone by a crash is recognised as debris.
            fsio::remove_if_exists(&msg).map_err(io_err("remove", &msg))?;
            fsio::remove_if_exists(&state).map_err(io_err("remove", &state))?;
            fsio::sync_dir(&queue).map_err(io_err("sync", &queue))
        })
        .await
    }

    /// Moves a message to the failed area with its final state (which says why).
    pub async fn fail(&self, id: QueueId, state: &DeliveryState) -> Result<(), SpoolError> {
        self.save_state(id, state).await?;
        let this = self.clone();
        blocking(move || this.move_to_failed(id)).await
    }

    /// The send budget's record (`rate.json`), if there is one.
    pub async fn load_budget(&self) -> Option<Vec<u8>> {
        let path = self.inner.root.join("rate.json");
        tokio::task::spawn_blocking(move || std::fs::read(path).ok())
            .await
            .ok()
            .flatten()
    }

    /// Replaces the send budget's record, atomically.
    pub async fn save_budget(&self, bytes: Vec<u8>) -> Result<(), SpoolError> {
        let tmp = self.inner.tmp.join("rate.json");
        let dest = self.inner.root.join("rate.json");
        blocking(move || fsio::replace(&tmp, &dest, &bytes).map_err(io_err("write", &dest))).await
    }

    /// Moves a message that cannot be sent as it is (unreadable file or state) to the failed
    /// area, recording why. Its state, if readable, is kept to show what was delivered before.
    pub async fn quarantine(&self, id: QueueId, reason: &str) -> Result<(), SpoolError> {
        let this = self.clone();
        let reason = reason.to_owned();
        blocking(move || this.quarantine_now(id, &reason)).await
    }

    fn quarantine_now(&self, id: QueueId, reason: &str) -> Result<(), SpoolError> {
        let state_path = self.state_path(&self.inner.queue, id);
        let mut state = read_state(&state_path)
            .ok()
            .flatten()
            .unwrap_or_else(|| DeliveryState {
                attempts: 0,
                next_attempt: SystemTime::now(),
                last_error: None,
                failed_reason: None,
                held: false,
                account: None,
                history: Vec::new(),
                recipients: Vec::new(),
            });
        state.failed_reason = Some(reason.to_owned());
        state.record(SystemTime::now(), format!("quarantined: {reason}"));
        let tmp = self.state_path(&self.inner.tmp, id);
        fsio::replace(&tmp, &state_path, &format::encode_state(&state))
            .map_err(io_err("write", &state_path))?;
        self.move_to_failed(id)?;
        events::failed(&id.to_string(), reason);
        Ok(())
    }

    /// Moves whatever files `id` has in the queue to the failed area. Message first, so that a
    /// crash in between leaves a state file that recovery knows how to finish moving.
    fn move_to_failed(&self, id: QueueId) -> Result<(), SpoolError> {
        let (q, f) = (&self.inner.queue, &self.inner.failed);
        for (from, to) in [
            (self.msg_path(q, id), self.msg_path(f, id)),
            (self.state_path(q, id), self.state_path(f, id)),
        ] {
            match std::fs::rename(&from, &to) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("move to failed/", &from)(e));
                }
                _ => {}
            }
        }
        fsio::sync_dir(f).map_err(io_err("sync", f))?;
        fsio::sync_dir(q).map_err(io_err("sync", q))
    }
}

/// Reads a state file; `None` if it does not exist.
fn read_state(path: &Path) -> Result<Option<DeliveryState>, SpoolError> {
    match std::fs::read(path) {
        Ok(bytes) => format::decode_state(&bytes)
            .map(Some)
            .map_err(|source| SpoolError::Corrupt {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Runs blocking file work off the async worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(SpoolError::Io {
            op: "run",
            path: PathBuf::new(),
            source: io::Error::other(e.to_string()),
        })
    })
}

#[cfg(test)]
mod tests;
