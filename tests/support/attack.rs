//! What attack tests add: an operator that serves several tenants at once, as in
//! production, approvals as the chart's approvers give them, and a record of
//! everything a config id has in the cluster, PostgreSQL and Consul, to show that an
//! attack changed nothing.

use std::collections::BTreeMap;

use kube::Resource;
use serde_json::{Value, json};

use super::{Operator, Tenant, consul_keys, count_rows, list, rows_of};

/// `namespace/name` of an object of `tenant`'s.
fn qualified<K: Resource>(tenant: &Tenant, object: &K) -> String {
    let name = object.meta().name.clone().unwrap_or_default();
    format!("{}/{name}", tenant.ns)
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

/// `object`, labelled to be in front of `shard`'s operator.
pub fn in_shard<K: Resource>(object: K, shard: &str) -> K {
    let mut object = object;
    object
        .meta_mut()
        .labels
        .get_or_insert_with(Default::default)
        .insert(SHARD.to_owned(), shard.to_owned());
    object
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
    /// What `environment` runs: (environment, version, checksum).
    pub fn applied_in(&self, environment: &str) -> Option<(String, i32, String)> {
        self.applied.iter().find(|a| a.0 == environment).cloned()
    }

    /// The approval policy below which `environment` may not go.
    pub fn floor(&self, environment: &str) -> Option<Value> {
        self.floors
            .iter()
            .find(|f| f.0 == environment)
            .and_then(|f| f.1.clone())
    }

    /// Reads what `config_id` has now, with the ConfigMaps and Secrets of `tenants`.
    pub async fn of(config_id: &str, tenants: &[&Tenant]) -> Self {
        let mut config_maps = BTreeMap::new();
        let mut secrets = BTreeMap::new();
        for tenant in tenants {
            for config_map in list(&tenant.config_maps()).await {
                let name = qualified(tenant, &config_map);
                config_maps.insert(name, config_map.data.unwrap_or_default());
            }
            for secret in list(&tenant.secrets()).await {
                let name = qualified(tenant, &secret);
                let checksums = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, summit_config::core::resolve::checksum(&json!(v.0))))
                    .collect();
                secrets.insert(name, checksums);
            }
        }
        let applied = rows_of(
            "SELECT environment, version, checksum FROM config_applied_state WHERE config_id = $1 ORDER BY environment",
            config_id,
        )
        .await;
        let floors = rows_of(
            "SELECT environment, policy FROM approval_floors WHERE config_id = $1 ORDER BY environment",
            config_id,
        )
        .await;
        let versions = count_rows("config_versions", config_id).await;
        let audit = rows_of(
            "SELECT actor, changes FROM config_audit WHERE config_id = $1 ORDER BY timestamp, id",
            config_id,
        )
        .await;
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
