//! The `summit-config` command line: `operator` runs the controllers, `crds` prints the
//! CustomResourceDefinitions; the people-facing command table follows in later issues.

mod changes;
mod crds;

use std::{error::Error as _, fmt, net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{controller, telemetry};

/// Versioned, validated, approved and audited configuration and secrets for Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "summit-config", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster).
    Operator(Box<OperatorArgs>),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crds {
        /// Write `<crd-name>.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Propose new base data (a JSON or YAML file, `-` for stdin) for one environment.
    Set {
        #[command(flatten)]
        change: changes::Propose,
        /// The new base data.
        file: PathBuf,
        #[command(flatten)]
        target: changes::Target,
    },
    /// Propose a JSON merge patch (a JSON or YAML file) on the newest version.
    Patch {
        #[command(flatten)]
        change: changes::Propose,
        /// The merge patch.
        file: PathBuf,
        #[command(flatten)]
        target: changes::Target,
    },
    /// Propose going back to an earlier version's content (as a new version).
    Rollback {
        #[command(flatten)]
        change: changes::Propose,
        /// The version whose content to restore.
        version: i64,
        #[command(flatten)]
        target: changes::Target,
    },
    /// Approve a pending ConfigChange, as yourself.
    Approve {
        /// The ConfigChange.
        change: String,
        /// What you checked.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        target: changes::Target,
    },
    /// Reject a pending ConfigChange, as yourself; final.
    Reject {
        /// The ConfigChange.
        change: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: changes::Target,
    },
    /// Secrets: `secret rotate <policy>` asks a SecretRotationPolicy to rotate now.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Drift: `drift detect <check>` runs a DriftCheck now.
    Drift {
        #[command(subcommand)]
        command: DriftCommand,
    },
    /// List the ConfigChanges waiting for approval.
    Pending {
        /// Only this environment's.
        #[arg(long = "env", short = 'e')]
        environment: Option<String>,
        #[command(flatten)]
        target: changes::Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum DriftCommand {
    /// Run a DriftCheck now and wait for its report.
    Detect {
        /// The DriftCheck.
        check: String,
        #[command(flatten)]
        target: changes::Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Rotate now (within the policy's minimum interval, it waits and says so).
    Rotate {
        /// The SecretRotationPolicy.
        policy: String,
        #[command(flatten)]
        target: changes::Target,
    },
}

/// How the operator runs.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
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
    /// Without it, versions live in memory only and are lost on restart: a demo mode.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Address of the Consul agent whose KV store receives every version, e.g.
    /// `http://127.0.0.1:8500`. Needs --database-url.
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
    /// ConfigEntries reference.
    #[arg(long, env = "SUMMIT_SECRET_REFRESH_SECONDS", default_value_t = 60)]
    pub secret_refresh_seconds: u64,

    /// Log format.
    #[arg(long, env = "SUMMIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long to wait for the CRDs to be established before giving up, in seconds.
    #[arg(long, default_value_t = 120)]
    pub crd_wait_seconds: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Crds(#[from] crds::Error),
    #[error(transparent)]
    Changes(#[from] changes::Error),
    #[error(transparent)]
    Operator(#[from] controller::Error),
    #[error("cannot start logging: {0}")]
    Logging(String),
}

impl Error {
    /// The error and its causes on one line, for stderr.
    pub fn chain(&self) -> ErrorChain<'_> {
        ErrorChain(self)
    }
}

/// Displays an error followed by each of its sources.
pub struct ErrorChain<'a>(&'a Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Crds { out_dir } => Ok(crds::print(out_dir.as_deref())?),
        Command::Operator(args) => {
            telemetry::init_logging(args.log_format).map_err(Error::Logging)?;
            Ok(controller::run(*args).await?)
        }
        Command::Set {
            change,
            file,
            target,
        } => Ok(changes::propose(&target, &change, changes::Proposal::Data(file)).await?),
        Command::Patch {
            change,
            file,
            target,
        } => Ok(changes::propose(&target, &change, changes::Proposal::Patch(file)).await?),
        Command::Rollback {
            change,
            version,
            target,
        } => Ok(changes::propose(&target, &change, changes::Proposal::RollbackTo(version)).await?),
        Command::Approve {
            change,
            comment,
            target,
        } => Ok(changes::decide(&target, &change, Ok(comment)).await?),
        Command::Reject {
            change,
            reason,
            target,
        } => Ok(changes::decide(&target, &change, Err(reason)).await?),
        Command::Pending {
            environment,
            target,
        } => Ok(changes::pending(&target, environment.as_deref()).await?),
        Command::Secret {
            command: SecretCommand::Rotate { policy, target },
        } => Ok(changes::rotate(&target, &policy).await?),
        Command::Drift {
            command: DriftCommand::Detect { check, target },
        } => Ok(changes::detect(&target, &check).await?),
    }
}
