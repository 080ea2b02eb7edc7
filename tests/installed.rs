//! The operator as users install it: the image built here, the chart installed whole
//! with `helm install` onto a real node (kubelet, containerd, kube-proxy, controller
//! manager and scheduler), talking to PostgreSQL, Consul and moto from its pods; the
//! walkthrough converging, `helm upgrade` and `helm uninstall`. Needs an environment
//! with a node and the image loaded (`hack/e2e.sh` makes both): run with
//! `--features e2e`.

mod support;

use std::{process::Command, time::Duration};

use k8s_openapi::{
    api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::Api;
use summit_config::api::v1alpha1::{ConfigEntry, EnvironmentPhase};
use support::{
    env, environment, grant, install::*, postgres, proposal_waiting, run_ok, template_annotations,
    wait_for,
};

/// Waits until `payments-database`'s `environment` runs `version`.
async fn live(entries: &Api<ConfigEntry>, environment_name: &str, version: i64) -> ConfigEntry {
    let what = format!("payments-database v{version} live in {environment_name}");
    wait_for(entries, "payments-database", &what, |e| {
        environment(e, environment_name) == (Some(EnvironmentPhase::Applied), Some(version))
    })
    .await
}

#[tokio::test]
async fn the_chart_installs_onto_the_node_and_the_walkthrough_converges() {
    let installed = Installed::install().await;
    let admin = env().admin().await;

    // Two replicas run, ready; one holds the lease.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), SYSTEM);
    let names = operator_pods(&pods).await;
    assert_eq!(names.len(), 2, "two operator pods: {names:?}");
    leader(&admin, &names).await;

    // The walkthrough: every example applied as a user would, and it converges.
    apply_when_served(&repo("examples/")).await;
    let entries: Api<ConfigEntry> = Api::namespaced(admin.clone(), DEMO);
    live(&entries, "development", 1).await;
    live(&entries, "staging", 1).await;

    // Production needs two approvers; once they approve, its consumer rolls, and
    // status follows the real rollout.
    let proposal = proposal_waiting(&entries, "payments-database", "production", 1).await;
    for approver in ["bob", "carol"] {
        grant(&admin, DEMO, approver, "summit-config-approver").await;
        let client = env().client_as(approver).await;
        let changes = Api::namespaced(client, DEMO);
        support::approve(&changes, &proposal, approver, &["summit:approvers"])
            .await
            .unwrap_or_else(|error| panic!("{approver} approves: {error}"));
    }
    live(&entries, "production", 1).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), DEMO);
    wait_for(&deployments, "payments-api", "payments-api rolled", |d| {
        template_annotations(d).contains_key("checksum.config.summit.io/payments-database")
            && d.status
                .as_ref()
                .is_some_and(|s| s.ready_replicas == Some(1) && s.updated_replicas == Some(1))
    })
    .await;
    wait_for(&entries, "payments-database", "consumers ready", |e| {
        e.status.as_ref().is_some_and(|s| {
            s.environments.iter().any(|env| {
                env.name == "production"
                    && env.consumers_total == Some(1)
                    && env.consumers_ready == Some(1)
            })
        })
    })
    .await;

    // A spec edit that changes no content rolls nothing; an approved change rolls the
    // consumer exactly once.
    let rolled = deployments.get("payments-api").await.expect("payments-api");
    let generation = rolled.metadata.generation;
    let description = serde_json::json!({"spec": {"description": "pool and timeouts"}});
    support::merge(&entries, "payments-database", description).await;
    support::sleep_through_window().await;
    let after = deployments.get("payments-api").await.expect("payments-api");
    assert_eq!(
        after.metadata.generation, generation,
        "a no-op edit rolled payments-api"
    );
    for approver in ["bob", "carol"] {
        let changes = Api::namespaced(env().client_as(approver).await, DEMO);
        support::approve(
            &changes,
            "payments-database-longer-timeout",
            approver,
            &["summit:approvers"],
        )
        .await
        .unwrap_or_else(|error| panic!("{approver} approves the longer timeout: {error}"));
    }
    live(&entries, "production", 2).await;
    let once = generation.map(|g| g + 1);
    let rolled_for = |d: &Deployment| {
        let annotations = template_annotations(d);
        annotations
            .get("checksum.config.summit.io/payments-database")
            .cloned()
    };
    let before = rolled_for(&after);
    wait_for(
        &deployments,
        "payments-api",
        "a rollout of the longer timeout",
        |d| {
            // Finished as `kubectl rollout status` judges it: the old pod gone too.
            let settled = d.status.as_ref().is_some_and(|s| {
                s.observed_generation == d.metadata.generation
                    && s.replicas == Some(1)
                    && s.updated_replicas == Some(1)
                    && s.available_replicas == Some(1)
            });
            rolled_for(d) != before && settled
        },
    )
    .await;
    // The rollout's end shows in status before the operator may rest.
    wait_for(
        &entries,
        "payments-database",
        "consumers ready on v2",
        |e| {
            e.status.as_ref().is_some_and(|s| {
                s.environments.iter().any(|env| {
                    env.name == "production"
                        && env.version == Some(2)
                        && env.consumers_ready == Some(1)
                })
            })
        },
    )
    .await;
    support::sleep_through_window().await;
    let settled = deployments.get("payments-api").await.expect("payments-api");
    let template = &settled.spec.template.metadata;
    assert_eq!(
        settled.metadata.generation, once,
        "rolled other than once: {template:?}"
    );

    // At rest, the leader writes nothing to the apiserver but its lease renewals.
    let (leader_pod, _) = leader(&admin, &operator_pods(&pods).await).await;
    let writes = || leader_writes(&leader_pod);
    let leases: Api<Lease> = Api::namespaced(admin.clone(), SYSTEM);
    let renewed = || async {
        let lease = leases.get("summit-config-operator").await.expect("lease");
        lease.spec.and_then(|s| s.renew_time).map(|t| t.0)
    };
    let (writes_before, renewed_before) = (writes(), renewed().await);
    tokio::time::sleep(IDLE).await;
    let (writes_after, renewed_after) = (writes(), renewed().await);
    assert_eq!(writes_after, writes_before, "the operator wrote at rest");
    assert_ne!(renewed_after, renewed_before, "the lease was not renewed");
    eprintln!(
        "at rest for {IDLE:?}: no reconciler writes; the lease renewed up to {renewed_after:?}"
    );

    // helm uninstall takes the operator away, never the history.
    installed.uninstall();
    let versions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM config_versions WHERE config_id = $1")
            .bind("summit-demo/payments/database")
            .fetch_one(&postgres().await)
            .await
            .expect("count versions");
    assert!(versions >= 1, "the history went with the release");
}

/// How long the walkthrough watches the operator at rest: a few lease renewals. Not a
/// wait: nothing ends it early.
const IDLE: Duration = Duration::from_secs(10);

/// The reconcilers' writes to the apiserver, as `pod`'s /metrics counts them, read
/// through the apiserver's proxy to the pod.
fn leader_writes(pod: &str) -> f64 {
    let path = format!("/api/v1/namespaces/{SYSTEM}/pods/{pod}:8080/proxy/metrics");
    let text = run_ok(env().kubectl().args(["get", "--raw", &path]));
    support::series_sum(&text, "summit_config_apiserver_writes_total")
}

/// A copy of the chart whose ConfigEntry CRD has one more field, `spec.upgradeProbe`,
/// as the next release of the chart would bring one.
fn chart_with_a_new_field() -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("a temporary directory");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(repo("charts/summit-config/."))
            .arg(copy.path()),
    );
    let crd = copy
        .path()
        .join("files/crds/configentries.config.summit.io.yaml");
    let text = std::fs::read_to_string(&crd).expect("the CRD");
    let mut crd_doc: serde_json::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let spec = &mut crd_doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    spec["upgradeProbe"] =
        serde_json::json!({"type": "string", "description": "new in the next chart"});
    std::fs::write(&crd, serde_yaml_ng::to_string(&crd_doc).expect("YAML")).expect("write");
    copy
}

#[tokio::test]
async fn helm_upgrade_brings_new_crd_fields_and_uninstall_keeps_the_crds() {
    let installed = Installed::install().await;
    let next = chart_with_a_new_field();
    let values = values();
    let chart = next.path().display().to_string();
    run_ok(
        helm()
            .args(["upgrade", RELEASE, &chart, "--namespace", SYSTEM])
            .args(["--values", &values, "--wait", "--timeout", "3m"]),
    );
    let admin = env().admin().await;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let crd = crds
        .get("configentries.config.summit.io")
        .await
        .expect("the CRD");
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
    let properties = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert!(
        properties.get("upgradeProbe").is_some(),
        "the upgrade left the schema behind"
    );

    // The apiserver keeps the new field rather than pruning it.
    create_once(&["namespace", "upgraded"]);
    let entry = serde_json::json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "probe", "namespace": "upgraded"},
        "spec": {
            "configId": "upgraded/probe",
            "data": {"pool": 1},
            "environments": [{"name": "development"}],
            "upgradeProbe": "kept",
        },
    });
    let file = env().dir().join("upgraded-entry.json");
    std::fs::write(&file, entry.to_string()).expect("write");
    apply_when_served(&file.display().to_string()).await;
    let kept = run_ok(env().kubectl().args([
        "-n",
        "upgraded",
        "get",
        "configentry",
        "probe",
        "-o",
        "jsonpath={.spec.upgradeProbe}",
    ]));
    assert_eq!(kept.trim(), "kept");

    // helm uninstall leaves the CRDs, and with them every object and its history.
    installed.uninstall();
    assert!(
        crds.get_opt("configentries.config.summit.io")
            .await
            .expect("read")
            .is_some()
    );
    let entries: Api<ConfigEntry> = Api::namespaced(admin, "upgraded");
    assert!(
        entries.get_opt("probe").await.expect("read").is_some(),
        "the entry went"
    );
}
