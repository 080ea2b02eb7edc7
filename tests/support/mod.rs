//! What the integration tests share: the environment hack/env-up.sh started, clients
//! acting as its users, a namespace per test with an operator watching it, builders for
//! the objects tests create, and bounded waits for what the operator does with them.
//!
//! - [`tenant`]: a fresh namespace, who may do what there, and [`setup`] (a namespace
//!   and an operator watching it), how most tests start.
//! - [`operator`]: the operator binary as a child process.
//! - [`in_process`]: the controllers in the test's own process, over the in-memory
//!   ledger the test reads.
//! - [`objects`]: builders, and the requests that create and change objects.
//! - [`wait`]: waits until an object satisfies a predicate, and readers of its status.
//! - [`backends`]: PostgreSQL, Consul, moto and the operator's metrics, and the faults
//!   tests inject into them.
//! - [`attack`]: what the attack tests add: shards, and a record of a config id.
//! - [`prometheus`]: the environment's Prometheus, and metrics a test serves it.
#![allow(dead_code, unused_imports)] // each test binary uses its own part of this module

pub mod attack;
pub mod backends;
pub mod flagd;
pub mod in_process;
pub mod install;
pub mod objects;
pub mod operator;
pub mod payments;
pub mod prometheus;
pub mod rotation;
pub mod tenant;
pub mod wait;

pub use backends::*;
pub use objects::*;
pub use operator::*;
pub use tenant::*;
pub use wait::*;

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// How long a test waits for the operator to do what it is asked: long enough for a
/// loaded machine, short enough that a test that will never pass says so soon.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often [`eventually`] asks again.
const POLL: Duration = Duration::from_millis(200);

/// A window in which the operator has every chance to do something it must not (repair
/// what a Report-mode check leaves alone, retire a value still in use): a test that
/// asserts nothing happened lets it pass first. Not a wait: nothing is awaited, and
/// nothing ends it early.
pub const WINDOW: Duration = Duration::from_secs(3);

/// Lets a [`WINDOW`] pass.
pub async fn sleep_through_window() {
    tokio::time::sleep(WINDOW).await;
}

async fn client_of(kubeconfig: Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("client")
}

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

    /// A variable the environment must have.
    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the environment file"))
    }

    /// The admin's kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG"))
    }

    /// Where the environment keeps its files: logs, kubeconfigs, manifests.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.var("SUMMIT_ENV_DIR"))
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
            let token = run_ok(
                self.kubectl()
                    .args(["create", "token", "summit-config-operator"])
                    .args(["--namespace", "summit-system", "--duration", "6h"]),
            );
            self.kubeconfig_with_token("operator", token.trim())
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
        let path = self.dir().join(format!("kubeconfig-{user}"));
        let yaml = serde_yaml_ng::to_string(&kubeconfig).expect("kubeconfig as YAML");
        // Written whole, then renamed into place: tests running in parallel read this
        // file while another writes it, and must never see it half written.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let partial = path.with_extension(format!("{}-{n}.partial", std::process::id()));
        std::fs::write(&partial, yaml).expect("write kubeconfig");
        std::fs::rename(&partial, &path).expect("move kubeconfig into place");
        path
    }

    async fn client_with(&self, edit: impl FnOnce(&mut Kubeconfig)) -> Client {
        let mut kubeconfig = Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        edit(&mut kubeconfig);
        client_of(kubeconfig).await
    }

    /// A client acting as the chart's operator service account (see
    /// [`TestEnv::operator_kubeconfig`]).
    pub async fn operator_client(&self) -> Client {
        let path = self.operator_kubeconfig();
        client_of(Kubeconfig::read_from(path).expect("read kubeconfig")).await
    }

    /// The real kubectl, pointed at the environment as the admin.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(format!("{}/kubectl", self.var("SUMMIT_TOOLS_BIN")));
        command.env("KUBECONFIG", self.kubeconfig());
        command
    }
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
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `command`, failing the test with its stderr unless it succeeds; returns its stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The project's own binary, as `summit-config args... --namespace ns` with
/// `kubeconfig`.
pub fn summit(kubeconfig: &std::path::Path, ns: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_summit-config"));
    command
        .args(args)
        .args(["--namespace", ns])
        .arg("--kubeconfig")
        .arg(kubeconfig);
    command
}
