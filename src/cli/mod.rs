//! The `summit-config` command line (also `kubectl summit`, the same binary named
//! `kubectl-summit`): `operator` runs the controllers, `crds` prints the CRDs, and the
//! commands people run read and propose through the Kubernetes API alone, so their
//! RBAC applies exactly as it does to kubectl.

mod changes;
mod client;
mod crds;
mod history;
mod output;
mod reads;
mod rollout;
mod schema;
mod secrets;

use std::{error::Error as _, fmt, path::PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

use client::Target;
use output::Output;

use crate::{operator, telemetry};

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
    Operator(Box<operator::Settings>),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crds {
        /// Write `<crd-name>.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// The reading commands: list, get, versions, diff, audit, pending.
    #[command(flatten)]
    Read(reads::Reading),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  summit-config completions bash > /etc/bash_completion.d/summit-config"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Propose new base data (a JSON or YAML file, `-` for stdin) for one environment.
    #[command(
        after_help = "Example:\n  summit-config set payments payments.yaml --env production -m \"new pool\""
    )]
    Set {
        #[command(flatten)]
        change: changes::Propose,
        /// The new base data.
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Propose a JSON merge patch (a JSON or YAML file) on the newest version.
    #[command(
        after_help = "Example:\n  summit-config patch payments pool.yaml --env production -m \"more connections\""
    )]
    Patch {
        #[command(flatten)]
        change: changes::Propose,
        /// The merge patch.
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Propose going back to an earlier version's content (as a new version).
    #[command(
        after_help = "Example:\n  summit-config rollback payments 6 --env production -m \"v7 broke checkout\""
    )]
    Rollback {
        #[command(flatten)]
        change: changes::Propose,
        /// The version whose content to restore.
        version: i64,
        #[command(flatten)]
        target: Target,
    },
    /// Approve a pending ConfigChange, as yourself.
    #[command(
        after_help = "Example:\n  summit-config approve payments-production-x7k2p --comment \"load tested\""
    )]
    Approve {
        /// The ConfigChange.
        change: String,
        /// What you checked.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Reject a pending ConfigChange, as yourself; final.
    #[command(
        after_help = "Example:\n  summit-config reject payments-production-x7k2p --reason \"not during the freeze\""
    )]
    Reject {
        /// The ConfigChange.
        change: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// A version baking on its environment's canary: promote it now, or abort it.
    Rollout {
        #[command(subcommand)]
        command: rollout::RolloutCommand,
    },
    /// JSON Schemas: validate files offline, or register one for `schemaRef`.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Secrets: create a rotation policy, list them, rotate one now.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Drift: run a DriftCheck now, or print its last report.
    Drift {
        #[command(subcommand)]
        command: DriftCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DriftCommand {
    /// Run a DriftCheck now and wait for its report.
    #[command(after_help = "Example:\n  summit-config drift detect payments")]
    Detect {
        /// The DriftCheck.
        check: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print a DriftCheck's last report, without running it again.
    #[command(after_help = "Example:\n  summit-config drift report payments -o yaml")]
    Report {
        /// The DriftCheck.
        check: String,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Check files offline by the operator's own rules: a ConfigEntry (every
    /// environment against its schema), a JSON Schema, or data against `--schema`.
    #[command(
        after_help = "Examples:\n  summit-config schema validate payments.yaml\n  \
        summit-config schema validate data.json --schema payments.schema.json"
    )]
    Validate {
        /// The files; `-` reads stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The schema for data files, or for a ConfigEntry whose schema is a schemaRef.
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
    },
    /// Put a JSON Schema into a labelled ConfigMap that entries name in `schemaRef`.
    #[command(
        after_help = "Example:\n  summit-config schema register payments-schema payments.schema.json -n team-a"
    )]
    Register {
        /// Name of the ConfigMap.
        name: String,
        /// The schema (JSON or YAML).
        file: PathBuf,
        /// The key it is kept under.
        #[arg(long, default_value = "schema.json")]
        key: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a SecretRotationPolicy: the operator generates (or adopts) the value,
    /// projects it into the target Secret and rotates it on schedule.
    #[command(
        after_help = "Example:\n  summit-config secret create payments-db --provider in-cluster \\\n    \
        --secret-id payments/db --target payments-db --interval 30d --restart deployment/checkout"
    )]
    Create {
        #[command(flatten)]
        secret: secrets::NewSecret,
        #[command(flatten)]
        target: Target,
    },
    /// List the rotation policies: provider, secret, current version, schedule.
    #[command(after_help = "Example:\n  summit-config secret list -n team-a")]
    List {
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Rotate now (within the policy's minimum interval, it waits and says so).
    #[command(after_help = "Example:\n  summit-config secret rotate payments-db-password")]
    Rotate {
        /// The SecretRotationPolicy.
        policy: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Crds(#[from] crds::Error),
    #[error(transparent)]
    Changes(#[from] client::Error),
    #[error(transparent)]
    Operator(#[from] operator::Error),
    #[error("cannot start logging")]
    Logging(#[source] crate::telemetry::LoggingError),
}

impl Error {
    /// The process's exit code: 3 not found, 4 forbidden, 5 invalid, 6 timed out, 1
    /// anything else, 2 a command line that does not parse.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Changes(error) => error.exit_code(),
            _ => 1,
        }
    }

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
        Command::Read(reading) => Ok(reads::run(reading).await?),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "summit-config", &mut std::io::stdout());
            Ok(())
        }
        Command::Crds { out_dir } => Ok(crds::print(out_dir.as_deref())?),
        Command::Operator(args) => {
            telemetry::init_logging(args.log_format).map_err(Error::Logging)?;
            Ok(operator::run(*args).await?)
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
        Command::Rollout { command } => Ok(rollout::run(command).await?),
        Command::Secret { command } => match command {
            SecretCommand::Rotate { policy, target } => {
                Ok(changes::rotate(&target, &policy).await?)
            }
            SecretCommand::Create { secret, target } => {
                Ok(secrets::create(&target, &secret).await?)
            }
            SecretCommand::List { output, target } => {
                Ok(secrets::list(&target, output.format).await?)
            }
        },
        Command::Drift { command } => match command {
            DriftCommand::Detect { check, target } => Ok(changes::detect(&target, &check).await?),
            DriftCommand::Report {
                check,
                output,
                target,
            } => Ok(changes::report(&target, &check, output.format).await?),
        },
        Command::Schema { command } => match command {
            SchemaCommand::Validate { files, schema } => {
                Ok(schema::validate_files(&files, schema.as_ref())?)
            }
            SchemaCommand::Register {
                name,
                file,
                key,
                target,
            } => Ok(schema::register(&target, &name, &file, &key).await?),
        },
    }
}
