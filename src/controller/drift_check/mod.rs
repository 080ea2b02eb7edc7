//! The DriftCheck reconcile loop. Expected is what the operator applied (each entry's
//! status names the live version; its content is the recorded, immutable version);
//! actual is every copy: the projected ConfigMap (from the watch cache), Consul's
//! `applied/` keys (one recursive read) and PostgreSQL's applied state (one query). In
//! `Report` mode nothing changes — even the entry controller leaves a hand-edited
//! ConfigMap alone; in `Remediate` mode each copy is put back through the normal apply
//! path and audited. What differs, and what the check reports, is decided in
//! [`core::drift`](crate::core::drift).

mod detect;
mod remediate;

use std::{collections::BTreeSet, sync::Arc, time::Instant};

use kube::{ResourceExt, runtime::controller::Action};
use tracing::instrument;

use super::{
    Context, Error, Result, observed, requeue_after_error,
    status::{self, now},
};
use crate::controller::events::EventType;
use crate::{
    api::v1alpha1::{ANNOTATION_CHECK, ConfigEntry, DriftCheck, DriftSource, RemediationMode},
    core::{
        drift::{self, Finding, Run, Want},
        ownership::Claimant,
        render::ProjectedConfigMap,
    },
    store,
};
use detect::detect;
use remediate::remediate_one;

const KIND: &str = "DriftCheck";

#[instrument(skip_all, fields(namespace = check.namespace().unwrap_or_default(), name = check.name_any()))]
pub async fn reconcile(check: Arc<DriftCheck>, ctx: Arc<Context>) -> Result<Action> {
    observed(KIND, check.as_ref(), &ctx, run_check(&check, &ctx)).await
}

pub fn error_policy(check: Arc<DriftCheck>, error: &Error, ctx: Arc<Context>) -> Action {
    let action = requeue_after_error(KIND, check.as_ref(), error, &ctx);
    if action == Action::await_change() {
        // Nothing but its interval, a spec change or a request wakes a check (not
        // even a relist): whatever failed, it runs again on its interval.
        let interval = drift::check_interval(&check.spec).map(|(i, _)| i);
        return Action::requeue(interval.unwrap_or(drift::SHORTEST_INTERVAL));
    }
    action
}

/// One drifted copy, and how to put it back.
struct Drift {
    finding: Finding,
    /// The entry as the holder of its config id.
    claimant: Claimant,
    expected: Want,
    repair: Repair,
}

/// How a drifted copy is put back.
enum Repair {
    /// Consul's or PostgreSQL's record of the applied version.
    Record,
    /// The ConfigMap, with what it should hold.
    ConfigMap(ProjectedConfigMap),
    /// The Secret, resolved again from its references.
    Secret,
}

impl Drift {
    fn new(
        entry: &ConfigEntry,
        want: &Want,
        (location, source): (String, DriftSource),
        paths: Vec<String>,
        actual: Option<String>,
    ) -> Self {
        Self {
            finding: Finding {
                entry: entry.name_any(),
                environment: want.environment.clone(),
                location,
                source,
                paths,
                expected_checksum: want.checksum.clone(),
                actual_checksum: actual,
            },
            claimant: Claimant::of(entry),
            expected: want.clone(),
            repair: Repair::Record,
        }
    }
}

async fn run_check(check: &DriftCheck, ctx: &Context) -> Result<Action> {
    let (interval, summary) = match drift::check_interval(&check.spec) {
        Ok(parsed) => parsed,
        Err(invalid) => {
            status::report_validation(ctx, KIND, check, check.status.as_ref(), &Err(invalid))
                .await?;
            return Ok(Action::await_change());
        }
    };
    let current = check.status.clone().unwrap_or_default();
    let started = Instant::now();
    let entries = selected(check, ctx);
    let drifts = detect(check, ctx, &held(ctx, &entries).await?).await?;
    let remediate = check.spec.remediation == Some(RemediationMode::Remediate);
    let mut remediated = BTreeSet::new();
    for drift in drifts.iter().filter(|_| remediate) {
        if remediate_one(check, drift, ctx).await? {
            remediated.insert(drift.finding.place());
        }
    }
    ctx.metrics
        .drift_check_seconds
        .set(started.elapsed().as_secs_f64());
    for drift in &drifts {
        let source = drift::source_label(drift.finding.source);
        ctx.metrics.drift(source, remediate);
    }
    let found: Vec<Finding> = drifts.into_iter().map(|d| d.finding).collect();
    let now = now();
    let (report, count) = drift::report(&current.report, &found, &remediated, &now);
    for note in drift::notes(&current.report, &report) {
        let kind = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(check, kind, note.reason, note.message).await;
    }
    let run = Run {
        generation: check.metadata.generation,
        summary,
        report,
        count,
        entries_checked: entries.len(),
        request: check.annotations().get(ANNOTATION_CHECK).cloned(),
    };
    let next = drift::status(&current, run, now);
    status::apply_status(ctx, KIND, check, check.status.as_ref(), &next).await?;
    Ok(Action::requeue(interval))
}

/// The entries a check covers, from the entry controller's cache.
fn selected(check: &DriftCheck, ctx: &Context) -> Vec<Arc<ConfigEntry>> {
    ctx.caches
        .entries
        .state()
        .into_iter()
        .filter(|entry| drift::selects(check, entry))
        .collect()
}

/// Those of `entries` that hold their config id: another's history is not theirs to
/// read.
async fn held(ctx: &Context, entries: &[Arc<ConfigEntry>]) -> Result<Vec<Arc<ConfigEntry>>> {
    let mut held = Vec::new();
    for entry in entries {
        let claimant = Claimant::of(entry);
        match ctx
            .stores
            .verify_claim(&entry.spec.config_id, &claimant)
            .await
        {
            Ok(()) => held.push(entry.clone()),
            Err(store::Error::Claimed(_) | store::Error::Unclaimed { .. }) => {}
            Err(error) => return Err(Error::Store(error)),
        }
    }
    Ok(held)
}
