//! The write ceiling: a naive client doing, for each entry, the least any operator
//! must write when it converges one — two ConfigMaps (server-side apply), one
//! PostgreSQL transaction with the version and its audit row, four Consul PUTs — a
//! fixed number of entries at a time, against the same apiserver, PostgreSQL and
//! Consul the operator uses. It validates nothing, remembers nothing and reports
//! nothing: the operator's figure beside it says what the rest costs.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::support;

/// How many entries the naive client writes at a time: it reached its best between 12
/// and 32 on this project's machine.
const IN_FLIGHT: usize = 24;

/// Writes what converging `count` entries needs at least, in namespace `ns`, and says
/// how long it took.
pub async fn measure(client: &Client, ns: &str, count: usize) -> Duration {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let postgres = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(support::env().var("DATABASE_URL"))
        .await
        .expect("connect to PostgreSQL");
    // The schema as the operator makes it, before the operator has ever run here.
    sqlx::migrate!("./migrations")
        .run(&postgres)
        .await
        .expect("migrate");
    let consul = support::consul_client();
    let started = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let (config_maps, postgres, consul) = (&config_maps, &postgres, &consul);
            async move {
                let config_id = format!("ceiling/{ns}/{i}");
                let data = json!({"index": i, "pool": {"max": 10}});
                for environment in ["development", "production"] {
                    config_map(config_maps, &format!("ceiling-{i}-{environment}"), &data).await;
                }
                version(postgres, &config_id, &data).await;
                for key in [
                    "latest",
                    "versions/1",
                    "applied/development",
                    "applied/production",
                ] {
                    put(consul, &format!("{config_id}/{key}"), &data).await;
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    started.elapsed()
}

async fn config_map(api: &Api<ConfigMap>, name: &str, data: &serde_json::Value) {
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "annotations": {"config.summit.io/checksum": "0".repeat(64)}},
        "data": {"config.json": data.to_string()},
    });
    api.patch(
        name,
        &PatchParams::apply("summit-config-ceiling").force(),
        &Patch::Apply(&config_map),
    )
    .await
    .unwrap_or_else(|error| panic!("apply ConfigMap {name}: {error}"));
}

async fn version(postgres: &sqlx::PgPool, config_id: &str, data: &serde_json::Value) {
    let mut transaction = postgres.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO config_versions
           (id, config_id, version, config, checksum, metadata, created_at, created_by)
         VALUES ($1, $2, 1, $3, $4, '{}', now(), 'ceiling')",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(config_id)
    .bind(data)
    .bind("0".repeat(64))
    .execute(&mut *transaction)
    .await
    .expect("insert a version");
    sqlx::query(
        "INSERT INTO config_audit (id, config_id, version, actor, timestamp, changes)
         VALUES ($1, $2, 1, 'ceiling', now(), '{\"event\": \"recorded\"}')",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(config_id)
    .execute(&mut *transaction)
    .await
    .expect("insert an audit row");
    transaction.commit().await.expect("commit");
}

async fn put(consul: &reqwest::Client, key: &str, data: &serde_json::Value) {
    let url = format!("{}/v1/kv/{key}", support::env().var("CONSUL_HTTP_ADDR"));
    let response = support::consul_request(consul.put(&url))
        .body(data.to_string())
        .send()
        .await
        .expect("reach Consul");
    assert!(response.status().is_success(), "write {key}: {response:?}");
}
