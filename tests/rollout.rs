//! A staged environment against the apiserver alone: a spec edit there goes through a
//! ConfigChange that carries the canary, even with no approval needed; the version
//! reaches the canary ConfigMap and its consumer, never the main projection, and a
//! canary whose consumer is not ready at the end of the bake time is rolled back by
//! itself. (On a real node, with real pods becoming ready or not: tests/canary.rs.)

mod support;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{Api, api::ListParams};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{ChangePhase, ConfigChange, RolloutStep};
use support::{WAIT, create, entry, eventually, merge, refused, setup, try_create, wait_for};

fn content(config_map: &ConfigMap) -> Value {
    let text = config_map.data.as_ref().and_then(|d| d.get("config.json"));
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

fn workload(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }))
    .expect("a Deployment")
}

fn staged(config_id: &str, bake: &str) -> Value {
    json!({
        "configId": config_id,
        "data": {"pool": 10},
        "environments": [{
            "name": "production",
            "rollout": {
                "canaryTargets": [{"kind": "Deployment", "name": "api-canary"}],
                "bakeTime": bake,
            },
        }],
    })
}

#[tokio::test]
async fn a_spec_edit_bakes_on_the_canary_and_an_unready_one_is_rolled_back() {
    let (s, _operator) = setup("rollout-spec").await;
    let deployments: Api<Deployment> = s.api();
    create(&deployments, &workload("api-canary")).await;
    create(&s.entries(), &entry("api", staged(&s.config_id(), "3s"))).await;
    let config_maps = s.config_maps();
    wait_for(
        &config_maps,
        "api-production-canary",
        "the canary on v1",
        |c| content(c)["pool"] == 10,
    )
    .await;
    let main = wait_for(&config_maps, "api-production", "v1", |c| {
        content(c)["pool"] == 10
    })
    .await;

    merge(&s.entries(), "api", json!({"spec": {"data": {"pool": 11}}})).await;
    wait_for(
        &config_maps,
        "api-production-canary",
        "the canary on v2",
        |c| content(c)["pool"] == 11,
    )
    .await;
    let changes: Api<ConfigChange> = s.api();
    let change = eventually("the change carrying the canary", WAIT, || async {
        let list = changes.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|c| c.spec.config_entry == "api")
    })
    .await;
    let name = change.metadata.name.clone().expect("a name");
    let failed = wait_for(&changes, &name, "the canary rolled back", |c| {
        c.status.as_ref().and_then(|s| s.phase) == Some(ChangePhase::Failed)
    })
    .await;
    let status = failed.status.expect("status");
    assert_eq!(
        status.rollout.expect("rollout").step,
        RolloutStep::RolledBack
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.reason, "CanaryFailed");
    assert!(
        ready.message.contains("api-canary is not ready"),
        "{}",
        ready.message
    );
    wait_for(
        &config_maps,
        "api-production-canary",
        "the canary back on v1",
        |c| content(c)["pool"] == 10,
    )
    .await;
    let after = config_maps.get("api-production").await.expect("main");
    assert_eq!(
        after.metadata.resource_version,
        main.metadata.resource_version
    );
}

#[tokio::test]
async fn a_rollout_needs_a_canary_and_a_bake_time() {
    let (s, _operator) = setup("rollout-invalid").await;
    let mut no_canary = staged(&s.config_id(), "30s");
    no_canary["environments"][0]["rollout"]["canaryTargets"] = json!([]);
    refused(
        try_create(&s.entries(), &entry("api", no_canary)).await,
        "canaryTargets",
    );
    let forever = staged(&s.config_id(), "soon");
    refused(
        try_create(&s.entries(), &entry("api", forever)).await,
        "bakeTime",
    );
}
