//! One pass of the ConfigEntry pipeline.

use std::collections::BTreeSet;

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Resource, ResourceExt,
    api::PostParams,
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use serde_json::Value;

use super::{
    KIND,
    project::apply_config_map,
    report::{
        Consumers, EnvironmentOutcome, Live, Report, SecretsOutcome, SyncOutcome, build_status,
    },
    restart::{Restart, restart, restart_annotation},
    secrets::{consumed_checksum, project_secrets, secret_target},
    validate::{self, Refusal},
};
use crate::api::v1alpha1::{
    ANNOTATION_CHANGE_AUTHORS, ANNOTATION_ENTRY, ANNOTATION_SPEC_AUTHOR, ANNOTATION_SPEC_AUTHORS,
    CONDITION_VALIDATED, LABEL_MANAGED_BY, MANAGED_BY,
};
use crate::{
    api::v1alpha1::{
        ApprovalPolicy, ChangePhase, ConfigChange, ConfigChangeSpec, ConfigEntry, ConfigFormat,
        EnvironmentPhase, EnvironmentSpec, EnvironmentStatus, find_condition,
    },
    controller::{
        Context, Error, Result,
        guards::{Guarded, Verdict},
        status,
    },
    core::render::{ProjectedConfigMap, RenderError, render},
    core::resolve::{Snapshot, checksum},
    core::{
        approval::{self, Requirements},
        promotion::{self, Step, promote},
    },
    store::{
        Application, Claimant, ConsulSync, Error as StoreError, Floor, FloorUpdate, NewVersion,
        Source, Version,
    },
    telemetry::FailureLabels,
};

/// One environment, fully rendered from the spec before anything is written.
struct Plan<'s> {
    spec: &'s EnvironmentSpec,
    /// Checksum of the environment's resolved content.
    checksum: String,
    format: ConfigFormat,
    namespace: String,
    name: String,
    data: std::collections::BTreeMap<String, String>,
    /// What changes here need, when they need approval: its projections are bound to
    /// it, and pass only to an environment guarded at least as well.
    guard: Option<Requirements>,
}

pub async fn reconcile_entry(entry: &ConfigEntry, ctx: &Context) -> Result<Action> {
    let mut report = Report {
        generation: entry.metadata.generation,
        validated: Ok(String::new()),
        latest: None,
        environments: Vec::new(),
        sync: None,
    };

    // Validate and render everything first: the whole result validates or nothing changes.
    let snapshot = Snapshot::from_spec(&entry.spec);
    let checked = validate::check_place(entry, &ctx.rules.config_id_prefix)
        .and_then(|()| validate::validate(&entry.spec, validate::schema_source(entry, ctx)))
        .and_then(|message| Ok((message, plan(entry, &snapshot, ctx)?)));
    let (message, mut plans) = match checked {
        Ok(checked) => checked,
        Err(refusal) => {
            report.validated = Err((refusal.invalid.reason, refusal.invalid.message.clone()));
            report.environments = unchanged_environments(entry, &refusal.environments);
            finish(ctx, entry, &report).await?;
            return Ok(Action::await_change());
        }
    };
    report.validated = Ok(message);

    // The config id is this entry's, or nothing of its history is read or written.
    let config_id = entry.spec.config_id.clone();
    let claimant = claimant(entry);
    // Record: PostgreSQL decides the version number, in one transaction with its audit row.
    let authors = spec_authors(entry, &ctx.rules.guards.verdict(Guarded::Authors));
    let author = if authors.is_empty() {
        UNKNOWN_AUTHOR.to_owned()
    } else {
        spec_author(entry)
    };
    let new_version = NewVersion {
        config_id: config_id.clone(),
        claimant: claimant.clone(),
        checksum: snapshot.checksum(),
        snapshot: snapshot.clone(),
        source: Source::Spec,
        created_by: author.clone(),
        authors: authors.clone(),
        message: format!(
            "spec of ConfigEntry {} (generation {})",
            entry.name_any(),
            entry.metadata.generation.unwrap_or(0)
        ),
        based_on: None,
    };
    let stored = async {
        ctx.stores.claim(&config_id, &claimant).await?;
        let recorded = ctx.stores.record(&new_version).await?;
        let applied = ctx.stores.applied(&config_id).await?;
        let floors = ctx.stores.floors(&config_id).await?;
        Ok::<_, crate::store::Error>((recorded, applied, floors))
    }
    .await;
    ctx.metrics.backend(
        if ctx.stores.is_durable() {
            "postgres"
        } else {
            "memory"
        },
        stored.as_ref().is_ok() || matches!(stored, Err(StoreError::Claimed(_))),
    );
    let (recorded, applied, floors) = match stored {
        Ok(stored) => stored,
        Err(StoreError::Claimed(refused)) => {
            // Another entry's history: nothing of it is read, written or shown.
            report.validated = Err(("ConfigIdClaimed", refused.message));
            report.environments = unchanged_environments(entry, &BTreeSet::new());
            finish(ctx, entry, &report).await?;
            return Ok(Action::await_change());
        }
        Err(error) => {
            report.sync = Some(SyncOutcome {
                synced: false,
                reason: error.label(),
                message: format!(
                    "{error}: no new version is recorded or applied until it answers; what is live stays live"
                ),
            });
            report.environments = unchanged_environments(entry, &BTreeSet::new());
            finish(ctx, entry, &report).await?;
            return Err(Error::Store(error));
        }
    };
    let latest = &recorded.version;
    forget_recorded_authors(ctx, entry, &latest.authors).await;
    if recorded.created {
        tracing::info!(%config_id, version = latest.version, "version recorded");
        ctx.metrics.versions_recorded.inc();
        ctx.publish(
            entry,
            EventType::Normal,
            "VersionRecorded",
            format!(
                "recorded version {} of {config_id} (checksum {})",
                latest.version,
                &latest.checksum[..12]
            ),
        )
        .await;
    }
    report.latest = Some((latest.version, latest.checksum.clone()));

    // Move each environment whose content changed and whose requirements let it.
    let mut moved_at = std::collections::HashMap::new();
    // When to look again for a proposal that cannot be made yet.
    let mut propose_after: Option<std::time::Duration> = None;
    for plan in &mut plans {
        let name = plan.spec.name.clone();
        let current = applied.iter().find(|a| a.environment == name);
        let floor = floors.iter().find(|f| f.environment == name);
        let requirements = ctx.requirements(&plan.spec.name, plan.spec.approval.as_ref(), floor);
        plan.guard = (!requirements.auto_approves()).then(|| requirements.clone());
        let promotion = promote(&promotion::Environment {
            latest: (latest.version, &plan.checksum),
            live: current.map(|c| (c.version, c.checksum.as_str())),
            spec_policy: plan.spec.approval.as_ref(),
            floor: floor.map(|f| f.policy.as_ref()),
            requirements: &requirements,
        });
        if let Some(policy) = promotion.record_floor {
            let raised = Floor {
                environment: name.clone(),
                policy,
                version: current.map_or(latest.version, |c| c.version),
            };
            if let Err(error) = ctx
                .stores
                .record_floor(&config_id, &claimant, &raised, &author)
                .await
            {
                return store_failed(ctx, entry, &mut report, error).await;
            }
        }
        let mut outcome = EnvironmentOutcome {
            name: name.clone(),
            phase: EnvironmentPhase::Applied,
            live: current.map(Live::from),
            pending_version: None,
            pending_change: None,
            secrets: None,
            consumers: None,
            message: None,
        };
        match promotion.step {
            Step::Live => {}
            Step::NewerLive { version } => {
                // A ConfigChange (or rollback) applied after the spec's newest version:
                // the newest version wins until the spec changes again.
                outcome.message = Some(format!(
                    "version {version} from a ConfigChange is live; the spec's newest version is {}",
                    latest.version
                ));
            }
            Step::Apply => {
                moved_at.insert(name.clone(), std::time::Instant::now());
                let floor_update = approval::floor_change(
                    floor.map(|f| f.policy.as_ref()),
                    plan.spec.approval.as_ref(),
                    None,
                )
                .map_or(FloorUpdate::Keep, FloorUpdate::Record);
                let application = Application {
                    forward_only: true,
                    config_id: config_id.clone(),
                    claimant: claimant.clone(),
                    environment: name.clone(),
                    version: latest.version,
                    checksum: plan.checksum.clone(),
                    actor: latest.created_by.clone(),
                    message: format!(
                        "applied version {} to {name} (no approval needed)",
                        latest.version
                    ),
                    floor: floor_update,
                };
                if let Err(error) = ctx.stores.apply(&application).await {
                    report.sync = Some(SyncOutcome {
                        synced: false,
                        reason: error.label(),
                        message: format!(
                            "{error}: version {} is recorded but not applied yet",
                            latest.version
                        ),
                    });
                    finish(ctx, entry, &report).await?;
                    return Err(Error::Store(error));
                }
                tracing::info!(%config_id, environment = %name, version = latest.version, "applied");
                ctx.publish(
                    entry,
                    EventType::Normal,
                    "Applied",
                    application.message.clone(),
                )
                .await;
                let applied_now = ctx.stores.applied(&config_id).await.map_err(Error::Store)?;
                outcome.live = applied_now
                    .iter()
                    .find(|a| a.environment == name)
                    .map(Live::from);
            }
            Step::Propose { version, policy } => {
                // The version's author asks; a relaxation alone is asked by whoever
                // relaxed the spec.
                let requester = if current.is_some_and(|c| c.checksum == plan.checksum) {
                    author.clone()
                } else {
                    latest.created_by.clone()
                };
                // Everyone whose writes it carries: the version's authors, and whoever
                // wrote the spec since (a relaxation of the policy is no version's).
                let mut co_authors = latest.authors.clone();
                for name in &authors {
                    if !co_authors.contains(name) {
                        co_authors.push(name.clone());
                    }
                }
                let proposal = Proposal {
                    version,
                    policy,
                    requester,
                    co_authors,
                };
                outcome.phase = EnvironmentPhase::PendingApproval;
                outcome.pending_version = Some(version);
                let verdict = ctx.rules.guards.verdict(Guarded::Changes);
                let guarded = verdict != Verdict::NotRequired;
                if guarded && !latest.authors_proven() {
                    // Nothing proved who wrote it (written before the admission policies
                    // that stamp authors were in place): its author could be anyone, so
                    // it is not proposed in anyone's name.
                    outcome.message = Some(format!(
                        "nothing proves who wrote version {version} (it was written while the admission policies that stamp a spec's authors were not in place), so nobody can tell who may not approve it; write the spec again (any edit) to propose it"
                    ));
                } else if let Some(wait) = too_early_to_propose(&verdict) {
                    // A proposal made now could never be trusted: wait for the policies.
                    outcome.message = Some(format!(
                        "version {version} waits for the admission policies before it is proposed: {}",
                        match &verdict {
                            Verdict::Missing(why) => why.clone(),
                            _ => "they were installed this very second".to_owned(),
                        }
                    ));
                    propose_after = Some(propose_after.map_or(wait, |p| p.min(wait)));
                } else {
                    match propose_change(ctx, entry, plan.spec, &proposal).await {
                        Ok(Proposed::Waiting(change)) => {
                            outcome.pending_change = Some(change.clone());
                            outcome.message = Some(waiting_message(
                                version,
                                &change,
                                proposal.policy.as_ref(),
                                &requirements,
                            ));
                        }
                        Ok(Proposed::Ended(change, phase)) => {
                            outcome.pending_change = Some(change.clone());
                            outcome.message = Some(format!(
                                "version {version} was {} on ConfigChange {change}; the live version stays until the content changes again",
                                format!("{phase:?}").to_lowercase()
                            ));
                        }
                        // This environment alone: the others go on.
                        Err(error) => {
                            outcome.phase = EnvironmentPhase::Degraded;
                            outcome.message =
                                Some(format!("cannot propose version {version}: {error}"));
                        }
                    }
                }
            }
        }
        report.environments.push(outcome);
    }

    // Project what is live in each environment, and restart what consumes it.
    let mut retry_after = None;
    let mut has_secrets = false;
    // The Secrets environments hold: those of environments without secret references
    // go away with the stale projections.
    let mut secret_targets = Vec::new();
    for (plan, outcome) in plans.iter().zip(report.environments.iter_mut()) {
        // Only an environment whose live version has no secret references gives up its
        // Secret: one that failed part way keeps it, and what status said of it.
        let projected_secrets = entry
            .status
            .as_ref()
            .and_then(|s| s.environments.iter().find(|e| e.name == plan.spec.name))
            .and_then(SecretsOutcome::from_status);
        let Some(live) = &outcome.live else {
            secret_targets.push(secret_target(entry, plan.spec));
            continue;
        };
        let data = if live.checksum == plan.checksum {
            Ok(plan.data.clone())
        } else {
            live_data(ctx, &config_id, live.version, plan).await
        };
        let projected = match data {
            Ok(data) => {
                let projection = ProjectedConfigMap {
                    namespace: plan.namespace.clone(),
                    name: plan.name.clone(),
                    environment: plan.spec.name.clone(),
                    version: live.version,
                    checksum: live.checksum.clone(),
                    data,
                };
                apply_config_map(ctx, entry, &projection, plan.guard.as_ref())
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            }
            Err(error) => Err(error),
        };
        if let Err(error) = projected {
            outcome.phase = EnvironmentPhase::Degraded;
            outcome.message = Some(format!("projection failed: {error}"));
            outcome.secrets = projected_secrets;
            secret_targets.push(secret_target(entry, plan.spec));
            continue;
        }
        if let Some(started) = moved_at.get(&plan.spec.name) {
            ctx.metrics
                .apply_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        // Secret references, resolved now: only their checksum reaches status.
        let refs = if live.checksum == plan.checksum {
            Ok(snapshot.secret_refs(&plan.spec.name))
        } else {
            ctx.stores
                .version(&config_id, live.version)
                .await
                .map(|v| {
                    v.map(|v| v.snapshot.secret_refs(&plan.spec.name))
                        .unwrap_or_default()
                })
                .map_err(|error| error.to_string())
        };
        if !matches!(&refs, Ok(refs) if refs.is_empty()) {
            secret_targets.push(secret_target(entry, plan.spec));
        }
        let secrets = match refs {
            Ok(refs) if refs.is_empty() => None,
            Ok(refs) => {
                has_secrets = true;
                let projected = project_secrets(
                    ctx,
                    entry,
                    plan.spec,
                    live.version,
                    &refs,
                    false,
                    plan.guard.as_ref(),
                )
                .await;
                match projected {
                    Ok(projected) => Some(projected),
                    Err(error) => {
                        outcome.phase = EnvironmentPhase::Degraded;
                        outcome.message =
                            Some(format!("{error}; the Secret keeps its last good values"));
                        projected_secrets
                    }
                }
            }
            Err(error) => {
                has_secrets = true;
                outcome.phase = EnvironmentPhase::Degraded;
                outcome.message = Some(format!("cannot read version {}: {error}", live.version));
                projected_secrets
            }
        };
        let consumed = consumed_checksum(
            &live.checksum,
            secrets.as_ref().map(|s| s.checksum.as_str()),
        );
        outcome.secrets = secrets;
        let annotation = restart_annotation(&entry.name_any());
        let mut running = 0;
        for target in &plan.spec.restart_targets {
            let workload = format!("{:?} {}/{}", target.kind, plan.namespace, target.name);
            match restart(ctx, &plan.namespace, target, &annotation, &consumed).await {
                Ok(Restart::Current { running: true }) => running += 1,
                Ok(Restart::Current { running: false }) => {}
                Ok(Restart::Rolled) => {
                    tracing::info!(%workload, version = live.version, "restarted");
                    let note = format!(
                        "restarting {workload} for version {} of {}",
                        live.version, plan.spec.name
                    );
                    ctx.publish(entry, EventType::Normal, "Restarted", note)
                        .await;
                }
                Ok(Restart::Deferred(wait)) => {
                    tracing::info!(%workload, ?wait, "restart deferred by the rate limit");
                    retry_after =
                        Some(retry_after.map_or(wait, |r: std::time::Duration| r.min(wait)));
                }
                Ok(Restart::Missing) => {
                    outcome.message = Some(format!("restart target {workload} does not exist"));
                }
                Err(error) => {
                    outcome.phase = EnvironmentPhase::Degraded;
                    outcome.message = Some(format!("cannot restart {workload}: {error}"));
                }
            }
        }
        if !plan.spec.restart_targets.is_empty() {
            outcome.consumers = Some(Consumers {
                running,
                total: plan.spec.restart_targets.len(),
            });
        }
    }

    // Projections nothing in the spec asks for any more (a removed environment, a
    // renamed target) go away.
    remove_stale_projections(ctx, entry, &plans, &secret_targets).await?;

    // Consul follows; while it is down, applying goes on and it catches up later.
    let consul = ctx.stores.sync_consul(&config_id).await;
    if let Some(result) = &consul {
        ctx.metrics.backend("consul", result.is_ok());
    }
    let consul_behind = matches!(consul, Some(Err(_)));
    report.sync = Some(match consul {
        None if ctx.stores.is_durable() => SyncOutcome {
            synced: true,
            reason: "Recorded",
            message: format!("PostgreSQL holds version {}", latest.version),
        },
        None => SyncOutcome {
            synced: true,
            reason: "InMemoryOnly",
            message: "versions are kept in memory only and are lost when the operator restarts"
                .into(),
        },
        Some(Ok(ConsulSync {
            content_omitted: Some((version, why)),
            ..
        })) => SyncOutcome {
            synced: true,
            reason: "ConsulContentOmitted",
            message: format!(
                "PostgreSQL holds version {version}; Consul holds its checksum but not its content: {why}"
            ),
        },
        Some(Ok(_)) => SyncOutcome {
            synced: true,
            reason: "Recorded",
            message: format!("PostgreSQL and Consul hold version {}", latest.version),
        },
        Some(Err(error)) => SyncOutcome {
            synced: false,
            reason: "ConsulBehind",
            message: format!(
                "Consul is behind ({error}); applying continues and Consul catches up when it answers"
            ),
        },
    });
    finish(ctx, entry, &report).await?;
    if consul_behind {
        return Err(Error::ConsulBehind);
    }
    if report
        .environments
        .iter()
        .any(|e| e.phase == EnvironmentPhase::Degraded)
    {
        return Err(Error::ProjectionFailed);
    }
    // A restart held back by the rate limit is retried once it is allowed.
    // Secret values change upstream without telling anyone: look again from time to time.
    if has_secrets {
        let refresh = ctx.secret_refresh;
        retry_after = Some(retry_after.map_or(refresh, |r: std::time::Duration| r.min(refresh)));
    }
    if let Some(wait) = propose_after {
        retry_after = Some(retry_after.map_or(wait, |r: std::time::Duration| r.min(wait)));
    }
    Ok(retry_after.map_or_else(Action::await_change, Action::requeue))
}

/// Deletes the ConfigMaps this entry projected that no current plan targets, and the
/// Secrets it projected that no environment with secret references holds.
async fn remove_stale_projections(
    ctx: &Context,
    entry: &ConfigEntry,
    plans: &[Plan<'_>],
    secret_targets: &[(String, String)],
) -> Result<()> {
    let owner = format!(
        "{}/{}",
        entry.namespace().unwrap_or_default(),
        entry.name_any()
    );
    let owned = |annotations: &std::collections::BTreeMap<String, String>| {
        annotations.get(ANNOTATION_ENTRY) == Some(&owner)
    };
    let config_maps = ctx
        .managed_config_maps
        .state()
        .into_iter()
        .filter(|cm| owned(cm.annotations()))
        .map(|cm| (cm.namespace().unwrap_or_default(), cm.name_any()))
        .filter(|(namespace, name)| {
            !plans
                .iter()
                .any(|p| &p.namespace == namespace && &p.name == name)
        })
        .map(|(namespace, name)| (Stale::ConfigMap, namespace, name));
    let secrets = ctx
        .managed_secrets
        .state()
        .into_iter()
        .filter(|secret| owned(secret.annotations()))
        .map(|secret| (secret.namespace().unwrap_or_default(), secret.name_any()))
        .filter(|target| !secret_targets.contains(target))
        .map(|(namespace, name)| (Stale::Secret, namespace, name));
    let stale: Vec<_> = config_maps.chain(secrets).collect();
    for (kind, namespace, name) in stale {
        let deleted = match kind {
            Stale::ConfigMap => ctx
                .namespaced::<ConfigMap>(&namespace)
                .delete(&name, &Default::default())
                .await
                .map(|_| ()),
            Stale::Secret => ctx
                .namespaced::<Secret>(&namespace)
                .delete(&name, &Default::default())
                .await
                .map(|_| ()),
        };
        let what = kind.as_str();
        if let Stale::Secret = kind {
            ctx.forget_secret(&namespace, &name);
        }
        match deleted {
            Ok(()) => {}
            // The cache may still hold one that is already gone.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => {
                return Err(Error::kube(format!(
                    "delete stale {what} {namespace}/{name}"
                ))(error));
            }
        }
        ctx.count_write(KIND, kind.target());
        let note =
            format!("removed {what} {namespace}/{name}: no environment projects into it any more");
        ctx.publish(entry, EventType::Normal, "ProjectionRemoved", note)
            .await;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Stale {
    ConfigMap,
    Secret,
}

impl Stale {
    fn as_str(self) -> &'static str {
        match self {
            Stale::ConfigMap => "ConfigMap",
            Stale::Secret => "Secret",
        }
    }

    fn target(self) -> &'static str {
        match self {
            Stale::ConfigMap => "configmap",
            Stale::Secret => "secret",
        }
    }
}

/// Writes the status the report describes (only if it changed) and publishes an Event
/// when the validation verdict changes, and when an environment becomes degraded (or
/// degraded for another reason) or recovers: never twice for the same state.
async fn finish(ctx: &Context, entry: &ConfigEntry, report: &Report) -> Result<()> {
    let current = entry.status.as_ref();
    let next = build_status(current, report, status::now());
    let before = current
        .and_then(|s| find_condition(&s.conditions, CONDITION_VALIDATED))
        .map(|c| (c.status == "True", c.message.clone()));
    let after = match &report.validated {
        Ok(message) => (true, message.clone()),
        Err((_, message)) => (false, message.clone()),
    };
    status::apply_status(ctx, KIND, entry, current, &next).await?;
    if before.as_ref() != Some(&after) {
        let (type_, reason) = if after.0 {
            (EventType::Normal, "Validated")
        } else {
            (EventType::Warning, "ValidationFailed")
        };
        if let Err((why, _)) = &report.validated {
            ctx.metrics
                .refused_objects
                .get_or_create(&FailureLabels {
                    kind: KIND,
                    reason: why,
                })
                .inc();
        }
        ctx.publish(entry, type_, reason, after.1).await;
    }
    // Degraded with a reason: an environment held back by an invalid spec has none of
    // its own, and the ValidationFailed Event says why.
    let degraded = |environments: &[EnvironmentStatus], name: &str| {
        environments
            .iter()
            .find(|e| e.name == name && e.phase == Some(EnvironmentPhase::Degraded))
            .and_then(|e| e.message.clone())
    };
    let previous = current
        .map(|s| s.environments.as_slice())
        .unwrap_or_default();
    for environment in &next.environments {
        let was = degraded(previous, &environment.name);
        match degraded(&next.environments, &environment.name) {
            Some(message) if was.as_ref() != Some(&message) => {
                let note = format!("{}: {message}", environment.name);
                ctx.publish(entry, EventType::Warning, "Degraded", note)
                    .await;
            }
            None if was.is_some() => {
                let phase = environment
                    .phase
                    .map_or_else(|| "unknown".to_owned(), |p| format!("{p:?}"));
                let note = format!("{} is {phase} again", environment.name);
                ctx.publish(entry, EventType::Normal, "Recovered", note)
                    .await;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Renders every environment of the spec, and checks where it may be projected.
fn plan<'e>(
    entry: &'e ConfigEntry,
    snapshot: &Snapshot,
    ctx: &Context,
) -> Result<Vec<Plan<'e>>, Refusal> {
    let namespace = entry.namespace().unwrap_or_default();
    let mut plans = Vec::new();
    let mut failures = Vec::new();
    let mut at_fault = BTreeSet::new();
    for environment in &entry.spec.environments {
        let content = snapshot.resolve(&environment.name).unwrap_or(Value::Null);
        let format = environment
            .config_map
            .as_ref()
            .and_then(|t| t.format)
            .unwrap_or(ConfigFormat::Json);
        let (target_namespace, name) = config_map_target(entry, environment);
        if target_namespace != namespace && !ctx.allowed_namespaces.contains(&target_namespace) {
            failures.push(format!(
                "environment {:?}: target namespace {target_namespace:?} is not allowed; the operator projects into an entry's own namespace and those it is configured to allow",
                environment.name
            ));
            at_fault.insert(environment.name.clone());
            continue;
        }
        match render(&content, format) {
            Ok(data) => plans.push(Plan {
                spec: environment,
                checksum: snapshot
                    .environment_checksum(&environment.name)
                    .unwrap_or_else(|| checksum(&content)),
                format,
                namespace: target_namespace,
                name,
                data,
                guard: None,
            }),
            Err(error) => {
                failures.push(format!("environment {:?}: {error}", environment.name));
                at_fault.insert(environment.name.clone());
            }
        }
    }
    if failures.is_empty() {
        return Ok(plans);
    }
    let reason = if failures.iter().any(|f| f.contains("is not allowed")) {
        "TargetNotAllowed"
    } else {
        "RenderFailed"
    };
    Err(Refusal {
        invalid: crate::core::Invalid {
            reason,
            message: failures.join("; "),
        },
        environments: at_fault,
    })
}

/// Where an environment's ConfigMap goes: its target, or `<entry>-<environment>` in
/// the entry's namespace.
pub fn config_map_target(entry: &ConfigEntry, environment: &EnvironmentSpec) -> (String, String) {
    let target = environment.config_map.as_ref();
    placed(
        entry,
        environment,
        target.and_then(|t| t.namespace.as_deref()),
        target.and_then(|t| t.name.as_deref()),
    )
}

/// `namespace/name` of an environment's projection: as given, or
/// `<entry>-<environment>` in the entry's namespace.
pub fn placed(
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    namespace: Option<&str>,
    name: Option<&str>,
) -> (String, String) {
    (
        namespace.map_or_else(|| entry.namespace().unwrap_or_default(), str::to_owned),
        name.map_or_else(
            || format!("{}-{}", entry.name_any(), environment.name),
            str::to_owned,
        ),
    )
}

/// The rendered content of an older version still live in an environment.
async fn live_data(
    ctx: &Context,
    config_id: &str,
    version: i64,
    plan: &Plan<'_>,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let found: Option<Version> = ctx
        .stores
        .version(config_id, version)
        .await
        .map_err(|e| e.to_string())?;
    let content = found
        .and_then(|v| v.snapshot.resolve(&plan.spec.name))
        .ok_or_else(|| format!("version {version} has no content for {}", plan.spec.name))?;
    render(&content, plan.format).map_err(|e: RenderError| e.to_string())
}

/// Environments as the previous status left them, those at fault marked `Invalid`.
fn unchanged_environments(
    entry: &ConfigEntry,
    at_fault: &BTreeSet<String>,
) -> Vec<EnvironmentOutcome> {
    let previous = entry
        .status
        .as_ref()
        .map(|s| s.environments.as_slice())
        .unwrap_or_default();
    entry
        .spec
        .environments
        .iter()
        .map(|environment| {
            let before = previous.iter().find(|p| p.name == environment.name);
            let invalid = at_fault.contains(&environment.name);
            EnvironmentOutcome {
                name: environment.name.clone(),
                phase: if invalid {
                    EnvironmentPhase::Invalid
                } else {
                    before
                        .and_then(|b| b.phase)
                        .unwrap_or(EnvironmentPhase::Degraded)
                },
                live: before.and_then(Live::from_status),
                pending_version: before.and_then(|b| b.pending_version),
                pending_change: before.and_then(|b| b.pending_change.clone()),
                secrets: before.and_then(SecretsOutcome::from_status),
                consumers: before.and_then(Consumers::from_status),
                message: if invalid {
                    Some("does not validate; the live version stays".into())
                } else {
                    before.and_then(|b| b.message.clone())
                },
            }
        })
        .collect()
}

/// How long to wait before proposing, if a proposal made now could never be trusted:
/// the admission policies are missing, or were installed a moment ago (object times
/// have a second's grain, and the apiserver's clock may run a little behind ours).
fn too_early_to_propose(verdict: &Verdict) -> Option<std::time::Duration> {
    const MARGIN_SECONDS: i64 = 2;
    match verdict {
        Verdict::Missing(_) => Some(std::time::Duration::from_secs(10)),
        Verdict::Guarded { since: Some(since) }
            if status::now().0.as_second() <= since.0.as_second() + MARGIN_SECONDS =>
        {
            Some(std::time::Duration::from_secs(1))
        }
        _ => None,
    }
}

/// Where the proposal of a version stands.
enum Proposed {
    /// Waiting for approval on this ConfigChange.
    Waiting(String),
    /// Ended without going live (rejected, expired or failed): not proposed again until
    /// the spec changes.
    Ended(String, ChangePhase),
}

/// What an environment waiting on a proposal says.
fn waiting_message(
    version: i64,
    change: &str,
    relaxed: Option<&ApprovalPolicy>,
    requirements: &Requirements,
) -> String {
    match relaxed {
        Some(relaxed) => format!(
            "version {version} waits for approval on ConfigChange {change}: the spec asks for {} where {} holds until it is approved; the live version stays",
            approval::describe(Some(relaxed)),
            approval::describe(requirements.relaxed_floor().and_then(|r| r.policy.as_ref()))
        ),
        None => format!(
            "version {version} waits for {} approval(s) on ConfigChange {change}; the live version stays",
            requirements.required()
        ),
    }
}

/// What the operator proposes for an environment: a spec version, the approval floor
/// it would lower (when the spec relaxes it), and who asks.
struct Proposal {
    version: i64,
    policy: Option<ApprovalPolicy>,
    /// The author of the spec edit: never the operator, so the author cannot approve it.
    requester: String,
    /// Everyone else whose writes the proposal carries: none of them approves it either.
    co_authors: Vec<String>,
}

/// The ConfigChange that holds an environment's approval of a spec version: found in
/// the change controller's cache, or created (by the operator, owned by the entry, on
/// behalf of the author of the spec edit).
async fn propose_change(
    ctx: &Context,
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    proposal: &Proposal,
) -> Result<Proposed> {
    let namespace = entry.namespace().unwrap_or_default();
    let version = proposal.version;
    // Only this very proposal will do: a look-alike someone else made, or one an
    // earlier entry of the same name left behind, must not collect the approvals meant
    // for it. Then the proposal takes a name of its own, after the entry's uid. A
    // relaxation is one proposal whoever writes the spec next.
    let uid = entry.uid().unwrap_or_default();
    let ours = |existing: &ConfigChange| {
        existing
            .owner_references()
            .iter()
            .any(|owner| owner.uid == uid && owner.controller == Some(true))
            && existing.spec.version == Some(version)
            && (existing.spec.requested_by == proposal.requester || proposal.policy.is_some())
            && existing.spec.environment == environment.name
            && existing.spec.approval_policy == proposal.policy
    };
    let mut free = None;
    for candidate in proposal_names(entry, environment, proposal) {
        let Some(existing) = ctx
            .changes
            .get(&ObjectRef::new(&candidate).within(&namespace))
        else {
            free = Some(candidate);
            break;
        };
        if !ours(&existing) {
            continue;
        }
        match existing.status.as_ref().and_then(|s| s.phase) {
            // A proposal made while the admission policies were missing can never be
            // trusted: propose again under the next name.
            Some(ChangePhase::Failed)
                if existing
                    .status
                    .as_ref()
                    .and_then(|s| find_condition(&s.conditions, CONDITION_VALIDATED))
                    .is_some_and(|c| c.reason == "Unvouched") =>
            {
                continue;
            }
            Some(phase @ (ChangePhase::Rejected | ChangePhase::Expired | ChangePhase::Failed)) => {
                return Ok(Proposed::Ended(candidate, phase));
            }
            _ => return Ok(Proposed::Waiting(candidate)),
        }
    }
    let Some(name) = free else {
        return Err(Error::Configuration(format!(
            "ConfigChanges named like the proposal of version {version} in {namespace} exist and are not this entry's; delete them so the proposal can be made"
        )));
    };
    let relaxing = proposal
        .policy
        .as_ref()
        .map(|p| {
            format!(
                ", and relaxes its approval policy to {}",
                approval::describe(Some(p))
            )
        })
        .unwrap_or_default();
    let change = ConfigChange {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            owner_references: entry.controller_owner_ref(&()).map(|r| vec![r]),
            annotations: (!proposal.co_authors.is_empty()).then(|| {
                [(
                    ANNOTATION_CHANGE_AUTHORS.to_owned(),
                    proposal.co_authors.join("\n"),
                )]
                .into_iter()
                .collect()
            }),
            // The entry's labels too: whatever selects the entry (an operator's
            // --watch-label-selector, a team's queries) selects its proposals.
            labels: Some(
                entry
                    .labels()
                    .clone()
                    .into_iter()
                    .chain([(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned())])
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: ConfigChangeSpec {
            config_entry: entry.name_any(),
            environment: environment.name.clone(),
            data: None,
            patch: None,
            rollback_to: None,
            version: Some(version),
            approval_policy: proposal.policy.clone(),
            base_version: None,
            message: format!(
                "spec of ConfigEntry {} (generation {}) recorded version {version}{relaxing}",
                entry.name_any(),
                entry.metadata.generation.unwrap_or(0)
            ),
            requested_by: proposal.requester.clone(),
            approvals: Vec::new(),
            rejection: None,
        },
        status: None,
    };
    match ctx
        .namespaced::<ConfigChange>(&namespace)
        .create(&PostParams::default(), &change)
        .await
    {
        Ok(_) => {
            ctx.count_write(KIND, "configchange");
            ctx.publish(
                entry,
                EventType::Normal,
                "ApprovalRequested",
                format!(
                    "version {version} waits for approval in {} on ConfigChange {name}",
                    environment.name
                ),
            )
            .await;
            Ok(Proposed::Waiting(name))
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Proposed::Waiting(name)),
        Err(error) => Err(Error::kube(format!(
            "propose ConfigChange {namespace}/{name}"
        ))(error)),
    }
}

/// The names a proposal may take, in order: `<entry>-<environment>-v<version>`, then
/// the same after the entry's uid (another entry of this name, or someone else, holds
/// the first), then numbered after it (proposals the admission policies could not
/// vouch for hold the others).
fn proposal_names(
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    proposal: &Proposal,
) -> Vec<String> {
    let base = proposed_change_name(
        &entry.name_any(),
        &environment.name,
        proposal.version,
        proposal.policy.as_ref(),
    );
    let uid: String = entry.uid().unwrap_or_default().chars().take(8).collect();
    let suffixed = |suffix: String| -> String {
        base.chars()
            .take(253 - suffix.len())
            .chain(suffix.chars())
            .collect()
    };
    let mut names = vec![base.clone(), suffixed(format!("-{uid}"))];
    names.extend((2..=4).map(|n| suffixed(format!("-{uid}-{n}"))));
    names
}

/// `<entry>-<environment>-v<version>`, with `-p<hash>` of the policy a relaxation
/// proposes, shortened to fit an object name.
fn proposed_change_name(
    entry: &str,
    environment: &str,
    version: i64,
    policy: Option<&ApprovalPolicy>,
) -> String {
    let relaxation = policy
        .map(|p| format!("-p{}", &checksum(&serde_json::json!(p))[..8]))
        .unwrap_or_default();
    let suffix = format!("-{environment}-v{version}{relaxation}");
    let room = 253usize.saturating_sub(suffix.len());
    let entry: String = entry.chars().take(room).collect();
    format!("{}{suffix}", entry.trim_end_matches(['-', '.']))
}

/// Who last wrote the spec, as the apiserver authenticated them: the annotation the
/// chart's admission policies stamp from `request.userInfo` and refuse from clients.
/// Never a field manager, which any client names as it likes.
fn spec_author(entry: &ConfigEntry) -> String {
    entry
        .annotations()
        .get(ANNOTATION_SPEC_AUTHOR)
        .filter(|author| !author.is_empty())
        .cloned()
        .unwrap_or_else(|| UNKNOWN_AUTHOR.to_owned())
}

/// Everyone whose writes the spec holds since the operator last recorded it, as the
/// chart's admission policies stamped them; empty when nothing proves it: no list, the
/// policies missing now, or the spec last written before they were all in place
/// (anyone could have set the list then).
fn spec_authors(entry: &ConfigEntry, verdict: &Verdict) -> Vec<String> {
    let since = match verdict {
        Verdict::Missing(_) => return Vec::new(),
        Verdict::Guarded { since } => since.as_ref(),
        Verdict::NotRequired => None,
    };
    let written = entry
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.as_deref().unwrap_or_default().is_empty())
        .filter_map(|f| f.time.as_ref())
        .map(|t| t.0)
        .max();
    if let Some(since) = since
        && written.is_none_or(|written| written.as_second() <= since.0.as_second())
    {
        return Vec::new();
    }
    entry
        .annotations()
        .get(ANNOTATION_SPEC_AUTHORS)
        .map(|list| {
            list.lines()
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Empties the list of spec writers once a version holds them all, unless the entry
/// was written since it was read (then the next version holds the newer writers too).
/// A write that recorded nothing new (an approval policy changed, say) keeps the list:
/// its writers are no version's authors yet.
async fn forget_recorded_authors(ctx: &Context, entry: &ConfigEntry, recorded: &[String]) {
    let listed = spec_authors(entry, &Verdict::NotRequired);
    if listed.is_empty() || !listed.iter().all(|name| recorded.contains(name)) {
        return;
    }
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": entry.resource_version(),
        "annotations": {ANNOTATION_SPEC_AUTHORS: null},
    }});
    let api = ctx.namespaced::<ConfigEntry>(&entry.namespace().unwrap_or_default());
    match api
        .patch(
            &entry.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => ctx.count_write(KIND, "configentry"),
        Err(error) => tracing::debug!(%error, "spec writers kept for the next version"),
    }
}

/// The author of a spec written without the chart's admission policies in place.
pub const UNKNOWN_AUTHOR: &str = "unknown (no spec-author annotation)";

/// The entry, as the holder of its config id.
pub fn claimant(entry: &ConfigEntry) -> Claimant {
    Claimant {
        namespace: entry.namespace().unwrap_or_default(),
        name: entry.name_any(),
        uid: entry.uid().unwrap_or_default(),
    }
}

/// Reports a store that failed part way: what is live stays live.
async fn store_failed(
    ctx: &Context,
    entry: &ConfigEntry,
    report: &mut Report,
    error: StoreError,
) -> Result<Action> {
    report.sync = Some(SyncOutcome {
        synced: false,
        reason: error.label(),
        message: format!("{error}: what is live stays live"),
    });
    if report.environments.len() < entry.spec.environments.len() {
        report.environments = unchanged_environments(entry, &BTreeSet::new());
    }
    finish(ctx, entry, report).await?;
    Err(Error::Store(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(yaml: &str) -> EnvironmentSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn environments_without_a_policy_apply_at_once() {
        assert!(environment("name: development").auto_approves());
        assert!(environment("{name: development, approval: {autoApprove: true}}").auto_approves());
        assert!(
            environment("{name: development, approval: {requiredApprovals: 0}}").auto_approves()
        );
    }

    #[test]
    fn a_policy_without_auto_approval_waits_for_one_approval_at_least() {
        let production = environment("{name: production, approval: {approvers: [bob]}}");
        assert!(!production.auto_approves());
        assert_eq!(production.required_approvals(), 1);
        let two = environment("{name: production, approval: {requiredApprovals: 2}}");
        assert_eq!(two.required_approvals(), 2);
    }

    #[test]
    fn proposed_changes_are_named_after_entry_environment_and_version() {
        assert_eq!(
            proposed_change_name("payments", "production", 3, None),
            "payments-production-v3"
        );
        let long = proposed_change_name(&"a".repeat(300), "production", 12, None);
        assert_eq!(long.len(), 253);
        assert!(long.ends_with("-production-v12"));
    }
}
