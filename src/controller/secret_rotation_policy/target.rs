//! The target Secret: whether it is the policy's to write, writing it, putting it back
//! after a hand edit, and the workloads that consume it.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};

use super::{KIND, steps::restart_one};
use crate::{
    api::v1alpha1::{
        ANNOTATION_POLICY, ANNOTATION_VERSION, FIELD_MANAGER, LABEL_MANAGED_BY, MANAGED_BY,
        SecretRotationPolicy, SecretRotationPolicyStatus,
    },
    controller::{
        Context, Error, Result,
        managed_secrets::{ManagedSecrets, cached_checksums},
    },
    core::{
        Invalid,
        render::{ProjectedSecret, desired_secret},
        rotation::{self, Happened, Progress},
    },
    secrets::{self, Provider, SecretProvider, SecretValue, Selector},
};

/// The reason a policy whose target is someone else's is refused with.
pub const REASON_NOT_OWNED: &str = "TargetNotOwned";

/// Whether the target Secret is this policy's to write: absent (it creates it), or
/// labelled as this policy's. Never a Secret someone else made, or another entry's or
/// policy's. To hand a Secret over, label it `app.kubernetes.io/managed-by=summit-config`
/// and annotate it `config.summit.io/policy=<namespace>/<policy>`.
pub async fn check(policy: &SecretRotationPolicy, ctx: &Context) -> Result<Result<(), Invalid>> {
    let name = &policy.spec.target.name;
    let Some(belongs_to) = holder(policy, ctx)
        .await
        .map_err(Error::kube(format!("read Secret {name}")))?
    else {
        return Ok(Ok(()));
    };
    Ok(Err(Invalid {
        reason: REASON_NOT_OWNED,
        message: format!(
            "spec.target: Secret {name} exists and belongs to {belongs_to}; a policy writes only a Secret it created or one labelled {LABEL_MANAGED_BY}={MANAGED_BY} and annotated {ANNOTATION_POLICY}={}/{}: name another target, or hand this one over",
            policy.namespace().unwrap_or_default(),
            policy.name_any()
        ),
    }))
}

/// Refuses to go on when the target became someone else's since the reconcile looked.
pub async fn still_ours(
    policy: &SecretRotationPolicy,
    ctx: &Context,
) -> Result<(), secrets::Error> {
    match holder(policy, ctx).await.map_err(unavailable)? {
        None => Ok(()),
        Some(holder) => Err(secrets::Error::TargetTaken {
            secret: policy.spec.target.name.clone(),
            holder,
        }),
    }
}

/// Whose the target Secret is, when it exists and is not the policy's.
async fn holder(
    policy: &SecretRotationPolicy,
    ctx: &Context,
) -> Result<Option<String>, kube::Error> {
    let namespace = policy.namespace().unwrap_or_default();
    if !ctx.caches.managed_secrets.covers(&namespace) {
        return Ok(None);
    }
    // Not in the cache, which holds only labelled Secrets: absent, or not ours.
    let live = live(ctx, &namespace, &policy.spec.target.name).await?;
    Ok(live.and_then(|live| rotation::holder(&live, policy)))
}

/// The Secret `namespace/name`, from the cache or else from the apiserver.
async fn live(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<Secret>>, kube::Error> {
    match ctx.caches.managed_secrets.get(namespace, name) {
        Some(live) => Ok(Some(live)),
        None => ManagedSecrets::fetch(&ctx.client, namespace, name).await,
    }
}

fn pair(value: &SecretValue) -> (&str, &secrets::SecretString) {
    (&value.version_id, &value.value)
}

/// Writes the target Secret: the current value, and the previous one under its own key
/// during the grace period. Keys someone else added stay: the policy owns only the keys
/// it writes, and server-side apply removes only those it wrote before and writes no
/// more.
pub async fn project(
    ctx: &Context,
    policy: &SecretRotationPolicy,
    current: &SecretValue,
    previous: Option<&SecretValue>,
) -> Result<(), secrets::Error> {
    let target = &policy.spec.target;
    let namespace = policy.namespace().unwrap_or_default();
    let (data, annotations) = rotation::target_data(policy, pair(current), previous.map(pair));
    let keys = rotation::target_checksums(policy, pair(current), previous.map(pair));
    ctx.caches
        .managed_secrets
        .expect(&namespace, &target.name, keys);
    let projected = ProjectedSecret {
        namespace: namespace.clone(),
        name: target.name.clone(),
        data,
        annotations,
    };
    let secret = desired_secret(policy, &projected);
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let known = live(ctx, &namespace, &target.name)
        .await
        .map_err(unavailable)?;
    // Made by someone else since the reconcile looked: never applied over.
    if let Some(holder) = known
        .as_deref()
        .and_then(|live| rotation::holder(live, policy))
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
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&target.name, &apply, &Patch::Apply(&secret))
            .await
            .map_err(unavailable)?;
    }
    ctx.count_write(KIND, "secret");
    Ok(())
}

/// Puts back a target Secret deleted or edited by hand: compares the Secret cache (key
/// checksums, never values) with what was last projected, and reads the provider only
/// when they differ or when this process has not projected it yet.
pub async fn repair(
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
    if !ctx.caches.managed_secrets.covers(&namespace) {
        return Ok(());
    }
    let expected = ctx.caches.managed_secrets.expected(&namespace, name);
    let matches = |live: &Option<Arc<Secret>>| match (live, &expected) {
        (Some(live), Some(expected)) => own_keys(live, expected) == *expected,
        _ => false,
    };
    if matches(&ctx.caches.managed_secrets.get(&namespace, name)) {
        return Ok(());
    }
    // The cache may not have seen this process's last write yet: ask the apiserver.
    let live = ManagedSecrets::fetch(&ctx.client, &namespace, name)
        .await
        .map_err(unavailable)?;
    if matches(&live) {
        return Ok(());
    }
    // A version status does not name yet was projected by a rotation that has not
    // finished (the operator stopped part way): the rotation's retry settles it.
    let stamped = live
        .as_ref()
        .map(|l| l.annotations().get(ANNOTATION_VERSION));
    if stamped.is_some_and(|v| v.map(String::as_str) != Some(current_version)) {
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
    let keys = rotation::target_checksums(policy, pair(&current), previous.as_ref().map(pair));
    if live.as_deref().map(|live| own_keys(live, &keys)) == Some(keys.clone()) {
        ctx.caches.managed_secrets.expect(&namespace, name, keys);
        return Ok(());
    }
    project(ctx, policy, &current, previous.as_ref()).await?;
    let happened = Happened::restored(name, live.is_some(), &current.version_id);
    progress.happened.push(happened);
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

/// Rolls every restart target onto `version`.
pub async fn restart_consumers(ctx: &Context, policy: &SecretRotationPolicy, version: &str) {
    for target in &policy.spec.restart_targets {
        restart_one(ctx, policy, target, version).await;
    }
}

/// How many restart targets run the current version, of how many (from the watch
/// cache).
pub fn consumers(
    ctx: &Context,
    policy: &SecretRotationPolicy,
    status: &SecretRotationPolicyStatus,
) -> (i32, i32) {
    let namespace = policy.namespace().unwrap_or_default();
    let annotation = restart_annotation(&policy.name_any());
    let current = status.current_version.as_deref().unwrap_or_default();
    let targets = &policy.spec.restart_targets;
    let running = targets
        .iter()
        .filter(|t| {
            ctx.caches
                .workloads
                .get(t.kind, &namespace, &t.name)
                .is_some_and(|w| w.runs(&annotation, current))
        })
        .count();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    (count(running), count(targets.len()))
}
