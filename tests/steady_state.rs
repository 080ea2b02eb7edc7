//! Quiet at steady state: with 200 entries converged, an idle minute brings no write
//! to the apiserver, PostgreSQL or Consul.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Resource, api::ListParams};
use serde_json::json;
use summit_config::api::v1alpha1::ConfigEntry;
use support::{consul, create, entry, eventually, operator_writes, postgres, setup};

const ENTRIES: usize = 200;

/// How long 200 entries may take to converge on a loaded machine.
const CONVERGE: Duration = Duration::from_secs(300);

/// How long the operator's writes may take to settle once everything converged: the
/// reconciles its own status writes trigger come and go.
const SETTLE: Duration = Duration::from_secs(60);

/// A stretch with no write, long enough to call the operator's writes settled: a
/// window, not a wait.
const QUIET: Duration = Duration::from_secs(3);

/// The idle minute the test measures: a window in which nothing may be written, not a
/// wait.
const IDLE: Duration = Duration::from_secs(60);

/// Resource versions of every object in `api`, by name.
async fn resource_versions<K>(api: &Api<K>) -> BTreeMap<String, String>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|object| {
            let meta = object.meta();
            (
                meta.name.clone().unwrap_or_default(),
                meta.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Consul's index of everything under a prefix: it moves with any write there.
async fn consul_index(prefix: &str) -> String {
    let response = consul(&format!("{prefix}?recurse&keys")).await;
    response.headers()["x-consul-index"]
        .to_str()
        .expect("index")
        .to_owned()
}

#[tokio::test]
async fn an_idle_minute_writes_nothing_anywhere() {
    let (s, operator) = setup("steady-state").await;
    let port = operator.port();
    let entries: Api<ConfigEntry> = s.entries();
    let config_maps: Api<ConfigMap> = s.config_maps();
    let ns = &s.ns;

    for i in 0..ENTRIES {
        let spec = json!({
            "configId": format!("steady/{ns}/{i}"),
            "schema": {"type": "object"},
            "data": {"index": i, "pool": {"max": 10}},
            "environments": [{"name": "development"}, {"name": "production", "overrides": {"pool": {"max": 50}}}],
        });
        create(&entries, &entry(&format!("entry-{i}"), spec)).await;
    }
    eventually("every entry to converge", CONVERGE, || async {
        let list = entries.list(&ListParams::default()).await.ok()?;
        let converged = list
            .items
            .iter()
            .filter(|e| {
                e.status.as_ref().is_some_and(|s| {
                    s.observed_generation == Some(1) && s.latest_version == Some(1)
                })
            })
            .count();
        (converged == ENTRIES).then_some(())
    })
    .await;

    let pool = postgres().await;
    let audit = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM config_audit WHERE config_id LIKE $1")
            .bind(format!("steady/{ns}/%"))
            .fetch_one(&pool)
            .await
            .expect("count audit rows")
    };
    // Let reconciles triggered by the operator's own status writes finish: settled once
    // a quiet stretch passes with no write.
    let settled = eventually("writes to settle", SETTLE, || async {
        let before = operator_writes(port).await;
        tokio::time::sleep(QUIET).await;
        (operator_writes(port).await == before).then_some(before)
    })
    .await;
    let objects = (
        resource_versions(&entries).await,
        resource_versions(&config_maps).await,
    );
    let rows = audit().await;
    let consul = consul_index(&format!("summit/config/steady/{ns}")).await;

    tokio::time::sleep(IDLE).await;

    assert_eq!(
        operator_writes(port).await,
        settled,
        "the operator counted writes while idle"
    );
    assert_eq!(
        (
            resource_versions(&entries).await,
            resource_versions(&config_maps).await
        ),
        objects,
        "an object changed while idle"
    );
    assert_eq!(audit().await, rows, "PostgreSQL was written while idle");
    assert_eq!(
        consul_index(&format!("summit/config/steady/{ns}")).await,
        consul,
        "Consul was written while idle"
    );
    eprintln!("{ENTRIES} entries: {settled} apiserver writes to converge, none in an idle minute");
}
