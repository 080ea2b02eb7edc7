//! Builders for the objects tests create, the requests that create and change them,
//! and what the apiserver says when it refuses one.

use std::fmt::Debug;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use kube::{
    Api, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{ConfigChange, ConfigEntry, DriftCheck, SecretRotationPolicy};

/// One of the operator's kinds named `name`, with `spec`.
fn custom<K>(name: &str, spec: Value) -> K
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let kind = K::kind(&());
    serde_json::from_value(json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap_or_else(|error| panic!("a {kind} named {name}: {error}"))
}

/// A ConfigEntry named `name`.
pub fn entry(name: &str, spec: Value) -> ConfigEntry {
    custom(name, spec)
}

/// A ConfigChange named `name` requested by `user`; unless `spec` has a message, the
/// message says who asked.
pub fn change(name: &str, user: &str, spec: Value) -> ConfigChange {
    let mut spec = spec;
    spec["requestedBy"] = json!(user);
    if spec.get("message").is_none() {
        spec["message"] = json!(format!("{name} by {user}"));
    }
    custom(name, spec)
}

/// A SecretRotationPolicy named `name`.
pub fn policy(name: &str, spec: Value) -> SecretRotationPolicy {
    custom(name, spec)
}

/// A DriftCheck named `name`.
pub fn drift_check(name: &str, spec: Value) -> DriftCheck {
    custom(name, spec)
}

/// A Secret named `name`, made by hand with `string_data`.
pub fn secret(name: &str, string_data: Value) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "stringData": string_data}))
        .expect("a Secret")
}

/// A ConfigMap named `name`, made by hand with `data`.
pub fn config_map(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).expect("a ConfigMap")
}

/// A Deployment named `name` with one container, to be a restart target. Nothing runs
/// it: the environment has no controller-manager.
pub fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "api", "image": format!("registry.invalid/{name}:1")}]},
            },
        },
    }))
    .expect("a Deployment")
}

/// Reports Deployment `name`'s newest template rolled out, as the deployment
/// controller and kubelet would once every replica runs it.
pub async fn finish_rollout(deployments: &Api<Deployment>, name: &str) {
    let deployment = deployments.get(name).await.expect("read deployment");
    let status = json!({"status": {
        "observedGeneration": deployment.metadata.generation,
        "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
    }});
    deployments
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("report the rollout");
}

/// `base` with each field of `fields` set (added, or replaced) at its top level.
pub fn with_fields(base: Value, fields: Value) -> Value {
    let mut merged = base;
    for (key, value) in fields.as_object().expect("fields as an object") {
        merged[key] = value.clone();
    }
    merged
}

/// Creates `object` as whoever `api` acts as; the apiserver must take it.
pub async fn create<K>(api: &Api<K>, object: &K) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    api.create(&PostParams::default(), object)
        .await
        .unwrap_or_else(|error| panic!("create {object:?}: {error}"))
}

/// Creates `object` as whoever `api` acts as, or says why the apiserver refused.
pub async fn try_create<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    api.create(&PostParams::default(), object).await
}

/// Merge-patches `name` with `patch` as whoever `api` acts as, or says why the
/// apiserver refused.
pub async fn try_merge<K>(api: &Api<K>, name: &str, patch: Value) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Merge-patches `name` with `patch` as whoever `api` acts as; the apiserver must take it.
pub async fn merge<K>(api: &Api<K>, name: &str, patch: Value) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    try_merge(api, name, patch.clone())
        .await
        .unwrap_or_else(|error| panic!("merge {patch} into {name}: {error}"))
}

/// Merge-patches an object's spec as whoever `api` acts as.
pub async fn patch_spec<K>(api: &Api<K>, name: &str, spec: Value) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    try_merge(api, name, json!({"spec": spec})).await
}

/// Sets annotation `key` of `name` to `value`: how people ask the operator for
/// something now (a rotation, a drift check).
pub async fn annotate<K>(api: &Api<K>, name: &str, key: &str, value: &str) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    merge(
        api,
        name,
        json!({"metadata": {"annotations": {key: value}}}),
    )
    .await
}

/// Deletes `name`; the apiserver must take the request.
pub async fn delete<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.delete(name, &Default::default())
        .await
        .unwrap_or_else(|error| panic!("delete {name}: {error}"));
}

/// `user` appends an approval, as a member of `groups`, to change `name`.
pub async fn approve(
    changes: &Api<ConfigChange>,
    name: &str,
    user: &str,
    groups: &[&str],
) -> Result<ConfigChange, kube::Error> {
    append_approval(changes, name, json!({"approver": user, "groups": groups})).await
}

/// Appends `approval` to change `name`'s approvals, as whoever `changes` acts as.
pub async fn append_approval(
    changes: &Api<ConfigChange>,
    name: &str,
    approval: Value,
) -> Result<ConfigChange, kube::Error> {
    let change = changes.get(name).await?;
    let mut approvals = serde_json::to_value(&change.spec.approvals).expect("approvals");
    approvals.as_array_mut().expect("a list").push(approval);
    try_merge(changes, name, json!({"spec": {"approvals": approvals}})).await
}

/// Fails the test unless the apiserver refused the request (403 Forbidden or 422
/// Invalid) with `expected` in its message.
pub fn refused<T: Debug>(result: Result<T, kube::Error>, expected: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert!(
                [403, 422].contains(&status.code) && status.message.contains(expected),
                "expected a refusal saying {expected:?}, got {status:?}"
            );
        }
        other => panic!("expected a refusal saying {expected:?}, got {other:?}"),
    }
}

/// The message of the apiserver's 422 Invalid refusal, failing the test if the request
/// was accepted or refused for another reason than validation.
pub fn invalid<T: Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 => status.message,
        other => panic!("expected a 422 Invalid refusal, got {other:?}"),
    }
}
