//! Carrying out a [`Request`] on the spool, with the running scheduler when there is one.
//!
//! With a scheduler, every change that would pull a message from under an attempt asks the
//! scheduler first ([`Handle::withdraw`]), which refuses while the message is in flight; the
//! spool change follows, then the scheduler is told of messages to schedule again. Without one
//! (the relay is stopped and this process holds the spool lock) only the files change, and the
//! next start picks them up.

use std::time::SystemTime;

use super::view::{HistoryView, Listing, MessageView, Shown};
use super::{ControlError, Done, ErrorKind, Reply, Request};
use crate::scheduler::{Handle, Status};
use crate::spool::{Area, QueueId, Spool, SpoolError};

/// Carries out queue requests.
#[derive(Clone)]
pub struct Operator {
    spool: Spool,
    scheduler: Option<Handle>,
}

impl Operator {
    /// An operator inside the running daemon.
    pub fn live(spool: Spool, scheduler: Handle) -> Operator {
        Operator {
            spool,
            scheduler: Some(scheduler),
        }
    }

    /// An operator on a spool whose lock this process holds (the relay is stopped).
    pub fn offline(spool: Spool) -> Operator {
        Operator {
            spool,
            scheduler: None,
        }
    }

    /// Carries out one request.
    pub async fn handle(&self, request: Request) -> Result<Reply, ControlError> {
        match request {
            Request::List => self.list().await.map(Reply::List),
            Request::Show { id, body } => self.show(id, body).await.map(Reply::Show),
            Request::Retry { id } => self.retry(id).await.map(Reply::Done),
            Request::Delete { id } => self.delete(id).await.map(Reply::Done),
            Request::DeleteFailed => self.delete_failed().await.map(Reply::Done),
            Request::Hold { id } => self.hold(id).await.map(Reply::Done),
            Request::Release { id } => self.release(id).await.map(Reply::Done),
            Request::Requeue { id, account } => {
                self.requeue(id, account.as_deref()).await.map(Reply::Done)
            }
            Request::Status => Ok(Reply::Status(self.status().await?)),
            Request::Probe => self.probe().await.map(Reply::Done),
        }
    }

    async fn probe(&self) -> Result<Done, ControlError> {
        match &self.scheduler {
            None => Ok(Done::new(
                0,
                "the relay is not running; it logs in when it starts",
            )),
            Some(h) => {
                h.probe_now().await.ok_or_else(stopping)?;
                Ok(Done::new(0, "a paused delivery is probed now"))
            }
        }
    }

    async fn status(&self) -> Result<Option<Status>, ControlError> {
        match &self.scheduler {
            None => Ok(None),
            Some(h) => h.status().await.map(Some).ok_or_else(stopping),
        }
    }

    /// The area a message is in.
    async fn find(&self, id: QueueId) -> Result<Area, ControlError> {
        for area in [Area::Queue, Area::Failed] {
            match self.spool.summary(area, id).await {
                Ok(_) => return Ok(area),
                Err(SpoolError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::not_found(id))
    }

    async fn list(&self) -> Result<Listing, ControlError> {
        let status = self.status().await?;
        let mut messages = Vec::new();
        for area in [Area::Queue, Area::Failed] {
            for id in self.spool.list(area).await? {
                match self.spool.summary(area, id).await {
                    Ok(s) => messages.push(MessageView::new(s, status.as_ref())),
                    // Delivered or moved between the listing and the read.
                    Err(SpoolError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Listing {
            running: self.scheduler.is_some(),
            status,
            messages,
        })
    }

    async fn show(&self, id: QueueId, with_body: bool) -> Result<Box<Shown>, ControlError> {
        // The message may move (queue/ to failed/) or go (delivered) between finding it and
        // reading it: look again rather than answer "not found" for a message that failed a
        // moment ago (`send-test` reads "not found" as delivered).
        let mut tries = 0;
        let (summary, message) = loop {
            tries += 1;
            let area = self.find(id).await?;
            let read = async {
                let summary = self.spool.summary(area, id).await?;
                let message = self.spool.load_from(area, id).await?;
                Ok::<_, SpoolError>((summary, message))
            };
            match read.await {
                Ok(read) => break read,
                Err(SpoolError::NotFound(_)) if tries < 3 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let status = self.status().await?;
        let history = summary
            .state
            .history
            .iter()
            .cloned()
            .map(HistoryView::from)
            .collect();
        let end = crate::rfc5322::header_end(&message.body);
        Ok(Box::new(Shown {
            message: MessageView::new(summary, status.as_ref()),
            history,
            headers: String::from_utf8_lossy(&message.body[..end]).into_owned(),
            body: with_body.then(|| String::from_utf8_lossy(&message.body).into_owned()),
        }))
    }

    async fn retry(&self, id: Option<QueueId>) -> Result<Done, ControlError> {
        if let Some(id) = id {
            self.expect_queued(id, "retry").await?;
        }
        let now = SystemTime::now();
        let Some(scheduler) = &self.scheduler else {
            let ids = match id {
                Some(id) => vec![id],
                None => self.spool.list(Area::Queue).await?,
            };
            let mut count = 0;
            for id in ids {
                let s = self.spool.summary(Area::Queue, id).await?;
                if !s.state.held {
                    self.spool.reschedule(id, now).await?;
                    count += 1;
                }
            }
            return Ok(Done::new(
                count,
                format!(
                    "{count} message(s) due now; the relay is stopped, so they are attempted when it starts"
                ),
            ));
        };
        let count = scheduler.retry_now(id).await.ok_or_else(stopping)?;
        let status = scheduler.status().await.ok_or_else(stopping)?;
        if let Some(id) = id
            && count == 0
        {
            if status.active.contains(&id) {
                return Ok(Done::new(0, format!("{id} is being attempted right now")));
            }
            return Err(ControlError::new(
                ErrorKind::Invalid,
                format!("{id} is held; release it first (gmail-relay queue release {id})"),
            ));
        }
        Ok(Done::new(
            count,
            match status.pause {
                Some(p) => format!(
                    "{count} message(s) due now; delivery is paused ({}), so one probes the upstream now",
                    p.cause
                ),
                None => format!("{count} message(s) due now"),
            },
        ))
    }

    /// Checks that `id` is in the queue (not failed), for a request that needs that.
    async fn expect_queued(&self, id: QueueId, what: &str) -> Result<(), ControlError> {
        match self.find(id).await? {
            Area::Queue => Ok(()),
            Area::Failed => Err(ControlError::new(
                ErrorKind::Invalid,
                format!(
                    "{id} is in the failed area and cannot {what}; move it back with \
                     gmail-relay queue requeue {id}"
                ),
            )),
        }
    }

    /// Asks the scheduler to stop scheduling `id` (no-op when the relay is stopped).
    async fn withdraw(&self, id: QueueId, hold: bool) -> Result<(), ControlError> {
        let Some(scheduler) = &self.scheduler else {
            return Ok(());
        };
        match scheduler.withdraw(id, hold).await {
            Some(true) => Ok(()),
            Some(false) => Err(ControlError::new(
                ErrorKind::Busy,
                format!("{id} is being attempted right now; try again in a moment"),
            )),
            None => Err(stopping()),
        }
    }

    async fn delete(&self, id: QueueId) -> Result<Done, ControlError> {
        let area = self.find(id).await?;
        if area == Area::Queue {
            self.withdraw(id, false).await?;
        }
        self.spool.remove_from(area, id).await?;
        crate::observe::events::deleted(&id.to_string(), area_name(area));
        Ok(Done::new(1, format!("deleted {id}")))
    }

    async fn delete_failed(&self) -> Result<Done, ControlError> {
        let ids = self.spool.list(Area::Failed).await?;
        for &id in &ids {
            self.spool.remove_from(Area::Failed, id).await?;
            crate::observe::events::deleted(&id.to_string(), "failed");
        }
        Ok(Done::new(
            ids.len(),
            format!("deleted {} failed message(s)", ids.len()),
        ))
    }

    async fn hold(&self, id: QueueId) -> Result<Done, ControlError> {
        self.expect_queued(id, "be held").await?;
        self.withdraw(id, true).await?;
        match self.spool.set_held(id, true, SystemTime::now()).await {
            Ok(_) => Ok(Done::new(1, format!("held {id}"))),
            Err(e) => {
                // Not recorded as held: let the scheduler have it back.
                if let (Some(scheduler), Ok(s)) =
                    (&self.scheduler, self.spool.summary(Area::Queue, id).await)
                {
                    scheduler.add(crate::spool::QueuedMessage {
                        id,
                        received_at: s.envelope.received_at,
                        next_attempt: s.state.next_attempt,
                        pending: s.state.pending().count(),
                        held: false,
                        account: s.state.account(&s.envelope).to_owned(),
                        sender: s.envelope.sender.clone(),
                    });
                }
                Err(e.into())
            }
        }
    }

    async fn release(&self, id: QueueId) -> Result<Done, ControlError> {
        self.expect_queued(id, "be released").await?;
        let was_held = self.spool.summary(Area::Queue, id).await?.state.held;
        if !was_held {
            return Ok(Done::new(0, format!("{id} was not held")));
        }
        let q = self.spool.set_held(id, false, SystemTime::now()).await?;
        if let Some(scheduler) = &self.scheduler {
            scheduler.add(q);
        }
        Ok(Done::new(1, format!("released {id}")))
    }

    async fn requeue(
        &self,
        id: Option<QueueId>,
        account: Option<&str>,
    ) -> Result<Done, ControlError> {
        if let (Some(name), Some(scheduler)) = (account, &self.scheduler) {
            let status = scheduler.status().await.ok_or_else(stopping)?;
            if !status.accounts.iter().any(|a| a.name == name) {
                let names: Vec<&str> = status.accounts.iter().map(|a| a.name.as_str()).collect();
                return Err(ControlError::new(
                    ErrorKind::Invalid,
                    format!(
                        "the running relay has no account {name:?} (its accounts are {}); \
                         reload it after adding the account",
                        names.join(", ")
                    ),
                ));
            }
        }
        let ids = match id {
            Some(id) => {
                if self.find(id).await? == Area::Queue {
                    let Some(name) = account else {
                        return Err(ControlError::new(
                            ErrorKind::Invalid,
                            format!(
                                "{id} is already in the queue (requeue takes messages from the \
                                 failed area, or moves a queued one with --account NAME)"
                            ),
                        ));
                    };
                    self.withdraw(id, false).await?;
                    let q = self.spool.set_account(id, name, SystemTime::now()).await?;
                    if let Some(scheduler) = &self.scheduler {
                        scheduler.add(q);
                    }
                    return Ok(Done::new(
                        1,
                        format!("{id} goes through the account {name} now"),
                    ));
                }
                vec![id]
            }
            None => self.spool.list(Area::Failed).await?,
        };
        for &id in &ids {
            let q = self.spool.requeue(id, account, SystemTime::now()).await?;
            crate::observe::events::requeued(&id.to_string());
            if let Some(scheduler) = &self.scheduler {
                scheduler.add(q);
            }
        }
        Ok(Done::new(
            ids.len(),
            format!("{} message(s) back in the queue, due now", ids.len()),
        ))
    }
}

fn area_name(area: Area) -> &'static str {
    match area {
        Area::Queue => "queue",
        Area::Failed => "failed",
    }
}

fn stopping() -> ControlError {
    ControlError::new(
        ErrorKind::Failed,
        "the relay is shutting down; try again when it has stopped or restarted",
    )
}
