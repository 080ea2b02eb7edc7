//! The operator's command line, and what it turns into: the stores to open and what
//! the controllers are told.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use kube::{Api, Client};
use reqwest::Url;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;

use super::{Error, leader::Candidate};
use crate::{
    controller::{self, Launch, Prometheus},
    core::{approval::PlatformFloor, leadership::Timing},
    secrets::AwsSettings,
    store::{ClusterConfig, ConsulConfig, Stores, StoresConfig},
    telemetry::{LogFormat, Metrics},
};

/// How the operator runs: its command line, read once at start-up.
#[derive(clap::Args, Debug, Clone)]
pub struct Settings {
    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, env = "SUMMIT_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Kubeconfig file to use instead of `$KUBECONFIG`, `~/.kube/config` or the
    /// in-cluster service account.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch only this namespace instead of the whole cluster.
    #[arg(long, env = "SUMMIT_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Reconcile only ConfigEntries, ConfigChanges, SecretRotationPolicies and
    /// DriftChecks carrying these labels (a Kubernetes label selector, e.g.
    /// `shard=a`): to split a large cluster between several operators, or to try a new
    /// operator on a few objects first.
    #[arg(long, env = "SUMMIT_WATCH_LABEL_SELECTOR")]
    pub watch_label_selector: Option<String>,

    /// Config ids of a namespace must start with this, `{namespace}` replaced (e.g.
    /// `{namespace}/` makes team-a's ids `team-a/...`), so tenants cannot even try each
    /// other's ids. Empty: any id, first come first served (each id still belongs to
    /// one ConfigEntry). The chart sets `{namespace}/`.
    #[arg(long, env = "SUMMIT_CONFIG_ID_PREFIX", default_value = "")]
    pub config_id_prefix: String,

    /// Approval floors every ConfigEntry answers to, whatever its spec says, as JSON:
    /// a list of `{"environments": "prod*", "requiredApprovals": 1, "approvers": [...],
    /// "approverGroups": [...]}` (`*` matches any characters). The chart passes
    /// `approvalFloors`.
    #[arg(long, env = "SUMMIT_APPROVAL_FLOORS", default_value = "[]")]
    pub approval_floors: String,

    /// Apply ConfigChanges even when the chart's admission policies are missing. Then
    /// nothing proves who requested or approved a change: for development clusters
    /// only.
    #[arg(long, env = "SUMMIT_ALLOW_UNGUARDED")]
    pub allow_unguarded: bool,

    /// PostgreSQL URL of the durable record (versions, audit trail, applied state).
    /// Without it, the record is kept in the cluster itself, as ConfigMaps in
    /// --ledger-namespace.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The namespace whose ConfigMaps keep the record when there is no
    /// --database-url. Default: the operator's own (`POD_NAMESPACE`).
    #[arg(long, env = "SUMMIT_LEDGER_NAMESPACE")]
    pub ledger_namespace: Option<String>,

    /// Address of the Consul agent whose KV store receives every version, e.g.
    /// `http://127.0.0.1:8500`. Needs a durable ledger: PostgreSQL, or the cluster ledger.
    #[arg(long, env = "CONSUL_HTTP_ADDR")]
    pub consul_addr: Option<String>,

    /// Consul ACL token. Prefer --consul-token-file, or this variable from a Secret:
    /// never a command-line argument, which any process on the node can read.
    #[arg(long, env = "CONSUL_HTTP_TOKEN", hide_env_values = true, hide = true)]
    pub consul_token: Option<String>,

    /// A file holding the Consul ACL token (a mounted Secret).
    #[arg(long, env = "CONSUL_HTTP_TOKEN_FILE", value_name = "FILE")]
    pub consul_token_file: Option<PathBuf>,

    /// PEM file of the certificate authority that signed Consul's HTTPS certificate.
    #[arg(long, env = "CONSUL_CACERT", value_name = "FILE")]
    pub consul_ca_file: Option<PathBuf>,

    /// Consul key prefix under which versions are kept.
    #[arg(long, env = "SUMMIT_CONSUL_PREFIX", default_value = "summit/config")]
    pub consul_prefix: String,

    /// A namespace, besides an entry's own, that projections may target; repeat for more.
    #[arg(
        long = "allow-target-namespace",
        env = "SUMMIT_ALLOWED_NAMESPACES",
        value_delimiter = ','
    )]
    pub allowed_namespaces: Vec<String>,

    /// The namespaces where the operator manages Secrets (projected Secrets, the
    /// in-cluster provider's store, credentials), comma-separated: it watches its
    /// Secrets there and refuses to project elsewhere. The chart passes
    /// operator.secretNamespaces, where it grants the access. Unset: every namespace
    /// the operator watches.
    #[arg(long, env = "SUMMIT_SECRET_NAMESPACES", value_delimiter = ',')]
    pub secret_namespaces: Option<Vec<String>>,

    /// Which AWS secret names the operator's own credentials may reach for a namespace:
    /// names starting with this, `{namespace}` replaced. References with credentials
    /// of their own are not limited. Empty lets every namespace reach every secret the
    /// operator can: only for single-tenant clusters.
    #[arg(long, env = "SUMMIT_AWS_SECRET_PREFIX", default_value = "{namespace}/")]
    pub aws_secret_prefix: String,

    /// Restarts of one workload are at least this many seconds apart.
    #[arg(long, env = "SUMMIT_RESTART_INTERVAL_SECONDS", default_value_t = 30)]
    pub restart_interval_seconds: u64,

    /// AWS region for Secrets Manager when a policy or reference names none.
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,

    /// Secrets Manager endpoint instead of AWS's own, e.g. a VPC endpoint or a local
    /// emulator.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    /// Seconds between looks at the providers for new versions of the secrets that
    /// ConfigEntries reference. References to one secret share one read per refresh,
    /// and a rotation this operator makes reaches them at once.
    #[arg(long, env = "SUMMIT_SECRET_REFRESH_SECONDS", default_value_t = 3600)]
    pub secret_refresh_seconds: u64,

    /// How many of each entry's newest versions are kept as ConfigVersion objects (a
    /// version live in an environment is always kept). The ledger keeps every one.
    #[arg(long, env = "SUMMIT_HISTORY_KEEP", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub history_keep: u16,

    /// Prometheus that canary metric checks ask, e.g. `http://prometheus.monitoring:9090`.
    /// Without it, a rollout with metrics fails its canary, saying so.
    #[arg(long, env = "SUMMIT_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,

    /// The series label that holds a namespace in that Prometheus: every selector of a
    /// canary's query is held to its entry's namespace by it. Empty asks queries as
    /// written: only for a Prometheus that holds one tenant's series.
    #[arg(
        long,
        env = "SUMMIT_PROMETHEUS_NAMESPACE_LABEL",
        default_value = "namespace"
    )]
    pub prometheus_namespace_label: String,

    /// Log format.
    #[arg(long, env = "SUMMIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long to wait for the CRDs to be established before giving up, in seconds.
    #[arg(long, default_value_t = 120)]
    pub crd_wait_seconds: u64,

    /// Run as one of several replicas: only the holder of the leader Lease reconciles,
    /// the others stand by to take over. The chart sets it.
    #[arg(long, env = "SUMMIT_LEADER_ELECT")]
    pub leader_elect: bool,

    /// The leader Lease's name, in the namespace `POD_NAMESPACE` names.
    #[arg(
        long,
        env = "SUMMIT_LEADER_LEASE",
        default_value = "summit-config-operator"
    )]
    pub leader_lease: String,

    /// The namespace of the leader Lease: the operator's own.
    #[arg(long = "leader-lease-namespace", env = "POD_NAMESPACE")]
    pub leader_lease_namespace: Option<String>,

    /// How long a leader's lease lasts without a renewal, in seconds: the longest
    /// another replica waits to take over from a leader that died. A leader that
    /// cannot renew for two thirds of it stops reconciling.
    #[arg(long, env = "SUMMIT_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
}

impl Settings {
    /// Which backends to use.
    pub fn stores(&self, metrics: &Metrics, client: &kube::Client) -> Result<StoresConfig, Error> {
        let database = self
            .database_url
            .as_deref()
            .map(|url| {
                url.parse::<PgConnectOptions>().map_err(|source| {
                    Error::Configuration(format!("--database-url does not parse: {source}"))
                })
            })
            .transpose()?;
        let consul = self
            .consul_addr
            .as_deref()
            .map(|address| self.consul(address))
            .transpose()?;
        let cluster = match (&database, self.ledger_namespace()) {
            (Some(_), _) => None,
            (None, Some(namespace)) => Some(ClusterConfig {
                client: client.clone(),
                namespace: namespace.to_owned(),
            }),
            (None, None) => {
                return Err(Error::Configuration(
                    "with no --database-url the record is kept in the cluster: set \
                     --ledger-namespace (the chart sets POD_NAMESPACE)"
                        .into(),
                ));
            }
        };
        Ok(StoresConfig {
            database,
            consul,
            cluster,
            postgres_requests: metrics.requests_to("postgres"),
            consul_requests: metrics.requests_to("consul"),
        })
    }

    /// Where the cluster ledger lives: --ledger-namespace, else the operator's own.
    fn ledger_namespace(&self) -> Option<&str> {
        let namespace = self.ledger_namespace.as_deref();
        namespace.or(self.leader_lease_namespace.as_deref())
    }

    /// How to reach the Consul agent at `address`.
    fn consul(&self, address: &str) -> Result<ConsulConfig, Error> {
        let with_scheme = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let address = Url::parse(&with_scheme).map_err(|source| {
            Error::Configuration(format!(
                "--consul-addr {address:?} does not parse: {source}"
            ))
        })?;
        let token = match (&self.consul_token_file, &self.consul_token) {
            (Some(path), _) => Some(read_file(path, "--consul-token-file")?),
            (None, token) => token.clone(),
        }
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty());
        if token
            .as_deref()
            .is_some_and(|t| reqwest::header::HeaderValue::from_str(t).is_err())
        {
            return Err(Error::Configuration(
                "the Consul ACL token holds characters an HTTP header cannot carry".into(),
            ));
        }
        let ca_pem = self
            .consul_ca_file
            .as_deref()
            .map(|path| read_file(path, "--consul-ca-file").map(String::into_bytes))
            .transpose()?;
        Ok(ConsulConfig {
            address,
            prefix: self.consul_prefix.clone(),
            token: token.map(SecretString::from),
            ca_pem,
        })
    }

    /// The leader election this replica takes part in, when `--leader-elect` asks for
    /// one; `identity` names this replica.
    pub fn candidate(&self, client: &Client, identity: String) -> Result<Option<Candidate>, Error> {
        if !self.leader_elect {
            return Ok(None);
        }
        let namespace = self.leader_lease_namespace.as_deref().ok_or_else(|| {
            Error::Configuration(
                "--leader-elect: set POD_NAMESPACE (or --leader-lease-namespace) to the operator's namespace".into(),
            )
        })?;
        if self.lease_duration_seconds < 3 {
            return Err(Error::Configuration(
                "--lease-duration-seconds: at least 3".into(),
            ));
        }
        let lease = Duration::from_secs(self.lease_duration_seconds);
        Ok(Some(Candidate {
            leases: Api::namespaced(client.clone(), namespace),
            lease: self.leader_lease.clone(),
            identity,
            timing: Timing::for_lease(lease),
        }))
    }

    /// The Prometheus canary metric checks ask, its address checked.
    fn prometheus(&self) -> Result<Option<Prometheus>, Error> {
        let Some(url) = &self.prometheus_url else {
            return Ok(None);
        };
        if !matches!(Url::parse(url), Ok(parsed) if matches!(parsed.scheme(), "http" | "https")) {
            return Err(Error::Configuration(format!(
                "--prometheus-url {url:?} is not an http(s) address, e.g. http://prometheus.monitoring:9090"
            )));
        }
        let label = &self.prometheus_namespace_label;
        let mut chars = label.chars();
        let first = chars.next();
        let named = first.is_none_or(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !named {
            return Err(Error::Configuration(format!(
                "--prometheus-namespace-label {label:?} is not a Prometheus label name, e.g. namespace"
            )));
        }
        if label.is_empty() {
            tracing::warn!(
                "--prometheus-namespace-label is empty: canary metric queries are asked as written, and may read any namespace's series"
            );
        }
        Ok(Some(Prometheus {
            url: url.trim_end_matches('/').to_owned(),
            namespace_label: label.clone(),
        }))
    }

    /// What the controllers are told.
    pub fn launch(
        &self,
        stores: Arc<Stores>,
        metrics: Arc<Metrics>,
        identity: String,
    ) -> Result<Launch, Error> {
        let approval_floors: Vec<PlatformFloor> = serde_json::from_str(&self.approval_floors)
            .map_err(|source| {
                Error::Configuration(format!(
                    "--approval-floors is not a JSON list of {{\"environments\": \"prod*\", \"requiredApprovals\": 1, \"approverGroups\": [...]}}: {source}"
                ))
            })?;
        if let Some(floor) = approval_floors.iter().find(|f| f.environments.is_empty()) {
            return Err(Error::Configuration(format!(
                "--approval-floors: a floor without environments ({floor:?}); use \"*\" for every environment"
            )));
        }
        if self.allow_unguarded {
            tracing::warn!(
                "--allow-unguarded: ConfigChanges apply without the admission policies that prove who requested and approved them; for development clusters only"
            );
        }
        let settings = controller::Settings {
            namespace: self.namespace.clone(),
            identity,
            allowed_namespaces: self.allowed_namespaces.iter().cloned().collect(),
            restart_interval: Duration::from_secs(self.restart_interval_seconds),
            secret_refresh: Duration::from_secs(self.secret_refresh_seconds.max(1)),
            history_keep: self.history_keep.into(),
            aws: AwsSettings {
                region: self.aws_region.clone(),
                endpoint_url: self.aws_endpoint_url.clone(),
                credentials: None,
            },
            aws_secret_prefix: checked_prefix("--aws-secret-prefix", &self.aws_secret_prefix)?,
            pod_name: std::env::var("POD_NAME").ok(),
            prometheus: self.prometheus()?,
        };
        Ok(Launch {
            stores,
            metrics,
            selector: self.watch_label_selector.clone(),
            secret_namespaces: self.secret_namespaces.as_ref().map(|namespaces| {
                namespaces
                    .iter()
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect()
            }),
            settings,
            approval_floors,
            config_id_prefix: checked_prefix("--config-id-prefix", &self.config_id_prefix)?,
            require_guards: !self.allow_unguarded,
        })
    }
}

/// A per-namespace prefix (AWS secret names, config ids), if it keeps namespaces
/// apart: after `{namespace}` must come a character no namespace name has, or `team`
/// would reach what belongs to `team-b`.
fn checked_prefix(flag: &str, prefix: &str) -> Result<String, Error> {
    let unsafe_placeholder = prefix
        .match_indices("{namespace}")
        .any(|(at, placeholder)| {
            prefix[at + placeholder.len()..]
                .chars()
                .next()
                .is_none_or(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if unsafe_placeholder {
        return Err(Error::Configuration(format!(
            "{flag} {prefix:?}: follow {{namespace}} with a separator such as '/', or one namespace's prefix would cover another's (team/ and team-b/)"
        )));
    }
    if !prefix.is_empty() && !prefix.contains("{namespace}") {
        tracing::warn!(
            flag,
            prefix,
            "the prefix has no {{namespace}}: every namespace shares it"
        );
    }
    Ok(prefix.to_owned())
}

/// A file the operator is configured with, read once at start-up.
fn read_file(path: &std::path::Path, flag: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| {
        Error::Configuration(format!(
            "{flag} {}: cannot read it: {source}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Settings, checked_prefix};

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: Settings,
    }

    /// The Prometheus of `--prometheus-url http://p:9090` with `label`, or the error.
    fn prometheus_with(label: &str) -> Result<String, String> {
        let args = ["operator", "--prometheus-url", "http://p:9090/"];
        let args = args
            .into_iter()
            .chain(["--prometheus-namespace-label", label]);
        let flags = Flags::try_parse_from(args).map_err(|e| e.to_string())?;
        match flags.settings.prometheus() {
            Ok(Some(prometheus)) => {
                Ok(format!("{} {}", prometheus.url, prometheus.namespace_label))
            }
            Ok(None) => Err("no Prometheus".into()),
            Err(error) => Err(error.to_string()),
        }
    }

    #[test]
    fn the_namespace_label_is_a_label_name_or_empty() {
        assert_eq!(
            prometheus_with("namespace"),
            Ok("http://p:9090 namespace".into())
        );
        assert_eq!(prometheus_with("k8s_ns"), Ok("http://p:9090 k8s_ns".into()));
        assert_eq!(prometheus_with(""), Ok("http://p:9090 ".into()));
        for bad in ["name space", "1ns", "ns\"}", "kubernetes-namespace"] {
            let refused = prometheus_with(bad).expect_err(bad);
            assert!(
                refused.contains("is not a Prometheus label name"),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_prefix_keeps_namespaces_apart_or_is_refused() {
        let checked = |prefix| checked_prefix("--prefix", prefix);
        assert!(checked("{namespace}/").is_ok());
        assert!(checked("apps/{namespace}_").is_ok());
        assert!(checked("").is_ok());
        assert!(checked("apps/{namespace}").is_err());
        assert!(checked("{namespace}-").is_err());
        assert!(checked("{namespace}x/").is_err());
    }
}
