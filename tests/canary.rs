//! A staged rollout on a real node: every version of `shop`'s production goes to the
//! canary consumer first. One whose content makes the canary's pods fail readiness is
//! rolled back by itself within the bake time: the main ConfigMap never changes, the
//! change ends `Failed` with the reason, and the main consumer keeps running the old
//! version untouched. A healthy one is promoted, and the main consumer rolls once.
//! A flag split steps 10 → 50 → 100 percent while its consumer stays ready, each step
//! evaluated by the official flagd provider; one that makes its consumer unready is
//! put back by itself. A canary that stays ready but whose pods report errors to
//! Prometheus is rolled back on the metric check's answer.
//! Needs the node (`hack/e2e.sh`): run with `--features e2e`.

mod support;

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::Api;
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{
    ChangePhase, ConfigChange, ConfigChangeStatus, ConfigEntry, RolloutStep,
};
use support::{
    WAIT, change, change_in, create, entry, env, eventually, install::*, projected,
    prometheus::query_value, wait_for,
};

const NAMESPACE: &str = "canary";
/// The bake time: short enough for a test, long enough for a pod to start.
const BAKE: Duration = Duration::from_secs(20);

/// What a consumer runs: it serves `app_errors`, the `errors` its configuration
/// names (0 when none), for Prometheus to scrape.
const SERVE_ERRORS: &str = r#"mkdir -p /tmp/www
while true; do
  errors="$(sed -n 's/.*"errors": *\([0-9]*\).*/\1/p' /config/config.json 2>/dev/null | head -n 1)"
  echo "app_errors ${errors:-0}" >/tmp/www/.metrics && mv /tmp/www/.metrics /tmp/www/metrics
  sleep 1
done &
exec httpd -f -p 8080 -h /tmp/www"#;

/// A Deployment whose pods are ready only while the ConfigMap they mount says
/// `"healthy": true`, and report the `errors` it names as a metric.
fn consumer(name: &str, config_map: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {"prometheus.io/scrape": "true"},
                },
                "spec": {
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "app",
                        "image": "docker.io/library/busybox:1.36",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", SERVE_ERRORS],
                        "ports": [{"name": "metrics", "containerPort": 8080}],
                        "readinessProbe": {
                            "exec": {"command": ["grep", "-q", "\"healthy\": true", "/config/config.json"]},
                            "periodSeconds": 1,
                        },
                        "volumeMounts": [{"name": "config", "mountPath": "/config", "readOnly": true}],
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": config_map, "optional": true}}],
                },
            },
        },
    }))
    .expect("a Deployment")
}

/// The canary consumer's errors, as its metric check asks for them.
const CANARY_ERRORS: &str = r#"max(app_errors{app="shop-api-canary"})"#;

/// Waits until change `name` has failed; its status and its Ready condition's message.
async fn failed(changes: &Api<ConfigChange>, name: &str) -> (ConfigChangeStatus, String) {
    let failed = wait_for(changes, name, "the canary rolled back", |c| {
        c.status.as_ref().and_then(|s| s.phase) == Some(ChangePhase::Failed)
    })
    .await;
    let status = failed.status.expect("status");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let message = ready.expect("Ready").message.clone();
    (status, message)
}

/// Waits until `name` has rolled out completely, every pod ready; returns it.
async fn settled(deployments: &Api<Deployment>, name: &str) -> Deployment {
    eventually(&format!("{name} rolled out"), WAIT, || async {
        let d = deployments.get(name).await.ok()?;
        let s = d.status.clone()?;
        let done = s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(1)
            && s.ready_replicas == Some(1)
            && s.replicas == Some(1);
        done.then_some(d)
    })
    .await
}

/// A change of production's content to `data`, by the cluster admin.
fn proposal(name: &str, data: Value) -> ConfigChange {
    let spec = json!({"configEntry": "shop", "environment": "production", "data": data,
                      "message": name});
    change(name, "admin", spec)
}

/// A Deployment whose pods are ready only while the flags they mount give no share of
/// targeting keys to the `broken` variant.
fn flag_consumer(name: &str, config_map: &str) -> Deployment {
    let mut deployment = serde_json::to_value(consumer(name, config_map)).expect("JSON");
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"] =
        json!([
            "sh",
            "-c",
            "test -f /config/flags.json && ! grep -q '\"broken\",' /config/flags.json"
        ]);
    serde_json::from_value(deployment).expect("a Deployment")
}

/// The flags projected in `checkout-production` once `check` holds.
async fn flags_where(
    config_maps: &Api<ConfigMap>,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> String {
    let config_map = wait_for(config_maps, "checkout-production", what, |c| {
        let text = c.data.as_ref().and_then(|d| d.get("flags.json"));
        let flags: Option<Value> = text.and_then(|t| serde_json::from_str(t).ok());
        flags.is_some_and(|f| check(&f))
    })
    .await;
    config_map.data.expect("data")["flags.json"].clone()
}

/// How many of 10,000 targeting keys get `new-checkout`'s `on` variant.
fn on_for(flags_json: &str) -> usize {
    let counts = support::flagd::evaluated(flags_json, "new-checkout", 10_000);
    counts.get("on").copied().unwrap_or(0)
}

/// A split of `new-checkout` toward `variant`, by the cluster admin.
fn split(name: &str, variant: &str, steps: &[i32]) -> ConfigChange {
    let spec = json!({"configEntry": "checkout", "environment": "production", "message": name,
                      "split": {"flag": "new-checkout", "variant": variant, "steps": steps}});
    change(name, "admin", spec)
}

#[tokio::test]
async fn a_flag_split_steps_up_while_healthy_and_one_that_hurts_is_put_back() {
    const SPLIT: &str = "split";
    let installed = Installed::install().await;
    let admin = env().admin().await;
    create_once(&["namespace", SPLIT]);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), SPLIT);
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), SPLIT);
    let changes: Api<ConfigChange> = Api::namespaced(admin.clone(), SPLIT);
    create(
        &deployments,
        &flag_consumer("checkout-web", "checkout-production-canary"),
    )
    .await;
    let flags = json!({"flags": {"new-checkout": {
        "state": "ENABLED",
        "variants": {"on": true, "off": false, "broken": true},
        "defaultVariant": "off",
    }}});
    let spec = json!({
        "configId": format!("{SPLIT}/checkout"),
        "data": flags,
        "environments": [{
            "name": "production",
            "configMap": {"format": "Flagd"},
            "rollout": {
                "canaryTargets": [{"kind": "Deployment", "name": "checkout-web"}],
                "bakeTime": "10s",
            },
        }],
    });
    let entries: Api<ConfigEntry> = Api::namespaced(admin.clone(), SPLIT);
    create(&entries, &entry("checkout", spec)).await;
    flags_where(&config_maps, "version 1", |_| true).await;
    settled(&deployments, "checkout-web").await;

    // 10 → 50 → 100 while the consumer stays ready; each step evaluated as flagd would.
    create(&changes, &split("roll-out", "on", &[10, 50, 100])).await;
    let share = |f: &Value, share: i64| {
        f["flags"]["new-checkout"]["targeting"]["fractional"][0][1] == share
    };
    let ten = on_for(&flags_where(&config_maps, "10%", |f| share(f, 10)).await);
    assert!((800..=1200).contains(&ten), "{ten} of 10,000 on at 10%");
    let half = on_for(&flags_where(&config_maps, "50%", |f| share(f, 50)).await);
    assert!((4600..=5400).contains(&half), "{half} of 10,000 on at 50%");
    let applied = change_in(&changes, "roll-out", ChangePhase::Applied).await;
    let rollout = applied.status.and_then(|s| s.rollout).expect("a rollout");
    assert_eq!(
        (rollout.step, rollout.share),
        (RolloutStep::Promoted, Some(100))
    );
    let all = on_for(&flags_where(&config_maps, "100%", |f| share(f, 100)).await);
    assert_eq!(all, 10_000);
    let steps: Vec<String> = support::column_of(
        "SELECT changes ->> 'share' FROM config_audit WHERE config_id = $1
         AND changes ->> 'event' = 'splitStep' ORDER BY timestamp",
        &format!("{SPLIT}/checkout"),
    )
    .await;
    assert_eq!(steps, ["10", "50", "100"], "one audit row per step");

    // A variant that makes the consumer unready: put back within its first bake.
    create(&changes, &split("try-broken", "broken", &[10, 100])).await;
    let failed = change_in(&changes, "try-broken", ChangePhase::Failed).await;
    let status = failed.status.expect("status");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.reason, "SplitRolledBack");
    assert!(
        ready.message.contains("checkout-web is not ready"),
        "{}",
        ready.message
    );
    let back = flags_where(&config_maps, "the flag put back", |f| share(f, 100)).await;
    assert!(!back.contains("broken\","), "{back}");
    assert_eq!(on_for(&back), 10_000);
    settled(&deployments, "checkout-web").await;
    installed.uninstall();
}

#[tokio::test]
async fn a_canary_that_fails_readiness_is_rolled_back_and_a_healthy_one_promoted() {
    let installed = Installed::install().await;
    let admin = env().admin().await;
    create_once(&["namespace", NAMESPACE]);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NAMESPACE);
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), NAMESPACE);
    let changes: Api<ConfigChange> = Api::namespaced(admin.clone(), NAMESPACE);
    create(&deployments, &consumer("shop-api", "shop-production")).await;
    create(
        &deployments,
        &consumer("shop-api-canary", "shop-production-canary"),
    )
    .await;
    let spec = json!({
        "configId": format!("{NAMESPACE}/shop"),
        "data": {"healthy": true, "pool": 10},
        "environments": [{
            "name": "production",
            "restartTargets": [{"kind": "Deployment", "name": "shop-api"}],
            "rollout": {
                "canaryTargets": [{"kind": "Deployment", "name": "shop-api-canary"}],
                "bakeTime": format!("{}s", BAKE.as_secs()),
                "metrics": [{"name": "errors", "query": CANARY_ERRORS, "failAbove": 0}],
            },
        }],
    });
    let entries: Api<ConfigEntry> = Api::namespaced(admin.clone(), NAMESPACE);
    create(&entries, &entry("shop", spec)).await;
    // Version 1 goes live everywhere at once: there is nothing to compare a canary with.
    projected(&config_maps, "shop-production-canary", |c| c["pool"] == 10).await;
    eventually("both consumers on v1 and ready", WAIT, || async {
        let main = deployments.get("shop-api").await.ok()?;
        let annotated = main.spec.template.metadata?.annotations?;
        annotated
            .contains_key("checksum.config.summit.io/shop")
            .then_some(())
    })
    .await;
    let main_before = settled(&deployments, "shop-api").await;
    settled(&deployments, "shop-api-canary").await;
    let live_before = config_maps.get("shop-production").await.expect("main");

    // A version that makes the canary's pods unready: rolled back within the bake time.
    create(
        &changes,
        &proposal("break-it", json!({"healthy": false, "pool": 20})),
    )
    .await;
    projected(&config_maps, "shop-production-canary", |c| c["pool"] == 20).await;
    let (status, message) = failed(&changes, "break-it").await;
    let rollout = status.rollout.expect("a rollout");
    assert_eq!(rollout.step, RolloutStep::RolledBack);
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.expect("Ready").reason, "CanaryFailed");
    assert!(
        message.contains("shop-api-canary is not ready"),
        "{message}"
    );
    let took =
        status.finished_at.expect("finished").0.as_second() - rollout.started_at.0.as_second();
    let bake = i64::try_from(BAKE.as_secs()).expect("seconds");
    assert!(
        took <= bake + 10,
        "rolled back {took}s after the canary started"
    );
    // The canary returns to what is live; the rest never saw version 2.
    projected(&config_maps, "shop-production-canary", |c| c["pool"] == 10).await;
    let live_after = config_maps.get("shop-production").await.expect("main");
    assert_eq!(
        live_after.metadata.resource_version,
        live_before.metadata.resource_version
    );
    let main_after = deployments.get("shop-api").await.expect("main consumer");
    assert_eq!(
        main_after.metadata.generation,
        main_before.metadata.generation
    );
    assert_eq!(main_after.status.and_then(|s| s.ready_replicas), Some(1));

    // A version whose canary stays ready but reports errors: Prometheus's answer rolls
    // it back, before the bake would have ended.
    create(
        &changes,
        &proposal("noisy", json!({"healthy": true, "errors": 7, "pool": 25})),
    )
    .await;
    let (status, message) = failed(&changes, "noisy").await;
    assert!(
        message.contains("metric \"errors\" is 7, above 0"),
        "{message}"
    );
    let rollout = status.rollout.expect("a rollout");
    let took =
        status.finished_at.expect("finished").0.as_second() - rollout.started_at.0.as_second();
    assert!(took < bake, "rolled back {took}s after the canary started");
    projected(&config_maps, "shop-production-canary", |c| c["pool"] == 10).await;
    let live_after = config_maps.get("shop-production").await.expect("main");
    assert_eq!(
        live_after.metadata.resource_version,
        live_before.metadata.resource_version
    );
    // The canary runs what is live again, and Prometheus has let go of the noisy pods'
    // series, before the next version bakes: a pod that is terminating can still be
    // scraped after the operator counts the canary as running the new version.
    settled(&deployments, "shop-api-canary").await;
    let quiet = format!("max(app_errors{{namespace=\"{NAMESPACE}\",app=\"shop-api-canary\"}})");
    eventually("the canary's errors back to 0", WAIT, || async {
        (query_value(&quiet).await? == 0.0).then_some(())
    })
    .await;

    // A healthy version bakes, then goes to every consumer: the main one rolls once.
    create(
        &changes,
        &proposal("grow-pool", json!({"healthy": true, "pool": 30})),
    )
    .await;
    let baking = wait_for(&changes, "grow-pool", "the canary baking", |c| {
        let rollout = c.status.as_ref().and_then(|s| s.rollout.as_ref());
        rollout.is_some_and(|r| r.step == RolloutStep::Canary)
    })
    .await;
    assert_eq!(
        config_maps
            .get("shop-production")
            .await
            .expect("main")
            .metadata
            .resource_version,
        live_before.metadata.resource_version,
        "nothing reaches the main projection while the canary bakes"
    );
    let ended = wait_for(&changes, "grow-pool", "the canary to end", |c| {
        let phase = c.status.as_ref().and_then(|s| s.phase);
        matches!(phase, Some(ChangePhase::Applied | ChangePhase::Failed))
    })
    .await;
    let applied = ended.clone();
    assert_eq!(
        ended.status.as_ref().and_then(|s| s.phase),
        Some(ChangePhase::Applied),
        "{:?}",
        ended.status
    );
    let rollout = applied.status.and_then(|s| s.rollout).expect("a rollout");
    assert_eq!(rollout.step, RolloutStep::Promoted);
    assert_eq!(
        rollout.version,
        baking.status.and_then(|s| s.rollout).expect("r").version
    );
    projected(&config_maps, "shop-production", |c| c["pool"] == 30).await;
    let promoted = settled(&deployments, "shop-api").await;
    let generation = |d: &Deployment| d.metadata.generation.unwrap_or(0);
    assert_eq!(
        generation(&promoted),
        generation(&main_before) + 1,
        "rolled once"
    );
    installed.uninstall();
}
