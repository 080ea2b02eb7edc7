//! Quiet at steady state: with 200 entries converged, an idle minute brings no write
//! to the apiserver, PostgreSQL or Consul.

mod support;

use std::{collections::BTreeMap, net::TcpListener, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;
use summit_config::api::v1alpha1::ConfigEntry;
use support::{Operator, env, eventually, fresh_namespace, operator_writes, postgres};

const ENTRIES: usize = 200;
const IDLE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Resource versions of every ConfigEntry and ConfigMap in the namespace.
async fn resource_versions(
    entries: &Api<ConfigEntry>,
    config_maps: &Api<ConfigMap>,
) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    for entry in entries
        .list(&ListParams::default())
        .await
        .expect("list entries")
        .items
    {
        versions.insert(
            format!("ce/{}", entry.metadata.name.unwrap_or_default()),
            entry.metadata.resource_version.unwrap_or_default(),
        );
    }
    for config_map in config_maps
        .list(&ListParams::default())
        .await
        .expect("list config maps")
        .items
    {
        versions.insert(
            format!("cm/{}", config_map.metadata.name.unwrap_or_default()),
            config_map.metadata.resource_version.unwrap_or_default(),
        );
    }
    versions
}

/// Consul's index of everything under a prefix: it moves with any write there.
async fn consul_index(prefix: &str) -> String {
    let url = format!(
        "{}/v1/kv/{prefix}?recurse&keys",
        env().var("CONSUL_HTTP_ADDR")
    );
    let response = support::consul_request(support::consul_client().get(&url))
        .send()
        .await
        .expect("reach Consul");
    response.headers()["x-consul-index"]
        .to_str()
        .expect("index")
        .to_owned()
}

#[tokio::test]
async fn an_idle_minute_writes_nothing_anywhere() {
    let (client, ns) = fresh_namespace("steady-state").await;
    let port = free_port();
    let _operator = Operator::start_with(&ns, &["--http-addr", &format!("127.0.0.1:{port}")]);
    let entries: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);

    for i in 0..ENTRIES {
        let entry: ConfigEntry = serde_json::from_value(json!({
            "apiVersion": "config.summit.io/v1alpha1",
            "kind": "ConfigEntry",
            "metadata": {"name": format!("entry-{i}")},
            "spec": {
                "configId": format!("steady/{ns}/{i}"),
                "schema": {"type": "object"},
                "data": {"index": i, "pool": {"max": 10}},
                "environments": [{"name": "development"}, {"name": "production", "overrides": {"pool": {"max": 50}}}],
            },
        }))
        .expect("entry");
        entries
            .create(&PostParams::default(), &entry)
            .await
            .expect("create entry");
    }
    eventually(
        "every entry to converge",
        Duration::from_secs(300),
        || async {
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
        },
    )
    .await;

    let pool = postgres().await;
    let audit = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM config_audit WHERE config_id LIKE $1")
            .bind(format!("steady/{ns}/%"))
            .fetch_one(&pool)
            .await
            .expect("count audit rows")
    };
    // Let reconciles triggered by the operator's own status writes finish.
    let settled = eventually("writes to settle", Duration::from_secs(60), || async {
        let before = operator_writes(port).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        (operator_writes(port).await == before).then_some(before)
    })
    .await;
    let objects = resource_versions(&entries, &config_maps).await;
    let rows = audit().await;
    let consul = consul_index(&format!("summit/config/steady/{ns}")).await;

    tokio::time::sleep(IDLE).await;

    assert_eq!(
        operator_writes(port).await,
        settled,
        "the operator counted writes while idle"
    );
    assert_eq!(
        resource_versions(&entries, &config_maps).await,
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
