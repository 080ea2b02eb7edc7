//! What can stop the operator.

use std::time::Duration;

/// Everything the operator's start-up, or its run, fails with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create a Kubernetes client")]
    Connect(#[source] kube::Error),

    #[error("cannot read kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },

    #[error("no Kubernetes configuration: set KUBECONFIG, pass --kubeconfig, or run in a cluster")]
    InferConfig(#[source] kube::config::InferConfigError),

    #[error("the CRD {name} was not established within {waited:?}: install crds/ first")]
    CrdMissing { name: String, waited: Duration },

    #[error("cannot watch the CRD {name}")]
    CrdWait {
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },

    #[error("cannot ask the apiserver who the operator is (SelfSubjectReview)")]
    WhoAmI(#[source] kube::Error),

    #[error("{0}")]
    Configuration(String),

    #[error(transparent)]
    Store(crate::store::Error),

    #[error("cannot serve HTTP endpoints")]
    Http(#[source] std::io::Error),

    #[error("the HTTP server stopped")]
    HttpStopped,

    #[error(transparent)]
    Controllers(#[from] crate::controller::Error),

    #[error(
        "this replica lost the leader lease: it stopped reconciling, and stands by again once restarted"
    )]
    LeadershipLost,
}
