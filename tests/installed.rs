//! The operator as users install it: the image built here, the chart installed whole
//! with `helm install` onto a real node (kubelet, containerd, kube-proxy, controller
//! manager and scheduler), talking to PostgreSQL, Consul and moto from its pods.
//! Needs an environment with a node and the image loaded (`hack/test.sh` makes both):
//! run with `--features e2e`.

mod support;

use std::{process::Command, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Pod, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, api::ListParams};
use summit_config::api::v1alpha1::{ConfigEntry, EnvironmentPhase, SecretRotationPolicy};
use support::{
    WAIT, env, environment, eventually, grant, postgres, proposal_waiting, run_ok,
    template_annotations, wait_for,
};
use tokio::sync::{Mutex, MutexGuard};

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

/// One release at a time: the chart's cluster-wide objects have one name each.
static RELEASE_TURN: Mutex<()> = Mutex::const_new(());

/// The release, installed; uninstalled on [`Installed::uninstall`], or when dropped
/// by a test that failed, so that the next test can install it again.
struct Installed {
    _turn: MutexGuard<'static, ()>,
    uninstalled: bool,
}

impl Installed {
    /// Waits for the release's turn, then installs it as a user would, and waits until
    /// its pods are ready.
    async fn install() -> Self {
        let turn = RELEASE_TURN.lock().await;
        prepare_cluster();
        let values = values();
        let chart = repo("charts/summit-config");
        run_ok(
            helm()
                .args(["install", RELEASE, &chart, "--namespace", SYSTEM])
                .args(["--values", &values, "--wait", "--timeout", "3m"]),
        );
        Self {
            _turn: turn,
            uninstalled: false,
        }
    }

    /// `helm uninstall`, waiting until the operator's pods are gone.
    fn uninstall(mut self) {
        run_ok(helm().args(["uninstall", RELEASE, "--namespace", SYSTEM, "--wait"]));
        self.uninstalled = true;
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ = helm()
                .args(["uninstall", RELEASE, "--namespace", SYSTEM, "--wait"])
                .output();
        }
    }
}

/// The release's operator pods, by name.
async fn operator_pods(pods: &Api<Pod>) -> Vec<String> {
    let operators = ListParams::default().labels("app.kubernetes.io/name=summit-config");
    let running = pods.list(&operators).await.expect("pods");
    running
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// Waits until one of `pods` holds the leader lease (a lease left by an earlier
/// release expires first), and returns (pod, process).
async fn leader(admin: &kube::Client, pods: &[String]) -> (String, String) {
    let leases: Api<Lease> = Api::namespaced(admin.clone(), SYSTEM);
    let what = format!("one of {pods:?} to lead");
    eventually(&what, WAIT, || async {
        let lease = leases.get_opt("summit-config-operator").await.ok()??;
        let holder = lease.spec?.holder_identity?;
        let (pod, process) = holder.split_once('_')?;
        pods.iter()
            .any(|p| p == pod)
            .then(|| (pod.to_owned(), process.to_owned()))
    })
    .await
}

/// `kubectl create`, content if the object already exists (an earlier test made it).
fn create_once(args: &[&str]) {
    let output = env()
        .kubectl()
        .arg("create")
        .args(args)
        .output()
        .expect("kubectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success()
            || stderr.contains("AlreadyExists")
            || stderr.contains("already exists"),
        "kubectl create {args:?}: {stderr}"
    );
}

/// `kubectl apply --server-side -f path`, retried until the apiserver takes it: a CRD
/// the release just installed or changed is served, and known to the admission
/// policies, a moment after helm is done.
async fn apply_when_served(path: &str) {
    let what = format!("the apiserver to take {path}");
    eventually(&what, WAIT, || async {
        let command = env()
            .kubectl()
            .args(["apply", "--server-side", "-f", path])
            .output();
        command.ok()?.status.success().then_some(())
    })
    .await;
}

/// What a platform team creates before installing: the namespace, the Secrets and the
/// ConfigMap the chart's values name, all pointing at the environment's backends.
fn prepare_cluster() {
    let kubectl = || env().kubectl();
    create_once(&["namespace", SYSTEM]);
    let secret = |name: &str, pairs: &[(&str, &str)]| {
        let mut args = vec!["-n", SYSTEM, "secret", "generic", name];
        let literals: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("--from-literal={k}={v}"))
            .collect();
        args.extend(literals.iter().map(String::as_str));
        create_once(&args);
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
    let ca = format!("--from-file=ca.crt={}", env().var("CONSUL_CACERT"));
    create_once(&["-n", SYSTEM, "configmap", "summit-consul-ca", &ca]);
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
            let settled = d.status.as_ref().is_some_and(|s| {
                s.observed_generation == d.metadata.generation && s.ready_replicas == Some(1)
            });
            rolled_for(d) != before && settled
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
    text.lines()
        .filter(|line| line.starts_with("summit_config_apiserver_writes_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How many entries the failover test creates at once.
const BURST: usize = 200;

/// Asserts that `sql`, which counts rows per config id, counts one for each entry of
/// the burst: none missing, none twice.
async fn once_per_entry(sql: &str, what: &str) {
    let counts: Vec<(String, i64)> = sqlx::query_as(sql)
        .fetch_all(&postgres().await)
        .await
        .expect("count");
    assert_eq!(counts.len(), BURST, "not every entry {what}");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| *n != 1).collect();
    assert!(twice.is_empty(), "{what} more than once: {twice:?}");
}

/// The container of `pod`'s operator, as the node's containerd names it.
async fn container_of(pods: &Api<Pod>, pod: &str) -> String {
    let pod = pods.get(pod).await.expect("the leader's pod");
    let statuses = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default();
    let id = statuses
        .first()
        .and_then(|c| c.container_id.clone())
        .expect("a container");
    id.trim_start_matches("containerd://").to_owned()
}

#[tokio::test]
async fn a_leader_killed_mid_burst_is_replaced_and_no_change_is_lost_or_recorded_twice() {
    let installed = Installed::install().await;
    let admin = env().admin().await;
    let namespace = "burst";
    create_once(&["namespace", namespace]);
    let entries: Api<ConfigEntry> = Api::namespaced(admin.clone(), namespace);
    for i in 0..BURST {
        let spec = serde_json::json!({
            "configId": format!("{namespace}/entry-{i}"),
            "data": {"i": i},
            "environments": [{"name": "development"}],
        });
        support::create(&entries, &support::entry(&format!("entry-{i}"), spec)).await;
    }
    let recorded = |list: &[ConfigEntry]| {
        let done = |e: &&ConfigEntry| e.status.as_ref().and_then(|s| s.latest_version).is_some();
        list.iter().filter(done).count()
    };
    eventually("a quarter of the burst recorded", WAIT, || async {
        let list = entries.list(&ListParams::default()).await.ok()?;
        (recorded(&list.items) >= BURST / 4).then_some(())
    })
    .await;

    // kill -9 of the leader's process, on the node, as a crash would.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), SYSTEM);
    let (pod, process) = leader(&admin, &operator_pods(&pods).await).await;
    let container = container_of(&pods, &pod).await;
    let killed = std::time::Instant::now();
    run_ok(
        Command::new("ctr")
            .args(["--address", env().var("SUMMIT_NODE_CONTAINERD")])
            .args([
                "-n", "k8s.io", "tasks", "kill", "--signal", "SIGKILL", &container,
            ]),
    );
    let lease = Duration::from_secs(15);
    let successor = eventually(
        "another process leads",
        lease + Duration::from_secs(5),
        || async {
            let leases: Api<Lease> = Api::namespaced(admin.clone(), SYSTEM);
            let holder = leases
                .get_opt("summit-config-operator")
                .await
                .ok()??
                .spec?
                .holder_identity?;
            (!holder.is_empty() && !holder.ends_with(&process)).then_some(holder)
        },
    )
    .await;
    eprintln!("{successor} leads {:?} after the kill", killed.elapsed());

    // Every entry ends live at version 1, each recorded and applied exactly once.
    eventually("the whole burst live", Duration::from_secs(120), || async {
        let list = entries.list(&ListParams::default()).await.ok()?;
        let live = list.items.iter().filter(|e| {
            environment(e, "development") == (Some(EnvironmentPhase::Applied), Some(1))
        });
        (live.count() == BURST).then_some(())
    })
    .await;
    let versions = "SELECT config_id, count(*) FROM config_versions
         WHERE config_id LIKE 'burst/%' GROUP BY config_id";
    once_per_entry(versions, "recorded").await;
    let applications = "SELECT config_id, count(*) FROM config_audit
         WHERE config_id LIKE 'burst/%' AND changes ->> 'event' = 'applied' GROUP BY config_id";
    once_per_entry(applications, "applied").await;
    installed.uninstall();
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

/// A Deployment whose pods become ready only once a test says so (`touch /tmp/ready`
/// in them), mounting Secret `secret`.
fn held_consumer(name: &str, secret: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
                    "containers": [{
                        "name": "app",
                        "image": "docker.io/library/busybox:1.36",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "2147483647"],
                        "readinessProbe": {
                            "exec": {"command": ["test", "-f", "/tmp/ready"]},
                            "periodSeconds": 1,
                        },
                        "volumeMounts": [{"name": "token", "mountPath": "/etc/token", "readOnly": true}],
                    }],
                    "volumes": [{"name": "token", "secret": {"secretName": secret, "optional": true}}],
                },
            },
        },
    }))
    .expect("a Deployment")
}

/// Makes every pod of `app` that is not ready yet ready; returns how many it made so.
async fn make_ready(pods: &Api<Pod>, app: &str) -> usize {
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("pods");
    let waiting = list.items.into_iter().filter(|pod| {
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        running && !ready
    });
    let mut made = 0;
    for pod in waiting {
        let name = pod.metadata.name.expect("a name");
        let touched = env()
            .kubectl()
            .args(["-n", DEMO, "exec", &name, "--", "touch", "/tmp/ready"])
            .output()
            .expect("kubectl exec");
        made += usize::from(touched.status.success());
    }
    made
}

#[tokio::test]
async fn a_rotated_secret_keeps_its_previous_value_until_the_consumers_new_pods_are_ready() {
    let installed = Installed::install().await;
    let admin = env().admin().await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), DEMO);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), DEMO);
    support::create(&deployments, &held_consumer("token-consumer", "token")).await;
    eventually("the first consumer pod ready", WAIT, || async {
        make_ready(&pods, "token-consumer").await;
        let d = deployments.get("token-consumer").await.ok()?;
        (d.status?.ready_replicas == Some(1)).then_some(())
    })
    .await;

    let policies: Api<SecretRotationPolicy> = Api::namespaced(admin.clone(), DEMO);
    let spec = serde_json::json!({
        "provider": "InCluster",
        "secretId": "token",
        "rotationInterval": "1d",
        "gracePeriod": "1s",
        "minimumInterval": "1s",
        "target": {"name": "token", "key": "token", "previousKey": "token-previous"},
        "restartTargets": [{"kind": "Deployment", "name": "token-consumer"}],
    });
    support::create(&policies, &support::policy("token", spec)).await;
    support::policy_where(&policies, "token", |p| p.current_version.is_some()).await;
    // Whatever the first projection rolled, it finishes first.
    eventually("the consumer settled", WAIT, || async {
        make_ready(&pods, "token-consumer").await;
        let d = deployments.get("token-consumer").await.ok()?;
        let s = d.status?;
        (s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(1)
            && s.ready_replicas == Some(1)
            && s.replicas == Some(1))
        .then_some(())
    })
    .await;

    // A rotation: the new value and the previous one side by side, and a rollout whose
    // new pod is not ready.
    support::annotate(&policies, "token", "config.summit.io/rotate", "now").await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), DEMO);
    support::secret_where(&secrets, "token", |d| d.contains_key("token-previous")).await;
    support::policy_where(&policies, "token", |p| {
        p.consumers_total == Some(1)
            && p.previous_retires_at
                .as_ref()
                .is_some_and(|at| at.0 < k8s_openapi::jiff::Timestamp::now())
    })
    .await;
    support::sleep_through_window().await;
    let held = support::secret_where(&secrets, "token", |_| true).await;
    assert!(
        held.contains_key("token-previous"),
        "retired while the new pod was not ready"
    );
    let rolling = deployments.get("token-consumer").await.expect("consumer");
    let status = rolling.status.expect("a status");
    assert_eq!(
        (status.replicas, status.ready_replicas),
        (Some(2), Some(1)),
        "the old pod serves while the new one is not ready"
    );

    // The new pod becomes ready, the rollout completes: the previous value goes.
    eventually("the previous value retired", WAIT, || async {
        make_ready(&pods, "token-consumer").await;
        let data = support::secret_where(&secrets, "token", |_| true).await;
        (!data.contains_key("token-previous")).then_some(())
    })
    .await;
    installed.uninstall();
}
