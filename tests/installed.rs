//! The operator as users install it: the image built here, the chart installed whole
//! with `helm install` onto a real node (kubelet, containerd, kube-proxy, controller
//! manager and scheduler), talking to PostgreSQL, Consul and moto from its pods.
//! Needs an environment with a node and the image loaded (`hack/test.sh` makes both):
//! run with `--features e2e`.

mod support;

use std::process::Command;

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Pod};
use kube::{Api, api::ListParams};
use summit_config::api::v1alpha1::{ConfigEntry, EnvironmentPhase};
use support::{
    WAIT, env, environment, eventually, grant, postgres, proposal_waiting, run_ok, wait_for,
};

const RELEASE: &str = "summit-config";
const SYSTEM: &str = "summit-system";
const DEMO: &str = "summit-demo";

fn helm() -> Command {
    let mut command = Command::new(format!("{}/helm", env().var("SUMMIT_TOOLS_BIN")));
    command.env("KUBECONFIG", env().kubeconfig());
    command
}

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// What a platform team creates before installing: the namespace, the Secrets and the
/// ConfigMap the chart's values name, all pointing at the environment's backends.
fn prepare_cluster() {
    let kubectl = || env().kubectl();
    run_ok(kubectl().args(["create", "namespace", SYSTEM]));
    let secret = |name: &str, pairs: &[(&str, &str)]| {
        let mut command = kubectl();
        command.args(["-n", SYSTEM, "create", "secret", "generic", name]);
        for (key, value) in pairs {
            command.arg(format!("--from-literal={key}={value}"));
        }
        run_ok(&mut command);
    };
    secret("summit-postgres", &[("url", env().var("DATABASE_URL"))]);
    let token = std::fs::read_to_string(env().var("CONSUL_HTTP_TOKEN_FILE")).expect("token");
    secret("summit-consul", &[("token", token.trim())]);
    secret(
        "summit-aws",
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    run_ok(
        kubectl()
            .args(["-n", SYSTEM, "create", "configmap", "summit-consul-ca"])
            .arg(format!("--from-file=ca.crt={}", env().var("CONSUL_CACERT"))),
    );
    // The examples' namespace, where the operator is granted Secrets.
    run_ok(kubectl().args(["apply", "-f", &repo("examples/00-namespace.yaml")]));
}

/// The chart's values for this cluster: the image built here, and the backends.
fn values() -> String {
    let aws = env().var("AWS_ENDPOINT_URL");
    let values = serde_json::json!({
        "operator": {
            "image": {"repository": "localhost/summit-config/summit-config", "tag": "dev", "pullPolicy": "Never"},
            "secretNamespaces": [DEMO],
            "restartIntervalSeconds": 1,
            "extraEnv": [
                {"name": "AWS_REGION", "value": "us-east-1"},
                {"name": "AWS_ENDPOINT_URL", "value": aws},
                {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "summit-aws", "key": "AWS_ACCESS_KEY_ID"}}},
                {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "summit-aws", "key": "AWS_SECRET_ACCESS_KEY"}}},
            ],
        },
        "postgres": {"urlSecret": {"name": "summit-postgres", "key": "url"}},
        "consul": {
            "address": env().var("CONSUL_HTTP_ADDR"),
            "tokenSecret": {"name": "summit-consul", "key": "token"},
            "caConfigMap": {"name": "summit-consul-ca", "key": "ca.crt"},
        },
    });
    let path = env().dir().join("installed-values.json");
    std::fs::write(&path, values.to_string()).expect("write values");
    path.display().to_string()
}

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
    prepare_cluster();
    let values = values();
    run_ok(
        helm()
            .args(["install", RELEASE, &repo("charts/summit-config")])
            .args([
                "--namespace",
                SYSTEM,
                "--values",
                &values,
                "--wait",
                "--timeout",
                "3m",
            ]),
    );
    let admin = env().admin().await;

    // Two replicas run, ready; one holds the lease.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), SYSTEM);
    let operators = ListParams::default().labels("app.kubernetes.io/name=summit-config");
    let running = pods.list(&operators).await.expect("pods");
    assert_eq!(running.items.len(), 2, "two operator pods");
    let names: Vec<String> = running
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let leases: Api<Lease> = Api::namespaced(admin.clone(), SYSTEM);
    let holder = eventually("a leader", WAIT, || async {
        let lease = leases.get_opt("summit-config-operator").await.ok()??;
        lease.spec?.holder_identity
    })
    .await;
    assert!(
        names.contains(&holder),
        "{holder} leads, not one of {names:?}"
    );

    // The walkthrough: every example applied as a user would, and it converges.
    run_ok(
        env()
            .kubectl()
            .args(["apply", "--server-side", "-f", &repo("examples/")]),
    );
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
    let entry = live(&entries, "production", 1).await;
    let production = entry.status.as_ref().and_then(|s| {
        s.environments
            .iter()
            .find(|e| e.name == "production")
            .cloned()
    });
    assert!(production.is_some(), "{entry:?}");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), DEMO);
    wait_for(&deployments, "payments-api", "payments-api rolled", |d| {
        let annotations = d
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        annotations.contains_key("checksum.config.summit.io/payments-database")
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

    // helm uninstall takes the operator away, never the history.
    run_ok(helm().args(["uninstall", RELEASE, "--namespace", SYSTEM, "--wait"]));
    let versions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM config_versions WHERE config_id = $1")
            .bind("summit-demo/payments/database")
            .fetch_one(&postgres().await)
            .await
            .expect("count versions");
    assert!(versions >= 1, "the history went with the release");
}
