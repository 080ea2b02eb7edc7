//! The commands that read: what they take, and how `--watch` repeats them.

use clap::Subcommand;

use super::client::{Error, Target, watching};
use super::output::{Output, Watch};
use super::{changes, history};
use crate::api::v1alpha1::{ConfigChange, ConfigEntry, ConfigVersion};

#[derive(Subcommand, Debug)]
pub enum Reading {
    /// List the ConfigEntries of a namespace and where each stands.
    #[command(after_help = "Example:\n  summit-config list -n team-a")]
    List {
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        watch: Watch,
        #[command(flatten)]
        target: Target,
    },
    /// Show an entry's environments, or the content live in one (`--env`).
    #[command(after_help = "Example:\n  summit-config get payments --env production -o yaml")]
    Get {
        /// The ConfigEntry.
        entry: String,
        /// Print the content live in this environment.
        #[arg(long = "env", short = 'e')]
        environment: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        watch: Watch,
        #[command(flatten)]
        target: Target,
    },
    /// List an entry's recorded versions, where each is live, who wrote it and why.
    #[command(after_help = "Example:\n  summit-config versions payments -n team-a")]
    Versions {
        /// The ConfigEntry.
        entry: String,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        watch: Watch,
        #[command(flatten)]
        target: Target,
    },
    /// Show what changed between two versions, or between a version and what is live.
    #[command(after_help = "Examples:\n  summit-config diff payments 6 7\n  \
        summit-config diff payments 6 --env production   # version 6 against what production runs")]
    Diff {
        /// The ConfigEntry.
        entry: String,
        /// The older version.
        from: i64,
        /// The newer version; by default what `--env` runs, or the newest.
        to: Option<i64>,
        /// Compare this environment's resolved content.
        #[arg(long = "env", short = 'e')]
        environment: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Show who recorded, requested, approved and applied an entry's versions, and when.
    #[command(after_help = "Example:\n  summit-config audit payments --version 7")]
    Audit {
        /// The ConfigEntry.
        entry: String,
        /// Only this version's steps.
        #[arg(long)]
        version: Option<i64>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// List the ConfigChanges waiting for approval.
    #[command(after_help = "Example:\n  summit-config pending --env production")]
    Pending {
        /// Only this environment's.
        #[arg(long = "env", short = 'e')]
        environment: Option<String>,
        #[command(flatten)]
        watch: Watch,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs one reading command.
pub async fn run(reading: Reading) -> Result<(), Error> {
    match reading {
        Reading::List {
            output,
            watch,
            target,
        } => {
            let show = || history::list(&target, output.format);
            watching::<ConfigEntry, _, _>(watch, &target, show).await
        }
        Reading::Get {
            entry,
            environment,
            output,
            watch,
            target,
        } => {
            let show = || history::get(&target, &entry, environment.as_deref(), output.format);
            watching::<ConfigEntry, _, _>(watch, &target, show).await
        }
        Reading::Versions {
            entry,
            output,
            watch,
            target,
        } => {
            let show = || history::versions(&target, &entry, output.format);
            watching::<ConfigVersion, _, _>(watch, &target, show).await
        }
        Reading::Diff {
            entry,
            from,
            to,
            environment,
            output,
            target,
        } => {
            let versions = (from, to);
            history::diff(
                &target,
                &entry,
                versions,
                environment.as_deref(),
                output.format,
            )
            .await
        }
        Reading::Audit {
            entry,
            version,
            output,
            target,
        } => history::audit(&target, &entry, version, output.format).await,
        Reading::Pending {
            environment,
            watch,
            target,
        } => {
            let show = || changes::pending(&target, environment.as_deref());
            watching::<ConfigChange, _, _>(watch, &target, show).await
        }
    }
}
