//! The DriftCheck reconcile loop. Expected is what the operator applied (each entry's
//! status names the live version; its content is the recorded, immutable version);
//! actual is every copy: the projected ConfigMap (from the watch cache), Consul's
//! `applied/` keys (one recursive read) and PostgreSQL's applied state (one query). In
//! `Report` mode nothing changes — even the entry controller leaves a hand-edited
//! ConfigMap alone; in `Remediate` mode each copy is put back through the normal apply
//! path and audited. Status changes only when the findings do.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};
use serde_json::{Value, json};
use tracing::instrument;

use super::{
    Context, Error, Result,
    config_entry::{project_secrets, restore_config_map},
    managed_secrets::cached_checksums,
    observed, requeue_after_error,
    status::{self, now},
};
use crate::api::v1alpha1::{
    ANNOTATION_CHECK, ANNOTATION_CHECKSUM, ANNOTATION_SECRETS_CHECKSUM, ANNOTATION_VERSION,
    CONDITION_DRIFTED, CONDITION_READY, CONDITION_VALIDATED,
};
use crate::{
    api::v1alpha1::{
        Conditions, ConfigEntry, ConfigFormat, DriftCheck, DriftCheckSpec, DriftFinding,
        DriftSource, EnvironmentSpec, RemediationMode, parse_duration,
    },
    core::Invalid,
    core::entry::{config_map_target, secret_target},
    core::render::{ProjectedConfigMap, render},
    store::{Application, AppliedState, Claimant, FloorUpdate},
};

const KIND: &str = "DriftCheck";
const DEFAULT_INTERVAL: &str = "5m";
const SHORTEST_INTERVAL: Duration = Duration::from_secs(10);
/// Findings kept in status; the count says how many there were.
const REPORT_LIMIT: usize = 50;

/// The most paths a finding lists (the schema's limit); the last says how many more.
const PATHS_LIMIT: usize = 50;

/// A finding's paths, at most [`PATHS_LIMIT`]: a status the apiserver would refuse
/// would leave the check stuck.
fn bounded_paths(paths: &[String]) -> Vec<String> {
    if paths.len() <= PATHS_LIMIT {
        return paths.to_vec();
    }
    let mut kept = paths[..PATHS_LIMIT - 1].to_vec();
    kept.push(format!("... and {} more", paths.len() - (PATHS_LIMIT - 1)));
    kept
}

#[instrument(skip_all, fields(namespace = check.namespace().unwrap_or_default(), name = check.name_any()))]
pub async fn reconcile(check: Arc<DriftCheck>, ctx: Arc<Context>) -> Result<Action> {
    observed(KIND, check.as_ref(), &ctx, run_check(&check, &ctx)).await
}

pub fn error_policy(check: Arc<DriftCheck>, error: &Error, ctx: Arc<Context>) -> Action {
    let action = requeue_after_error(KIND, check.as_ref(), error, &ctx);
    if action == Action::await_change() {
        // Nothing but its interval, a spec change or a request wakes a check (not
        // even a relist): whatever failed, it runs again on its interval.
        return Action::requeue(check_interval(&check.spec).map_or(SHORTEST_INTERVAL, |(i, _)| i));
    }
    action
}

/// Whether `check` covers `environment` of `entry` for `source`.
pub fn covers(
    check: &DriftCheck,
    entry: &ConfigEntry,
    environment: &str,
    source: DriftSource,
) -> bool {
    let spec = &check.spec;
    selects(check, entry)
        && spec.sources.as_ref().is_none_or(|s| s.contains(&source))
        && spec
            .environments
            .as_ref()
            .is_none_or(|envs| envs.iter().any(|e| e.0 == environment))
}

/// Whether `check` names `entry`: by name, by label, or (with neither) every entry of
/// its namespace.
fn selects(check: &DriftCheck, entry: &ConfigEntry) -> bool {
    check.namespace() == entry.namespace()
        && match (&check.spec.entries, &check.spec.selector) {
            (Some(names), _) => names.iter().any(|n| n.0 == entry.name_any()),
            (None, Some(selector)) => matches_selector(selector, entry.labels()),
            (None, None) => true,
        }
}

/// Whether `labels` satisfy a label selector (matchLabels and matchExpressions).
fn matches_selector(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

/// One drifted copy.
struct Drift {
    entry: String,
    /// The entry as the holder of its config id.
    claimant: Claimant,
    environment: String,
    location: String,
    source: DriftSource,
    paths: Vec<String>,
    expected: AppliedState,
    /// The checksum the copy should have: the content's, or for a Secret its keys'.
    expected_checksum: String,
    actual_checksum: Option<String>,
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

async fn run_check(check: &DriftCheck, ctx: &Context) -> Result<Action> {
    let (interval, summary) = match check_interval(&check.spec) {
        Ok(parsed) => parsed,
        Err(invalid) => {
            status::report_validation(ctx, KIND, check, check.status.as_ref(), &Err(invalid))
                .await?;
            return Ok(Action::await_change());
        }
    };
    let current = check.status.clone().unwrap_or_default();
    let request = check.annotations().get(ANNOTATION_CHECK).cloned();
    let started = Instant::now();
    let drifts = detect(check, ctx).await?;
    let remediate = check.spec.remediation == Some(RemediationMode::Remediate);
    let mut remediated = BTreeSet::new();
    if remediate {
        for drift in &drifts {
            if remediate_one(check, drift, ctx).await? {
                remediated.insert((
                    drift.entry.clone(),
                    drift.environment.clone(),
                    drift.location.clone(),
                ));
            }
        }
    }
    let took = started.elapsed();
    ctx.metrics.drift_check_seconds.set(took.as_secs_f64());
    for drift in &drifts {
        ctx.metrics.drift(source_label(drift.source), remediate);
    }

    // The report: findings kept with the time they were first seen.
    let now = now();
    let previous: BTreeMap<(String, String, String), &DriftFinding> = current
        .report
        .iter()
        .map(|f| {
            (
                (f.entry.clone(), f.environment.clone(), f.location.clone()),
                f,
            )
        })
        .collect();
    let mut report: Vec<DriftFinding> = drifts
        .iter()
        .map(|d| {
            let key = (d.entry.clone(), d.environment.clone(), d.location.clone());
            let before = previous.get(&key);
            DriftFinding {
                entry: d.entry.clone(),
                environment: d.environment.clone(),
                location: d.location.clone(),
                paths: bounded_paths(&d.paths),
                expected_checksum: d.expected_checksum.clone(),
                actual_checksum: d.actual_checksum.clone(),
                first_seen: before.map_or_else(|| now.clone(), |f| f.first_seen.clone()),
                remediated_at: remediated.contains(&key).then(|| now.clone()),
            }
        })
        .collect();
    report.sort_by(|a, b| {
        (&a.entry, &a.environment, &a.location).cmp(&(&b.entry, &b.environment, &b.location))
    });
    let count = report.len();
    report.truncate(REPORT_LIMIT);

    // Events when an entry starts or stops drifting; none while nothing changes.
    let drifting = |findings: &[DriftFinding]| -> BTreeSet<String> {
        findings
            .iter()
            .filter(|f| f.remediated_at.is_none())
            .map(|f| f.entry.clone())
            .collect()
    };
    let before = drifting(&current.report);
    let after = drifting(&report);
    for entry in after.difference(&before) {
        let places: Vec<String> = report
            .iter()
            .filter(|f| &f.entry == entry)
            .map(|f| {
                format!(
                    "{} ({}) at {}",
                    f.environment,
                    f.paths.join(", "),
                    f.location
                )
            })
            .collect();
        ctx.publish(
            check,
            EventType::Warning,
            "DriftDetected",
            format!("{entry} drifted: {}", places.join("; ")),
        )
        .await;
    }
    for entry in before.difference(&after) {
        ctx.publish(
            check,
            EventType::Normal,
            "DriftResolved",
            format!("{entry} matches its recorded version again"),
        )
        .await;
    }
    for finding in report.iter().filter(|f| f.remediated_at.is_some()) {
        ctx.publish(
            check,
            EventType::Normal,
            "DriftRemediated",
            format!(
                "{} {}: {} restored to checksum {}",
                finding.entry,
                finding.environment,
                finding.location,
                &finding.expected_checksum[..12.min(finding.expected_checksum.len())]
            ),
        )
        .await;
    }

    // Status, written only when the findings (or the verdict) change: a quiet check
    // costs no write.
    let mut next = current.clone();
    let generation = check.metadata.generation;
    next.observed_generation = generation;
    let unresolved = report.iter().filter(|f| f.remediated_at.is_none()).count();
    let same_findings = strip_times(&current.report) == strip_times(&report);
    if !same_findings || current.drifted.is_none() {
        next.last_check_time = Some(now.clone());
        next.report = report;
        next.drift_count = Some(i32::try_from(count).unwrap_or(i32::MAX));
        next.drifted = Some(unresolved > 0);
    }
    next.entries_checked = Some(i32::try_from(selected(check, ctx).len()).unwrap_or(i32::MAX));
    if request.is_some() {
        next.last_handled_request = request;
    }
    let drifted = next.drifted == Some(true);
    let drift_count = next.drift_count.unwrap_or(0);
    let mut conditions = Conditions::new(&mut next.conditions, generation, now);
    conditions.set(CONDITION_VALIDATED, true, "Valid", summary);
    if drifted {
        let message = format!("{drift_count} copies differ from their recorded version");
        conditions.set(CONDITION_DRIFTED, true, "DriftFound", message);
    } else {
        let message = "every copy matches its recorded version";
        conditions.set(CONDITION_DRIFTED, false, "NoDrift", message);
    }
    conditions.set(CONDITION_READY, true, "Checked", "the last check completed");
    status::apply_status(ctx, KIND, check, check.status.as_ref(), &next).await?;
    Ok(Action::requeue(interval))
}

/// A finding without its times, to tell whether two reports say the same.
type Seen = (String, String, String, Vec<String>, Option<String>, bool);

fn strip_times(findings: &[DriftFinding]) -> Vec<Seen> {
    findings
        .iter()
        .map(|f| {
            (
                f.entry.clone(),
                f.environment.clone(),
                f.location.clone(),
                f.paths.clone(),
                f.actual_checksum.clone(),
                f.remediated_at.is_some(),
            )
        })
        .collect()
}

fn source_label(source: DriftSource) -> &'static str {
    match source {
        DriftSource::Kubernetes => "kubernetes",
        DriftSource::Consul => "consul",
        DriftSource::Postgres => "postgres",
    }
}

/// The entries a check covers, from the entry controller's cache.
fn selected(check: &DriftCheck, ctx: &Context) -> Vec<Arc<ConfigEntry>> {
    ctx.entries
        .state()
        .into_iter()
        .filter(|entry| selects(check, entry))
        .collect()
}

/// Compares every covered copy with what the operator applied.
async fn detect(check: &DriftCheck, ctx: &Context) -> Result<Vec<Drift>> {
    // Only entries that hold their config id: another's history is not theirs to read.
    let mut entries = Vec::new();
    for entry in selected(check, ctx) {
        match ctx
            .stores
            .verify_claim(&entry.spec.config_id, &Claimant::of(&entry))
            .await
        {
            Ok(()) => entries.push(entry),
            Err(crate::store::Error::Claimed(_) | crate::store::Error::Unclaimed { .. }) => {}
            Err(error) => return Err(Error::Store(error)),
        }
    }
    let wants = |source| {
        check
            .spec
            .sources
            .as_ref()
            .is_none_or(|s| s.contains(&source))
    };
    // Expected, per (entry, environment), from status: what the operator applied.
    let mut expected = Vec::new();
    for entry in &entries {
        let status = entry.status.clone().unwrap_or_default();
        for environment in &entry.spec.environments {
            if check
                .spec
                .environments
                .as_ref()
                .is_some_and(|envs| !envs.iter().any(|e| e.0 == environment.name))
            {
                continue;
            }
            let live = status
                .environments
                .iter()
                .find(|e| e.name == environment.name);
            let (Some(version), Some(checksum)) = (
                live.and_then(|l| l.version),
                live.and_then(|l| l.checksum.clone()),
            ) else {
                continue;
            };
            expected.push((
                entry.clone(),
                environment,
                AppliedState {
                    config_id: entry.spec.config_id.clone(),
                    environment: environment.name.clone(),
                    version,
                    checksum,
                    applied_at: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                },
            ));
        }
    }
    let mut drifts = Vec::new();
    let drift = |entry: &ConfigEntry,
                 expected: &AppliedState,
                 location: String,
                 source,
                 paths,
                 actual: Option<String>| Drift {
        entry: entry.name_any(),
        claimant: Claimant::of(entry),
        environment: expected.environment.clone(),
        location,
        source,
        paths,
        expected: expected.clone(),
        expected_checksum: expected.checksum.clone(),
        actual_checksum: actual,
        repair: Repair::Record,
    };

    if wants(DriftSource::Postgres) {
        let ids: Vec<String> = entries.iter().map(|e| e.spec.config_id.clone()).collect();
        let rows = ctx.stores.applied_for(&ids).await.map_err(Error::Store)?;
        let newer: Vec<(String, i64)> = expected
            .iter()
            .filter_map(|(_, _, want)| {
                rows.iter()
                    .find(|r| r.config_id == want.config_id && r.environment == want.environment)
                    .filter(|r| r.version > want.version)
                    .map(|r| (r.config_id.clone(), r.version))
            })
            .collect();
        ctx.stores
            .prefetch_versions(&newer)
            .await
            .map_err(Error::Store)?;
        for (entry, _, want) in &expected {
            let row = rows
                .iter()
                .find(|r| r.config_id == want.config_id && r.environment == want.environment);
            // PostgreSQL decides what is live: a newer recorded version there is a change
            // that applied before the entry's status caught up, never drift to undo. One
            // that names no recorded content is.
            if let Some(row) = row.filter(|r| r.version > want.version) {
                let recorded = ctx
                    .stores
                    .version(&row.config_id, row.version)
                    .await
                    .map_err(Error::Store)?
                    .and_then(|v| v.snapshot.environment_checksum(&row.environment));
                if recorded.as_deref() == Some(row.checksum.as_str()) {
                    continue;
                }
            }
            if let Some(paths) = applied_paths(want, row) {
                drifts.push(drift(
                    entry,
                    want,
                    "postgres:applied_state".into(),
                    DriftSource::Postgres,
                    paths,
                    row.map(|r| r.checksum.clone()),
                ));
            }
        }
    }

    if wants(DriftSource::Consul)
        && let Some(read) = ctx.stores.consul_applied().await
    {
        let keys = read.map_err(Error::Store)?;
        for (entry, _, want) in &expected {
            let Some(key) = ctx
                .stores
                .consul_applied_key(&want.config_id, &want.environment)
            else {
                continue;
            };
            let actual = keys.get(&key).cloned().flatten();
            if let Some(paths) = applied_paths(want, actual.as_ref()) {
                drifts.push(drift(
                    entry,
                    want,
                    format!("consul:{key}"),
                    DriftSource::Consul,
                    paths,
                    actual.map(|a| a.checksum),
                ));
            }
        }
    }

    if wants(DriftSource::Kubernetes) {
        // The recorded content of every live version, in one query at most.
        let wanted: Vec<(String, i64)> = expected
            .iter()
            .map(|(_, _, want)| (want.config_id.clone(), want.version))
            .collect();
        ctx.stores
            .prefetch_versions(&wanted)
            .await
            .map_err(Error::Store)?;
        for (entry, environment, want) in &expected {
            if let Some(found) = secret_drift(ctx, entry, environment, want) {
                drifts.push(found);
            }
            let (namespace, name) = config_map_target(entry, environment);
            let format = environment
                .config_map
                .as_ref()
                .and_then(|t| t.format)
                .unwrap_or(ConfigFormat::Json);
            let Some(content) = ctx
                .stores
                .version(&want.config_id, want.version)
                .await
                .map_err(Error::Store)?
                .and_then(|v| v.snapshot.resolve(&environment.name))
            else {
                continue;
            };
            let Ok(rendered) = render(&content, format) else {
                continue;
            };
            let live = ctx.managed_config_map(&namespace, &name);
            let location = format!("configmap/{namespace}/{name}");
            let projection = ProjectedConfigMap {
                namespace: namespace.clone(),
                name: name.clone(),
                environment: environment.name.clone(),
                version: want.version,
                checksum: want.checksum.clone(),
                data: rendered.clone(),
            };
            let (paths, actual) = match live {
                None => (vec!["$".into()], None),
                Some(live) => {
                    let data = live.data.clone().unwrap_or_default();
                    let annotations = live.annotations();
                    let stamped = annotations.get(ANNOTATION_CHECKSUM);
                    let version_ok =
                        annotations.get(ANNOTATION_VERSION) == Some(&want.version.to_string());
                    if data == rendered && version_ok && stamped == Some(&want.checksum) {
                        continue;
                    }
                    let actual = crate::core::resolve::checksum(&json!(data));
                    (differing_paths(&rendered, &data, format), Some(actual))
                }
            };
            drifts.push(Drift {
                repair: Repair::ConfigMap(projection),
                ..drift(
                    entry,
                    want,
                    location,
                    DriftSource::Kubernetes,
                    paths,
                    actual,
                )
            });
        }
    }
    Ok(drifts)
}

/// How an environment's Secret differs from the key checksums the entry controller
/// last resolved for it: the keys whose values differ, by checksum. Values are never
/// read: the Secret cache holds checksums only, and expectations live in memory.
fn secret_drift(
    ctx: &Context,
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    want: &AppliedState,
) -> Option<Drift> {
    let status = entry.status.as_ref()?;
    let recorded = status
        .environments
        .iter()
        .find(|e| e.name == environment.name)?;
    let versions = recorded.secrets_checksum.as_ref()?;
    let (namespace, name) = secret_target(entry, environment);
    if !ctx.managed_secrets.covers(&namespace) {
        return None;
    }
    // Known once the entry controller resolved the references (it does at start-up).
    let expected = &ctx.expected_secret(&namespace, &name)?;
    let live = ctx.managed_secrets.get(&namespace, &name);
    let actual = live.as_deref().map(cached_checksums);
    let paths = match (&live, &actual) {
        (None, _) | (_, None) => vec!["$".to_owned()],
        (Some(live), Some(actual)) => {
            let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
            let mut paths: Vec<String> = keys
                .into_iter()
                .filter(|key| expected.get(*key) != actual.get(*key))
                .map(|key| format!("$.data.{key}"))
                .collect();
            if paths.is_empty()
                && live.annotations().get(ANNOTATION_SECRETS_CHECKSUM) != Some(versions)
            {
                paths.push("metadata.annotations".into());
            }
            paths
        }
    };
    if paths.is_empty() {
        return None;
    }
    Some(Drift {
        entry: entry.name_any(),
        claimant: Claimant::of(entry),
        environment: environment.name.clone(),
        location: format!("secret/{namespace}/{name}"),
        source: DriftSource::Kubernetes,
        paths,
        expected: want.clone(),
        expected_checksum: crate::core::resolve::checksum(&json!(expected)),
        actual_checksum: actual.map(|a| crate::core::resolve::checksum(&json!(a))),
        repair: Repair::Secret,
    })
}

/// Where a copy of the applied state differs from what was applied: `$` when it is
/// missing; `None` when it matches.
fn applied_paths(want: &AppliedState, actual: Option<&AppliedState>) -> Option<Vec<String>> {
    let Some(actual) = actual else {
        return Some(vec!["$".to_owned()]);
    };
    let paths: Vec<String> = [
        (actual.version != want.version).then(|| "$.version".to_owned()),
        (actual.checksum != want.checksum).then(|| "$.checksum".to_owned()),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!paths.is_empty()).then_some(paths)
}

/// The JSON paths where a projected ConfigMap's data differs from the render.
fn differing_paths(
    rendered: &BTreeMap<String, String>,
    live: &BTreeMap<String, String>,
    format: ConfigFormat,
) -> Vec<String> {
    let parse = |data: &BTreeMap<String, String>| -> Option<Value> {
        match format {
            ConfigFormat::Json => serde_json::from_str(data.get("config.json")?).ok(),
            ConfigFormat::Yaml => serde_yaml_ng::from_str(data.get("config.yaml")?).ok(),
            ConfigFormat::Env => None,
        }
    };
    let mut paths = Vec::new();
    match (parse(rendered), parse(live)) {
        (Some(want), Some(have)) => diff(&want, &have, "$", &mut paths),
        _ => {
            let keys: BTreeSet<&String> = rendered.keys().chain(live.keys()).collect();
            for key in keys {
                if rendered.get(key) != live.get(key) {
                    paths.push(format!("$.{key}"));
                }
            }
        }
    }
    if paths.is_empty() {
        // Same content, other annotations: the version or checksum stamp changed.
        paths.push("metadata.annotations".into());
    }
    paths
}

fn diff(want: &Value, have: &Value, at: &str, paths: &mut Vec<String>) {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            let keys: BTreeSet<&String> = w.keys().chain(h.keys()).collect();
            for key in keys {
                let path = format!("{at}.{key}");
                match (w.get(key), h.get(key)) {
                    (Some(a), Some(b)) => diff(a, b, &path, paths),
                    _ => paths.push(path),
                }
            }
        }
        (a, b) if a != b => paths.push(at.to_owned()),
        _ => {}
    }
}

/// Puts one drifted copy back through the path a normal apply takes, with an audit
/// row naming the operator and this DriftCheck. Returns whether it did: a Secret whose
/// provider does not answer stays drifted, and says why in an Event.
async fn remediate_one(check: &DriftCheck, drift: &Drift, ctx: &Context) -> Result<bool> {
    let why = format!(
        "drift found by DriftCheck {}/{} at {}: restored version {}",
        check.namespace().unwrap_or_default(),
        check.name_any(),
        drift.location,
        drift.expected.version
    );
    let want = &drift.expected;
    match drift.source {
        DriftSource::Postgres => {
            let restored = ctx
                .stores
                .apply(&Application {
                    // Never back over a change that applied meanwhile.
                    forward_only: true,
                    claimant: drift.claimant.clone(),
                    floor: FloorUpdate::Keep,
                    config_id: want.config_id.clone(),
                    environment: want.environment.clone(),
                    version: want.version,
                    checksum: want.checksum.clone(),
                    actor: ctx.identity.clone(),
                    message: why,
                })
                .await;
            match restored {
                Ok(_) => {}
                Err(crate::store::Error::Superseded { .. }) => return Ok(false),
                Err(error) => return Err(Error::Store(error)),
            }
        }
        DriftSource::Consul => {
            let applied = ctx
                .stores
                .applied(&want.config_id)
                .await
                .map_err(Error::Store)?
                .into_iter()
                .find(|a| a.environment == want.environment)
                .unwrap_or_else(|| want.clone());
            ctx.stores
                .restore_consul_applied(&applied)
                .await
                .map_err(Error::Store)?;
            audit(ctx, drift, &why).await?;
        }
        DriftSource::Kubernetes => {
            let namespace = check.namespace().unwrap_or_default();
            let entry = ctx
                .entry(&namespace, &drift.entry)
                .ok_or(Error::CacheClosed)?;
            match &drift.repair {
                Repair::ConfigMap(projection) => {
                    if let Err(error) = restore_config_map(ctx, &entry, projection).await {
                        let note = format!(
                            "{} {}: cannot restore {}: {error}",
                            drift.entry, drift.environment, drift.location
                        );
                        ctx.publish(check, EventType::Warning, "RemediationFailed", note)
                            .await;
                        return Ok(false);
                    }
                }
                Repair::Secret => {
                    if let Err(error) = restore_secret(ctx, &entry, drift).await {
                        ctx.publish(
                            check,
                            EventType::Warning,
                            "RemediationFailed",
                            format!(
                                "{} {}: cannot restore {}: {error}",
                                drift.entry, drift.environment, drift.location
                            ),
                        )
                        .await;
                        return Ok(false);
                    }
                }
                Repair::Record => {}
            }
            audit(ctx, drift, &why).await?;
        }
    }
    Ok(true)
}

/// Projects an environment's Secret again from the references of its live version.
async fn restore_secret(ctx: &Context, entry: &ConfigEntry, drift: &Drift) -> Result<(), String> {
    let want = &drift.expected;
    let environment = entry
        .spec
        .environments
        .iter()
        .find(|e| e.name == drift.environment)
        .ok_or_else(|| "the environment is gone from the entry".to_owned())?;
    // The entry controller may have applied a newer version since the pass began: its
    // Secret is the entry's to write, not this check's.
    let live = entry
        .status
        .as_ref()
        .and_then(|s| s.environments.iter().find(|e| e.name == drift.environment))
        .and_then(|e| e.version);
    if live != Some(want.version) {
        return Err(format!(
            "the environment moved on from version {}; the entry projects its Secret",
            want.version
        ));
    }
    let refs = ctx
        .stores
        .version(&want.config_id, want.version)
        .await
        .map_err(|error| error.to_string())?
        .map(|v| v.snapshot.secret_refs(&environment.name))
        .ok_or_else(|| format!("version {} is not recorded", want.version))?;
    project_secrets(ctx, entry, environment, want.version, &refs, true, None)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}

async fn audit(ctx: &Context, drift: &Drift, why: &str) -> Result<()> {
    ctx.stores
        .audit(
            &drift.expected.config_id,
            drift.expected.version,
            &ctx.identity,
            why,
            json!({
                "event": "driftRemediated",
                "environment": drift.environment,
                "location": drift.location,
                "paths": drift.paths,
            }),
        )
        .await
        .map_err(Error::Store)
}

fn check_interval(spec: &DriftCheckSpec) -> Result<(Duration, String), Invalid> {
    let text = spec.interval.as_deref().unwrap_or(DEFAULT_INTERVAL);
    let interval = parse_duration(text).map_err(|error| Invalid {
        reason: "InvalidDuration",
        message: format!("spec.interval: {error}"),
    })?;
    if interval < SHORTEST_INTERVAL {
        return Err(Invalid {
            reason: "InvalidDuration",
            message: format!("spec.interval {text} is shorter than the 10s minimum"),
        });
    }
    Ok((interval, format!("checks every {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> DriftCheckSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn paths_name_each_differing_leaf() {
        let want = BTreeMap::from([(
            "config.json".to_owned(),
            r#"{"host":"db","pool":{"max":10,"min":1}}"#.to_owned(),
        )]);
        let have = BTreeMap::from([(
            "config.json".to_owned(),
            r#"{"host":"db","pool":{"max":99},"debug":true}"#.to_owned(),
        )]);
        assert_eq!(
            differing_paths(&want, &have, ConfigFormat::Json),
            ["$.debug", "$.pool.max", "$.pool.min"]
        );
        let env_want = BTreeMap::from([("POOL_MAX".to_owned(), "10".to_owned())]);
        let env_have = BTreeMap::from([("POOL_MAX".to_owned(), "11".to_owned())]);
        assert_eq!(
            differing_paths(&env_want, &env_have, ConfigFormat::Env),
            ["$.POOL_MAX"]
        );
        assert_eq!(
            differing_paths(&want, &want, ConfigFormat::Json),
            ["metadata.annotations"],
            "same content, another stamp"
        );
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_yaml_ng::from_str(
                "{matchLabels: {team: payments}, matchExpressions: [{key: tier, operator: In, values: [gold, silver]}, {key: legacy, operator: DoesNotExist}]}",
            )
            .unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(matches_selector(
            &selector,
            &labels(&[("team", "payments"), ("tier", "gold")])
        ));
        assert!(!matches_selector(
            &selector,
            &labels(&[("team", "payments"), ("tier", "bronze")])
        ));
        assert!(!matches_selector(
            &selector,
            &labels(&[("team", "payments"), ("tier", "gold"), ("legacy", "yes")])
        ));
        assert!(!matches_selector(&selector, &labels(&[("tier", "gold")])));
    }

    #[test]
    fn the_default_interval_is_five_minutes() {
        assert_eq!(
            check_interval(&spec("{}")).map(|(_, m)| m),
            Ok("checks every 5m".into())
        );
    }

    #[test]
    fn an_interval_under_ten_seconds_is_refused() {
        let invalid = check_interval(&spec("interval: 5s")).unwrap_err();
        assert_eq!(
            invalid.message,
            "spec.interval 5s is shorter than the 10s minimum"
        );
    }

    #[test]
    fn a_finding_lists_at_most_fifty_paths() {
        let many: Vec<String> = (0..80).map(|i| format!("$.k{i}")).collect();
        let kept = bounded_paths(&many);
        assert_eq!(kept.len(), 50);
        assert_eq!(kept[49], "... and 31 more");
        assert_eq!(bounded_paths(&many[..3]), many[..3].to_vec());
    }
}
