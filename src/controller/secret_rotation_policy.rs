//! The SecretRotationPolicy reconcile loop. A policy adopts (or creates) its secret,
//! projects the current value into its target Secret, and rotates on schedule or on
//! demand: generate, stage, promote, project the new value beside the previous one,
//! roll the restart targets, and retire the previous value only once the grace period
//! has passed and every restart target runs the new one. The schedule lives in status,
//! so it survives restarts; every step is idempotent, so a crash repeats nothing.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;
use tracing::instrument;

use super::{
    Context, Error, Result,
    managed_secrets::{ManagedSecrets, cached_checksums},
    observed, requeue_after_error,
    status::{self, now},
};
use crate::api::v1alpha1::{
    ANNOTATION_ENTRY, ANNOTATION_POLICY, ANNOTATION_PREVIOUS_VERSION, ANNOTATION_ROTATE,
    ANNOTATION_VERSION, CONDITION_READY, CONDITION_ROTATING, CONDITION_ROTATION_FAILED,
    CONDITION_VALIDATED, FIELD_MANAGER, LABEL_MANAGED_BY, MANAGED_BY,
};
use crate::{
    api::v1alpha1::{
        Conditions, SecretProvider as ProviderKind, SecretRotationPolicy, SecretRotationPolicySpec,
        SecretRotationPolicyStatus, Time, parse_duration,
    },
    core::Invalid,
    core::render::{ProjectedSecret, desired_secret, key_checksums},
    secrets::{
        self, CURRENT, ExposeSecret, PREVIOUS, Provider, SecretProvider, SecretString, SecretValue,
        Selector, generate,
    },
    store::Rotation,
};

const KIND: &str = "SecretRotationPolicy";
const DEFAULT_GRACE_PERIOD: &str = "7d";
const DEFAULT_MINIMUM_INTERVAL: &str = "1h";

/// While the previous value waits for restart targets, look again this often (the
/// workloads are read from the watch cache).
const CONSUMER_POLL: Duration = Duration::from_secs(5);

#[instrument(skip_all, fields(namespace = policy.namespace().unwrap_or_default(), name = policy.name_any()))]
pub async fn reconcile(policy: Arc<SecretRotationPolicy>, ctx: Arc<Context>) -> Result<Action> {
    observed(KIND, policy.as_ref(), &ctx, reconcile_policy(&policy, &ctx)).await
}

pub fn error_policy(policy: Arc<SecretRotationPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_error(KIND, policy.as_ref(), error, &ctx)
}

/// The durations of a valid policy.
#[derive(Debug)]
struct Schedule {
    interval: Duration,
    grace: Duration,
    minimum: Duration,
    summary: String,
}

/// What this reconcile did, for status, Events and notifications.
#[derive(Default)]
struct Progress {
    /// Events to publish: (type, reason, note), and the notification event name.
    events: Vec<(EventType, &'static str, String, &'static str)>,
    /// Why a due rotation waits.
    waiting: Option<String>,
}

async fn reconcile_policy(policy: &SecretRotationPolicy, ctx: &Context) -> Result<Action> {
    let current = policy.status.clone().unwrap_or_default();
    let schedule = match check_schedule(&policy.spec) {
        Ok(schedule) => schedule,
        Err(invalid) => {
            status::report_validation(ctx, KIND, policy, policy.status.as_ref(), &Err(invalid))
                .await?;
            return Ok(Action::await_change());
        }
    };
    let namespace = policy.namespace().unwrap_or_default();
    if let Err(invalid) = check_target(policy, ctx).await? {
        status::report_validation(ctx, KIND, policy, policy.status.as_ref(), &Err(invalid)).await?;
        // A foreign Secret may go away, or be handed over by labelling it, without
        // this policy hearing of it: look again now and then.
        return Ok(Action::requeue(TARGET_RECHECK));
    }
    let mut next = current.clone();
    let mut progress = Progress::default();
    let outcome = match provider_for(ctx, &namespace, &policy.spec).await {
        Ok(provider) => step(policy, &schedule, &provider, &mut next, &mut progress, ctx).await,
        Err(error) => Err(error),
    };
    let now = now();
    let generation = policy.metadata.generation;
    next.observed_generation = generation;
    let in_grace = next.previous_version.is_some();
    let rotating = match (&next.previous_version, &next.previous_retires_at) {
        (Some(previous), Some(at)) => format!(
            "the previous version {previous} stays valid until {} and until every restart target runs the new one",
            at.0
        ),
        _ => progress
            .waiting
            .clone()
            .unwrap_or_else(|| "no rotation in progress".into()),
    };
    let failed_before = current
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_ROTATION_FAILED)
        .filter(|c| c.status == "True")
        .map(|c| c.message.clone());
    let projected = next.current_version.clone();
    let mut conditions = Conditions::new(&mut next.conditions, generation, now);
    conditions.set(CONDITION_VALIDATED, true, "Valid", &schedule.summary);
    let reason = if in_grace { "PreviousInGrace" } else { "Idle" };
    conditions.set(CONDITION_ROTATING, in_grace, reason, rotating);
    match &outcome {
        Ok(()) => conditions.set(
            CONDITION_ROTATION_FAILED,
            false,
            "Succeeded",
            "the provider answered every step",
        ),
        Err(error) => {
            ctx.metrics.rotation("failure", Duration::ZERO);
            let message = format!("{error}; the target Secret keeps its last good value");
            conditions.set(CONDITION_ROTATION_FAILED, true, error.label(), &message);
            if failed_before.as_deref() != Some(message.as_str()) {
                progress
                    .events
                    .push((EventType::Warning, "RotationFailed", message, "failed"));
            }
        }
    }
    match &projected {
        Some(version) => {
            let message = format!("Secret {} holds version {version}", policy.spec.target.name);
            conditions.set(CONDITION_READY, true, "Projected", message);
        }
        None => conditions.set(
            CONDITION_READY,
            false,
            "NoValue",
            "no value has been projected yet",
        ),
    }
    status::apply_status(ctx, KIND, policy, policy.status.as_ref(), &next).await?;
    for (type_, reason, note, notification) in progress.events {
        ctx.publish(policy, type_, reason, note).await;
        notify(ctx, policy, &next, notification);
    }
    outcome.map_err(Error::Secret)?;
    Ok(requeue(&next, progress.waiting.is_some()))
}

/// How often a policy refused its target looks again.
const TARGET_RECHECK: Duration = Duration::from_secs(300);

/// Whether the target Secret is this policy's to write: absent (it creates it), or
/// labelled as this policy's. Never a Secret someone else made, or another entry's or
/// policy's: a policy that could write any Secret would let its author replace values
/// other workloads trust. To hand a Secret over, label it
/// `app.kubernetes.io/managed-by=summit-config` and annotate it
/// `config.summit.io/policy=<namespace>/<policy>`.
async fn check_target(policy: &SecretRotationPolicy, ctx: &Context) -> Result<Result<(), Invalid>> {
    let Some(belongs_to) = target_holder(policy, ctx)
        .await
        .map_err(Error::kube(format!(
            "read Secret {}",
            policy.spec.target.name
        )))?
    else {
        return Ok(Ok(()));
    };
    Ok(Err(Invalid {
        reason: "TargetNotOwned",
        message: format!(
            "spec.target: Secret {} exists and belongs to {belongs_to}; a policy writes only a Secret it created or one labelled {LABEL_MANAGED_BY}={MANAGED_BY} and annotated {ANNOTATION_POLICY}={}/{}: name another target, or hand this one over",
            policy.spec.target.name,
            policy.namespace().unwrap_or_default(),
            policy.name_any()
        ),
    }))
}

/// Whose the target Secret is, when it exists and is not the policy's.
async fn target_holder(
    policy: &SecretRotationPolicy,
    ctx: &Context,
) -> Result<Option<String>, kube::Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = &policy.spec.target.name;
    if !ctx.managed_secrets.covers(&namespace) {
        return Ok(None);
    }
    let live = match ctx.managed_secrets.get(&namespace, name) {
        Some(live) => Some(live),
        // Not in the cache, which holds only labelled Secrets: absent, or not ours.
        None => ManagedSecrets::fetch(&ctx.client, &namespace, name).await?,
    };
    Ok(live.and_then(|live| owned(&live, policy).err()))
}

/// Whether a live Secret is the policy's: labelled as summit-config's, and annotated
/// as this policy's target. Otherwise, whose it is.
fn owned(live: &Secret, policy: &SecretRotationPolicy) -> Result<(), String> {
    let own = format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    );
    let labelled = live.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY);
    let holder = live.annotations().get(ANNOTATION_POLICY);
    if labelled && holder == Some(&own) {
        return Ok(());
    }
    Err(match (holder, live.annotations().get(ANNOTATION_ENTRY)) {
        (Some(policy), _) => format!("SecretRotationPolicy {policy}"),
        (None, Some(entry)) => format!("ConfigEntry {entry}"),
        (None, None) => "someone else (it is not labelled as this policy's)".to_owned(),
    })
}

/// When to look again: at the next rotation or retirement, or soon while something waits.
fn requeue(status: &SecretRotationPolicyStatus, waiting: bool) -> Action {
    let now = now().0.as_second();
    let due = [
        status.next_rotation_time.as_ref(),
        status.previous_retires_at.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|at| at.0.as_second() - now)
    // A time already past is either acted on now or waits on something else (a
    // suspended schedule, the grace period, consumers): never a hot loop.
    .filter(|seconds| *seconds > 0)
    .min();
    let mut delay = due.map_or(Duration::from_secs(3600), |seconds| {
        Duration::from_secs(u64::try_from(seconds.max(1)).unwrap_or(1))
    });
    if waiting {
        delay = delay.min(CONSUMER_POLL);
    }
    Action::requeue(delay.min(Duration::from_secs(3600)))
}

/// The provider a policy names, with its settings.
async fn provider_for(
    ctx: &Context,
    namespace: &str,
    spec: &SecretRotationPolicySpec,
) -> Result<Provider, secrets::Error> {
    match spec.provider {
        ProviderKind::InCluster => Ok(Provider::InCluster(Box::new(
            secrets::InClusterProvider::new(ctx.client.clone(), namespace),
        ))),
        ProviderKind::AwsSecretsManager => ctx
            .aws_provider(namespace, &spec.secret_id, spec.aws.as_ref())
            .await
            .map(Provider::Aws),
    }
}

/// Adopts or creates the secret, rotates when due, retires the previous value when it
/// may. Updates `status` as each step lands.
async fn step(
    policy: &SecretRotationPolicy,
    schedule: &Schedule,
    provider: &Provider,
    status: &mut SecretRotationPolicyStatus,
    progress: &mut Progress,
    ctx: &Context,
) -> Result<(), secrets::Error> {
    let secret_id = &policy.spec.secret_id;
    let uid = policy.uid().unwrap_or_default();
    let now = now();

    // First sight: take the provider's current value, creating the secret if needed.
    if status.current_version.is_none() {
        let first = generate(policy.spec.generator.as_ref())?;
        let created = provider
            .create(secret_id, &first, &format!("{uid}-initial"))
            .await?;
        let value = provider.read(secret_id, Selector::Stage(CURRENT)).await?;
        project(ctx, policy, &value, None).await?;
        status.current_version = Some(value.version_id.clone());
        status.next_rotation_time = Some(later(&now, schedule.interval));
        status.rotation_count.get_or_insert(0);
        progress.events.push((
            EventType::Normal,
            if created {
                "SecretCreated"
            } else {
                "SecretAdopted"
            },
            format!(
                "{} secret {secret_id} version {} is projected into Secret {}",
                if created { "created" } else { "adopted" },
                value.version_id,
                policy.spec.target.name
            ),
            if created { "created" } else { "adopted" },
        ));
        record(
            ctx,
            policy,
            schedule,
            status,
            if created { "created" } else { "adopted" },
        )
        .await;
    }

    // Due: asked for (a new value of the annotation) or scheduled.
    let request = policy.annotations().get(ANNOTATION_ROTATE).cloned();
    let requested = request.is_some() && request != status.last_handled_request;
    let scheduled = policy.spec.suspend != Some(true)
        && status
            .next_rotation_time
            .as_ref()
            .is_some_and(|at| at.0 <= now.0);
    if requested || scheduled {
        let too_soon = status
            .last_rotation_time
            .as_ref()
            .map(|last| later(last, schedule.minimum))
            .filter(|allowed| allowed.0 > now.0);
        if let Some(previous) = &status.previous_version {
            progress.waiting = Some(format!(
                "a rotation is due, and waits until the previous version {previous} retires"
            ));
        } else if let Some(allowed) = too_soon {
            progress.waiting = Some(format!(
                "a rotation is due, and waits for the minimum interval: not before {}",
                allowed.0
            ));
        } else {
            rotate(policy, schedule, provider, status, progress, ctx).await?;
            if requested {
                status.last_handled_request = request;
            }
        }
    }

    // Retire the previous value after the grace period, once every consumer moved on.
    let annotation = restart_annotation(&policy.name_any());
    let (running, total) = consumers(ctx, policy, status, &annotation).await;
    status.consumers_ready = Some(running);
    status.consumers_total = Some(total);
    if let (Some(previous), Some(retires_at)) = (
        status.previous_version.clone(),
        status.previous_retires_at.clone(),
    ) && retires_at.0 <= now.0
    {
        if running < total {
            // Restarts held back by the rate limit, or that failed, go again.
            let version = status.current_version.clone().unwrap_or_default();
            let namespace = policy.namespace().unwrap_or_default();
            for target in &policy.spec.restart_targets {
                if let Err(error) =
                    super::config_entry::restart(ctx, &namespace, target, &annotation, &version)
                        .await
                {
                    tracing::warn!(%error, workload = %target.name, "cannot restart");
                }
            }
            progress.waiting = Some(format!(
                "the grace period is over; the previous version {previous} stays until every restart target runs the new one ({running} of {total} do)"
            ));
        } else {
            let current = provider
                .read(
                    secret_id,
                    Selector::Version(status.current_version.as_deref().unwrap_or_default()),
                )
                .await?;
            project(ctx, policy, &current, None).await?;
            provider.retire(secret_id, &previous).await?;
            status.previous_version = None;
            status.previous_retires_at = None;
            progress.events.push((
                EventType::Normal,
                "PreviousRetired",
                format!("version {previous} of {secret_id} is retired"),
                "retired",
            ));
            record(ctx, policy, schedule, status, "retired").await;
        }
    }
    // Last, so that a rotation or retirement this reconcile finishes comes first.
    repair_target(policy, provider, status, progress, ctx).await
}

/// One rotation: a new version staged under a token derived from the policy and its
/// rotation count (so a retry finds the same version), promoted, projected beside the
/// previous value, and rolled out to the restart targets.
async fn rotate(
    policy: &SecretRotationPolicy,
    schedule: &Schedule,
    provider: &Provider,
    status: &mut SecretRotationPolicyStatus,
    progress: &mut Progress,
    ctx: &Context,
) -> Result<(), secrets::Error> {
    let secret_id = &policy.spec.secret_id;
    // The target is still the policy's, or nothing is staged and promoted that it
    // could not then project.
    if let Some(holder) = target_holder(policy, ctx).await.map_err(unavailable)? {
        return Err(secrets::Error::TargetTaken {
            secret: policy.spec.target.name.clone(),
            holder,
        });
    }
    let count = status.rotation_count.unwrap_or(0) + 1;
    let token = format!("{}-{count}", policy.uid().unwrap_or_default());
    let started = std::time::Instant::now();
    let mut current = provider.read(secret_id, Selector::Stage(CURRENT)).await?;
    let new = match provider.read(secret_id, Selector::Version(&token)).await {
        Ok(staged) => staged,
        Err(secrets::Error::NotFound { .. } | secrets::Error::Unusable { .. })
            if policy.spec.rotation_function.is_some() =>
        {
            let (Provider::Aws(aws), Some(function)) = (provider, &policy.spec.rotation_function)
            else {
                return Err(secrets::Error::Refused {
                    provider: "the in-cluster store",
                    action: "rotate with a rotation function".into(),
                    detail: "only AWS Secrets Manager runs rotation functions".into(),
                });
            };
            let version_id = aws.rotate_with(secret_id, function, &token).await?;
            provider
                .read(secret_id, Selector::Version(&version_id))
                .await?
        }
        Err(secrets::Error::NotFound { .. } | secrets::Error::Unusable { .. }) => {
            // A missing secret shows up here as well: staging then says so.
            let value = generate(policy.spec.generator.as_ref())?;
            let version_id = provider.stage(secret_id, &value, &token).await?;
            SecretValue { version_id, value }
        }
        Err(error) => return Err(error),
    };
    if current.version_id == new.version_id {
        // Promoted before a crash: the value it replaced is the previous one now.
        current = provider.read(secret_id, Selector::Stage(PREVIOUS)).await?;
    }
    if policy.spec.rotation_function.is_some() {
        // The function sets, tests and promotes the value itself; project it only once
        // it is current, never a value the database has not taken yet.
        if current.version_id != new.version_id
            && provider
                .read(secret_id, Selector::Stage(CURRENT))
                .await?
                .version_id
                != new.version_id
        {
            return Err(secrets::Error::Unavailable {
                provider: "AWS Secrets Manager",
                action: format!("rotation of {secret_id:?} by its rotation function"),
                detail: format!("version {} is not current yet", new.version_id),
            });
        }
    } else {
        provider.promote(secret_id, &new.version_id).await?;
    }
    project(ctx, policy, &new, Some(&current)).await?;
    let annotation = restart_annotation(&policy.name_any());
    for target in &policy.spec.restart_targets {
        let namespace = policy.namespace().unwrap_or_default();
        match super::config_entry::restart(ctx, &namespace, target, &annotation, &new.version_id)
            .await
        {
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, workload = %target.name, "cannot restart"),
        }
    }
    let now = now();
    status.previous_version = Some(current.version_id.clone());
    status.current_version = Some(new.version_id.clone());
    status.last_rotation_time = Some(now.clone());
    status.next_rotation_time = Some(later(&now, schedule.interval));
    status.previous_retires_at = Some(later(&now, schedule.grace));
    status.rotation_count = Some(count);
    ctx.metrics.rotation("success", started.elapsed());
    tracing::info!(secret_id, version = %new.version_id, "rotated");
    progress.events.push((
        EventType::Normal,
        "Rotated",
        format!(
            "rotated {secret_id}: version {} is current, version {} stays valid through the grace period",
            new.version_id, current.version_id
        ),
        "rotated",
    ));
    record(ctx, policy, schedule, status, "rotated").await;
    Ok(())
}

/// Puts back a target Secret deleted or edited by hand: compares the Secret cache (key
/// checksums, never values) with what was last projected, and reads the provider only
/// when they differ or when this process has not projected it yet.
async fn repair_target(
    policy: &SecretRotationPolicy,
    provider: &Provider,
    status: &SecretRotationPolicyStatus,
    progress: &mut Progress,
    ctx: &Context,
) -> Result<(), secrets::Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = &policy.spec.target.name;
    let Some(current_version) = status.current_version.as_deref() else {
        return Ok(());
    };
    if !ctx.managed_secrets.covers(&namespace) {
        return Ok(());
    }
    let expected = ctx.expected_secret(&namespace, name);
    let matches = |live: &Option<Arc<Secret>>| match (live, &expected) {
        (Some(live), Some(expected)) => own_keys(live, expected) == *expected,
        _ => false,
    };
    let mut live = ctx.managed_secrets.get(&namespace, name);
    if matches(&live) {
        return Ok(());
    }
    // The cache may not have seen this process's last write yet: ask the apiserver.
    live = ManagedSecrets::fetch(&ctx.client, &namespace, name)
        .await
        .map_err(unavailable)?;
    if matches(&live) {
        return Ok(());
    }
    // A version status does not name yet was projected by a rotation that has not
    // finished (the operator stopped part way): the rotation's retry settles it.
    if let Some(live) = &live
        && live
            .annotations()
            .get(ANNOTATION_VERSION)
            .map(String::as_str)
            != Some(current_version)
    {
        return Ok(());
    }
    let secret_id = &policy.spec.secret_id;
    let current = provider
        .read(secret_id, Selector::Version(current_version))
        .await?;
    // A previous version already retired (before a crash let status say so) is left out.
    let previous = match &status.previous_version {
        Some(previous) => provider
            .read(secret_id, Selector::Version(previous))
            .await
            .ok(),
        None => None,
    };
    let keys = target_checksums(policy, &current, previous.as_ref());
    if live.as_deref().map(|live| own_keys(live, &keys)) == Some(keys.clone()) {
        ctx.expect_secret(&namespace, name, keys);
        return Ok(());
    }
    project(ctx, policy, &current, previous.as_ref()).await?;
    progress.events.push((
        EventType::Normal,
        "TargetRestored",
        format!(
            "Secret {name} was {} by hand; version {} is projected again",
            if live.is_some() { "edited" } else { "deleted" },
            current.version_id
        ),
        "restored",
    ));
    Ok(())
}

/// The checksums the live Secret holds for the keys the policy writes: keys someone
/// else added are theirs, and no reason to write the Secret again.
fn own_keys(live: &Secret, expected: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    cached_checksums(live)
        .into_iter()
        .filter(|(key, _)| expected.contains_key(key))
        .collect()
}

/// The key checksums of the target Secret holding `current` (and `previous`).
fn target_checksums(
    policy: &SecretRotationPolicy,
    current: &SecretValue,
    previous: Option<&SecretValue>,
) -> BTreeMap<String, String> {
    let (data, _) = target_data(policy, current, previous);
    key_checksums(
        "",
        data.iter()
            .map(|(key, value)| (key.as_str(), value.expose_secret().as_bytes())),
    )
}

/// The target Secret's data and annotations.
fn target_data(
    policy: &SecretRotationPolicy,
    current: &SecretValue,
    previous: Option<&SecretValue>,
) -> (BTreeMap<String, SecretString>, BTreeMap<String, String>) {
    let target = &policy.spec.target;
    let namespace = policy.namespace().unwrap_or_default();
    let mut data = BTreeMap::from([(
        target.key.clone().unwrap_or_else(|| "value".into()),
        current.value.clone(),
    )]);
    let mut annotations = BTreeMap::from([
        (
            ANNOTATION_POLICY.to_owned(),
            format!("{namespace}/{}", policy.name_any()),
        ),
        (ANNOTATION_VERSION.to_owned(), current.version_id.clone()),
    ]);
    if let Some(previous) = previous {
        data.insert(
            target
                .previous_key
                .clone()
                .unwrap_or_else(|| "previous".into()),
            previous.value.clone(),
        );
        annotations.insert(
            ANNOTATION_PREVIOUS_VERSION.to_owned(),
            previous.version_id.clone(),
        );
    }
    (data, annotations)
}

/// Writes the target Secret: the current value, and the previous one under its own key
/// during the grace period.
async fn project(
    ctx: &Context,
    policy: &SecretRotationPolicy,
    current: &SecretValue,
    previous: Option<&SecretValue>,
) -> Result<(), secrets::Error> {
    let target = &policy.spec.target;
    let namespace = policy.namespace().unwrap_or_default();
    let (data, annotations) = target_data(policy, current, previous);
    ctx.expect_secret(
        &namespace,
        &target.name,
        target_checksums(policy, current, previous),
    );
    // Keys someone else added stay: the policy owns only the keys it writes, and
    // server-side apply removes only those it wrote before and writes no more.
    let secret = desired_secret(
        policy,
        &ProjectedSecret {
            namespace: namespace.clone(),
            name: target.name.clone(),
            data,
            annotations,
        },
    );
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let known = match ctx.managed_secrets.get(&namespace, &target.name) {
        Some(live) => Some(live),
        None => ManagedSecrets::fetch(&ctx.client, &namespace, &target.name)
            .await
            .map_err(unavailable)?,
    };
    // Made by someone else since the reconcile looked: never applied over.
    if let Some(live) = &known
        && let Err(holder) = owned(live, policy)
    {
        return Err(secrets::Error::TargetTaken {
            secret: target.name.clone(),
            holder,
        });
    }
    if known.is_none() {
        // Created, never applied over: a Secret someone makes meanwhile is refused
        // (409), not taken over, and the next reconcile says whose it is.
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        api.create(&params, &secret).await.map_err(unavailable)?;
    } else {
        api.patch(
            &target.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(unavailable)?;
    }
    ctx.count_write(KIND, "secret");
    Ok(())
}

/// A projection the apiserver refused is as good as a provider that did not answer:
/// nothing was rotated for consumers, and the next attempt repeats it.
fn unavailable(error: kube::Error) -> secrets::Error {
    secrets::Error::Unavailable {
        provider: "the Kubernetes API",
        action: "project the target Secret".into(),
        detail: error.to_string(),
    }
}

/// The pod-template annotation a policy writes on its restart targets: the current
/// version id (an id, never a checksum of the value).
pub fn restart_annotation(policy: &str) -> String {
    let name: String = policy.chars().take(63).collect();
    format!(
        "rotation.config.summit.io/{}",
        name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
    )
}

/// How many restart targets run the current version, of how many.
async fn consumers(
    ctx: &Context,
    policy: &SecretRotationPolicy,
    status: &SecretRotationPolicyStatus,
    annotation: &str,
) -> (i32, i32) {
    let namespace = policy.namespace().unwrap_or_default();
    let current = status.current_version.as_deref().unwrap_or_default();
    let total = policy.spec.restart_targets.len();
    let running = policy
        .spec
        .restart_targets
        .iter()
        .filter(|t| {
            ctx.workloads
                .get(t.kind, &namespace, &t.name)
                .is_some_and(|w| w.runs(annotation, current))
        })
        .count();
    (
        i32::try_from(running).unwrap_or(i32::MAX),
        i32::try_from(total).unwrap_or(i32::MAX),
    )
}

fn later(at: &Time, by: Duration) -> Time {
    let seconds = i64::try_from(by.as_secs()).unwrap_or(i64::MAX / 2);
    Time(
        k8s_openapi::jiff::Timestamp::from_second(at.0.as_second().saturating_add(seconds))
            .unwrap_or(at.0),
    )
}

/// Keeps `secret_rotation_policies` and the audit trail up to date; best effort, with
/// a warning, so a database outage never holds a rotation back.
async fn record(
    ctx: &Context,
    policy: &SecretRotationPolicy,
    schedule: &Schedule,
    status: &SecretRotationPolicyStatus,
    event: &str,
) {
    let rotation = Rotation {
        secret_id: policy.spec.secret_id.clone(),
        provider: match policy.spec.provider {
            ProviderKind::AwsSecretsManager => "AwsSecretsManager",
            ProviderKind::InCluster => "InCluster",
        }
        .to_owned(),
        policy: format!(
            "{}/{}",
            policy.namespace().unwrap_or_default(),
            policy.name_any()
        ),
        interval_days: days(schedule.interval),
        grace_days: days(schedule.grace),
        rotation_function: policy.spec.rotation_function.clone(),
        notify: policy
            .spec
            .notifications
            .as_ref()
            .and_then(|n| n.webhook_url.as_deref())
            .map(webhook_origin)
            .into_iter()
            .collect(),
        last_rotated_at: status.last_rotation_time.as_ref().map(|t| t.0),
        next_rotation_at: status.next_rotation_time.as_ref().map(|t| t.0),
        event: event.to_owned(),
        current_version: status.current_version.clone(),
        previous_version: status.previous_version.clone(),
        actor: ctx.identity.clone(),
    };
    if let Err(error) = ctx.stores.record_rotation(&rotation).await {
        tracing::warn!(%error, "cannot record the rotation in PostgreSQL");
    }
}

fn days(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().div_ceil(86_400)).unwrap_or(i32::MAX)
}

/// Where a webhook goes, without its path or query: those often carry a token
/// (Slack's and Teams' URLs do), and the record is read by more people than the policy.
fn webhook_origin(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(
        |_| "<unparsable URL>".to_owned(),
        |url| url.origin().ascii_serialization(),
    )
}

/// Posts a notification to the policy's webhook, if any, in the background, retried
/// with backoff. The body holds ids and times, never a value.
fn notify(
    ctx: &Context,
    policy: &SecretRotationPolicy,
    status: &SecretRotationPolicyStatus,
    event: &'static str,
) {
    let Some(url) = policy
        .spec
        .notifications
        .as_ref()
        .and_then(|n| n.webhook_url.clone())
    else {
        return;
    };
    let body = json!({
        "event": event,
        "policy": format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any()),
        "secretId": policy.spec.secret_id,
        "provider": policy.spec.provider,
        "currentVersion": status.current_version,
        "previousVersion": status.previous_version,
        "lastRotationTime": status.last_rotation_time,
        "nextRotationTime": status.next_rotation_time,
        "previousRetiresAt": status.previous_retires_at,
        "time": now(),
    });
    let http = ctx.http.clone();
    // Webhook URLs often carry a token: logs name the policy, never the URL.
    let policy_name = format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    );
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=5 {
            match http.post(&url).json(&body).send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => {
                    tracing::warn!(%policy_name, status = %response.status(), attempt, "webhook refused a notification");
                }
                Err(error) => {
                    tracing::warn!(%policy_name, error = %error.without_url(), attempt, "webhook unreachable")
                }
            }
            let jitter = Duration::from_millis(rand::random_range(0..500));
            tokio::time::sleep(delay + jitter).await;
            delay *= 2;
        }
        tracing::warn!(%policy_name, event, "gave up notifying the webhook");
    });
}

/// Checks that the durations parse and fit together: the grace period is shorter than
/// the interval, and the minimum interval no longer than it.
fn check_schedule(spec: &SecretRotationPolicySpec) -> Result<Schedule, Invalid> {
    let parse = |field: &str, text: &str| {
        parse_duration(text).map_err(|error| Invalid {
            reason: "InvalidDuration",
            message: format!("spec.{field}: {error}"),
        })
    };
    let interval = parse("rotationInterval", &spec.rotation_interval)?;
    let grace_text = spec.grace_period.as_deref().unwrap_or(DEFAULT_GRACE_PERIOD);
    let grace = parse("gracePeriod", grace_text)?;
    let minimum_text = spec
        .minimum_interval
        .as_deref()
        .unwrap_or(DEFAULT_MINIMUM_INTERVAL);
    let minimum = parse("minimumInterval", minimum_text)?;
    if grace >= interval {
        return Err(Invalid {
            reason: "InvalidSchedule",
            message: format!(
                "spec.gracePeriod {grace_text} must be shorter than spec.rotationInterval {}: the previous value must retire before the next rotation",
                spec.rotation_interval
            ),
        });
    }
    if minimum > interval {
        return Err(Invalid {
            reason: "InvalidSchedule",
            message: format!(
                "spec.minimumInterval {minimum_text} is longer than spec.rotationInterval {}",
                spec.rotation_interval
            ),
        });
    }
    if spec.rotation_function.is_some() && spec.provider != ProviderKind::AwsSecretsManager {
        return Err(Invalid {
            reason: "InvalidRotation",
            message: "spec.rotationFunction needs provider AwsSecretsManager; the in-cluster provider generates values itself".into(),
        });
    }
    if spec.provider == ProviderKind::InCluster
        && !crate::core::resolve::is_dns_label(&spec.secret_id)
    {
        return Err(Invalid {
            reason: "InvalidSecretId",
            message: format!(
                "spec.secretId {:?}: an in-cluster secret id must be a DNS label (lower-case letters, digits and '-', at most 63)",
                spec.secret_id
            ),
        });
    }
    Ok(Schedule {
        interval,
        grace,
        minimum,
        summary: format!(
            "rotates every {} with a grace period of {grace_text}",
            spec.rotation_interval
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> SecretRotationPolicySpec {
        serde_yaml_ng::from_str(&format!(
            "provider: AwsSecretsManager\nsecretId: db\ntarget: {{name: db}}\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn webhook_records_keep_only_the_origin() {
        assert_eq!(
            webhook_origin("https://hooks.example.com:8443/services/T000/B000/XXXX?token=y"),
            "https://hooks.example.com:8443"
        );
        assert_eq!(webhook_origin("not a url"), "<unparsable URL>");
    }

    #[test]
    fn defaults_fit_a_long_interval() {
        assert_eq!(
            check_schedule(&spec("rotationInterval: 90d")).map(|s| s.summary),
            Ok("rotates every 90d with a grace period of 7d".into())
        );
    }

    #[test]
    fn a_grace_period_as_long_as_the_interval_is_refused() {
        let invalid = check_schedule(&spec("rotationInterval: 7d")).unwrap_err();
        assert_eq!(invalid.reason, "InvalidSchedule");
        assert!(
            invalid
                .message
                .starts_with("spec.gracePeriod 7d must be shorter"),
            "{}",
            invalid.message
        );
    }

    #[test]
    fn a_minimum_interval_longer_than_the_interval_is_refused() {
        let invalid = check_schedule(&spec("rotationInterval: 30m\ngracePeriod: 5m")).unwrap_err();
        assert!(
            invalid.message.contains("spec.minimumInterval 1h"),
            "{}",
            invalid.message
        );
    }
}
