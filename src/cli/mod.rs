//! The `summit-config` command line: `operator` runs the controllers, `crds` prints the
//! CustomResourceDefinitions; the people-facing command table follows in later issues.

mod changes;
mod crds;

use std::{error::Error as _, fmt, path::PathBuf};

use clap::{Parser, Subcommand};

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

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Crds(#[from] crds::Error),
    #[error(transparent)]
    Changes(#[from] changes::Error),
    #[error(transparent)]
    Operator(#[from] operator::Error),
    #[error("cannot start logging")]
    Logging(#[source] crate::telemetry::LoggingError),
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
