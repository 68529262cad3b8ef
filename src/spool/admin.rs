//! What the queue commands need from the spool: listing an area, reading a message's envelope
//! and state without its body, and moving a failed message back into the queue.
//!
//! These read files the daemon may be writing; every write is an atomic rename, so a reader
//! sees a whole old or a whole new file. Changes go through the daemon when it runs (see
//! `control`), so the spool keeps one writer.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::format::{self, DeliveryState, Envelope, RecipientStatus};
use super::{Area, QueueId, QueuedMessage, Spool, SpoolError, blocking, fsio, io_err, read_state};

/// A message as `queue list` shows it: everything but the body.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Its id.
    pub id: QueueId,
    /// Where it is.
    pub area: Area,
    /// Its envelope.
    pub envelope: Envelope,
    /// Bytes of message.
    pub size: u64,
    /// Its delivery state (a fresh one if never tried).
    pub state: DeliveryState,
}

impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for QueueId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        QueueId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a queue id")))
    }
}

fn ids_in(dir: &Path) -> Result<Vec<QueueId>, SpoolError> {
    let mut ids: Vec<QueueId> = std::fs::read_dir(dir)
        .map_err(io_err("list", dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            QueueId::parse(name.strip_suffix(".msg")?)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

impl Spool {
    /// The ids in an area, oldest first.
    pub async fn list(&self, area: Area) -> Result<Vec<QueueId>, SpoolError> {
        let dir = self.area_dir(area).to_path_buf();
        blocking(move || ids_in(&dir)).await
    }

    /// A message's envelope, size and state, without reading its body.
    pub async fn summary(&self, area: Area, id: QueueId) -> Result<Summary, SpoolError> {
        let dir = self.area_dir(area);
        let msg = self.msg_path(dir, id);
        let state = self.state_path(dir, id);
        // A message moving to failed/ goes first and its state follows (see `move_to_failed`);
        // in between, the state is still in queue/.
        let moving = (area == Area::Failed).then(|| self.state_path(&self.inner.queue, id));
        blocking(move || {
            let file = std::fs::File::open(&msg).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SpoolError::NotFound(id),
                _ => io_err("read", &msg)(e),
            })?;
            let mut line = Vec::new();
            BufReader::new(file)
                .take(8 << 20)
                .read_until(b'\n', &mut line)
                .map_err(io_err("read", &msg))?;
            let (envelope, size, _) =
                format::decode_header(&line).map_err(|source| SpoolError::Corrupt {
                    path: msg.clone(),
                    source,
                })?;
            let state = match read_state(&state)? {
                Some(s) => s,
                None => match moving {
                    Some(path) => read_state(&path)?,
                    None => None,
                }
                .unwrap_or_else(|| DeliveryState::new(&envelope)),
            };
            Ok(Summary {
                id,
                area,
                envelope,
                size,
                state,
            })
        })
        .await
    }

    /// Moves a failed message back into the queue, due now: its failed recipients are pending
    /// again (those already delivered stay delivered); with `account`, through that account
    /// from now on. Returns what the scheduler needs.
    pub async fn requeue(
        &self,
        id: QueueId,
        account: Option<&str>,
        now: std::time::SystemTime,
    ) -> Result<QueuedMessage, SpoolError> {
        let mut summary = self.summary(Area::Failed, id).await?;
        let state = &mut summary.state;
        if let Some(account) = account {
            state.account = Some(account.to_owned());
        }
        for r in state
            .recipients
            .iter_mut()
            .filter(|r| r.status == RecipientStatus::Failed)
        {
            r.status = RecipientStatus::Pending;
        }
        state.failed_reason = None;
        state.held = false;
        state.next_attempt = now;
        state.record(
            now,
            match account {
                Some(a) => format!("requeued by the operator, through the account {a}"),
                None => "requeued by the operator".to_owned(),
            },
        );
        let pending = state.pending().count();
        let account = state.account(&summary.envelope).to_owned();
        let bytes = format::encode_state(state);
        let this = self.clone();
        blocking(move || {
            let (q, f) = (&this.inner.queue, &this.inner.failed);
            // The new state goes to the failed area first, then the message, then the state
            // move into the queue: a crash in between leaves something recovery understands.
            let tmp = this.state_path(&this.inner.tmp, id);
            fsio::replace(&tmp, &this.state_path(f, id), &bytes)
                .map_err(io_err("write", &this.state_path(f, id)))?;
            std::fs::rename(this.msg_path(f, id), this.msg_path(q, id))
                .map_err(io_err("move to queue/", &this.msg_path(f, id)))?;
            std::fs::rename(this.state_path(f, id), this.state_path(q, id))
                .map_err(io_err("move to queue/", &this.state_path(f, id)))?;
            fsio::sync_dir(q).map_err(io_err("sync", q))?;
            fsio::sync_dir(f).map_err(io_err("sync", f))
        })
        .await?;
        Ok(QueuedMessage {
            id,
            received_at: summary.envelope.received_at,
            next_attempt: now,
            pending,
            held: false,
            account,
            sender: summary.envelope.sender.clone(),
        })
    }

    /// Moves a queued message to another account (`queue requeue --account`), due now.
    /// Recipients already delivered stay delivered.
    pub async fn set_account(
        &self,
        id: QueueId,
        account: &str,
        now: std::time::SystemTime,
    ) -> Result<QueuedMessage, SpoolError> {
        let mut summary = self.summary(Area::Queue, id).await?;
        let state = &mut summary.state;
        state.account = Some(account.to_owned());
        state.next_attempt = now;
        state.record(
            now,
            format!("moved to the account {account} by the operator"),
        );
        self.save_state(id, state).await?;
        Ok(queued(&summary))
    }

    /// Holds a queued message (it is not attempted until released), or releases it. Returns
    /// what the scheduler needs to schedule it again.
    pub async fn set_held(
        &self,
        id: QueueId,
        held: bool,
        now: std::time::SystemTime,
    ) -> Result<QueuedMessage, SpoolError> {
        let mut summary = self.summary(Area::Queue, id).await?;
        let state = &mut summary.state;
        state.held = held;
        state.record(
            now,
            if held {
                "held by the operator"
            } else {
                "released by the operator"
            },
        );
        self.save_state(id, state).await?;
        Ok(queued(&summary))
    }

    /// Makes a queued message due at `at` (the relay is stopped: the next start attempts it
    /// then).
    pub async fn reschedule(
        &self,
        id: QueueId,
        at: std::time::SystemTime,
    ) -> Result<QueuedMessage, SpoolError> {
        let mut summary = self.summary(Area::Queue, id).await?;
        summary.state.next_attempt = at;
        self.save_state(id, &summary.state).await?;
        Ok(queued(&summary))
    }
}

fn queued(summary: &Summary) -> QueuedMessage {
    QueuedMessage {
        id: summary.id,
        received_at: summary.envelope.received_at,
        next_attempt: summary.state.next_attempt,
        pending: summary.state.pending().count(),
        held: summary.state.held,
        account: summary.state.account(&summary.envelope).to_owned(),
        sender: summary.envelope.sender.clone(),
    }
}
