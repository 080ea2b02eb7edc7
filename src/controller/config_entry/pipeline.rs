//! One pass of the ConfigEntry pipeline: validate and render everything, record the
//! spec, move each environment, project what is live, and report it. Each step
//! decides in [`core::entry`](crate::core::entry) and writes here.

use std::collections::BTreeSet;

use kube::runtime::controller::Action;

use crate::controller::events::EventType;

use super::{
    KIND,
    projection::{project_all, remove_stale},
    promote::{Stopped, promote_all, soonest},
    record::{Recorded, record, settle_metadata},
};
use crate::{
    api::v1alpha1::ConfigEntry,
    controller::{Context, Error, Result, status},
    core::{
        Invalid, Note,
        entry::{
            Plan, Refusal, plan,
            status::{Backends, Report, SyncOutcome, build_status, notes, unchanged},
            validate,
        },
        resolve::Snapshot,
    },
    store::Error as StoreError,
    telemetry::FailureLabels,
};

pub async fn reconcile_entry(entry: &ConfigEntry, ctx: &Context) -> Result<Action> {
    let mut report = Report::new(entry.metadata.generation);
    // Validate and render everything first: the whole result validates or nothing changes.
    let snapshot = Snapshot::from_spec(&entry.spec);
    let mut plans = match checked(entry, ctx, &snapshot) {
        Ok((message, plans)) => {
            report.validated = Ok(message);
            plans
        }
        Err(refusal) => return refused(ctx, entry, report, refusal).await,
    };
    let recorded = match record(ctx, entry, &snapshot).await {
        Ok(recorded) => recorded,
        // Another entry's history: nothing of it is read, written or shown.
        Err(StoreError::Claimed(refused_claim)) => {
            let invalid = Invalid {
                reason: "ConfigIdClaimed",
                message: refused_claim.message,
            };
            return refused(ctx, entry, report, invalid.into()).await;
        }
        Err(error) => {
            let stop = Stopped::new(
                "no new version is recorded or applied until it answers; what is live stays live",
            );
            return stopped(ctx, entry, report, stop(error)).await;
        }
    };
    settle_metadata(ctx, entry, &recorded.latest.authors).await?;
    report.latest = Some((recorded.latest.version, recorded.latest.checksum.clone()));
    report.happened.extend(recorded.news.clone());
    let promoted = match promote_all(ctx, entry, &recorded, &mut plans).await {
        Ok(promoted) => promoted,
        Err(stop) => return stopped(ctx, entry, report, stop).await,
    };
    report.environments = promoted.outcomes;
    report.happened.extend(promoted.happened);
    let projected = project_all(
        ctx,
        entry,
        &snapshot,
        &plans,
        &promoted.moved_at,
        &mut report.environments,
    )
    .await;
    remove_stale(ctx, entry, &plans, &projected.secret_targets).await?;
    let consul_behind = sync_consul(ctx, &recorded, &mut report).await;
    finish(ctx, entry, &report).await?;
    if consul_behind {
        return Err(Error::ConsulBehind);
    }
    if report.degraded() {
        return Err(Error::ProjectionFailed);
    }
    // A restart held back by the rate limit is retried once it is allowed; secret
    // values change upstream without telling anyone, so they are looked at again.
    let refresh = projected.has_secrets.then_some(ctx.settings.secret_refresh);
    let retry = soonest(
        soonest(projected.restart_after, refresh),
        promoted.propose_after,
    );
    Ok(retry.map_or_else(Action::await_change, Action::requeue))
}

/// Checks the entry's place and content, and renders every environment.
fn checked<'e>(
    entry: &'e ConfigEntry,
    ctx: &Context,
    snapshot: &Snapshot,
) -> Result<(String, Vec<Plan<'e>>), Refusal> {
    validate::check_place(entry, &ctx.rules.config_id_prefix)?;
    let message = validate::validate(&entry.spec, ctx.schema_source(entry))?;
    Ok((
        message,
        plan(entry, snapshot, &ctx.settings.allowed_namespaces)?,
    ))
}

/// Copies what Consul should hold of the config id, and says where the versions stand.
/// Returns whether Consul is behind: applying goes on, and it catches up later.
async fn sync_consul(ctx: &Context, recorded: &Recorded, report: &mut Report) -> bool {
    let consul = ctx.stores.sync_consul(&recorded.config_id).await;
    if let Some(result) = &consul {
        ctx.metrics.backend("consul", result.is_ok());
    }
    let ledger = ctx.stores.backend();
    let backends = match consul {
        None => match ledger {
            "postgres" => Backends::Postgres,
            "cluster" => Backends::Cluster,
            _ => Backends::Memory,
        },
        Some(Ok(sync)) => Backends::Consul {
            ledger: match ledger {
                "postgres" => "PostgreSQL",
                "cluster" => "the cluster ledger",
                _ => "memory",
            },
            omitted: sync.content_omitted,
        },
        Some(Err(error)) => Backends::ConsulBehind(error.to_string()),
    };
    let behind = matches!(backends, Backends::ConsulBehind(_));
    report.sync = Some(SyncOutcome::recorded(recorded.latest.version, backends));
    behind
}

/// Reports an entry that does not validate, or whose config id is another's: nothing
/// changed, and nothing will until the spec does.
async fn refused(
    ctx: &Context,
    entry: &ConfigEntry,
    mut report: Report,
    refusal: Refusal,
) -> Result<Action> {
    report.validated = Err((refusal.invalid.reason, refusal.invalid.message));
    report.environments = unchanged(entry, &refusal.environments);
    finish(ctx, entry, &report).await?;
    Ok(Action::await_change())
}

/// Reports a store that failed part way: what is live stays live.
async fn stopped(
    ctx: &Context,
    entry: &ConfigEntry,
    mut report: Report,
    stop: Stopped,
) -> Result<Action> {
    report.sync = Some(SyncOutcome {
        synced: false,
        reason: stop.error.label(),
        message: format!("{}: {}", stop.error, stop.consequence),
    });
    report.happened.extend(stop.happened);
    report.environments = unchanged(entry, &BTreeSet::new());
    finish(ctx, entry, &report).await?;
    Err(Error::Store(stop.error))
}

/// Writes the status the report describes (only if it changed), and publishes the
/// Events its changes call for: each warning on its own, and everything normal the
/// pass did in one.
async fn finish(ctx: &Context, entry: &ConfigEntry, report: &Report) -> Result<()> {
    let current = entry.status.as_ref();
    let next = build_status(current, report, status::now());
    status::apply_status(ctx, KIND, entry, current, &next).await?;
    let (warnings, normal): (Vec<_>, Vec<_>) = notes(current, &next)
        .into_iter()
        .chain(report.happened.iter().cloned())
        .partition(|note| note.warning);
    for note in warnings.into_iter().chain(Note::summary(normal)) {
        if note.reason == "ValidationFailed"
            && let Err((reason, _)) = &report.validated
        {
            let labels = FailureLabels { kind: KIND, reason };
            ctx.metrics.refused_objects.get_or_create(&labels).inc();
        }
        let kind = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(entry, kind, note.reason, note.message).await;
    }
    Ok(())
}
