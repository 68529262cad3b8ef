//! The courier the scheduler delivers through: the accounts' upstreams, with every attempt
//! admitted by the cluster first (shared budget and pause) and settled afterwards, and the
//! pauses it finds published for the other replicas. Without `[cluster]` it is the upstreams
//! alone.

use crate::delivery::{Outgoing, RecipientOutcome, Report, Upstreams};
use crate::scheduler::Courier;

use super::{Admission, Cluster};

/// [`Upstreams`], behind the cluster when there is one.
#[derive(Clone)]
pub struct SharedCourier {
    upstreams: Upstreams,
    cluster: Option<Cluster>,
}

impl SharedCourier {
    /// Delivery through `upstreams`, shared through `cluster` if given.
    pub fn new(upstreams: Upstreams, cluster: Option<Cluster>) -> SharedCourier {
        SharedCourier { upstreams, cluster }
    }

    async fn deliver_shared(
        &self,
        cluster: &Cluster,
        account: &str,
        msg: &Outgoing<'_>,
        recipients: &[String],
    ) -> Report {
        let cost = recipients.len() as u32;
        let ticket = match cluster.admit(account, cost).await {
            Admission::Go(ticket) => ticket,
            Admission::Hold(pause) => return Report::paused(recipients.len(), pause),
        };
        let probing = ticket.probing;
        let mut report = self.upstreams.deliver(account, msg, recipients).await;
        let delivered = report
            .outcomes
            .iter()
            .filter(|o| matches!(o, RecipientOutcome::Delivered(_)))
            .count() as u32;
        cluster.settle(ticket, delivered).await;
        match report.pause.take() {
            // What belongs to the account is shared.
            Some(pause) if super::pauses::SHARED.contains(&pause.kind) => {
                report.pause = Some(cluster.publish(account, pause).await);
            }
            other => {
                report.pause = other;
                if probing && report.reached_upstream() {
                    cluster.resume(account).await;
                }
            }
        }
        report
    }
}

impl Courier for SharedCourier {
    async fn deliver(&self, account: &str, msg: &Outgoing<'_>, recipients: &[String]) -> Report {
        match &self.cluster {
            Some(cluster) => self.deliver_shared(cluster, account, msg, recipients).await,
            None => self.upstreams.deliver(account, msg, recipients).await,
        }
    }
}
