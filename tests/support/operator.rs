//! The operator binary, run as a child process against the environment.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use super::{env, free_port};

/// Where the operator started as `name` logs.
pub fn operator_log(name: &str) -> PathBuf {
    env().dir().join(format!("operator-{name}.log"))
}

/// Where the operator keeps its record.
enum Ledger {
    /// The environment's PostgreSQL, mirrored to its Consul.
    Postgres,
    /// The cluster itself (the caller names the namespace).
    Cluster,
}

/// The operator binary running as a child process, watching one namespace; killed on drop.
pub struct Operator {
    child: Child,
    port: u16,
}

impl Operator {
    /// Starts the operator for `namespace` with the environment's PostgreSQL and Consul,
    /// logging at debug level to [`operator_log`]`(namespace)`, serving its metrics on
    /// [`Operator::port`].
    pub fn start(namespace: &str) -> Self {
        Self::start_with(namespace, &[])
    }

    /// Like [`Operator::start`], with extra command-line arguments.
    pub fn start_with(namespace: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--namespace", namespace, "--secret-namespaces", namespace];
        args.extend_from_slice(extra);
        Self::spawn(namespace, &[namespace], &args, Ledger::Postgres)
    }

    /// Like [`Operator::start`], with no PostgreSQL and no Consul: the record is kept
    /// in the cluster, in the chart's namespace, as an installation with no database
    /// keeps it.
    pub fn start_without_database(namespace: &str) -> Self {
        let args = [
            "--namespace",
            namespace,
            "--secret-namespaces",
            namespace,
            "--ledger-namespace",
            "summit-system",
        ];
        Self::spawn(namespace, &[namespace], &args, Ledger::Cluster)
    }

    /// An operator for the whole cluster (its arguments choose what it reconciles, e.g.
    /// a label selector), managing Secrets in `namespaces`, logging to
    /// [`operator_log`]`(name)`.
    pub fn start_cluster(name: &str, namespaces: &[&str], args: &[&str]) -> Self {
        Self::spawn(name, namespaces, args, Ledger::Postgres)
    }

    fn spawn(name: &str, secret_namespaces: &[&str], args: &[&str], ledger: Ledger) -> Self {
        let log_path = operator_log(name);
        // The caller's --http-addr (the benches choose theirs), or a free port of our own.
        let given = args.iter().position(|a| *a == "--http-addr");
        let port = given.map_or_else(free_port, |i| {
            let addr = args.get(i + 1).expect("an address after --http-addr");
            addr.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("a port")
        });
        let http_addr = format!("127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the operator log");
        secret_namespaces.iter().for_each(|n| grant_secrets(n));
        // `SUMMIT_OPERATOR_WRAP` runs the operator under a profiler (`heaptrack -o
        // FILE`, say), for the benches.
        let binary = env!("CARGO_BIN_EXE_summit-config");
        let wrap = std::env::var("SUMMIT_OPERATOR_WRAP").unwrap_or_default();
        let mut command: Vec<&str> = wrap.split_whitespace().collect();
        command.push(binary);
        let child = Command::new(command[0])
            .args(&command[1..])
            .arg("operator")
            .args(
                given
                    .is_none()
                    .then_some(["--http-addr", http_addr.as_str()])
                    .into_iter()
                    .flatten(),
            )
            .arg("--kubeconfig")
            .arg(env().operator_kubeconfig())
            // The backends come from the arguments alone, never from the test's own
            // environment.
            .env_remove("DATABASE_URL")
            .env_remove("CONSUL_HTTP_ADDR")
            .args(match ledger {
                Ledger::Postgres => vec![
                    "--database-url",
                    env().var("DATABASE_URL"),
                    "--consul-addr",
                    env().var("CONSUL_HTTP_ADDR"),
                ],
                Ledger::Cluster => Vec::new(),
            })
            .args(["--restart-interval-seconds", "1"])
            .args(
                env()
                    .optional_var("PROMETHEUS_URL")
                    .map(|url| ["--prometheus-url", url])
                    .into_iter()
                    .flatten(),
            )
            .args(["--aws-secret-prefix", "tests/{namespace}/"])
            .args(args)
            // Tests log what they may need to read after a failure; the benches log
            // as an installed operator does (`SUMMIT_OPERATOR_LOG=info`).
            .env(
                "RUST_LOG",
                std::env::var("SUMMIT_OPERATOR_LOG").unwrap_or_else(|_| {
                    "info,summit_config=debug,aws_config=debug,aws_smithy_runtime=debug".into()
                }),
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
        Self { child, port }
    }
}

/// Lets the operator manage Secrets in `namespace`, as a cluster admin does by listing
/// it in the chart's operator.secretNamespaces.
pub fn grant_secrets(namespace: &str) {
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

impl Operator {
    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port of the operator's HTTP endpoints (/metrics).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the operator with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
