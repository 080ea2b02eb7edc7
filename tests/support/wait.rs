//! Bounded waits until an object satisfies a predicate, and readers of what the
//! operator reported in status.

use std::{collections::BTreeMap, fmt::Debug, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
    events::v1::Event,
};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;
use summit_config::api::v1alpha1::{
    CONDITION_VALIDATED, ChangePhase, Condition, ConfigChange, ConfigChangeStatus, ConfigEntry,
    DriftCheck, EnvironmentPhase, EnvironmentStatus, SecretRotationPolicy,
    SecretRotationPolicyStatus, find_condition,
};

use super::{WAIT, eventually};

/// What the operator's kinds report in status: the generation it describes, and
/// conditions.
pub trait Reported {
    fn observed_generation(&self) -> Option<i64>;
    fn conditions(&self) -> &[Condition];
}

macro_rules! reported {
    ($($kind:ty),*) => {$(
        impl Reported for $kind {
            fn observed_generation(&self) -> Option<i64> {
                self.status.as_ref()?.observed_generation
            }
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map_or(&[], |s| &s.conditions)
            }
        }
    )*};
}
reported!(ConfigEntry, ConfigChange, SecretRotationPolicy, DriftCheck);

/// The object's condition of type `type_`, if it reports one.
pub fn condition<K: Reported>(object: &K, type_: &str) -> Option<Condition> {
    find_condition(object.conditions(), type_).cloned()
}

/// Fails the test unless `condition` gives `reason`, with `text` in its message.
pub fn assert_reason(condition: &Condition, reason: &str, text: &str) {
    assert_eq!(condition.reason, reason, "{condition:?}");
    assert!(condition.message.contains(text), "{condition:?}");
}

/// Waits until object `name` exists and `ready` holds for it, and returns it; `what`
/// says what the test waits for.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, ready: impl Fn(&K) -> bool) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    wait_within(WAIT, api, name, what, ready).await
}

/// Like [`wait_for`], for at most `limit`: for what takes longer than [`WAIT`].
pub async fn wait_within<K>(
    limit: Duration,
    api: &Api<K>,
    name: &str,
    what: &str,
    ready: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    eventually(what, limit, || async {
        let object = api.get(name).await.ok()?;
        ready(&object).then_some(object)
    })
    .await
}

/// Every object `api` lists.
pub async fn list<K>(api: &Api<K>) -> Vec<K>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.list(&Default::default())
        .await
        .unwrap_or_else(|error| panic!("list {}: {error}", api.resource_url()))
        .items
}

/// Whether object `name` exists now.
pub async fn exists<K>(api: &Api<K>, name: &str) -> bool
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.get_opt(name)
        .await
        .unwrap_or_else(|error| panic!("read {name}: {error}"))
        .is_some()
}

/// Waits until object `name` exists, and returns it.
pub async fn present<K>(api: &Api<K>, name: &str) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    wait_for(api, name, &format!("{name} to exist"), |_| true).await
}

/// Waits until object `name` is gone.
pub async fn gone<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    eventually(&format!("{name} to be gone"), WAIT, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await
}

/// Deletes `name` and waits until it is gone (its finalizers done).
pub async fn delete_until_gone<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    super::delete(api, name).await;
    gone(api, name).await;
}

/// Waits until `name`'s condition `type_` exists and `ready` holds for it, and returns it.
pub async fn condition_where<K>(
    api: &Api<K>,
    name: &str,
    type_: &str,
    ready: impl Fn(&Condition) -> bool,
) -> Condition
where
    K: Resource + Clone + DeserializeOwned + Debug + Reported,
{
    eventually(&format!("{name}'s {type_} condition"), WAIT, || async {
        let found = condition(&api.get(name).await.ok()?, type_)?;
        ready(&found).then_some(found)
    })
    .await
}

/// Waits until `name`'s status describes `generation`, and returns the object.
pub async fn observed<K>(api: &Api<K>, name: &str, generation: i64) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Reported,
{
    let what = format!("{name} to report generation {generation}");
    wait_for(api, name, &what, |o| {
        o.observed_generation() == Some(generation)
    })
    .await
}

/// Waits until `name`'s status describes `generation` with a `Validated` condition, and
/// returns that condition.
pub async fn validated_at<K>(api: &Api<K>, name: &str, generation: i64) -> Condition
where
    K: Resource + Clone + DeserializeOwned + Debug + Reported,
{
    let what = format!("{name} to report Validated for generation {generation}");
    let object = wait_for(api, name, &what, |o| {
        o.observed_generation() == Some(generation) && condition(o, CONDITION_VALIDATED).is_some()
    })
    .await;
    condition(&object, CONDITION_VALIDATED).expect("Validated")
}

/// Waits until entry `name`'s `Validated` condition, for its current spec, says False,
/// and returns it.
pub async fn validation_refused(entries: &Api<ConfigEntry>, name: &str) -> Condition {
    let current = |entry: &ConfigEntry| {
        condition(entry, CONDITION_VALIDATED)
            .filter(|c| c.observed_generation == entry.metadata.generation)
    };
    let entry = wait_for(entries, name, &format!("{name} refused"), |e| {
        current(e).is_some_and(|c| c.status == "False")
    })
    .await;
    current(&entry).expect("Validated")
}

/// The status of environment `name` of an entry.
pub fn environment_status<'e>(entry: &'e ConfigEntry, name: &str) -> Option<&'e EnvironmentStatus> {
    entry
        .status
        .as_ref()?
        .environments
        .iter()
        .find(|e| e.name == name)
}

/// The phase and live version of environment `name` of an entry.
pub fn environment(entry: &ConfigEntry, name: &str) -> (Option<EnvironmentPhase>, Option<i64>) {
    environment_status(entry, name).map_or((None, None), |e| (e.phase, e.version))
}

/// Whether an environment's status says `phase` and its message holds `text`.
pub fn says(status: &EnvironmentStatus, phase: EnvironmentPhase, text: &str) -> bool {
    status.phase == Some(phase) && status.message.as_deref().is_some_and(|m| m.contains(text))
}

/// Waits until environment `environment` of entry `name` reports a status for which
/// `ready` holds, and returns that status.
pub async fn environment_where(
    entries: &Api<ConfigEntry>,
    name: &str,
    environment: &str,
    what: &str,
    ready: impl Fn(&EnvironmentStatus) -> bool,
) -> EnvironmentStatus {
    let entry = wait_for(entries, name, what, |e| {
        environment_status(e, environment).is_some_and(&ready)
    })
    .await;
    environment_status(&entry, environment)
        .cloned()
        .expect("the environment's status")
}

/// Waits until environment `environment` of entry `name` runs `version`, and returns
/// the entry.
pub async fn live(
    entries: &Api<ConfigEntry>,
    name: &str,
    environment: &str,
    version: i64,
) -> ConfigEntry {
    let what = format!("version {version} of {name} live in {environment}");
    wait_for(entries, name, &what, |e| {
        self::environment(e, environment) == (Some(EnvironmentPhase::Applied), Some(version))
    })
    .await
}

/// Waits until `environment` of entry `name` waits for approval of `version`, and
/// returns the name of the ConfigChange it waits on.
pub async fn proposal_waiting(
    entries: &Api<ConfigEntry>,
    name: &str,
    environment: &str,
    version: i64,
) -> String {
    let what = format!("version {version} pending in {environment}");
    environment_where(entries, name, environment, &what, |e| {
        e.phase == Some(EnvironmentPhase::PendingApproval)
            && e.pending_version == Some(version)
            && e.pending_change.is_some()
    })
    .await
    .pending_change
    .expect("the pending change")
}

/// Waits for the change to reach `phase`, and returns it.
pub async fn change_in(
    changes: &Api<ConfigChange>,
    name: &str,
    phase: ChangePhase,
) -> ConfigChange {
    let what = format!("ConfigChange {name} {phase:?}");
    wait_for(changes, name, &what, |c| {
        c.status.as_ref().is_some_and(|s| s.phase == Some(phase))
    })
    .await
}

/// Waits until change `name` ignores an approval, and returns its status.
pub async fn approval_ignored(changes: &Api<ConfigChange>, name: &str) -> ConfigChangeStatus {
    let what = format!("{name} to ignore an approval");
    wait_for(changes, name, &what, |c| {
        c.status
            .as_ref()
            .is_some_and(|s| !s.ignored_approvals.is_empty())
    })
    .await
    .status
    .expect("status")
}

/// Waits until policy `name` has a status for which `ready` holds, and returns it.
pub async fn policy_where(
    policies: &Api<SecretRotationPolicy>,
    name: &str,
    ready: impl Fn(&SecretRotationPolicyStatus) -> bool,
) -> SecretRotationPolicyStatus {
    let what = format!("{name}'s status");
    wait_for(policies, name, &what, |p| {
        p.status.as_ref().is_some_and(&ready)
    })
    .await
    .status
    .expect("status")
}

/// A Secret's keys and values, as text.
pub fn secret_data(secret: Secret) -> BTreeMap<String, String> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap_or_default()))
        .collect()
}

/// Waits until Secret `name` has data for which `ready` holds, and returns it as text.
pub async fn secret_where(
    secrets: &Api<Secret>,
    name: &str,
    ready: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let what = format!("Secret {name} to hold what is expected");
    let secret = wait_for(secrets, name, &what, |s| {
        s.data.is_some() && ready(&secret_data(s.clone()))
    })
    .await;
    secret_data(secret)
}

/// The JSON a projected ConfigMap holds under `config.json`.
pub fn config_json(config_map: &ConfigMap) -> Option<Value> {
    serde_json::from_str(config_map.data.as_ref()?.get("config.json")?).ok()
}

/// Waits until ConfigMap `name` holds JSON for which `ready` holds, and returns it.
pub async fn projected(
    config_maps: &Api<ConfigMap>,
    name: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let what = format!("{name} to hold the expected content");
    let config_map = wait_for(config_maps, name, &what, |c| {
        config_json(c).is_some_and(|content| ready(&content))
    })
    .await;
    config_json(&config_map).expect("JSON")
}

/// Every Event in `ns`.
pub async fn events(client: &Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("list Events")
        .items
}

/// The reasons of the Events in `ns` about objects for which `about` holds.
pub async fn event_reasons(
    client: &Client,
    ns: &str,
    about: impl Fn(&k8s_openapi::api::core::v1::ObjectReference) -> bool,
) -> Vec<String> {
    events(client, ns)
        .await
        .into_iter()
        .filter(|e| e.regarding.as_ref().is_some_and(&about))
        .filter_map(|e| e.reason)
        .collect()
}

/// Waits for an Event in `ns` with reason `reason`, and returns it.
pub async fn event_with_reason(client: &Client, ns: &str, reason: &str) -> Event {
    eventually(&format!("a {reason} Event"), WAIT, || async {
        events(client, ns)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
    })
    .await
}

/// The annotations of a Deployment's pod template: where restarts are written.
pub fn template_annotations(deployment: &Deployment) -> BTreeMap<String, String> {
    let metadata = deployment.spec.template.metadata.as_ref();
    metadata
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}
