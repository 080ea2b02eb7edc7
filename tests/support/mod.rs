//! What the integration tests share: the environment hack/env-up.sh started, clients
//! acting as its users, a namespace per test, the operator as a child process, and
//! bounded polling.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod attack;

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};

/// The variables hack/env-up.sh wrote.
pub struct TestEnv {
    vars: HashMap<String, String>,
}

/// The running environment. Fails the test with instructions when there is none.
pub fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        summit_config::install_crypto_provider();
        let path = std::env::var("SUMMIT_ENV_FILE")
            .unwrap_or_else(|_| "/tmp/summit-config/test/env".to_owned());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!(
                "no test environment at {path} ({error}): run `make test`, or `hack/env-up.sh` \
                 and set SUMMIT_ENV_FILE to the path it prints"
            )
        });
        let vars = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        TestEnv { vars }
    })
}

impl TestEnv {
    /// A variable the environment may not have.
    pub fn optional_var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the environment file"))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG"))
    }

    /// A client acting as the admin (system:masters).
    pub async fn admin(&self) -> Client {
        self.client_with(|_| {}).await
    }

    /// A client acting as one of the static-token users: alice, bob, carol, mallory.
    pub async fn client_as(&self, user: &str) -> Client {
        let token = self
            .var(&format!("SUMMIT_TOKEN_{}", user.to_uppercase()))
            .to_owned();
        self.client_with(move |kubeconfig| {
            for auth in &mut kubeconfig.auth_infos {
                if let Some(info) = auth.auth_info.as_mut() {
                    info.token = Some(token.clone().into());
                }
            }
        })
        .await
    }

    /// A kubeconfig file acting as the chart's operator service account, with a token
    /// from the apiserver's TokenRequest API: operators under test hold exactly the RBAC
    /// the chart gives them.
    pub fn operator_kubeconfig(&self) -> PathBuf {
        static PATH: OnceLock<PathBuf> = OnceLock::new();
        PATH.get_or_init(|| {
            let output = self
                .kubectl()
                .args(["create", "token", "summit-config-operator"])
                .args(["--namespace", "summit-system", "--duration", "6h"])
                .output()
                .expect("run kubectl create token");
            assert!(
                output.status.success(),
                "a token for the operator's service account: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            self.kubeconfig_with_token("operator", &token)
        })
        .clone()
    }

    /// A kubeconfig file acting as one of the static-token users, for commands.
    pub fn kubeconfig_as(&self, user: &str) -> PathBuf {
        let token = self.var(&format!("SUMMIT_TOKEN_{}", user.to_uppercase()));
        self.kubeconfig_with_token(user, token)
    }

    fn kubeconfig_with_token(&self, user: &str, token: &str) -> PathBuf {
        let mut kubeconfig = Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        for auth in &mut kubeconfig.auth_infos {
            if let Some(info) = auth.auth_info.as_mut() {
                info.token = Some(token.to_owned().into());
            }
        }
        let path = PathBuf::from(self.var("SUMMIT_ENV_DIR")).join(format!("kubeconfig-{user}"));
        let yaml = serde_yaml_ng::to_string(&kubeconfig).expect("kubeconfig as YAML");
        std::fs::write(&path, yaml).expect("write kubeconfig");
        path
    }

    async fn client_with(&self, edit: impl FnOnce(&mut Kubeconfig)) -> Client {
        let mut kubeconfig = Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        edit(&mut kubeconfig);
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig is usable");
        Client::try_from(config).expect("client")
    }

    /// The real kubectl, pointed at the environment as the admin.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(format!("{}/kubectl", self.var("SUMMIT_TOOLS_BIN")));
        command.env("KUBECONFIG", self.kubeconfig());
        command
    }
}

/// Installs (or updates) the CRDs with server-side apply and waits until they are served.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in summit_config::api::crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.patch(
            &name,
            &PatchParams::apply("summit-config-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|error| panic!("apply CRD {name}: {error}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established within 30s"))
        .expect("watch CRD");
    }
}

/// Binds `user` to one of the chart's ClusterRoles (`summit-config-admin`,
/// `summit-config-approver`, ...) within `ns`.
pub async fn grant(client: &Client, ns: &str, user: &str, role: &str) {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{user}-{role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("role binding");
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|error| panic!("grant {role} to {user} in {ns}: {error}"));
}

/// An admin client, the CRDs installed, and a new namespace for `test`: how a test
/// starts.
pub async fn fresh_namespace(test: &str) -> (Client, String) {
    let client = env().admin().await;
    install_crds(&client).await;
    let ns = namespace(&client, test).await;
    (client, ns)
}

/// Creates a fresh namespace for one test, named after it.
pub async fn namespace(client: &Client, test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{}-{}-{}",
        test.replace('_', "-").chars().take(40).collect::<String>(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|error| panic!("create namespace {name}: {error}"));
    name
}

/// The operator binary running as a child process, watching one namespace; killed on drop.
pub struct Operator {
    child: Child,
}

impl Operator {
    /// Starts the operator for `namespace` with the environment's PostgreSQL and Consul,
    /// logging at debug level to `$SUMMIT_ENV_DIR/operator-<namespace>.log`.
    pub fn start(namespace: &str) -> Self {
        Self::start_with(namespace, &[])
    }

    /// Like [`Operator::start`], with extra command-line arguments.
    pub fn start_with(namespace: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--namespace", namespace, "--secret-namespaces", namespace];
        args.extend_from_slice(extra);
        Self::spawn(namespace, &[namespace], &args)
    }

    /// An operator for the whole cluster (its arguments choose what it reconciles, e.g.
    /// a label selector), managing Secrets in `namespaces`, logging to
    /// `$SUMMIT_ENV_DIR/operator-<name>.log`.
    pub fn start_cluster(name: &str, namespaces: &[&str], args: &[&str]) -> Self {
        Self::spawn(name, namespaces, args)
    }

    fn spawn(name: &str, secret_namespaces: &[&str], args: &[&str]) -> Self {
        let log_path =
            PathBuf::from(env().var("SUMMIT_ENV_DIR")).join(format!("operator-{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the operator log");
        // As a cluster admin lists the namespaces in the chart's operator.secretNamespaces.
        for namespace in secret_namespaces {
            let granted = env()
                .kubectl()
                .args(["create", "rolebinding", "summit-config-operator-secrets"])
                .args(["--clusterrole", "summit-config-operator-secrets"])
                .args(["--serviceaccount", "summit-system:summit-config-operator"])
                .args(["--namespace", namespace])
                .output()
                .expect("run kubectl create rolebinding");
            let stderr = String::from_utf8_lossy(&granted.stderr);
            assert!(
                granted.status.success() || stderr.contains("already exists"),
                "grant the operator Secrets in {namespace}: {stderr}"
            );
        }
        let child = Command::new(env!("CARGO_BIN_EXE_summit-config"))
            .arg("operator")
            .args(
                (!args.contains(&"--http-addr"))
                    .then_some(["--http-addr", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .arg("--kubeconfig")
            .arg(env().operator_kubeconfig())
            .args(["--database-url", env().var("DATABASE_URL")])
            .args(["--consul-addr", env().var("CONSUL_HTTP_ADDR")])
            .args(["--restart-interval-seconds", "1"])
            .args(["--aws-secret-prefix", "tests/{namespace}/"])
            .args(args)
            .env(
                "RUST_LOG",
                "info,summit_config=debug,aws_config=debug,aws_smithy_runtime=debug",
            )
            .envs(
                [
                    "AWS_ENDPOINT_URL",
                    "AWS_REGION",
                    "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY",
                ]
                .map(|name| (name, env().var(name))),
            )
            .envs(
                env()
                    .optional_var("CONSUL_HTTP_TOKEN_FILE")
                    .map(|file| ("CONSUL_HTTP_TOKEN_FILE", file)),
            )
            .envs(
                env()
                    .optional_var("CONSUL_CACERT")
                    .map(|file| ("CONSUL_CACERT", file)),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start the operator");
        eprintln!("operator {name} logs to {}", log_path.display());
        Self { child }
    }
}

impl Operator {
    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the operator with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops (SIGKILL), starts, pauses (SIGSTOP) or resumes one service of the
/// environment: `postgres`, `consul`, `moto`, ...
pub fn env_ctl(action: &str, service: &str) {
    let dir = PathBuf::from(env().var("SUMMIT_ENV_DIR"));
    let root = dir.parent().expect("environment root");
    let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/env-ctl.sh"))
        .args([env().var("SUMMIT_ENV_NAME"), action, service])
        .env("SUMMIT_ENV_ROOT", root)
        .status()
        .expect("run hack/env-ctl.sh");
    assert!(status.success(), "env-ctl.sh {action} {service} failed");
}

/// A service stopped by a fault test; started again when the guard is dropped, so a
/// failing test never leaves the environment broken for the tests after it.
pub struct Stopped {
    service: &'static str,
    running: bool,
}

/// Stops `service` (SIGKILL) until [`Stopped::start`] or the end of the scope.
pub fn stop(service: &'static str) -> Stopped {
    env_ctl("stop", service);
    Stopped {
        service,
        running: false,
    }
}

impl Stopped {
    pub fn start(mut self) {
        env_ctl("start", self.service);
        self.running = true;
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.running {
            env_ctl("start", self.service);
        }
    }
}

/// A service paused (SIGSTOP) by a fault test: it hangs and keeps its state, as an
/// overloaded or partitioned service does. Resumed when the guard is dropped.
pub struct Paused {
    service: &'static str,
    running: bool,
}

pub fn pause(service: &'static str) -> Paused {
    env_ctl("pause", service);
    Paused {
        service,
        running: false,
    }
}

impl Paused {
    pub fn resume(mut self) {
        env_ctl("resume", self.service);
        self.running = true;
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.running {
            env_ctl("resume", self.service);
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection pool to the environment's PostgreSQL.
pub async fn postgres() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(env().var("DATABASE_URL"))
        .await
        .expect("connect to PostgreSQL")
}

/// A request to the environment's Consul, with its ACL token.
pub fn consul_request(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match env().optional_var("CONSUL_HTTP_TOKEN_FILE") {
        Some(file) => {
            let token = std::fs::read_to_string(file).expect("read the Consul token");
            request.header("X-Consul-Token", token.trim())
        }
        None => request,
    }
}

/// A client for the environment's Consul, trusting its CA.
pub fn consul_client() -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(file) = env().optional_var("CONSUL_CACERT") {
        let pem = std::fs::read(file).expect("read the Consul CA");
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM"));
    }
    builder.build().expect("a Consul client")
}

/// A Consul KV key's value (decoded) and modify index, read consistently.
pub async fn consul_get(key: &str) -> Option<(serde_json::Value, u64)> {
    use base64::Engine;
    let url = format!("{}/v1/kv/{key}?consistent", env().var("CONSUL_HTTP_ADDR"));
    let response = consul_request(consul_client().get(&url))
        .send()
        .await
        .expect("reach Consul");
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    let entries: Vec<serde_json::Value> = response.json().await.expect("Consul JSON");
    let entry = entries.into_iter().next()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(entry["Value"].as_str()?)
        .expect("base64");
    Some((
        serde_json::from_slice(&raw).expect("JSON value"),
        entry["ModifyIndex"].as_u64()?,
    ))
}

/// The sum of every sample whose line starts with `series` (a metric name, optionally
/// with some of its labels), scraped from the operator's /metrics on `port`.
pub async fn metric(port: u16, series: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The operator's own count of its apiserver writes, scraped from /metrics on `port`.
pub async fn operator_writes(port: u16) -> f64 {
    metric(port, "summit_config_apiserver_writes_total").await
}

/// A free local port for an operator's HTTP endpoints.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `probe` until it returns `Some`, for at most `limit`; panics with `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client of moto's Secrets Manager, as the operator reaches it.
pub async fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(env().var("AWS_ENDPOINT_URL"))
        .region(aws_config::Region::new(env().var("AWS_REGION").to_owned()))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            env().var("AWS_ACCESS_KEY_ID"),
            env().var("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "tests",
        ))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
}

/// Creates a secret in moto, as someone would before the operator adopts or reads it.
pub async fn create_aws_secret(aws: &aws_sdk_secretsmanager::Client, id: &str, value: &str) {
    aws.create_secret()
        .name(id)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {id} in moto: {e:?}"));
}
