//! Reaching the cluster for the commands people run, and what they fail with.

use std::path::PathBuf;

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// Where to reach the cluster, for the commands people run.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Kubeconfig file instead of `$KUBECONFIG` or `~/.kube/config`.
    #[arg(long, value_name = "FILE", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use instead of the current one.
    #[arg(long, value_name = "NAME", global = true)]
    pub context: Option<String>,

    /// Namespace of the ConfigEntry or ConfigChange; the kubeconfig context's by default.
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("cannot find a cluster to talk to")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build a client")]
    Client(#[source] kube::Error),
    #[error("{action}: {message}")]
    Refused {
        action: String,
        message: String,
        /// The apiserver's status code: 403 forbidden, 404 not found, 422 invalid, ...
        code: u16,
    },
    #[error("{action}")]
    Request {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither JSON nor YAML")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TimedOut(String),
}

impl Error {
    /// The process's exit code: 3 not found, 4 forbidden, 5 invalid, 6 timed out, 1
    /// anything else (2 is clap's, for a command line it cannot parse).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotFound(_) | Error::Refused { code: 404, .. } => 3,
            Error::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 3,
            Error::Refused {
                code: 401 | 403, ..
            } => 4,
            Error::Invalid(_)
            | Error::Parse { .. }
            | Error::Refused {
                code: 400 | 409 | 422,
                ..
            } => 5,
            Error::TimedOut(_) | Error::Refused { code: 504, .. } => 6,
            _ => 1,
        }
    }
}

/// Turns an apiserver refusal into its message, which names the rule that refused.
pub fn request(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| match source {
        kube::Error::Api(status) => Error::Refused {
            action,
            message: status.message,
            code: status.code,
        },
        source => Error::Request { action, source },
    }
}

/// A client for the target cluster, and the namespace to work in.
pub async fn connect(target: &Target) -> Result<(Client, String), Error> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(Error::Kubeconfig)?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(Error::Kubeconfig)?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(Error::Kubeconfig)?,
        (None, None) => Config::infer().await.map_err(Error::Infer)?,
    };
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config).map_err(Error::Client)?, namespace))
}

/// Runs `show`; with `--watch`, again after every change a watch of kind `K` in the
/// target's namespace sees, until interrupted.
pub async fn watching<K, F, Fut>(
    watch: super::output::Watch,
    target: &Target,
    mut show: F,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};

    show().await?;
    if !watch.watch {
        return Ok(());
    }
    let (client, namespace) = connect(target).await?;
    let api: kube::Api<K> = kube::Api::namespaced(client, &namespace);
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut listed = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone) => listed = true,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) if listed => {
                println!();
                show().await?;
            }
            Ok(_) => {}
            Err(error) => eprintln!("summit-config: watching {namespace}: {error}; retrying"),
        }
    }
    Ok(())
}
