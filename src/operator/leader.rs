//! Leader election on a Lease: of the operator's replicas, only the leader reconciles.
//! What to do with the lease is `core::leadership`'s decision; this reads and writes
//! the Lease and keeps the clock.
//!
//! Leading ends at the renew deadline after the last write of the lease that
//! succeeded, whatever the apiserver answers (or fails to answer) meanwhile: a leader
//! cut off from the apiserver has stopped before any other replica may take over.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use tokio::{sync::watch, task::JoinHandle, time::timeout};

use crate::core::leadership::{self, Record, Seen, Step, Timing};

const POST: PostParams = PostParams {
    dry_run: false,
    field_manager: None,
};

/// A replica that wants to lead: the lease it competes for and who it is.
#[derive(Clone)]
pub struct Candidate {
    pub leases: Api<Lease>,
    pub lease: String,
    pub identity: String,
    pub timing: Timing,
}

/// Whether this replica leads: until when it does, as its campaign renews the lease.
pub struct Leading(watch::Receiver<Option<Instant>>);

impl Leading {
    fn until(&mut self) -> Option<Instant> {
        let until = *self.0.borrow_and_update();
        until.filter(|until| Instant::now() < *until)
    }

    /// Waits until this replica leads.
    pub async fn acquired(&mut self) {
        while self.until().is_none() {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until this replica no longer leads: its renew deadline passed.
    pub async fn lost(&mut self) {
        while let Some(until) = self.until() {
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => {}
                changed = self.0.changed() => if changed.is_err() { return },
            }
        }
    }
}

impl Candidate {
    /// Starts campaigning: takes the lease when it is free or expired, and renews it
    /// while held, until the returned task is aborted.
    pub fn campaign(self) -> (Leading, JoinHandle<()>) {
        let (until, leading) = watch::channel(None);
        let task = tokio::spawn(async move { self.run(until).await });
        (Leading(leading), task)
    }

    async fn run(self, leading: watch::Sender<Option<Instant>>) {
        let mut seen: Option<Seen> = None;
        let mut changes = None;
        loop {
            let now = Instant::now();
            let (wait, standing_by) = match self.call(self.leases.get_opt(&self.lease)).await {
                Ok(current) => {
                    seen = current
                        .as_ref()
                        .map(|lease| leadership::observe(seen.take(), record_of(lease), now));
                    match leadership::step(&self.identity, seen.as_ref(), now, &self.timing) {
                        Step::Take => {
                            let sent = Instant::now();
                            if self.take(current, seen.as_ref()).await {
                                let until = leadership::leads_until(sent, &self.timing);
                                leading.send_if_modified(|held| held.replace(until) != Some(until));
                            }
                            (self.timing.retry, false)
                        }
                        Step::Wait(wait) => (wait, true),
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, lease = %self.lease, "cannot read the leader lease");
                    (self.timing.retry, false)
                }
            };
            if !standing_by {
                changes = None;
                tokio::time::sleep(wait).await;
                continue;
            }
            let changes = changes.get_or_insert_with(|| self.changes());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = changes.next() => {}
            }
        }
    }

    /// Each change to the lease, as a watch delivers it. A replica standing by reads
    /// the lease again on each, so that it sees a renewal when it is written, not up
    /// to a retry period later: the lease expires one lease duration after the holder's
    /// last renewal, as nearly as this replica can tell without trusting its clock. The
    /// leader holds no watch.
    fn changes(&self) -> BoxStream<'static, ()> {
        let only_ours = watcher::Config::default().fields(&format!("metadata.name={}", self.lease));
        watcher(self.leases.clone(), only_ours)
            .default_backoff()
            .map(drop)
            .boxed()
    }

    /// Writes the lease as this replica's: created when there is none, else replaced
    /// only if nobody wrote it since it was read. Whether it was written.
    async fn take(&self, current: Option<Lease>, seen: Option<&Seen>) -> bool {
        let renewed = Some(MicroTime(Timestamp::now()));
        let before = current.as_ref().and_then(|lease| lease.spec.as_ref());
        let ours = seen.is_some_and(|s| s.record.holder.as_deref() == Some(&self.identity));
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(whole_seconds(self.timing.lease)),
            acquire_time: if ours {
                before.and_then(|spec| spec.acquire_time.clone())
            } else {
                renewed.clone()
            },
            renew_time: renewed,
            lease_transitions: Some(leadership::transitions(
                &self.identity,
                seen,
                before.and_then(|spec| spec.lease_transitions).unwrap_or(0),
            )),
            ..LeaseSpec::default()
        };
        let written = match current {
            Some(lease) => {
                let lease = Lease {
                    spec: Some(spec),
                    ..lease
                };
                let replaced = self.leases.replace(&self.lease, &POST, &lease);
                self.call(replaced).await.map(drop)
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.lease.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                let created = self.leases.create(&POST, &lease);
                self.call(created).await.map(drop)
            }
        };
        match written {
            Ok(()) if !ours => {
                tracing::info!(lease = %self.lease, identity = %self.identity, "leading");
                true
            }
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, lease = %self.lease, "the lease was not written");
                false
            }
        }
    }

    /// Gives the lease up, if this replica holds it, so that another leads at once
    /// rather than after the lease duration.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.call(self.leases.get_opt(&self.lease)).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        let released = self.leases.replace(&self.lease, &POST, &lease);
        match self.call(released).await {
            Ok(_) => tracing::info!(lease = %self.lease, "leader lease released"),
            Err(error) => tracing::warn!(%error, lease = %self.lease, "cannot release the lease"),
        }
    }

    /// One request to the apiserver, given up after the retry period: a request that
    /// hangs must not hold the campaign past its deadline.
    async fn call<T>(
        &self,
        request: impl Future<Output = kube::Result<T>>,
    ) -> Result<T, CallError> {
        match timeout(self.timing.retry, request).await {
            Ok(answer) => answer.map_err(CallError::Failed),
            Err(_) => Err(CallError::TimedOut(self.timing.retry)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Failed(kube::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

fn record_of(lease: &Lease) -> Record {
    let spec = lease.spec.as_ref();
    Record {
        holder: spec.and_then(|spec| spec.holder_identity.clone()),
        renewed: spec
            .and_then(|spec| spec.renew_time.as_ref())
            .map(|time| time.0.to_string()),
    }
}

fn whole_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}
