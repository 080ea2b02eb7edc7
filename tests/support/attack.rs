//! What attack tests share: tenants with the chart's roles, an operator that serves
//! several tenants at once, and a record of everything a config id has in the cluster,
//! PostgreSQL and Consul, to show that an attack changed nothing.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    CONDITION_VALIDATED, ChangePhase, ConfigChange, ConfigEntry, EnvironmentPhase,
    EnvironmentStatus, find_condition,
};

use super::{Operator, env, eventually, grant, namespace, postgres};

pub const WAIT: Duration = Duration::from_secs(30);

/// A namespace and who may do what there, with the chart's roles.
pub struct Tenant {
    pub ns: String,
}

impl Tenant {
    /// A fresh namespace for `test`, each of `roles` (user, ClusterRole) granted in it.
    pub async fn new(admin: &Client, test: &str, roles: &[(&str, &str)]) -> Self {
        let ns = namespace(admin, test).await;
        for (user, role) in roles {
            grant(admin, &ns, user, role).await;
        }
        Self { ns }
    }

    pub async fn entries_as(&self, user: &str) -> Api<ConfigEntry> {
        Api::namespaced(env().client_as(user).await, &self.ns)
    }

    pub async fn changes_as(&self, user: &str) -> Api<ConfigChange> {
        Api::namespaced(env().client_as(user).await, &self.ns)
    }

    pub async fn entries(&self) -> Api<ConfigEntry> {
        Api::namespaced(env().admin().await, &self.ns)
    }

    pub async fn changes(&self) -> Api<ConfigChange> {
        Api::namespaced(env().admin().await, &self.ns)
    }

    pub async fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(env().admin().await, &self.ns)
    }

    pub async fn secrets(&self) -> Api<Secret> {
        Api::namespaced(env().admin().await, &self.ns)
    }
}

/// The label that puts an object in front of one test's operator.
pub const SHARD: &str = "summit.test/shard";

/// An operator for the whole cluster that reconciles only objects labelled
/// `SHARD=shard`: several tenants at once, as in production, without touching other
/// tests' objects.
pub fn operator_for(shard: &str, tenants: &[&Tenant], extra: &[&str]) -> Operator {
    let namespaces: Vec<&str> = tenants.iter().map(|t| t.ns.as_str()).collect();
    let selector = format!("{SHARD}={shard}");
    let secret_namespaces = namespaces.join(",");
    let mut args = vec![
        "--watch-label-selector",
        &selector,
        "--secret-namespaces",
        &secret_namespaces,
    ];
    args.extend_from_slice(extra);
    Operator::start_cluster(shard, &namespaces, &args)
}

/// A ConfigEntry named `name` in front of `shard`'s operator.
pub fn entry(name: &str, shard: &str, spec: Value) -> ConfigEntry {
    serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": name, "labels": {SHARD: shard}},
        "spec": spec,
    }))
    .expect("a ConfigEntry")
}

/// A ConfigChange named `name` requested by `user`, in front of `shard`'s operator.
pub fn change(name: &str, shard: &str, user: &str, spec: Value) -> ConfigChange {
    let mut spec = spec;
    spec["requestedBy"] = json!(user);
    if spec.get("message").is_none() {
        spec["message"] = json!(format!("{name} by {user}"));
    }
    serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigChange",
        "metadata": {"name": name, "labels": {SHARD: shard}},
        "spec": spec,
    }))
    .expect("a ConfigChange")
}

pub async fn create<K>(api: &Api<K>, object: &K) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), object)
        .await
        .unwrap_or_else(|error| panic!("create {object:?}: {error}"))
}

/// Merge-patches an object's spec as whoever `api` acts as.
pub async fn patch_spec<K>(api: &Api<K>, name: &str, spec: Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
}

/// Waits until `entry` has a status for which `ready` holds, and returns it.
pub async fn entry_where(
    entries: &Api<ConfigEntry>,
    name: &str,
    what: &str,
    ready: impl Fn(&ConfigEntry) -> bool,
) -> ConfigEntry {
    eventually(what, WAIT, || async {
        let entry = entries.get(name).await.ok()?;
        ready(&entry).then_some(entry)
    })
    .await
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
    eventually(what, WAIT, || async {
        let entry = entries.get(name).await.ok()?;
        entry
            .status?
            .environments
            .into_iter()
            .find(|e| e.name == environment && ready(e))
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
        e.phase == Some(EnvironmentPhase::PendingApproval) && e.pending_version == Some(version)
    })
    .await
    .pending_change
    .expect("the pending change")
}

/// Whether an environment's status says `phase` and its message holds `text`.
pub fn says(status: &EnvironmentStatus, phase: EnvironmentPhase, text: &str) -> bool {
    status.phase == Some(phase) && status.message.as_deref().is_some_and(|m| m.contains(text))
}

/// The phase and live version of one environment of an entry.
pub fn environment(entry: &ConfigEntry, name: &str) -> (Option<EnvironmentPhase>, Option<i64>) {
    entry
        .status
        .as_ref()
        .and_then(|s| s.environments.iter().find(|e| e.name == name))
        .map_or((None, None), |e| (e.phase, e.version))
}

/// An entry's `Validated` condition: (status, reason, message).
pub fn validated(entry: &ConfigEntry) -> Option<(String, String, String)> {
    let status = entry.status.as_ref()?;
    let condition = find_condition(&status.conditions, CONDITION_VALIDATED)?;
    (condition.observed_generation == entry.metadata.generation).then(|| {
        (
            condition.status.clone(),
            condition.reason.clone(),
            condition.message.clone(),
        )
    })
}

/// Waits for the change to reach `phase`, and returns it.
pub async fn change_in(
    changes: &Api<ConfigChange>,
    name: &str,
    phase: ChangePhase,
) -> ConfigChange {
    eventually(&format!("ConfigChange {name} {phase:?}"), WAIT, || async {
        let change = changes.get(name).await.ok()?;
        (change.status.as_ref()?.phase == Some(phase)).then_some(change)
    })
    .await
}

/// The reason and message of a change's `Ready` condition.
pub fn ready_reason(change: &ConfigChange) -> (String, String) {
    change
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Ready"))
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// `user` appends an approval to a change.
pub async fn approve(
    changes: &Api<ConfigChange>,
    name: &str,
    user: &str,
    groups: &[&str],
) -> Result<ConfigChange, kube::Error> {
    let change = changes.get(name).await?;
    let mut approvals = serde_json::to_value(&change.spec.approvals).expect("approvals");
    let approvals = approvals.as_array_mut().expect("a list");
    approvals.push(json!({"approver": user, "groups": groups}));
    changes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"approvals": approvals}})),
        )
        .await
}

/// The message of an apiserver refusal.
pub fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => status.message,
        other => panic!("expected the apiserver to refuse, got {other:?}"),
    }
}

/// Everything a config id has outside the objects people write: the ConfigMaps and
/// Secrets (by key checksum) of some namespaces, its applied state and approval floors
/// in PostgreSQL, its audit rows, and its Consul keys.
#[derive(Debug, PartialEq)]
pub struct Record {
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    pub applied: Vec<(String, i32, String)>,
    pub floors: Vec<(String, Option<Value>)>,
    pub versions: i64,
    pub audit: Vec<(String, Value)>,
    pub consul: BTreeMap<String, Value>,
}

impl Record {
    pub async fn of(config_id: &str, tenants: &[&Tenant]) -> Self {
        let mut config_maps = BTreeMap::new();
        let mut secrets = BTreeMap::new();
        for tenant in tenants {
            for cm in tenant
                .config_maps()
                .await
                .list(&Default::default())
                .await
                .expect("list ConfigMaps")
            {
                let name = format!(
                    "{}/{}",
                    tenant.ns,
                    cm.metadata.name.clone().unwrap_or_default()
                );
                config_maps.insert(name, cm.data.unwrap_or_default());
            }
            for secret in tenant
                .secrets()
                .await
                .list(&Default::default())
                .await
                .expect("list Secrets")
            {
                let name = format!(
                    "{}/{}",
                    tenant.ns,
                    secret.metadata.name.clone().unwrap_or_default()
                );
                let data = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, summit_config::core::resolve::checksum(&json!(v.0))))
                    .collect();
                secrets.insert(name, data);
            }
        }
        let pool = postgres().await;
        let applied = sqlx::query_as(
            "SELECT environment, version, checksum FROM config_applied_state WHERE config_id = $1 ORDER BY environment",
        )
        .bind(config_id)
        .fetch_all(&pool)
        .await
        .expect("read the applied state");
        let floors = sqlx::query_as(
            "SELECT environment, policy FROM approval_floors WHERE config_id = $1 ORDER BY environment",
        )
        .bind(config_id)
        .fetch_all(&pool)
        .await
        .expect("read the floors");
        let versions =
            sqlx::query_scalar("SELECT count(*) FROM config_versions WHERE config_id = $1")
                .bind(config_id)
                .fetch_one(&pool)
                .await
                .expect("count versions");
        let audit = sqlx::query_as(
            "SELECT actor, changes FROM config_audit WHERE config_id = $1 ORDER BY timestamp, id",
        )
        .bind(config_id)
        .fetch_all(&pool)
        .await
        .expect("read the audit rows");
        Self {
            config_maps,
            secrets,
            applied,
            floors,
            versions,
            audit,
            consul: consul_keys(config_id).await,
        }
    }
}

/// Every Consul key under a config id, decoded, with its modify index.
pub async fn consul_keys(config_id: &str) -> BTreeMap<String, Value> {
    use base64::Engine;
    let url = format!(
        "{}/v1/kv/summit/config/{config_id}/?recurse&consistent",
        env().var("CONSUL_HTTP_ADDR")
    );
    let response = super::consul_request(super::consul_client().get(&url))
        .send()
        .await
        .expect("reach Consul");
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return BTreeMap::new();
    }
    let entries: Vec<Value> = response.json().await.expect("Consul JSON");
    entries
        .into_iter()
        .map(|entry| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(entry["Value"].as_str().unwrap_or_default())
                .expect("base64");
            let value: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            let key = entry["Key"].as_str().unwrap_or_default().to_owned();
            (key, json!({"value": value, "index": entry["ModifyIndex"]}))
        })
        .collect()
}
