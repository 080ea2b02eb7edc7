//! Reaching the apiserver: a client, the CRDs served, and who the operator is.

use std::time::Duration;

use k8s_openapi::{
    api::authentication::v1::SelfSubjectReview,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};

use super::Error;
use crate::api;

/// A client from the given kubeconfig, or by the usual rules: `$KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster service account. Every request it sends is
/// counted in `requests` (a watch once, when it starts).
pub async fn client(
    kubeconfig: Option<&std::path::Path>,
    requests: prometheus_client::metrics::counter::Counter,
) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let unreadable = |source| Error::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(unreadable)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(unreadable)?
        }
        None => Config::infer().await.map_err(Error::InferConfig)?,
    };
    let counted =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            requests.inc();
            request
        });
    Ok(kube::client::ClientBuilder::try_from(config)
        .map_err(Error::Connect)?
        .with_layer(&counted)
        .build())
}

/// Waits until the apiserver serves every summit-config CRD.
pub async fn wait_for_crds(client: &Client, limit: Duration) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(limit, established).await {
            Ok(Ok(_)) => tracing::debug!(crd = %name, "established"),
            Ok(Err(source)) => return Err(Error::CrdWait { name, source }),
            Err(_) => {
                return Err(Error::CrdMissing {
                    name,
                    waited: limit,
                });
            }
        }
    }
    Ok(())
}

/// The user the operator acts as, as the apiserver authenticates it.
pub async fn whoami(client: &Client) -> Result<String, Error> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(Error::WhoAmI)?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or_else(|| Error::Configuration("the apiserver did not say who the operator is".into()))
}
