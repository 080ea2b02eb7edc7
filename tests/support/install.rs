//! The chart installed as users install it, for the end-to-end tests: the namespace,
//! Secrets and values a platform team prepares, `helm install` of the image built
//! here, one release at a time, and who leads it.

use std::process::Command;

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{Api, api::ListParams};
use tokio::sync::{Mutex, MutexGuard};

use super::{WAIT, env, eventually, run_ok};

/// The release's name and namespace, and the namespace of the examples.
pub const RELEASE: &str = "summit-config";
pub const SYSTEM: &str = "summit-system";
pub const DEMO: &str = "summit-demo";

pub fn helm() -> Command {
    let mut command = Command::new(format!("{}/helm", env().var("SUMMIT_TOOLS_BIN")));
    command.env("KUBECONFIG", env().kubeconfig());
    command
}

pub fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// One release at a time: the chart's cluster-wide objects have one name each.
pub static RELEASE_TURN: Mutex<()> = Mutex::const_new(());

/// The release, installed; uninstalled on [`Installed::uninstall`], or when dropped
/// by a test that failed, so that the next test can install it again.
pub struct Installed {
    _turn: MutexGuard<'static, ()>,
    uninstalled: bool,
}

impl Installed {
    /// Waits for the release's turn, then installs it as a user would, and waits until
    /// its pods are ready.
    pub async fn install() -> Self {
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
    pub fn uninstall(mut self) {
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
pub async fn operator_pods(pods: &Api<Pod>) -> Vec<String> {
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
pub async fn leader(admin: &kube::Client, pods: &[String]) -> (String, String) {
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
pub fn create_once(args: &[&str]) {
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
pub async fn apply_when_served(path: &str) {
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
pub fn prepare_cluster() {
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
pub fn values() -> String {
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
        "prometheus": {"url": env().var("PROMETHEUS_URL")},
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
